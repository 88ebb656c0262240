//! HTTP/2 in clear text on the wire (h2c), as replay sees it: every client
//! stream is a request with its identity, counted, and the flow is
//! plaintext (so `unencrypted_flow` on a class that requires encryption).

use super::*;
use crate::{event::tcp_flags, protocol::Protocol};

const INDEXED: (&[u8], &[u8]) = (
    include_bytes!("../../protocol/h2/testdata/indexed_credentials.client.bin"),
    include_bytes!("../../protocol/h2/testdata/indexed_credentials.server.bin"),
);
const UPGRADE: (&[u8], &[u8]) = (
    include_bytes!("../../protocol/h2/testdata/upgrade.client.bin"),
    include_bytes!("../../protocol/h2/testdata/upgrade.server.bin"),
);

/// A TCP connection carrying `client` then `server` bytes in segments of
/// `mss` (each direction in order, the client's first: the decoder reads
/// the two directions independently).
fn tcp(e: &mut Engine, c: &str, s: &str, client: &[u8], server: &[u8], mss: usize) {
    let ack = tcp_flags::ACK;
    e.handle(pkt(t0(), c, s, 100, tcp_flags::SYN, b""));
    e.handle(pkt(t0(), s, c, 500, tcp_flags::SYN | ack, b""));
    let mut cseq = 101u32;
    for seg in client.chunks(mss) {
        e.handle(pkt(t0() + 1, c, s, cseq, ack, seg));
        cseq += seg.len() as u32;
    }
    let mut sseq = 501u32;
    for seg in server.chunks(mss) {
        e.handle(pkt(t0() + 2, s, c, sseq, ack, seg));
        sseq += seg.len() as u32;
    }
    end_flow(e, t0() + 3, c, s, cseq, sseq);
}

/// The flow records once a minute has passed (the flows idled out).
fn records(e: &mut Engine) -> Vec<FlowRecord> {
    e.tick(t0() + 60 * SEC);
    super::records(e)
}

#[test]
fn prior_knowledge_h2c_counts_and_identifies_every_stream() {
    let mut e = h2_engine(EngineOptions::default());
    let (client, server) = INDEXED;
    // payments (pii, encryption required) on port 80.
    tcp(&mut e, "10.1.0.9:5000", "10.20.1.5:80", client, server, 90);
    let got: Vec<_> = found(&e)
        .into_iter()
        .map(|v| (v.0, v.2, v.3, v.4))
        .collect();
    assert_eq!(
        got,
        vec![(
            Kind::UnencryptedFlow,
            "acme".to_owned(),
            1,
            "plaintext HTTP/2 (h2c) to class pii".to_owned()
        )]
    );
    let r = records(&mut e);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].protocol, Protocol::H2c);
    assert_eq!((r[0].requests, &*r[0].client), (4, "acme"));
}

#[test]
fn upgraded_h2c_counts_the_upgrade_request_and_the_streams_after_it() {
    let mut e = h2_engine(EngineOptions::default());
    let (client, server) = UPGRADE;
    tcp(
        &mut e,
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        client,
        server,
        64,
    );
    let r = records(&mut e);
    assert_eq!(r[0].protocol, Protocol::H2c);
    // The HTTP/1 upgrade request (stream 1) and stream 3 over HTTP/2.
    assert_eq!((r[0].requests, &*r[0].client), (2, "acme"));
    // /v1/second is outside orders' paths.
    let kinds: Vec<Kind> = found(&e).into_iter().map(|v| v.0).collect();
    assert_eq!(kinds, vec![Kind::UnlistedEndpoint]);
}

#[test]
fn a_refused_upgrade_stays_http1() {
    let mut e = h2_engine(EngineOptions::default());
    let (c, s) = ("10.1.0.9:5000", "10.20.2.5:8080");
    let ack = tcp_flags::ACK;
    let upgrade =
        b"GET /v1/orders HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
    let second = get("/v1/orders", Some("tok-acme-7f3a9c1e5b2d4f60"));
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    e.handle(pkt(t0(), c, s, 100, tcp_flags::SYN, b""));
    e.handle(pkt(t0(), s, c, 500, tcp_flags::SYN | ack, b""));
    e.handle(pkt(t0() + 1, c, s, 101, ack, upgrade));
    // The server answers without switching, and the client goes on in
    // HTTP/1.
    e.handle(pkt(t0() + 2, s, c, 501, ack, ok));
    let cseq = 101 + upgrade.len() as u32;
    e.handle(pkt(t0() + 3, c, s, cseq, ack, &second));
    e.handle(pkt(t0() + 4, s, c, 501 + ok.len() as u32, ack, ok));
    end_flow(
        &mut e,
        t0() + 5,
        c,
        s,
        cseq + second.len() as u32,
        501 + 2 * ok.len() as u32,
    );
    let r = records(&mut e);
    assert_eq!(r[0].protocol, Protocol::Http);
    assert_eq!((r[0].requests, &*r[0].client), (2, "acme"));
}
