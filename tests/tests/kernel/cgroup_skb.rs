//! cgroup_skb capture on a cgroup v2 child: exact counters against tcpdump,
//! request starts on one keep-alive connection, unmonitored endpoints, IPv6.

use agent::event::{Direction, Event, FlowEndReason};
use tests::{
    cgroup::CgroupGuard,
    harness::{Attach, Endpoint, Harness, Tuning},
    http::HttpServer,
    pcap::flow_totals,
    tools::require_tools,
};

use crate::{
    EVENT_TIMEOUT, assert_totals_match, capture_in_cgroup, dump_lo, http_client_in, wait_closed,
};

/// One keep-alive connection with `requests` requests to a monitored server
/// on `bind`; the flow-end event must carry exactly tcpdump's counters.
fn exact_counters(bind: &str, requests: u64) {
    require_tools();
    let server = HttpServer::start(bind.parse().expect("bind addr"), 1500);
    let (cg, mut h) = capture_in_cgroup("cnt", server.addr(), Tuning::default());
    let dump = dump_lo(server.addr(), 256);

    let (flow, report) = http_client_in(&cg, server.addr(), requests);
    let recs = wait_closed(&dump, "the flow to close in the pcap", flow);
    let truth = flow_totals(&recs, flow.client, flow.server);
    // The fixtures agree with each other first.
    assert_eq!(truth[0].payload_bytes, report.bytes_sent);
    assert_eq!(truth[1].payload_bytes, report.bytes_received);
    assert_eq!(truth[0].request_starts, requests);

    let (reason, totals) = h.wait_flow_end(flow, EVENT_TIMEOUT);
    assert_eq!(reason, FlowEndReason::Fin);
    let totals = totals.expect("a live flow end carries the kernel's final counters");
    assert_totals_match(&totals, &truth);
    assert_eq!(
        totals.request_starts[0], requests,
        "request starts on one keep-alive connection"
    );

    // The exact request-start count is also reported while the flow is live.
    assert_eq!(
        h.request_starts_of(flow),
        requests,
        "RequestStarts events for {flow:?}"
    );
    // Every request segment starts with a method token, so each is sampled.
    let get_samples = h
        .packets_of(flow)
        .iter()
        .filter(|p| p.direction == Some(Direction::ToServer) && p.payload.starts_with(b"GET "))
        .count() as u64;
    assert_eq!(get_samples, requests);
    // Nothing else crossed this cgroup's sockets.
    let others: Vec<&Event> = h
        .events
        .iter()
        .filter(|e| tests::harness::event_flow(e) != Some(flow))
        .collect();
    assert!(others.is_empty(), "events for other flows: {others:?}");
    let c = h.counters();
    assert_eq!(
        c.ring_full + c.flow_end_ring_full + c.flow_table_full,
        0,
        "{c:?}"
    );
    drop(dump);
}

#[test]
fn ipv4_counters_match_pcap_and_flow_end_is_final() {
    exact_counters("127.0.0.1:0", 25);
}

#[test]
fn ipv6_counters_match_pcap_and_flow_end_is_final() {
    exact_counters("[::1]:0", 25);
}

#[test]
fn keepalive_request_starts_exact_with_thinned_samples() {
    require_tools();
    let server = HttpServer::start("127.0.0.1:0".parse().expect("addr"), 64);
    // Sample nothing but the mandatory segments: the count must still be exact.
    let tuning = Tuning {
        first_segments: 0,
        sample_one_in: 0,
        ..Tuning::default()
    };
    let (cg, mut h) = capture_in_cgroup("ka", server.addr(), tuning);
    let requests = 300;
    let (flow, _) = http_client_in(&cg, server.addr(), requests);
    let (_, totals) = h.wait_flow_end(flow, EVENT_TIMEOUT);
    assert_eq!(
        server
            .connection(flow.client)
            .expect("server saw it")
            .requests,
        requests
    );
    assert_eq!(
        totals.expect("final counters").request_starts,
        [requests, 0]
    );
    assert_eq!(h.request_starts_of(flow), requests);
    // First segments and 1-in-N are off, yet every response head (one
    // segment per response here) is sampled, so its status can be paired
    // with its request; nothing else of the server's is.
    let to_client: Vec<_> = h
        .packets_of(flow)
        .into_iter()
        .filter(|p| p.direction == Some(Direction::ToClient))
        .collect();
    assert_eq!(to_client.len() as u64, requests);
    assert!(
        to_client
            .iter()
            .all(|p| p.payload.starts_with(b"HTTP/1.1 200")),
        "only response heads"
    );
}

#[test]
fn unmonitored_endpoint_yields_no_samples() {
    require_tools();
    let monitored = HttpServer::start("127.0.0.1:0".parse().expect("addr"), 100);
    let unmonitored = HttpServer::start("127.0.0.1:0".parse().expect("addr"), 100);
    let unmonitored6 = HttpServer::start("[::1]:0".parse().expect("addr"), 100);
    let (cg, mut h) = capture_in_cgroup(
        "unm",
        monitored.addr(),
        Tuning {
            sample_one_in: 1,
            ..Tuning::default()
        },
    );
    let (quiet4, _) = http_client_in(&cg, unmonitored.addr(), 10);
    let (quiet6, _) = http_client_in(&cg, unmonitored6.addr(), 10);
    // A monitored flow afterwards is the barrier: once its end arrives, the
    // kernel has processed everything sent before it (one ring, in order per CPU;
    // we also require its flow end which is emitted last).
    let (barrier, _) = http_client_in(&cg, monitored.addr(), 2);
    h.wait_flow_end(barrier, EVENT_TIMEOUT);
    for quiet in [quiet4, quiet6] {
        assert!(
            h.events_of(quiet).is_empty(),
            "unmonitored flow {quiet:?} produced events"
        );
        assert!(
            !h.flow_ids().contains(&quiet),
            "unmonitored flow {quiet:?} in the flow table"
        );
    }
    let other: Vec<_> = h
        .events
        .iter()
        .filter(|e| tests::harness::event_flow(e) != Some(barrier))
        .collect();
    assert!(other.is_empty(), "unexpected events: {other:?}");
}

#[test]
fn endpoint_update_at_run_time_starts_monitoring() {
    require_tools();
    let server = HttpServer::start("127.0.0.1:0".parse().expect("addr"), 100);
    let cg = CgroupGuard::new("upd");
    let mut h = Harness::start(Attach::Cgroup(cg.path().into()), &[], Tuning::default());
    let (before, _) = http_client_in(&cg, server.addr(), 3);
    h.set_endpoints(&[Endpoint {
        addr: "127.0.0.0".parse().expect("ip"),
        prefix: 8,
        port: server.addr().port(),
    }]);
    let (after, _) = http_client_in(&cg, server.addr(), 3);
    let (_, totals) = h.wait_flow_end(after, EVENT_TIMEOUT);
    assert_eq!(totals.expect("counters").request_starts[0], 3);
    assert!(
        h.events_of(before).is_empty(),
        "flow before the endpoint was added: {:?}",
        h.events_of(before)
    );
}

#[test]
fn reset_ends_the_flow_with_final_counters() {
    require_tools();
    let server = HttpServer::start("127.0.0.1:0".parse().expect("addr"), 700);
    let (cg, mut h) = capture_in_cgroup("rst", server.addr(), Tuning::default());
    let dump = dump_lo(server.addr(), 256);
    let (flow, _) = crate::client_in(&cg, "http-client-rst", server.addr(), 4);
    let recs = wait_closed(&dump, "the reset in the pcap", flow);
    assert!(
        recs.iter()
            .any(|r| r.src == flow.client && r.flags & 0x04 != 0),
        "the client did not reset the connection"
    );
    let truth = flow_totals(&recs, flow.client, flow.server);
    let (reason, totals) = h.wait_flow_end(flow, EVENT_TIMEOUT);
    assert_eq!(reason, FlowEndReason::Rst);
    assert_totals_match(&totals.expect("final counters on reset"), &truth);
    assert_eq!(h.request_starts_of(flow), 4);
}

#[test]
fn live_flow_carries_the_client_cgroup_id() {
    require_tools();
    let server = HttpServer::start("127.0.0.1:0".parse().expect("addr"), 16);
    let (cg, h) = capture_in_cgroup("cgid", server.addr(), Tuning::default());
    // A long keep-alive run, killed once its flow has been seen.
    let mut client = cg
        .command(crate::rw_helper())
        .args(["http-client", &server.addr().to_string(), "100000000"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn client");
    let snap = tests::wait::wait_until("the live flow in the kernel table", EVENT_TIMEOUT, || {
        h.flows()
            .into_iter()
            .find(|f| f.flow.server == server.addr() && f.totals.request_starts[0] > 10)
    });
    let _ = client.kill();
    let _ = client.wait();
    assert_eq!(
        snap.cgroup_id,
        cg.id(),
        "socket cgroup id of {:?}",
        snap.flow
    );
    assert!(
        snap.totals.packets[0] > 0 && snap.totals.packets[1] > 0,
        "{snap:?}"
    );
}
