//! HTTP/1 request heads a strict parser rejects but a lenient server
//! serves: counted, identified and judged like any other, in replay and
//! live (where the kernel, which counts by its method table, cannot).

use super::*;
use crate::event::tcp_flags;

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

/// Live, segments the kernel did not sample leave the request cursor
/// without a place: `segments` are (bytes skipped before, bytes) on one
/// connection to orders, skipped bytes never seen (as when a sample is not
/// taken). Returns the flow id.
fn sampled_conn(e: &mut Engine, segments: &[(u32, Vec<u8>)]) -> FlowId {
    let (c, s) = ("10.1.0.9:5000", "10.20.2.5:8080");
    e.handle(pkt(t0(), c, s, 100, tcp_flags::SYN, b""));
    let mut seq = 101u32;
    for (skip, bytes) in segments {
        seq += skip;
        e.handle(pkt(t0(), c, s, seq, ACK, bytes));
        seq += bytes.len() as u32;
    }
    end_flow(e, t0() + 1, c, s, seq, 501);
    FlowId {
        client: addr(c),
        server: addr(s),
    }
}

fn live_engine() -> Engine {
    let opts = EngineOptions {
        requests_from_kernel: true,
        ..EngineOptions::default()
    };
    Engine::new(contract(), opts)
}

fn totals_of(e: &Engine) -> Vec<(String, u64, u64)> {
    let mut v: Vec<_> = e
        .request_totals()
        .iter()
        .map(|t| (t.client.to_string(), t.total, t.malformed))
        .collect();
    v.sort();
    v
}

fn head(method: &str, token: &str) -> Vec<u8> {
    format!(
        "{method} /v1/orders HTTP/1.1\r\nHost: api\r\n{}\r\n",
        auth(token)
    )
    .into_bytes()
}

#[test]
fn after_unsampled_bytes_a_lenient_head_resynchronises() {
    let mut e = live_engine();
    let purge = head("PURGE", "acme-token");
    let gap = 10 * purge.len() as u32;
    sampled_conn(
        &mut e,
        &[
            (0, purge.clone()),
            (0, purge.clone()),
            // Ten requests unseen, then a sampled PURGE: not where a head
            // is known to be due, but a whole head naming HTTP/1.1.
            (gap, purge.clone()),
            // Due right after it, so accepted in forms a gap would not
            // take: a method longer than the kernel's sampling word, and
            // HTTP/0.9 (no headers: unknown).
            (0, head("SUBSCRIBE", "acme-token")),
            (0, b"GET /v1/orders\n".to_vec()),
            (0, purge),
        ],
    );
    // Nothing the kernel's table counts: the engine counts all six.
    assert_eq!(e.stats().engine_counted_requests, 6);
    assert_eq!(
        totals_of(&e),
        vec![("acme".to_owned(), 5, 5), ("unknown".to_owned(), 1, 1)]
    );
}

#[test]
fn after_a_gap_a_word_and_a_space_is_not_a_request() {
    let mut e = live_engine();
    let purge = head("PURGE", "acme-token");
    sampled_conn(
        &mut e,
        &[
            (0, purge),
            // Body segments (a text upload whose head was not seen) that
            // start like a request line, and heads too weak to trust
            // after a gap: cut short by the sample, HTTP/0.9, HTTP/2.0.
            (700, b"hello world, and more text\r\n\r\n".to_vec()),
            (
                300,
                b"note /v1/orders HTTP/1.1 is the path\r\n\r\n".to_vec(),
            ),
            (300, b"PURGE /v1/orders HTTP/1.1\r\nHost: api\r\n".to_vec()),
            (300, b"PURGE /v1/orders\r\n".to_vec()),
            (300, b"PURGE /v1/orders HTTP/2.0\r\n\r\n".to_vec()),
            (
                300,
                b"{\"op\": \"PURGE /v1/orders HTTP/1.1\"}\r\n\r\n".to_vec(),
            ),
        ],
    );
    assert_eq!(e.stats().engine_counted_requests, 1);
    assert_eq!(totals_of(&e), vec![("acme".to_owned(), 1, 1)]);
}

#[test]
fn after_a_gap_known_methods_stay_the_kernels_to_count() {
    let mut e = live_engine();
    let purge = head("PURGE", "acme-token");
    let id = sampled_conn(
        &mut e,
        &[
            (0, purge.clone()),
            // Known methods resynchronise as before, in strict and in
            // lenient form (doubled spaces): the kernel counted both.
            (900, head("GET", "acme-token")),
            (0, purge.clone()),
            (
                900,
                b"GET  /v1/orders  HTTP/1.1\r\nHost: api\r\n\r\n".to_vec(),
            ),
            (0, purge),
        ],
    );
    e.handle(Event::RequestStarts {
        ts: t0() + 2,
        flow: id,
        count: 2,
    });
    // 3 PURGE by the engine, 2 GET by the kernel, none twice.
    assert_eq!(e.stats().engine_counted_requests, 3);
    let total: u64 = e.request_totals().iter().map(|t| t.total).sum();
    assert_eq!(total, 5, "{:?}", totals_of(&e));
}
