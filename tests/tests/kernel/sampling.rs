//! 1-in-N sampling of segments after the first K of each direction.

use agent::event::Direction;
use tests::{
    harness::Tuning,
    http::HttpServer,
    pcap::{TcpRecord, flow_totals},
    tools::require_tools,
};

use crate::{EVENT_TIMEOUT, capture_in_cgroup, dump_lo, http_client_in, wait_closed};

#[test]
fn one_in_n_within_bounds() {
    require_tools();
    let (k, n) = (3u64, 8u64);
    let requests = 200u64;
    let server = HttpServer::start("127.0.0.1:0".parse().expect("addr"), 100_000);
    let tuning = Tuning {
        first_segments: k as u32,
        sample_one_in: n as u32,
        ..Tuning::default()
    };
    let (cg, mut h) = capture_in_cgroup("smp", server.addr(), tuning);
    let dump = dump_lo(server.addr(), 128);
    let (flow, _) = http_client_in(&cg, server.addr(), requests);
    let recs = wait_closed(&dump, "flow close", flow);
    let truth = flow_totals(&recs, flow.client, flow.server);
    let (_, totals) = h.wait_flow_end(flow, EVENT_TIMEOUT);
    assert_eq!(
        totals.expect("counters").payload_segments,
        [truth[0].payload_segments, truth[1].payload_segments]
    );
    let c = h.counters();
    assert_eq!(c.ring_full, 0, "nothing may be lost here: {c:?}");

    // Response heads (`HTTP/1.`, 16 bytes or more) are sampled always, like
    // request heads; the other server segments K first, then 1 in N of the
    // direction's segment index (a counter, so the count is exact up to two
    // CPUs sharing an index). Each response here spans several segments
    // (a head and its 100 KB body), so both rules are at work.
    let segs: Vec<_> = recs
        .iter()
        .filter(|r| r.src == flow.server && r.payload_len > 0)
        .collect();
    assert_eq!(segs.len() as u64, truth[1].payload_segments);
    let head = |r: &&TcpRecord| r.payload_len >= 16 && r.payload.starts_with(b"HTTP/1.");
    let heads = segs.iter().filter(|r| head(r)).count() as u64;
    assert_eq!(heads, requests, "one head per response");
    assert!(segs.len() as u64 > 2 * requests, "bodies span segments");
    let expected = segs
        .iter()
        .enumerate()
        .filter(|(i, r)| (*i as u64) < k || head(r) || (*i as u64).is_multiple_of(n))
        .count() as u64;
    let got = h
        .packets_of(flow)
        .iter()
        .filter(|p| p.direction == Some(Direction::ToClient) && p.payload_len > 0)
        .count() as u64;
    assert!(
        got.abs_diff(expected) <= 1,
        "{got} to-client samples of {} segments ({heads} heads), expected {expected}",
        segs.len()
    );
    // Requests all start with GET: every one is sampled, whatever N is.
    let requests = h
        .packets_of(flow)
        .iter()
        .filter(|p| p.direction == Some(Direction::ToServer) && p.payload_len > 0)
        .count() as u64;
    assert_eq!(requests, truth[0].payload_segments);
}

#[test]
fn samples_are_wire_bytes_cut_at_snaplen_and_counted() {
    require_tools();
    let snaplen = 64u32;
    let server = HttpServer::start("[::1]:0".parse().expect("addr"), 300);
    let tuning = Tuning {
        snaplen,
        first_segments: 0,
        sample_one_in: 1,
        ..Tuning::default()
    };
    let (cg, mut h) = capture_in_cgroup("snap", server.addr(), tuning);
    let dump = dump_lo(server.addr(), 65535);
    let (flow, _) = http_client_in(&cg, server.addr(), 40);
    let recs = wait_closed(&dump, "flow close", flow);
    h.wait_flow_end(flow, EVENT_TIMEOUT);
    let wire: Vec<_> = recs
        .iter()
        .filter(|r| r.payload_len > 0 && (r.src == flow.client || r.src == flow.server))
        .collect();
    let samples = h.packets_of(flow);
    assert_eq!(
        samples.len(),
        wire.len(),
        "1 in 1: one sample per payload segment"
    );
    for s in &samples {
        let w = wire
            .iter()
            .find(|w| w.src == s.src && w.seq == s.seq)
            .unwrap_or_else(|| panic!("no wire segment for sample {s:?}"));
        assert_eq!(s.payload_len, w.payload_len);
        assert_eq!(s.payload.len() as u32, w.payload_len.min(snaplen));
        assert_eq!(
            &s.payload[..],
            &w.payload[..s.payload.len()],
            "sample bytes at seq {}",
            s.seq
        );
    }
    let longer = wire.iter().filter(|w| w.payload_len > snaplen).count() as u64;
    assert!(longer > 0);
    assert_eq!(
        h.counters().sample_truncated,
        longer,
        "truncated samples are counted"
    );
}
