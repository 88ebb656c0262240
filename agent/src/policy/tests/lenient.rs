//! HTTP/1 request heads a strict parser rejects but a lenient server
//! serves: counted, identified and judged like any other, in replay and
//! live (where the kernel, which counts by its method table, cannot).

use super::*;
use crate::event::tcp_flags;

const ACK: u8 = tcp_flags::ACK;

fn auth(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// One keep-alive connection to orders carrying `heads`, one segment each.
fn conn(e: &mut Engine, heads: &[Vec<u8>]) {
    let (c, s) = ("10.1.0.9:5000", "10.20.2.5:8080");
    e.handle(pkt(t0(), c, s, 100, tcp_flags::SYN, b""));
    let mut seq = 101;
    for h in heads {
        e.handle(pkt(t0(), c, s, seq, ACK, h));
        seq += h.len() as u32;
    }
    end_flow(e, t0() + 1, c, s, seq, 501);
}

fn forms(token: &str) -> Vec<Vec<u8>> {
    let a = auth(token);
    vec![
        // An extension method (Go and python serve any token).
        format!("PURGE /v1/orders HTTP/1.1\r\nHost: api\r\n{a}\r\n").into_bytes(),
        // A lowercase method and doubled spaces (python splits on any
        // whitespace).
        format!("get  /v1/orders   HTTP/1.1\r\nHost: api\r\n{a}\r\n").into_bytes(),
        // Bare LF line ends, whitespace before a colon.
        format!("GET /v1/orders HTTP/1.1\nHost: api\nAuthorization : Bearer {token}\n\n")
            .into_bytes(),
        // HTTP/0.9: a request line alone, shorter than the kernel's 16
        // bytes.
        b"GET /v1/orders\n".to_vec(),
    ]
}

#[test]
fn every_lenient_form_counts_and_is_judged() {
    let mut e = engine();
    conn(&mut e, &forms("leaky-token"));
    let got: Vec<_> = found(&e).into_iter().map(|v| (v.0, v.2, v.3)).collect();
    assert_eq!(
        got,
        vec![
            // The three forms that carry the revoked token raise it; the
            // HTTP/0.9 request has no headers at all.
            (Kind::RevokedClient, "leaky".to_owned(), 3),
            (Kind::UnknownClient, "unknown".to_owned(), 1),
        ]
    );
    let totals = e.request_totals();
    let n: u64 = totals.iter().map(|t| t.total).sum();
    assert_eq!(n, 4, "{totals:?}");
    // Each is malformed (the strict parser refuses it), under the labels
    // its request counts by.
    let mut malformed: Vec<_> = totals
        .iter()
        .map(|t| (&*t.endpoint, &*t.client, t.malformed))
        .collect();
    malformed.sort();
    assert_eq!(
        malformed,
        vec![("orders", "leaky", 3), ("orders", "unknown", 1)]
    );
}

#[test]
fn live_the_engine_counts_what_the_kernel_method_table_misses() {
    let opts = EngineOptions {
        requests_from_kernel: true,
        ..EngineOptions::default()
    };
    let mut e = Engine::new(contract(), opts);
    let heads: Vec<Vec<u8>> = (0..3)
        .flat_map(|_| forms("acme-token"))
        .chain([get("/v1/orders", Some("acme-token"))])
        .collect();
    conn(&mut e, &heads);
    // The kernel saw one segment starting with a method of its table and
    // at least 16 bytes per third form and per plain GET: 3 + 1.
    let id = FlowId {
        client: addr("10.1.0.9:5000"),
        server: addr("10.20.2.5:8080"),
    };
    e.handle(Event::RequestStarts {
        ts: t0() + 2,
        flow: id,
        count: 4,
    });
    let totals = e.request_totals();
    let of = |client: &str| -> u64 {
        totals
            .iter()
            .filter(|t| &*t.client == client)
            .map(|t| t.total)
            .sum()
    };
    // 13 requests, none counted twice: 4 from the kernel (charged to the
    // flow's client, acme), 9 the engine counted itself: PURGE and
    // `get  ` (acme's token) and HTTP/0.9 (no headers: unknown), three
    // times each.
    assert_eq!((of("acme"), of("unknown")), (10, 3), "{totals:?}");
    // The balance the agent exports: 4 from the kernel's baseline plus 9
    // the engine counted itself make the 13 charged.
    let st = e.stats();
    assert_eq!(st.engine_counted_requests, 9);
    assert_eq!(
        st.kernel_requests_unwatched + st.kernel_requests_unmatched,
        0
    );
    // acme's orders quota is 1/s with a burst of 5.
    assert!(kinds(&e).contains(&Kind::QuotaOvershoot));
}

#[test]
fn a_body_that_looks_like_a_request_line_is_not_one() {
    let mut e = engine();
    let body = b"GET /v1/orders HTTP/1.1\r\n\r\n";
    let post = format!(
        "POST /v1/orders HTTP/1.1\r\nHost: api\r\n{}Content-Length: {}\r\n\r\n",
        auth("acme-token"),
        body.len()
    );
    let mut seg = post.into_bytes();
    seg.extend_from_slice(body);
    conn(&mut e, &[seg, b"free text\r\n".to_vec()]);
    let n: u64 = e.request_totals().iter().map(|t| t.total).sum();
    assert_eq!(n, 1);
}
