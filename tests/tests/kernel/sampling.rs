//! 1-in-N sampling of segments after the first K of each direction.

use agent::event::Direction;
use tests::{
    cgroup::CgroupGuard,
    harness::{Attach, Endpoint, Harness, Tuning},
    http::HttpServer,
    pcap::{flow_closed, flow_totals},
    tcpdump::Tcpdump,
    tools::require_tools,
};

use crate::{EVENT_TIMEOUT, http_client_in};

#[test]
fn one_in_n_within_bounds() {
    require_tools();
    let (k, n) = (3u64, 8u64);
    let server = HttpServer::start("127.0.0.1:0".parse().expect("addr"), 200);
    let cg = CgroupGuard::new("smp");
    let tuning = Tuning {
        first_segments: k as u32,
        sample_one_in: n as u32,
        ..Tuning::default()
    };
    let mut h = Harness::start(
        Attach::Cgroup(cg.path().into()),
        &[Endpoint::exact(server.addr())],
        tuning,
    );
    let dump = Tcpdump::start(
        "lo",
        &format!("tcp port {}", server.addr().port()),
        None,
        128,
    );
    let (flow, _) = http_client_in(&cg, server.addr(), 2000);
    let recs = dump.wait_for("flow close", EVENT_TIMEOUT, |r| {
        flow_closed(r, flow.client, flow.server)
    });
    let truth = flow_totals(&recs, flow.client, flow.server);
    let (_, totals) = h.wait_flow_end(flow, EVENT_TIMEOUT);
    assert_eq!(
        totals.expect("counters").payload_segments,
        [truth[0].payload_segments, truth[1].payload_segments]
    );
    let c = h.counters();
    assert_eq!(c.ring_full, 0, "nothing may be lost here: {c:?}");

    // Responses never start with a method token: K first, then 1 in N.
    let segs = truth[1].payload_segments;
    let got = h
        .packets_of(flow)
        .iter()
        .filter(|p| p.direction == Some(Direction::ToClient) && p.payload_len > 0)
        .count() as u64;
    let expected = k as f64 + (segs - k) as f64 / n as f64;
    // Deterministic (counter) sampling is within 1; random sampling is
    // binomial: allow 5 standard deviations.
    let sd = ((segs - k) as f64 * (1.0 / n as f64) * (1.0 - 1.0 / n as f64)).sqrt();
    let (lo, hi) = (
        (expected - 5.0 * sd - 1.0).floor(),
        (expected + 5.0 * sd + 1.0).ceil(),
    );
    assert!(
        (lo..=hi).contains(&(got as f64)),
        "{got} to-client samples of {segs} segments, expected {expected:.1} in [{lo}, {hi}]"
    );
    // Requests all start with GET: every one is sampled, whatever N is.
    let requests = h
        .packets_of(flow)
        .iter()
        .filter(|p| p.direction == Some(Direction::ToServer) && p.payload_len > 0)
        .count() as u64;
    assert_eq!(requests, truth[0].payload_segments);
}
