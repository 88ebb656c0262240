//! TLS clear text from the library probes (`Event::Plaintext`), joined to
//! the wire flow that carried the handshake: requests inside TLS are judged
//! as plaintext ones are (identity by credential, revocation, staleness,
//! unknown clients, unlisted paths, quotas), and the flow stays TLS.

use super::{
    encryption::{client_hello, server_hello},
    *,
};
use crate::{
    event::{Direction, FlowEndReason, Plaintext},
    policy::view::Via,
    protocol::Protocol,
};

const GCM13: u16 = 0x1301; // TLS_AES_128_GCM_SHA256

fn flow_id(client: &str, server: &str) -> FlowId {
    FlowId {
        client: addr(client),
        server: addr(server),
    }
}

fn chunk(ts: Nanos, flow: FlowId, dir: Direction, offset: u64, data: &[u8]) -> Event {
    Event::Plaintext(Plaintext {
        ts,
        flow,
        direction: dir,
        offset,
        len: data.len() as u32,
        data: Bytes::copy_from_slice(data),
        pid: 4242,
    })
}

/// A TLS 1.3 handshake on the wire (SYN, ClientHello with `sni`,
/// ServerHello, first application data), then each request as one
/// `SSL_read` of the server, each answered by a one-line response.
fn https(e: &mut Engine, ts: Nanos, client: &str, server: &str, sni: &str, requests: &[Vec<u8>]) {
    let ch = client_hello(sni, 0x0304, &[GCM13]);
    let sh = server_hello(0x0304, GCM13);
    e.handle(pkt(ts, client, server, 100, tcp_flags::SYN, b""));
    e.handle(pkt(
        ts,
        server,
        client,
        500,
        tcp_flags::SYN | tcp_flags::ACK,
        b"",
    ));
    e.handle(pkt(ts + 1, client, server, 101, tcp_flags::ACK, &ch));
    e.handle(pkt(ts + 2, server, client, 501, tcp_flags::ACK, &sh));
    let app = [0x17, 3, 3, 0, 4, 1, 2, 3, 4];
    let cseq = 101 + ch.len() as u32;
    e.handle(pkt(ts + 3, client, server, cseq, tcp_flags::ACK, &app));
    let id = flow_id(client, server);
    let (mut up, mut down) = (0, 0);
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    for (i, r) in requests.iter().enumerate() {
        let t = ts + 10 + i as Nanos;
        e.handle(chunk(t, id, Direction::ToServer, up, r));
        up += r.len() as u64;
        e.handle(chunk(t, id, Direction::ToClient, down, response));
        down += response.len() as u64;
    }
}

fn close(e: &mut Engine, ts: Nanos, client: &str, server: &str) {
    e.handle(Event::FlowEnd {
        ts,
        flow: flow_id(client, server),
        reason: FlowEndReason::Fin,
        totals: None,
    });
}

#[test]
fn a_bearer_token_inside_tls_identifies_its_client() {
    let mut e = engine();
    let (c, s) = ("10.1.0.9:5000", "10.20.1.5:443");
    let reqs = vec![get("/v1/pay", Some("acme-token")); 3];
    https(&mut e, t0(), c, s, "payments.example.com", &reqs);
    assert_eq!(found(&e), vec![], "benign TLS raises nothing");
    close(&mut e, t0() + SEC, c, s);
    e.tick(t0() + 20 * SEC);
    let r = records(&mut e);
    assert_eq!(r.len(), 1);
    let r = &r[0];
    assert_eq!(r.protocol, Protocol::Tls);
    assert_eq!(r.tls_version, Some(crate::flow::TlsVersion::Tls13));
    assert_eq!((&*r.client, &*r.endpoint), ("acme", "payments"));
    assert_eq!(r.identified_by, Via::Credential);
    assert_eq!(r.requests, 3);
    assert!(r.plaintext, "the record says the clear text was seen");
}

#[test]
fn revoked_stale_and_missing_credentials_inside_tls_raise_their_violations() {
    let mut e = engine();
    let s = "10.20.1.5:443";
    let sni = "payments.example.com";
    https(
        &mut e,
        t0(),
        "10.1.0.1:5001",
        s,
        sni,
        &[get("/v1/pay", Some("leaky-token"))],
    );
    https(
        &mut e,
        t0(),
        "10.1.0.2:5002",
        s,
        sni,
        &[get("/v1/pay", Some("old-token"))],
    );
    https(
        &mut e,
        t0(),
        "10.1.0.3:5003",
        s,
        sni,
        &[get("/v1/pay", None)],
    );
    https(
        &mut e,
        t0(),
        "10.1.0.4:5004",
        s,
        sni,
        &[get("/v1/pay", Some("who-knows"))],
    );
    let got: Vec<_> = found(&e)
        .into_iter()
        .map(|(k, ep, cl, n, _)| (k, ep, cl, n))
        .collect();
    let want = |k, cl: &str, n| (k, "payments".to_owned(), cl.to_owned(), n);
    // Neither leaky nor oldco has a quota on payments: their requests are
    // over a quota of 0 as well. The two unknown clients share one
    // violation (kind, endpoint, client "unknown") of two occurrences.
    assert_eq!(
        got,
        vec![
            want(Kind::QuotaOvershoot, "leaky", 1),
            want(Kind::QuotaOvershoot, "oldco", 1),
            want(Kind::RevokedClient, "leaky", 1),
            want(Kind::StaleCredential, "oldco", 1),
            want(Kind::UnknownClient, "unknown", 2),
        ],
        "TLS flows are never unencrypted, and each term holds inside TLS"
    );
}

#[test]
fn an_unlisted_path_inside_tls_is_seen() {
    let mut e = engine();
    // orders lists only /v1/orders.
    https(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        "orders.internal",
        &[get("/admin/export", Some("acme-token"))],
    );
    let got = found(&e);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, Kind::UnlistedEndpoint);
    assert_eq!(got[0].2, "acme");
}

#[test]
fn kernel_counted_tls_requests_charge_the_client_the_plaintext_named() {
    let opts = EngineOptions {
        requests_from_kernel: true,
        ..EngineOptions::default()
    };
    let mut e = Engine::new(contract(), opts);
    let (c, s) = ("10.1.0.9:5000", "10.20.2.5:8080");
    // Only the first request's bytes arrived (the rest were lost in the
    // ring); the kernel counted all ten.
    https(
        &mut e,
        t0(),
        c,
        s,
        "orders.internal",
        &[get("/v1/orders", Some("acme-token"))],
    );
    assert_eq!(found(&e), vec![]);
    e.handle(Event::RequestStarts {
        ts: t0() + 20,
        flow: flow_id(c, s),
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
}

#[test]
fn pipelined_heads_in_one_read_and_a_gap_before_the_next() {
    let mut e = engine();
    let (c, s) = ("10.1.0.9:5000", "10.20.1.5:443");
    let id = flow_id(c, s);
    https(&mut e, t0(), c, s, "payments.example.com", &[]);
    let mut two = get("/v1/a", Some("acme-token"));
    two.extend(get("/v1/b", Some("acme-token")));
    e.handle(chunk(t0() + 20, id, Direction::ToServer, 0, &two));
    // 5000 bytes of a request body never arrived; the next head did.
    let at = two.len() as u64 + 5000;
    e.handle(chunk(
        t0() + 21,
        id,
        Direction::ToServer,
        at,
        &get("/v1/c", Some("acme-token")),
    ));
    close(&mut e, t0() + SEC, c, s);
    e.tick(t0() + 20 * SEC);
    let r = records(&mut e);
    assert_eq!(r[0].requests, 3);
    assert_eq!(r[0].gaps, 1);
    assert_eq!(&*r[0].client, "acme");
}

#[test]
fn a_connection_older_than_the_probes_is_joined_from_its_plaintext() {
    let mut e = engine();
    let (c, s) = ("10.1.0.9:5000", "10.20.1.5:443");
    let id = flow_id(c, s);
    // No handshake seen; the first plaintext byte seen is 70000 bytes in.
    e.handle(chunk(
        t0(),
        id,
        Direction::ToServer,
        70_000,
        &get("/v1/pay", Some("leaky-token")),
    ));
    let got: Vec<_> = found(&e).into_iter().map(|v| (v.0, v.2)).collect();
    assert_eq!(
        got,
        vec![
            (Kind::QuotaOvershoot, "leaky".to_owned()),
            (Kind::RevokedClient, "leaky".to_owned())
        ]
    );
    let flows = e.flows();
    assert_eq!(flows[0].protocol, Protocol::Tls);
    assert_eq!(flows[0].requests, 1);
}

#[test]
fn cut_and_garbage_plaintext_never_panics() {
    let mut e = engine();
    let id = flow_id("10.1.0.9:5000", "10.20.1.5:443");
    let junk: Vec<u8> = (0..=255u8).cycle().take(9000).collect();
    for (i, w) in junk.chunks(700).enumerate() {
        let dir = if i % 2 == 0 {
            Direction::ToServer
        } else {
            Direction::ToClient
        };
        e.handle(chunk(t0(), id, dir, (i * 700) as u64, w));
    }
    // A call of 16 KiB of which 4 KiB were copied.
    e.handle(Event::Plaintext(Plaintext {
        ts: t0(),
        flow: id,
        direction: Direction::ToServer,
        offset: 1 << 40,
        len: 16384,
        data: Bytes::from(vec![b'G'; 4096]),
        pid: 1,
    }));
    e.tick(t0() + 400 * SEC);
    e.finish();
}

/// Client and server bytes of an HTTP/2 connection made by python-h2
/// (`protocol/h2/testdata/gen.py`).
const H2_INDEXED: (&[u8], &[u8]) = (
    include_bytes!("../../protocol/h2/testdata/indexed_credentials.client.bin"),
    include_bytes!("../../protocol/h2/testdata/indexed_credentials.server.bin"),
);
const H2_MULTIPLEX: (&[u8], &[u8]) = (
    include_bytes!("../../protocol/h2/testdata/multiplex.client.bin"),
    include_bytes!("../../protocol/h2/testdata/multiplex.server.bin"),
);

/// Live: HTTP/1 counts come from the kernel, HTTP/2 ones cannot.
fn live() -> EngineOptions {
    EngineOptions {
        requests_from_kernel: true,
        ..EngineOptions::default()
    }
}

/// `bytes` of one direction as SSL calls of at most `call` bytes, from
/// stream offset `from`; returns the offset after them.
fn calls(
    e: &mut Engine,
    flow: FlowId,
    dir: Direction,
    bytes: &[u8],
    call: usize,
    from: u64,
) -> u64 {
    let mut off = from;
    for c in bytes.chunks(call) {
        e.handle(chunk(t0() + 30, flow, dir, off, c));
        off += c.len() as u64;
    }
    off
}

#[test]
fn http2_inside_tls_names_its_client_and_counts_every_stream() {
    let mut e = h2_engine(live());
    let (c, s) = ("10.1.0.9:5000", "10.20.1.5:443");
    let id = flow_id(c, s);
    https(&mut e, t0(), c, s, "payments.example.com", &[]);
    let (client, server) = H2_INDEXED;
    // The server's SETTINGS may come first; calls of odd sizes cut frames.
    calls(&mut e, id, Direction::ToClient, &server[..9], 1000, 0);
    calls(&mut e, id, Direction::ToServer, client, 37, 0);
    calls(&mut e, id, Direction::ToClient, &server[9..], 100, 9);
    assert_eq!(found(&e), vec![], "acme within its quota raises nothing");
    let f = e.flows();
    assert_eq!((f[0].requests, &*f[0].client), (4, "acme"));
    assert_eq!(f[0].identified_by, Via::Credential);
    assert!(
        e.request_totals()
            .iter()
            .any(|r| &*r.client == "acme" && r.total == 4)
    );
}

#[test]
fn a_multiplexed_http2_burst_inside_tls_is_counted_exactly() {
    let mut e = h2_engine(live());
    let (c, s) = ("10.1.0.9:5000", "10.20.1.5:443");
    let id = flow_id(c, s);
    https(&mut e, t0(), c, s, "payments.example.com", &[]);
    let (client, server) = H2_MULTIPLEX;
    calls(&mut e, id, Direction::ToServer, client, 4096, 0);
    calls(&mut e, id, Direction::ToClient, server, 4096, 0);
    // 60 streams of four tenants nobody listed: one unknown_client
    // violation of 60 occurrences.
    let got = found(&e);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0, got[0].3), (Kind::UnknownClient, 60));
    assert_eq!(e.flows()[0].requests, 60);
}

#[test]
fn lost_http2_bytes_still_count_the_streams_and_keep_the_identity() {
    let mut e = h2_engine(live());
    let (c, s) = ("10.1.0.9:5000", "10.20.1.5:443");
    let id = flow_id(c, s);
    https(&mut e, t0(), c, s, "payments.example.com", &[]);
    let (client, server) = H2_INDEXED;
    calls(&mut e, id, Direction::ToClient, server, 4096, 0);
    // The first request arrives whole; the second one's header block is
    // lost (the HPACK state with it); the last two arrive.
    let headers = frame_starts(client, 0x1);
    assert_eq!(headers.len(), 4, "four requests in the fixture");
    let (lost_from, lost_to) = (headers[1] + 9, headers[2]);
    calls(
        &mut e,
        id,
        Direction::ToServer,
        &client[..lost_from],
        4096,
        0,
    );
    let rest = &client[lost_to..];
    calls(&mut e, id, Direction::ToServer, rest, 4096, lost_to as u64);
    let f = e.flows();
    assert_eq!(&*f[0].client, "acme", "the identity known stays");
    assert_eq!(f[0].gaps, 1);
    assert_eq!(f[0].requests, 4, "every HEADERS opening a stream counts");
}

/// Offsets of the frames of `kind` in a client's HTTP/2 bytes (after the
/// 24-byte preface).
fn frame_starts(bytes: &[u8], kind: u8) -> Vec<usize> {
    let mut at = 24;
    let mut found = Vec::new();
    while let Some(h) = bytes.get(at..at + 9) {
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        if h[3] == kind {
            found.push(at);
        }
        at += 9 + len;
    }
    found
}
