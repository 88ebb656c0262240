//! Engine tests: orientation, reassembly, request counting,
//! kernel counting, memory bounds, garbage (time and reloads: `engine_time`).

use super::*;
use crate::{
    event::{Event, FlowEndReason, FlowId, tcp_flags},
    flow::{FlowConfig, Protocol},
};

#[test]
fn orientation_without_syn_follows_the_contract_then_payload_then_port() {
    let mut e = engine();
    // Mid-stream capture: the watched server has the higher port.
    e.handle(pkt(
        t0(),
        "10.20.2.5:8080",
        "10.1.0.9:80",
        1,
        ACK,
        b"HTTP/1.1 200 OK\r\n\r\n",
    ));
    e.handle(pkt(
        t0(),
        "10.1.0.9:80",
        "10.20.2.5:8080",
        1,
        ACK,
        &get("/v1/orders", Some("acme-token")),
    ));
    // Unwatched, no SYN: a request marks the client even on a low port.
    e.handle(pkt(
        t0(),
        "192.168.0.1:80",
        "192.168.0.2:50000",
        1,
        ACK,
        &get("/", None),
    ));
    // Unwatched, no payload hint: the lower port is the server.
    e.handle(pkt(
        t0(),
        "192.168.0.3:443",
        "192.168.0.4:40000",
        1,
        ACK,
        b"\x01\x02",
    ));
    e.finish();
    let mut ids: Vec<FlowId> = records(&mut e).into_iter().map(|r| r.id).collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![
            FlowId {
                client: addr("10.1.0.9:80"),
                server: addr("10.20.2.5:8080")
            },
            FlowId {
                client: addr("192.168.0.1:80"),
                server: addr("192.168.0.2:50000")
            },
            FlowId {
                client: addr("192.168.0.4:40000"),
                server: addr("192.168.0.3:443")
            },
        ]
    );
}

#[test]
fn syn_ack_orients_and_reorients_a_port_guess() {
    let mut e = engine();
    // A bare ACK first (port guess: 80 is the server), then the SYN+ACK from
    // the real server on the higher port.
    e.handle(pkt(
        t0(),
        "192.168.0.1:80",
        "192.168.0.2:50000",
        1,
        ACK,
        b"",
    ));
    e.handle(pkt(
        t0(),
        "192.168.0.2:50000",
        "192.168.0.1:80",
        9,
        tcp_flags::SYN | ACK,
        b"",
    ));
    e.handle(pkt(
        t0(),
        "192.168.0.1:80",
        "192.168.0.2:50000",
        1,
        ACK,
        b"\x01",
    ));
    e.finish();
    let r = records(&mut e);
    assert_eq!(r[0].id.server, addr("192.168.0.2:50000"));
}

#[test]
fn out_of_order_and_retransmitted_segments_count_once() {
    let mut e = engine();
    let req = get("/v1/orders", Some("acme-token"));
    let (a, b) = req.split_at(20);
    let c = "10.1.0.9:5000";
    let s = "10.20.2.5:8080";
    e.handle(pkt(t0(), c, s, 100, tcp_flags::SYN, b""));
    e.handle(pkt(t0(), c, s, 121, ACK, b));
    e.handle(pkt(t0(), c, s, 101, ACK, a));
    e.handle(pkt(t0(), c, s, 101, ACK, a));
    e.handle(pkt(t0(), c, s, 101, ACK, &req));
    end_flow(&mut e, t0() + 1, c, s, 101 + req.len() as u32, 1);
    e.finish();
    let r = records(&mut e);
    assert_eq!(r[0].requests, 1);
    assert_eq!(
        &*r[0].client, "acme",
        "the head was reassembled across segments"
    );
    assert_eq!(r[0].gaps, 0);
    assert_eq!(found(&e), vec![]);
}

/// `rampwatch_flows_total` counts on `FlowClassified`: a keep-alive
/// connection is classified at its first request, once, long before it
/// leaves the table; a flow that never settles is classified when reported.
#[test]
fn a_live_keepalive_flow_is_classified_once_at_its_first_request() {
    let classified = |outs: &[Output]| -> Vec<FlowRecord> {
        outs.iter()
            .filter_map(|o| match o {
                Output::FlowClassified(f) => Some(f.clone()),
                _ => None,
            })
            .collect()
    };
    let mut e = engine();
    let (c, s) = ("10.1.0.9:5001", "10.20.2.5:8080");
    e.handle(pkt(t0(), c, s, 100, tcp_flags::SYN, b""));
    e.handle(pkt(t0(), s, c, 500, tcp_flags::SYN | ACK, b""));
    assert!(classified(&e.drain().collect::<Vec<_>>()).is_empty());
    let one = get("/v1/orders/1", Some("acme-token"));
    e.handle(pkt(t0() + 1000, c, s, 101, ACK | tcp_flags::PSH, &one));
    let first: Vec<Output> = e.drain().collect();
    let got = classified(&first);
    assert_eq!(got.len(), 1, "{first:?}");
    assert_eq!(&*got[0].endpoint, "orders");
    assert_eq!(got[0].protocol, Protocol::Http);
    assert_eq!(got[0].end, None, "classified while the flow is live");
    assert!(!first.iter().any(|o| matches!(o, Output::Flow(_))));
    // More requests on the same connection: not classified again.
    let mut seq = 101 + one.len() as u32;
    for i in 0..3 {
        e.handle(pkt(t0() + 2000 + i, c, s, seq, ACK | tcp_flags::PSH, &one));
        seq += one.len() as u32;
    }
    end_flow(&mut e, t0() + SEC, c, s, seq, 501);
    e.finish();
    let rest: Vec<Output> = e.drain().collect();
    assert!(classified(&rest).is_empty(), "{rest:?}");
    assert_eq!(
        rest.iter().filter(|o| matches!(o, Output::Flow(_))).count(),
        1
    );

    // A flow with payload that never settles (unknown protocol) is still
    // classified once, just before its record.
    let mut e = engine();
    tcp_flow(&mut e, t0(), "10.1.0.9:5002", "10.20.2.5:8080", &[b"\x00"]);
    e.finish();
    let outs: Vec<Output> = e.drain().collect();
    let at = outs
        .iter()
        .position(|o| matches!(o, Output::FlowClassified(_)))
        .expect("classified");
    let rec = outs
        .iter()
        .position(|o| matches!(o, Output::Flow(_)))
        .expect("a record");
    assert!(at < rec, "{outs:?}");
    assert_eq!(classified(&outs).len(), 1);
}

#[test]
fn pipelined_and_later_requests_all_count() {
    let mut e = engine();
    let one = get("/v1/orders/1", Some("acme-token"));
    let three: Vec<u8> = [one.clone(), one.clone(), one.clone()].concat();
    // A head cut across two segments well past the first prefix.
    let (x, y) = one.split_at(30);
    let filler = b"POST /v1/orders HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer acme-token\r\nContent-Length: 20000\r\n\r\n";
    let body = vec![b'G'; 20_000];
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        &[&three, filler, &body, x, y, &one],
    );
    e.finish();
    let r = records(&mut e);
    // 3 pipelined + the POST + the cut head + the last one; the body (even
    // starting with "G") is skipped by Content-Length.
    assert_eq!(r[0].requests, 6);
    assert_eq!(&*r[0].client, "acme");
}

#[test]
fn reassembly_is_bounded_and_gaps_are_counted() {
    let mut e = Engine::new(
        contract(),
        EngineOptions {
            flow: FlowConfig {
                prefix_cap: 64,
                ..FlowConfig::default()
            },
            ..EngineOptions::default()
        },
    );
    let c = "10.1.0.9:5000";
    let s = "10.20.2.5:8080";
    e.handle(pkt(t0(), c, s, 100, tcp_flags::SYN, b""));
    // A hole at the start that never fills.
    e.handle(pkt(t0(), c, s, 111, ACK, b"never contiguous"));
    e.handle(pkt(
        t0(),
        c,
        s,
        2000,
        ACK,
        &get("/v1/orders", Some("acme-token")),
    ));
    e.finish();
    let r = records(&mut e);
    assert_eq!(r[0].gaps, 1);
    assert_eq!(e.flow_stats().gaps, 1);
    // Past the bound, the request starting a segment is still parsed.
    assert_eq!(r[0].requests, 1);
}

#[test]
fn kernel_counts_replace_parsed_heads_for_quotas() {
    let opts = EngineOptions {
        requests_from_kernel: true,
        ..EngineOptions::default()
    };
    let mut e = Engine::new(contract(), opts);
    let c = "10.1.0.9:5000";
    let s = "10.20.2.5:8080";
    let reqs: Vec<Vec<u8>> = (0..10)
        .map(|_| get("/v1/orders", Some("acme-token")))
        .collect();
    e.handle(pkt(t0(), c, s, 100, tcp_flags::SYN, b""));
    let mut seq = 101;
    for r in &reqs {
        e.handle(pkt(t0(), c, s, seq, ACK, r));
        seq += r.len() as u32;
    }
    // Ten parsed heads, but quota counting waits for the kernel.
    assert_eq!(found(&e), vec![]);
    let flow = FlowId {
        client: addr(c),
        server: addr(s),
    };
    e.handle(Event::RequestStarts {
        ts: t0(),
        flow,
        count: 10,
    });
    assert_eq!(
        found(&e),
        vec![(
            Kind::QuotaOvershoot,
            "orders".into(),
            "acme".into(),
            5,
            "10 req/s over quota 1".into()
        )]
    );
    e.handle(Event::FlowEnd {
        ts: t0() + 1,
        flow,
        reason: FlowEndReason::Fin,
        totals: None,
    });
    // Reported once it has lingered for late ACKs.
    assert_eq!(records(&mut e).len(), 0);
    e.tick(t0() + 20 * SEC);
    let r = records(&mut e);
    assert_eq!(r[0].requests, 10);
    let rates = e.client_rates(t0());
    let acme = rates
        .iter()
        .find(|r| &*r.client == "acme" && &*r.endpoint == "orders")
        .expect("acme on orders");
    assert_eq!(
        (acme.quota, acme.next_quota, acme.total),
        (1.0, Some(100.0), 10)
    );
    assert!(acme.headroom < 0.0);
    assert_eq!(acme.next_stage.as_deref(), Some("ramp"));
    // Kernel counts for a flow the engine never saw, and for one to no
    // watched endpoint, are in the baseline but charged to no one: each is
    // counted by its reason.
    e.handle(Event::RequestStarts {
        ts: t0() + 2,
        flow: FlowId {
            client: addr("10.1.0.9:5001"),
            server: addr(s),
        },
        count: 3,
    });
    let out = "10.1.0.9:5002";
    e.handle(pkt(
        t0() + 2,
        out,
        "192.0.2.1:9999",
        100,
        tcp_flags::SYN,
        b"",
    ));
    e.handle(pkt(
        t0() + 2,
        out,
        "192.0.2.1:9999",
        101,
        ACK,
        &get("/", Some("acme-token")),
    ));
    e.handle(Event::RequestStarts {
        ts: t0() + 2,
        flow: FlowId {
            client: addr(out),
            server: addr("192.0.2.1:9999"),
        },
        count: 2,
    });
    let st = e.stats();
    assert_eq!(
        (
            st.kernel_requests,
            st.kernel_requests_unmatched,
            st.kernel_requests_unwatched,
            st.engine_counted_requests
        ),
        (15, 3, 2, 0)
    );
    let charged: u64 = e.request_totals().iter().map(|t| t.total).sum();
    assert_eq!(charged, 10);
}

#[test]
fn idle_flows_expire_and_the_table_is_bounded() {
    let mut e = Engine::new(
        contract(),
        EngineOptions {
            flow: FlowConfig {
                max_flows: 2,
                ..FlowConfig::default()
            },
            ..EngineOptions::default()
        },
    );
    for port in 0..3 {
        let c = format!("10.1.0.9:{}", 5000 + port);
        e.handle(pkt(
            t0() + port,
            &c,
            "10.20.3.5:8080",
            1,
            tcp_flags::SYN,
            b"",
        ));
        e.handle(pkt(t0() + port, &c, "10.20.3.5:8080", 2, ACK, b"\x01"));
    }
    assert_eq!(e.flow_stats().evicted, 1);
    assert_eq!(records(&mut e).len(), 1);
    e.tick(t0() + 600 * SEC);
    let r = records(&mut e);
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|r| r.end == Some(FlowEndReason::Idle)));
    assert_eq!(e.flows().len(), 0);
}

#[test]
fn garbage_never_panics() {
    let mut e = engine();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let heads: [&[u8]; 5] = [
        b"GET ",
        b"\x16\x03\x01",
        b"PRI * HTTP/2.0",
        b"POST /v1/orders HTTP/1.1\r\n",
        b"\x80\x2e\x01",
    ];
    for i in 0..20_000u64 {
        let r = next();
        let mut payload: Vec<u8> = heads[(r % 5) as usize].to_vec();
        payload.extend((0..(r >> 8) % 300).map(|_| next() as u8));
        let port = 5000 + (r >> 20) % 7;
        let flags = [
            ACK,
            tcp_flags::SYN,
            tcp_flags::FIN | ACK,
            tcp_flags::RST,
            ACK | tcp_flags::PSH,
        ][((r >> 30) % 5) as usize];
        let (src, dst) = if r & (1 << 40) == 0 {
            (format!("10.1.0.9:{port}"), "10.20.1.5:443".to_owned())
        } else {
            ("10.20.1.5:443".to_owned(), format!("10.1.0.9:{port}"))
        };
        e.handle(pkt(
            t0() + i as Nanos * 1000,
            &src,
            &dst,
            (next() % 4096) as u32,
            flags,
            &payload,
        ));
    }
    e.finish();
    assert!(e.stats().packets == 20_000);
}

#[test]
fn reassembly_memory_is_bounded_across_flows() {
    let mut e = Engine::new(
        contract(),
        EngineOptions {
            flow: FlowConfig {
                max_buffered: 1,
                ..FlowConfig::default()
            },
            ..EngineOptions::default()
        },
    );
    let req = get("/v1/orders", Some("acme-token"));
    let (a, b) = req.split_at(20);
    for port in 0..3u16 {
        let c = format!("10.1.0.9:{}", 5000 + port);
        e.handle(pkt(t0(), &c, "10.20.2.5:8080", 100, tcp_flags::SYN, b""));
        // Half a head: buffered only while the budget allows.
        e.handle(pkt(t0(), &c, "10.20.2.5:8080", 101, ACK, a));
    }
    assert!(e.flow_stats().over_budget >= 2, "{:?}", e.flow_stats());
    // Heads in one segment are still parsed without a buffer.
    for port in 0..3u16 {
        let c = format!("10.1.0.9:{}", 5000 + port);
        e.handle(pkt(t0(), &c, "10.20.2.5:8080", 121, ACK, b));
        e.handle(pkt(
            t0(),
            &c,
            "10.20.2.5:8080",
            101 + req.len() as u32,
            ACK,
            &req,
        ));
    }
    e.finish();
    let total: u64 = records(&mut e).iter().map(|r| r.requests).sum();
    assert_eq!(total, 6);
}

#[test]
fn a_credential_replaces_an_identity_taken_from_the_source_address() {
    let opts = EngineOptions {
        requests_from_kernel: true,
        ..EngineOptions::default()
    };
    let mut e = Engine::new(contract(), opts);
    // From office's network, but carrying acme's key.
    let c = "10.30.0.9:5000";
    let s = "10.20.2.5:8080";
    let flow = FlowId {
        client: addr(c),
        server: addr(s),
    };
    e.handle(pkt(t0(), c, s, 100, tcp_flags::SYN, b""));
    // The kernel's count arrives before the request sample: the flow is
    // judged by its source address for now (office, quota 100).
    e.handle(Event::RequestStarts {
        ts: t0(),
        flow,
        count: 1,
    });
    let r = get("/v1/orders", Some("acme-token"));
    e.handle(pkt(t0(), c, s, 101, ACK, &r));
    // Then acme's key shows up: the credential wins, and acme's small
    // quota (1/s, burst 5) now takes the flow's requests.
    e.handle(Event::RequestStarts {
        ts: t0(),
        flow,
        count: 10,
    });
    let over: Vec<_> = found(&e)
        .into_iter()
        .filter(|f| f.0 == Kind::QuotaOvershoot)
        .map(|f| (f.1, f.2, f.3))
        .collect();
    assert_eq!(over, vec![("orders".into(), "acme".into(), 5)]);
}

#[test]
fn kernel_request_counts_keep_an_unsampled_keep_alive_flow_in_the_table() {
    let opts = EngineOptions {
        requests_from_kernel: true,
        ..EngineOptions::default()
    };
    let idle = opts.flow.idle_timeout;
    let mut e = Engine::new(contract(), opts);
    let (c, s) = ("10.1.0.9:5001", "10.20.2.5:8080");
    let flow = FlowId {
        client: addr(c),
        server: addr(s),
    };
    e.handle(pkt(t0(), c, s, 100, tcp_flags::SYN, b""));
    let r = get("/v1/orders", Some("acme-token"));
    e.handle(pkt(t0(), c, s, 101, ACK, &r));
    // Past its first segments the kernel samples few packets, but keeps
    // counting requests: the flow is busy, not idle.
    for i in 1..=3 {
        let ts = t0() + i * (idle / 2);
        e.handle(Event::RequestStarts { ts, flow, count: 1 });
        e.tick(ts);
    }
    assert_eq!(e.open_flows(), 1, "a flow counting requests idled out");
    assert_eq!(e.flows()[0].requests, 3);
    // Once quiet for the idle timeout it leaves.
    e.tick(t0() + 3 * (idle / 2) + idle + 1);
    assert_eq!(e.open_flows(), 0);
}
