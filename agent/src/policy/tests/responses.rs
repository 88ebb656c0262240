//! Whether the API said no: responses paired with their requests (HTTP/1
//! order, pipelining, interim and bodiless responses, lost segments; HTTP/2
//! by stream), the outcome of revoked, unknown and stale requests, 429s
//! against quota, and the response totals behind the metric.

use super::*;
use crate::event::tcp_flags;

/// One turn of a conversation: bytes from the client or the server, or
/// server bytes lost on the way (their sequence space is skipped).
enum Turn<'a> {
    C(&'a [u8]),
    S(&'a [u8]),
    LostS(usize),
    LostC(usize),
}
use Turn::{C, LostC, LostS, S};

const CLIENT: &str = "10.1.0.9:5000";
const PAYMENTS: &str = "10.20.1.5:80";
const ORDERS: &str = "10.20.2.5:8080";

/// A TCP connection with `turns` in order, then FIN both ways.
fn talk(e: &mut Engine, server: &str, turns: &[Turn<'_>]) {
    let ack = tcp_flags::ACK;
    e.handle(pkt(t0(), CLIENT, server, 100, tcp_flags::SYN, b""));
    e.handle(pkt(t0(), server, CLIENT, 500, tcp_flags::SYN | ack, b""));
    let (mut cseq, mut sseq) = (101u32, 501u32);
    for (i, t) in turns.iter().enumerate() {
        let ts = t0() + 1000 * (i as Nanos + 1);
        match t {
            C(b) => {
                e.handle(pkt(ts, CLIENT, server, cseq, ack | tcp_flags::PSH, b));
                cseq += b.len() as u32;
            }
            S(b) => {
                e.handle(pkt(ts, server, CLIENT, sseq, ack | tcp_flags::PSH, b));
                sseq += b.len() as u32;
            }
            LostS(n) => sseq += *n as u32,
            LostC(n) => cseq += *n as u32,
        }
    }
    end_flow(e, t0() + SEC, CLIENT, server, cseq, sseq);
}

fn resp(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn violation(e: &Engine, kind: Kind) -> Violation {
    e.violations()
        .into_iter()
        .find(|v| v.key.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} in {:?}", found(e)))
}

fn outcome(served: u64, refused: u64, unknown: u64) -> Outcome {
    Outcome {
        served,
        refused,
        unknown,
    }
}

fn totals(e: &Engine) -> Vec<(String, String, &'static str, u64)> {
    e.response_totals()
        .into_iter()
        .map(|r| {
            (
                r.endpoint.to_string(),
                r.client.to_string(),
                r.class,
                r.total,
            )
        })
        .collect()
}

fn escalations(e: &mut Engine) -> Vec<Severity> {
    e.drain()
        .filter_map(|o| match o {
            Output::Violation(ViolationEvent::Escalated(v)) => Some(v.severity),
            _ => None,
        })
        .collect()
}

#[test]
fn revoked_token_served_escalates_at_once() {
    let mut e = engine();
    let req = get("/v1/pay", Some("leaky-token"));
    talk(&mut e, PAYMENTS, &[C(&req), S(&resp("200 OK", "paid"))]);
    let v = violation(&e, Kind::RevokedClient);
    assert_eq!(v.outcome, outcome(1, 0, 0));
    // Open for a microsecond, far inside warnAfter (15m): the serving
    // alone makes it critical, once.
    assert_eq!(v.severity, Severity::Critical);
    assert_eq!(escalations(&mut e), vec![Severity::Critical]);
    assert_eq!(
        totals(&e),
        vec![("payments".into(), "leaky".into(), "2xx", 1)]
    );
}

#[test]
fn revoked_token_refused_stays_a_warning() {
    let mut e = engine();
    let req = get("/v1/pay", Some("leaky-token"));
    let no = resp("401 Unauthorized", "");
    let forbidden = resp("403 Forbidden", "no");
    talk(&mut e, PAYMENTS, &[C(&req), S(&no), C(&req), S(&forbidden)]);
    let v = violation(&e, Kind::RevokedClient);
    assert_eq!(v.outcome, outcome(0, 2, 0));
    assert_eq!(v.severity, Severity::Warning);
    assert!(escalations(&mut e).is_empty());
    assert_eq!(
        totals(&e),
        vec![("payments".into(), "leaky".into(), "4xx", 2)]
    );
}

#[test]
fn unknown_client_served_is_critical_and_stale_counts_too() {
    let mut e = engine();
    // orders is `internal`: authentication required.
    let anon = get("/v1/orders", None);
    talk(&mut e, ORDERS, &[C(&anon), S(&resp("200 OK", "[]"))]);
    let v = violation(&e, Kind::UnknownClient);
    assert_eq!(
        (v.outcome, v.severity),
        (outcome(1, 0, 0), Severity::Critical)
    );
    // oldco's credential is past the pilot's 90 days: stale, served, but
    // staleness alone does not escalate.
    let mut e = engine();
    let old = get("/v1/orders", Some("old-token"));
    talk(&mut e, ORDERS, &[C(&old), S(&resp("200 OK", "[]"))]);
    let v = violation(&e, Kind::StaleCredential);
    assert_eq!(
        (v.outcome, v.severity),
        (outcome(1, 0, 0), Severity::Warning)
    );
}

#[test]
fn pipelined_responses_pair_in_order_with_head_204_and_interim() {
    let mut e = engine();
    let mut reqs = get("/v1/a", Some("leaky-token"));
    reqs.extend(b"HEAD /v1/b HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer leaky-token\r\n\r\n");
    reqs.extend(get("/v1/c", Some("leaky-token")));
    reqs.extend(get("/v1/d", Some("leaky-token")));
    // 100 Continue is interim; the HEAD answer announces a body it does
    // not send; 204 has none; then a 403 with a body.
    let mut answers = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
    answers.extend(resp("401 Unauthorized", "x"));
    answers.extend(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
    answers.extend(b"HTTP/1.1 204 No Content\r\n\r\n");
    answers.extend(resp("403 Forbidden", "nope"));
    talk(
        &mut e,
        PAYMENTS,
        &[C(&reqs), S(&answers[..40]), S(&answers[40..])],
    );
    let v = violation(&e, Kind::RevokedClient);
    assert_eq!(v.count, 4);
    assert_eq!(v.outcome, outcome(2, 2, 0));
    assert_eq!(
        totals(&e),
        vec![
            ("payments".into(), "leaky".into(), "2xx", 2),
            ("payments".into(), "leaky".into(), "4xx", 2),
        ]
    );
}

#[test]
fn a_lost_response_is_unknown_never_guessed() {
    let mut e = engine();
    let mut two = get("/v1/a", Some("leaky-token"));
    two.extend(get("/v1/b", Some("leaky-token")));
    let first = resp("200 OK", "first");
    let second = resp("401 Unauthorized", "");
    // The first response's segment is lost: the second head shows up out
    // of place with two requests outstanding, so neither is paired.
    talk(&mut e, PAYMENTS, &[C(&two), LostS(first.len()), S(&second)]);
    let v = violation(&e, Kind::RevokedClient);
    assert_eq!(v.outcome, outcome(0, 0, 2));
    assert_eq!(v.severity, Severity::Warning);
    assert_eq!(
        totals(&e),
        vec![("payments".into(), "leaky".into(), "unknown", 2)]
    );
}

#[test]
fn one_outstanding_request_pairs_after_a_lost_body() {
    let mut e = engine();
    let req = get("/v1/a", Some("leaky-token"));
    // A chunked body loses the place of the next head; with one request
    // outstanding the next head can only answer it. A request never
    // answered (the connection ends) is unknown.
    let chunked = b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n";
    talk(
        &mut e,
        PAYMENTS,
        &[
            C(&req),
            S(chunked),
            S(b"4\r\nnope\r\n0\r\n\r\n"),
            C(&req),
            LostS(300),
            S(&resp("200 OK", "ok")),
            C(&req),
        ],
    );
    let v = violation(&e, Kind::RevokedClient);
    assert_eq!(v.outcome, outcome(1, 1, 1));
    assert_eq!(v.severity, Severity::Critical);
}

#[test]
fn a_request_after_lost_client_bytes_is_not_paired() {
    let mut e = engine();
    let req = get("/v1/a", Some("leaky-token"));
    // Client bytes lost (a request may hide there): the next head
    // resynchronises, and whatever answer comes cannot be told from the
    // unseen request's.
    talk(
        &mut e,
        PAYMENTS,
        &[
            C(&req),
            S(&resp("401 Unauthorized", "")),
            LostC(77),
            C(&req),
            S(&resp("200 OK", "ok")),
        ],
    );
    let v = violation(&e, Kind::RevokedClient);
    assert_eq!(v.outcome, outcome(0, 1, 1));
    assert_eq!(v.severity, Severity::Warning);
}

#[test]
fn quota_overshoot_counts_the_429s() {
    let mut e = engine();
    // acme on orders: burst 5 at 1 req/s in the pilot stage. Eight
    // requests at once: three over quota, which the API throttles.
    let req = get("/v1/orders", Some("acme-token"));
    let ok = resp("200 OK", "[]");
    let slow = resp("429 Too Many Requests", "");
    let mut turns = Vec::new();
    for i in 0..8 {
        turns.push(C(&req));
        turns.push(S(if i < 5 { &ok } else { &slow }));
    }
    talk(&mut e, ORDERS, &turns);
    let v = violation(&e, Kind::QuotaOvershoot);
    assert_eq!((v.count, v.throttled), (3, 3));
    assert_eq!(
        totals(&e),
        vec![
            ("orders".into(), "acme".into(), "2xx", 5),
            ("orders".into(), "acme".into(), "4xx", 3),
        ]
    );
}

#[test]
fn live_429s_wait_for_the_kernel_count() {
    let mut e = Engine::new(
        contract(),
        EngineOptions {
            requests_from_kernel: true,
            ..EngineOptions::default()
        },
    );
    let req = get("/v1/orders", Some("acme-token"));
    let slow = resp("429 Too Many Requests", "");
    let ok = resp("200 OK", "[]");
    let id = FlowId {
        client: addr(CLIENT),
        server: addr(ORDERS),
    };
    let ack = tcp_flags::ACK;
    e.handle(pkt(t0(), CLIENT, ORDERS, 100, tcp_flags::SYN, b""));
    e.handle(pkt(t0(), ORDERS, CLIENT, 500, tcp_flags::SYN | ack, b""));
    // Eight requests (the kernel counts them; the heads are only parsed),
    // the API answering 429 to all but the first two: stricter than the
    // contract's burst of 5.
    let (mut cseq, mut sseq) = (101u32, 501u32);
    for i in 0..8 {
        e.handle(pkt(t0() + 1 + i, CLIENT, ORDERS, cseq, ack, &req));
        cseq += req.len() as u32;
        let answer = if i < 2 { &ok } else { &slow };
        e.handle(pkt(t0() + 1 + i, ORDERS, CLIENT, sseq, ack, answer));
        sseq += answer.len() as u32;
    }
    // The kernel's count of eight arrives after every answer was seen: six
    // 429s wait, and only the three over quota count as throttled.
    e.handle(Event::RequestStarts {
        ts: t0() + 20,
        flow: id,
        count: 8,
    });
    let v = violation(&e, Kind::QuotaOvershoot);
    assert_eq!((v.count, v.throttled), (3, 3));
    // Once open, a 429 counts as it arrives.
    e.handle(pkt(t0() + 21, CLIENT, ORDERS, cseq, ack, &req));
    e.handle(pkt(t0() + 21, ORDERS, CLIENT, sseq, ack, &slow));
    let v = violation(&e, Kind::QuotaOvershoot);
    assert_eq!(v.throttled, 4);
}

#[test]
fn h2c_statuses_pair_by_stream() {
    // The fixture's token is leaky's here: revoked, four streams answered
    // 200, 401, 403, 200.
    let yaml = contract_yaml().replace(&fp("leaky-token"), &fp("tok-acme-7f3a9c1e5b2d4f60"));
    let contract = Arc::new(Contract::parse(&yaml, "unit.yaml").expect("valid contract"));
    let mut e = Engine::new(contract, EngineOptions::default());
    let client: &[u8] = include_bytes!("../../protocol/h2/testdata/indexed_credentials.client.bin");
    let server: &[u8] = include_bytes!("../../protocol/h2/testdata/indexed_credentials.server.bin");
    talk(&mut e, PAYMENTS, &[C(client), S(server)]);
    let v = violation(&e, Kind::RevokedClient);
    assert_eq!(v.outcome, outcome(2, 2, 0));
    assert_eq!(v.severity, Severity::Critical);
}

#[test]
fn a_clients_goaway_read_before_the_answers_does_not_drop_them() {
    // nghttp ends with GOAWAY(last_stream_id 0: the last *server* stream it
    // took) once it has its answers; read before the server's bytes, it
    // must not mark the client's streams unanswered.
    let yaml = contract_yaml().replace(&fp("leaky-token"), &fp("tok-acme-7f3a9c1e5b2d4f60"));
    let contract = Arc::new(Contract::parse(&yaml, "unit.yaml").expect("valid contract"));
    let mut e = Engine::new(contract, EngineOptions::default());
    let mut client =
        include_bytes!("../../protocol/h2/testdata/indexed_credentials.client.bin").to_vec();
    client.extend_from_slice(&[0, 0, 8, 0x07, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let server: &[u8] = include_bytes!("../../protocol/h2/testdata/indexed_credentials.server.bin");
    talk(&mut e, PAYMENTS, &[C(&client), S(server)]);
    assert_eq!(violation(&e, Kind::RevokedClient).outcome, outcome(2, 2, 0));
}

#[test]
fn a_servers_settings_read_before_the_clients_preface_is_not_lost() {
    // nghttpd writes its SETTINGS as soon as it accepts, while nghttp
    // writes its preface: live, the two directions' samples reach the ring
    // in either order. Read first, the server's SETTINGS must still reach
    // the HTTP/2 decoder; lost, the server direction starts with a gap, its
    // HPACK state is unknown and every response head that refers to an
    // entry an earlier one inserted (`server`, `date`) loses its `:status`.
    let yaml = contract_yaml().replace(&fp("leaky-token"), &fp("tok-acme-7f3a9c1e5b2d4f60"));
    let contract = Arc::new(Contract::parse(&yaml, "unit.yaml").expect("valid contract"));
    let mut e = Engine::new(contract, EngineOptions::default());
    let client: &[u8] = include_bytes!("../../protocol/h2/testdata/indexed_credentials.client.bin");
    let server: &[u8] = include_bytes!("../../protocol/h2/testdata/indexed_credentials.server.bin");
    // The server's first frame: its SETTINGS (9-byte header + payload).
    let settings = 9 + usize::from(u16::from_be_bytes([server[1], server[2]]));
    assert_eq!(server[3], 0x04, "the fixture's server starts with SETTINGS");
    let (settings, answers) = server.split_at(settings);
    talk(&mut e, PAYMENTS, &[S(settings), C(client), S(answers)]);
    let v = violation(&e, Kind::RevokedClient);
    assert_eq!(v.outcome, outcome(2, 2, 0));
    assert_eq!(v.severity, Severity::Critical);
}

#[test]
fn a_server_that_speaks_first_on_http1_still_pairs_its_answer() {
    // The server's greeting is kept while the client has not spoken (it
    // might be HTTP/2's SETTINGS); the client's request says HTTP/1, so
    // the greeting is let go and the response head pairs as before.
    let mut e = engine();
    let req = get("/v1/a", Some("leaky-token"));
    let ok = resp("200 OK", "ok");
    talk(&mut e, PAYMENTS, &[S(b"220 ready\r\n"), C(&req), S(&ok)]);
    assert_eq!(violation(&e, Kind::RevokedClient).outcome, outcome(1, 0, 0));
}

#[test]
fn h2c_reset_streams_are_unknown() {
    let yaml = contract_yaml().replace(&fp("leaky-token"), &fp("tok-acme-7f3a9c1e5b2d4f60"));
    let contract = Arc::new(Contract::parse(&yaml, "unit.yaml").expect("valid contract"));
    let mut e = Engine::new(contract, EngineOptions::default());
    let client: &[u8] = include_bytes!("../../protocol/h2/testdata/rst_goaway.client.bin");
    let server: &[u8] = include_bytes!("../../protocol/h2/testdata/rst_goaway.server.bin");
    talk(&mut e, PAYMENTS, &[C(client), S(server)]);
    let v = violation(&e, Kind::RevokedClient);
    let expect: serde_json::Value = serde_json::from_str(include_str!(
        "../../protocol/h2/testdata/rst_goaway.expect.json"
    ))
    .expect("fixture json");
    let answered = expect["responses"].as_object().map_or(0, |m| m.len()) as u64;
    assert_eq!(v.outcome.served + v.outcome.refused, answered);
    assert_eq!(v.outcome.unknown, v.count - answered);
    assert!(v.outcome.unknown > 0, "{:?}", v.outcome);
}

#[test]
fn live_sampling_heads_only_still_pairs_in_order() {
    // Live, the server's body segments are mostly unsampled: only heads
    // arrive, each where the previous body's Content-Length says.
    let mut e = engine();
    let req = get("/v1/a", Some("leaky-token"));
    let big = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n";
    let no = resp("401 Unauthorized", "");
    talk(
        &mut e,
        PAYMENTS,
        &[
            C(&req),
            S(big),
            LostS(3000),
            LostS(2000),
            C(&req),
            C(&req),
            S(&no),
            S(big),
            LostS(5000),
        ],
    );
    let v = violation(&e, Kind::RevokedClient);
    assert_eq!(v.outcome, outcome(2, 1, 0));
}

#[test]
fn a_head_cut_by_the_snaplen_counts_by_its_status_line() {
    let mut e = engine();
    let req = get("/v1/a", Some("leaky-token"));
    // A sample cut inside the head: the status is there, the body's end
    // is not, so the next head is paired only as the one outstanding.
    let mut cut = b"HTTP/1.1 403 Forbidden\r\nX-Long: ".to_vec();
    cut.extend(vec![b'y'; 200]);
    let ack = tcp_flags::ACK;
    e.handle(pkt(t0(), CLIENT, PAYMENTS, 100, tcp_flags::SYN, b""));
    e.handle(pkt(t0(), PAYMENTS, CLIENT, 500, tcp_flags::SYN | ack, b""));
    e.handle(pkt(t0() + 1, CLIENT, PAYMENTS, 101, ack, &req));
    let mut p = Packet {
        ts: t0() + 2,
        src: addr(PAYMENTS),
        dst: addr(CLIENT),
        seq: 501,
        flags: ack,
        payload_len: 4000,
        payload: bytes::Bytes::from(cut),
        direction: None,
    };
    e.handle(Event::Packet(p.clone()));
    e.handle(pkt(
        t0() + 3,
        CLIENT,
        PAYMENTS,
        101 + req.len() as u32,
        ack,
        &req,
    ));
    p.seq = 4501;
    p.payload_len = 40;
    p.payload = bytes::Bytes::from_static(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    e.handle(Event::Packet(p));
    let v = violation(&e, Kind::RevokedClient);
    assert_eq!(v.outcome, outcome(1, 1, 0));
}

#[test]
fn an_h2c_upgrade_is_answered_on_stream_1() {
    // GET /v1/upgrade with Upgrade: h2c, the server's 101 (a switch, not
    // the answer), then 200 on stream 1 (the upgraded request) and 404 on
    // stream 3. The fixture's token is leaky's (revoked) here.
    let yaml = contract_yaml().replace(&fp("leaky-token"), &fp("tok-acme-7f3a9c1e5b2d4f60"));
    let contract = Arc::new(Contract::parse(&yaml, "unit.yaml").expect("valid contract"));
    let mut e = Engine::new(contract, EngineOptions::default());
    let client: &[u8] = include_bytes!("../../protocol/h2/testdata/upgrade.client.bin");
    let server: &[u8] = include_bytes!("../../protocol/h2/testdata/upgrade.server.bin");
    talk(&mut e, PAYMENTS, &[C(client), S(server)]);
    let v = violation(&e, Kind::RevokedClient);
    assert_eq!((v.count, v.outcome), (2, outcome(1, 1, 0)));
    assert_eq!(
        totals(&e),
        vec![
            ("payments".into(), "leaky".into(), "2xx", 1),
            ("payments".into(), "leaky".into(), "4xx", 1),
        ]
    );
}

#[test]
fn a_server_that_never_answers_costs_bounded_memory() {
    let mut e = engine();
    // 300 pipelined requests, no answer: the oldest beyond the bound are
    // answered unknown at once, the rest when the flow ends.
    let req = get("/v1/a", Some("leaky-token"));
    let turns: Vec<Turn<'_>> = (0..300).map(|_| C(&req)).collect();
    talk(&mut e, PAYMENTS, &turns);
    let v = violation(&e, Kind::RevokedClient);
    assert_eq!((v.count, v.outcome), (300, outcome(0, 0, 300)));
}

/// One chunk of TLS clear text (an `SSL_read`/`SSL_write` of the server).
fn clear(flow: FlowId, dir: crate::event::Direction, offset: u64, data: &[u8]) -> Event {
    Event::Plaintext(crate::event::Plaintext {
        ts: t0() + offset as Nanos,
        flow,
        direction: dir,
        offset,
        len: data.len() as u32,
        data: bytes::Bytes::copy_from_slice(data),
        pid: 4242,
    })
}

#[test]
fn inside_tls_http1_and_http2_answers_pair_too() {
    use crate::event::Direction::{ToClient, ToServer};
    let id = FlowId {
        client: addr(CLIENT),
        server: addr("10.20.1.5:443"),
    };
    // HTTP/1 in the clear text: refused, then served, as SSL calls (the
    // head and the body of a response in two writes).
    let mut e = engine();
    let req = get("/v1/pay", Some("leaky-token"));
    let no = resp("401 Unauthorized", "");
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n";
    let (mut up, mut down) = (0u64, 0u64);
    for answer in [&no[..], head, b"paid"] {
        if answer != b"paid" {
            e.handle(clear(id, ToServer, up, &req));
            up += req.len() as u64;
        }
        e.handle(clear(id, ToClient, down, answer));
        down += answer.len() as u64;
    }
    let v = violation(&e, Kind::RevokedClient);
    assert_eq!(v.outcome, outcome(1, 1, 0));
    assert_eq!(v.severity, Severity::Critical);

    // HTTP/2 (ALPN h2): four streams answered 200, 401, 403, 200, the
    // server's bytes in calls that cut its frames.
    let yaml = contract_yaml().replace(&fp("leaky-token"), &fp("tok-acme-7f3a9c1e5b2d4f60"));
    let contract = Arc::new(Contract::parse(&yaml, "unit.yaml").expect("valid contract"));
    let mut e = Engine::new(contract, EngineOptions::default());
    let client: &[u8] = include_bytes!("../../protocol/h2/testdata/indexed_credentials.client.bin");
    let server: &[u8] = include_bytes!("../../protocol/h2/testdata/indexed_credentials.server.bin");
    e.handle(clear(id, ToServer, 0, client));
    let mut off = 0;
    for c in server.chunks(37) {
        e.handle(clear(id, ToClient, off, c));
        off += c.len() as u64;
    }
    let v = violation(&e, Kind::RevokedClient);
    assert_eq!((v.count, v.outcome), (4, outcome(2, 2, 0)));
}
