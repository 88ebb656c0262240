//! Flood: far more samples than the ring buffer holds, with a consumer that
//! is not reading. Every sample is either delivered or counted as a ring-full
//! drop, exactly, and the pipeline delivers normally afterwards.

use agent::event::Event;
use tests::{harness::Tuning, http::HttpServer, pcap::flow_totals, tools::require_tools};

use crate::{EVENT_TIMEOUT, capture_in_cgroup, dump_lo, http_client_in, wait_closed};

#[test]
fn flood_delivered_plus_dropped_equals_produced() {
    require_tools();
    let server = HttpServer::start("127.0.0.1:0".parse().expect("addr"), 32);
    // A 16 KiB ring holds well under 100 samples; the 4-batch channel stalls
    // the reader as soon as the test stops draining it (it does not, until
    // the traffic is over). Every payload segment is sampled (1 in 1).
    let tuning = Tuning {
        snaplen: 64,
        first_segments: 1,
        sample_one_in: 1,
        ring_bytes: Some(16 * 1024),
        channel: 4,
        tls: None,
    };
    let (cg, mut h) = capture_in_cgroup("fld", server.addr(), tuning);
    let dump = dump_lo(server.addr(), 96);
    let requests = 3000;
    let (flow, _) = http_client_in(&cg, server.addr(), requests);
    let recs = wait_closed(&dump, "flood flow close", flow);
    let (_, tcpdump_stats) = dump.stop();
    let truth = flow_totals(&recs, flow.client, flow.server);
    let produced = truth[0].payload_segments + truth[1].payload_segments;
    assert!(
        produced >= 2 * requests,
        "{produced} payload segments for {requests} requests"
    );

    let samples =
        |evs: &[Event]| evs.iter().filter(|e| matches!(e, Event::Packet(_))).count() as u64;
    // Now drain; the accounting must close exactly.
    h.wait_state(
        "delivered + ring-full drops to reach the produced count",
        EVENT_TIMEOUT,
        |evs, c| samples(evs) + c.ring_full >= produced,
    );
    let c = h.counters();
    let delivered = samples(&h.events);
    assert!(
        c.ring_full > 0,
        "the flood did not overflow the ring: {c:?}, {delivered} delivered"
    );
    assert!(delivered > 0, "nothing delivered");
    assert_eq!(
        delivered + c.ring_full,
        produced,
        "delivered {delivered} + ring-full {} != produced {produced} (pcap payload segments; tcpdump {tcpdump_stats:?}; {c:?})",
        c.ring_full
    );
    assert_eq!(
        c.samples_emitted, delivered,
        "every sample written to the ring was delivered: {c:?}"
    );
    // The one flow-end record is written or counted as lost, exactly.
    assert_eq!(c.flow_ends_emitted + c.flow_end_ring_full, 1, "{c:?}");
    // Even when its record was lost, the end is reported, with the final
    // counters (the kernel keeps the ended entry for the poller) and the
    // exact request count.
    let (_, totals) = h.wait_flow_end(flow, EVENT_TIMEOUT);
    crate::assert_totals_match(&totals.expect("final counters of the flooded flow"), &truth);
    assert_eq!(
        h.request_starts_of(flow),
        requests,
        "request starts of the flooded flow"
    );

    // Healthy afterwards: a new flow is delivered in full.
    let (after, _) = http_client_in(&cg, server.addr(), 5);
    let (_, totals) = h.wait_flow_end(after, EVENT_TIMEOUT);
    assert_eq!(totals.expect("counters").request_starts[0], 5);
    assert_eq!(
        h.counters().ring_full,
        c.ring_full,
        "no drops once the consumer keeps up"
    );
    // Reported once, not again on later polls or late samples.
    let ends = h
        .events
        .iter()
        .filter(|e| matches!(e, Event::FlowEnd { flow: f, .. } if *f == flow))
        .count();
    assert_eq!(
        ends, 1,
        "flow end of the flooded flow reported {ends} times"
    );
}
