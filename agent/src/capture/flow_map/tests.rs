//! Tests of the flow-map tracker: views, request-start deltas, ends.

use agent_common::DirStats;

use super::*;
use crate::event::Side;

fn key(observer: u8) -> FlowKey {
    let mut c = [0u8; 16];
    c[10] = 0xff;
    c[11] = 0xff;
    c[12..].copy_from_slice(&[127, 0, 0, 1]);
    FlowKey {
        client_addr: c,
        server_addr: c,
        client_port: 40000,
        server_port: 8080,
        observer,
        ..FlowKey::default()
    }
}

fn stats(requests: u64) -> FlowStats {
    let mut s = FlowStats::default();
    s.dirs[0] = DirStats {
        packets: 3,
        request_starts: requests,
        first_seen_ns: 1000,
        ..DirStats::default()
    };
    s
}

fn ended(mut s: FlowStats, bits: u64) -> FlowStats {
    s.state = flow_state::ENDED | bits;
    s
}

#[test]
fn mapped_ipv4_becomes_ipv4() {
    let id = flow_id(&key(1));
    assert_eq!(id.client.to_string(), "127.0.0.1:40000");
    assert_eq!(id.server.to_string(), "127.0.0.1:8080");
}

#[test]
fn one_view_per_connection_and_exact_request_deltas() {
    let mut t = Tracker::default();
    let out = t.poll(vec![(key(2), stats(2)), (key(1), stats(2))], &[], 1);
    // Client view wins; one delta of 2.
    assert!(matches!(
        out.events.as_slice(),
        [Event::RequestStarts { count: 2, .. }]
    ));
    assert!(!t.admit_sample(&key(2)));
    assert!(t.admit_sample(&key(1)));
    let out = t.poll(vec![(key(1), stats(5)), (key(2), stats(5))], &[], 2);
    assert!(matches!(
        out.events.as_slice(),
        [Event::RequestStarts { count: 3, .. }]
    ));
    let [a, b] = t.flow_end(&key(1), &stats(6), None, FlowEndReason::Fin, 3);
    assert!(matches!(a, Some(Event::RequestStarts { count: 1, .. })));
    assert!(matches!(
        b,
        Some(Event::FlowEnd {
            reason: FlowEndReason::Fin,
            ..
        })
    ));
    // The server view's end of the same connection is dropped.
    assert!(
        t.flow_end(&key(2), &stats(6), None, FlowEndReason::Fin, 3)
            .iter()
            .all(Option::is_none)
    );
    // So is the client view's duplicate.
    assert!(
        t.flow_end(&key(1), &stats(6), None, FlowEndReason::Fin, 3)
            .iter()
            .all(Option::is_none)
    );
    // A stale snapshot must not revive it; ended entries of both views
    // are deleted from the kernel map, without events.
    let out = t.poll(
        vec![(key(1), ended(stats(6), 0)), (key(2), ended(stats(6), 0))],
        &[],
        4,
    );
    assert!(out.events.is_empty());
    assert_eq!(out.delete, vec![key(1), key(2)]);
    assert!(t.poll(vec![(key(1), stats(6))], &[], 5).events.is_empty());
    // A late sample is delivered but does not revive the flow.
    assert!(t.admit_sample(&key(1)));
    assert!(t.poll(vec![], &[], 6).events.is_empty());
    assert!(t.poll(vec![], &[], 7).events.is_empty());
}

#[test]
fn ended_entry_waits_for_its_record_unless_the_record_was_lost() {
    let mut t = Tracker::default();
    t.poll(vec![(key(1), stats(1))], &[], 1);
    // Ended in the kernel, record still in the ring: nothing yet, keep the entry.
    let out = t.poll(vec![(key(1), ended(stats(3), 0))], &[], 2);
    assert!(out.events.is_empty() && out.delete.is_empty());
    // Record lost: the poll reports the end from the frozen entry.
    let out = t.poll(
        vec![(
            key(1),
            ended(stats(3), flow_state::END_RECORD_LOST | flow_state::END_RST),
        )],
        &[],
        3,
    );
    assert!(matches!(
        out.events.as_slice(),
        [
            Event::RequestStarts { count: 2, .. },
            Event::FlowEnd {
                reason: FlowEndReason::Rst,
                totals: Some(_),
                ..
            }
        ]
    ));
    assert_eq!(out.delete, vec![key(1)]);
}

#[test]
fn new_connection_on_the_same_tuple_is_tracked_again() {
    let mut t = Tracker::default();
    t.poll(vec![(key(1), stats(1))], &[], 1);
    t.flow_end(&key(1), &stats(1), None, FlowEndReason::Fin, 2);
    let mut again = stats(4);
    again.dirs[0].first_seen_ns = 9000;
    let out = t.poll(vec![(key(1), again)], &[], 3);
    assert!(matches!(
        out.events.as_slice(),
        [Event::RequestStarts { count: 4, .. }]
    ));
}

#[test]
fn connection_claimed_by_a_sample_keeps_its_stamp_for_the_next_on_the_tuple() {
    // A short connection the polls never saw: claimed by its sample (no
    // stamp), reported by its flow-end record.
    let mut t = Tracker::default();
    assert!(t.admit_sample(&key(1)));
    let [starts, _] = t.flow_end(&key(1), &stats(1), None, FlowEndReason::Fin, 2);
    assert!(matches!(
        starts,
        Some(Event::RequestStarts { count: 1, .. })
    ));
    // The next connection on the 4-tuple, one request too: seen by a poll...
    let mut next = stats(1);
    next.dirs[0].first_seen_ns = 9000;
    let out = t.poll(vec![(key(1), next)], &[], 3);
    assert!(
        matches!(
            out.events.as_slice(),
            [Event::RequestStarts { count: 1, .. }]
        ),
        "{:?}",
        out.events
    );
    // ...or only by its own flow-end record.
    let mut t = Tracker::default();
    assert!(t.admit_sample(&key(1)));
    t.flow_end(&key(1), &stats(1), None, FlowEndReason::Fin, 2);
    assert!(t.admit_sample(&key(1)));
    let [starts, _] = t.flow_end(&key(1), &next, None, FlowEndReason::Fin, 3);
    assert!(
        matches!(starts, Some(Event::RequestStarts { count: 1, .. })),
        "{starts:?}"
    );
}

#[test]
fn recreated_entry_of_a_live_flow_counts_from_zero() {
    let mut t = Tracker::default();
    let out = t.poll(vec![(key(1), stats(5))], &[], 1);
    assert!(matches!(
        out.events.as_slice(),
        [Event::RequestStarts { count: 5, .. }]
    ));
    // Evicted and recreated by a later packet: new stamp, fresh counters.
    let mut again = stats(2);
    again.dirs[0].first_seen_ns = 9000;
    let out = t.poll(vec![(key(1), again)], &[], 2);
    assert!(
        matches!(
            out.events.as_slice(),
            [Event::RequestStarts { count: 2, .. }]
        ),
        "{:?}",
        out.events
    );
    let mut more = again;
    more.dirs[0].request_starts = 3;
    let out = t.poll(vec![(key(1), more)], &[], 3);
    assert!(matches!(
        out.events.as_slice(),
        [Event::RequestStarts { count: 1, .. }]
    ));
}

#[test]
fn tls_layer_reports_starts_without_claiming_or_ending() {
    let tls = observer::TLS_PLAINTEXT;
    let mut t = Tracker::default();
    // The TLS layer's starts are reported; the wire view still claims.
    let mut wire = stats(0);
    wire.dirs[0].first_seen_ns = 500;
    let out = t.poll(vec![(key(tls), stats(3)), (key(2), wire)], &[], 1);
    assert!(matches!(
        out.events.as_slice(),
        [Event::RequestStarts { count: 3, .. }]
    ));
    assert!(t.admit_sample(&key(2)));
    let out = t.poll(vec![(key(tls), stats(5)), (key(2), wire)], &[], 2);
    assert!(matches!(
        out.events.as_slice(),
        [Event::RequestStarts { count: 2, .. }]
    ));
    // The wire end carries the layer's last starts; one end, from the wire.
    let [starts, end] = t.flow_end(&key(2), &wire, Some(&stats(7)), FlowEndReason::Fin, 3);
    assert!(matches!(
        starts,
        Some(Event::RequestStarts { count: 2, .. })
    ));
    assert!(matches!(end, Some(Event::FlowEnd { .. })));
    // Then its entry is deleted, without events.
    let out = t.poll(vec![(key(tls), stats(7))], &[], 4);
    assert!(out.events.is_empty());
    assert_eq!(out.delete, vec![key(tls)]);
    // A layer alone that goes idle or vanishes never ends a flow.
    let mut t = Tracker::default();
    t.poll(vec![(key(tls), stats(1))], &[], 1);
    let out = t.poll(vec![(key(tls), stats(1))], &[key(tls)], 2);
    assert!(out.events.is_empty());
    for now in 3..6 {
        assert!(t.poll(vec![], &[], now).events.is_empty());
    }
}

#[test]
fn vanished_flows_end_idle_after_grace() {
    let mut t = Tracker::default();
    t.poll(vec![(key(1), stats(0))], &[], 1);
    assert!(t.poll(vec![], &[], 2).events.is_empty());
    let out = t.poll(vec![], &[], 3);
    assert!(matches!(
        out.events.as_slice(),
        [Event::FlowEnd {
            reason: FlowEndReason::Idle,
            totals: Some(_),
            ..
        }]
    ));
    assert!(t.poll(vec![], &[], 4).events.is_empty());
}

#[test]
fn both_ends_are_announced_once_whichever_view_is_reported() {
    let mut t = Tracker::default();
    let side = |e: Option<Event>| match e {
        Some(Event::Socket(s)) => Some((s.side, s.cgroup_id, s.pid)),
        _ => None,
    };
    // The client view claims the connection; the server view's samples
    // are dropped, but still name the server's end.
    assert!(t.admit_sample(&key(observer::CLIENT_SOCKET)));
    assert_eq!(
        side(t.socket(&key(observer::CLIENT_SOCKET), 11, None, 1)),
        Some((Side::Client, 11, None))
    );
    assert!(!t.admit_sample(&key(observer::SERVER_SOCKET)));
    assert_eq!(
        side(t.socket(&key(observer::SERVER_SOCKET), 22, None, 1)),
        Some((Side::Server, 22, None))
    );
    assert_eq!(
        side(t.socket(&key(observer::CLIENT_SOCKET), 11, None, 2)),
        None
    );
    assert_eq!(
        side(t.socket(&key(observer::SERVER_SOCKET), 22, None, 2)),
        None
    );
    // A pid the TLS probes see is news once; a server process reading
    // what the client wrote is the server's.
    let s = tls_side(
        agent_common::tls_call::READ,
        agent_common::direction::TO_SERVER,
    );
    assert_eq!(s, Side::Server);
    let k = tls_socket_key(&key(observer::TLS_PLAINTEXT), s);
    assert_eq!(
        side(t.socket(&k, 22, Some(7), 3)),
        Some((Side::Server, 22, Some(7)))
    );
    assert_eq!(side(t.socket(&k, 22, Some(7), 4)), None);
    assert_eq!(
        tls_side(
            agent_common::tls_call::WRITE,
            agent_common::direction::TO_SERVER
        ),
        Side::Client
    );
    // No socket: TC views, cgroup id 0, connections not claimed.
    assert_eq!(side(t.socket(&key(observer::TC), 33, None, 5)), None);
    assert_eq!(
        side(t.socket(&key(observer::CLIENT_SOCKET), 0, None, 5)),
        None
    );
    let mut other = key(observer::CLIENT_SOCKET);
    other.client_port = 1;
    assert_eq!(side(t.socket(&other, 44, None, 5)), None);
}

#[test]
fn second_view_request_starts_are_tallied_once() {
    let mut t = Tracker::default();
    t.poll(vec![(key(1), stats(2)), (key(2), stats(2))], &[], 1);
    assert_eq!(t.duplicate_view_requests, 2);
    t.poll(vec![(key(1), stats(5)), (key(2), stats(4))], &[], 2);
    assert_eq!(t.duplicate_view_requests, 4);
    // The second view's end record, then its frozen entry in a poll: the
    // starts between them count once.
    t.flow_end(&key(2), &stats(6), None, FlowEndReason::Fin, 3);
    assert_eq!(t.duplicate_view_requests, 6);
    t.poll(
        vec![(key(1), stats(6)), (key(2), ended(stats(6), 0))],
        &[],
        4,
    );
    assert_eq!(t.duplicate_view_requests, 6);
    // A new connection on the tuple counts from zero.
    let mut again = stats(1);
    again.dirs[0].first_seen_ns = 5000;
    t.poll(vec![(key(1), stats(6)), (key(2), again)], &[], 5);
    assert_eq!(t.duplicate_view_requests, 7);
}

#[test]
fn starts_after_a_mistaken_vanish_still_count() {
    let mut t = Tracker::default();
    t.poll(vec![(key(1), stats(2))], &[], 1);
    // Two polls miss the entry (map iteration under churn): ended as idle.
    t.poll(vec![], &[], 2);
    let out = t.poll(vec![], &[], 3);
    assert!(matches!(
        out.events.as_slice(),
        [Event::FlowEnd {
            reason: FlowEndReason::Idle,
            ..
        }]
    ));
    // It was alive: the starts it counted meanwhile are still reported,
    // from the map and from its end record, once each.
    let out = t.poll(vec![(key(1), stats(5))], &[], 4);
    assert!(matches!(
        out.events.as_slice(),
        [Event::RequestStarts { count: 3, .. }]
    ));
    let [a, b] = t.flow_end(&key(1), &stats(6), None, FlowEndReason::Fin, 5);
    assert!(matches!(a, Some(Event::RequestStarts { count: 1, .. })));
    assert!(b.is_none());
    let out = t.poll(vec![(key(1), ended(stats(6), 0))], &[], 6);
    assert!(out.events.is_empty());
    assert_eq!(out.delete, vec![key(1)]);
}

/// A poll that saw a loopback connection's server view before its client
/// view gave the claim to the server view; once the kernel stops counting
/// that view (`LOCAL_DUPLICATE`), the claim moves to the client view and
/// no start is lost or counted twice.
#[test]
fn frozen_loopback_server_view_hands_its_claim_to_the_client_view() {
    let mut t = Tracker::default();
    let out = t.poll(vec![(key(2), stats(1))], &[], 1);
    assert!(matches!(
        out.events.as_slice(),
        [Event::RequestStarts { count: 1, .. }]
    ));
    let mut frozen = stats(1);
    frozen.state = flow_state::LOCAL_DUPLICATE;
    // The client view counted the same first start, and three more.
    let out = t.poll(vec![(key(1), stats(4)), (key(2), frozen)], &[], 2);
    assert!(out.events.is_empty(), "{:?}", out.events);
    assert!(t.admit_sample(&key(1)));
    assert!(!t.admit_sample(&key(2)));
    let out = t.poll(vec![(key(1), stats(4)), (key(2), frozen)], &[], 3);
    assert!(matches!(
        out.events.as_slice(),
        [Event::RequestStarts { count: 3, .. }]
    ));
    let [a, b] = t.flow_end(&key(1), &stats(5), None, FlowEndReason::Fin, 4);
    assert!(matches!(a, Some(Event::RequestStarts { count: 1, .. })));
    assert!(b.is_some());
}
