//! HTTP/2 parser tests on real byte streams: python3-h2 (testdata/gen.py,
//! with the expectations it wrote) and loopback captures of nghttp to
//! nghttpd and of python3-grpcio (testdata/capture.sh). Lost bytes and bad input: `tests_lossy.rs`.

use std::collections::BTreeMap;

use super::{
    H2Connection, H2Event, H2Limits, H2Stats,
    frame::{FrameHeader, HEADER_LEN, PREFACE},
};
use crate::{
    event::Direction::{ToClient, ToServer},
    identity::credential_fingerprint,
    protocol::http::{CredentialHeaders, Request},
};

pub(super) const STD: &CredentialHeaders = &CredentialHeaders::STANDARD;

pub(super) fn fixture(name: &str) -> (Vec<u8>, Vec<u8>, serde_json::Value) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/protocol/h2/testdata/");
    let read = |suffix: &str| std::fs::read(format!("{dir}{name}.{suffix}")).unwrap();
    let expect = serde_json::from_slice(&read("expect.json")).unwrap();
    (read("client.bin"), read("server.bin"), expect)
}

/// Events and counters of one connection fed all client bytes, then all
/// server bytes, each in chunks of `chunk` bytes (0: whole).
pub(super) fn run(
    conn: &mut H2Connection,
    client: &[u8],
    server: &[u8],
    chunk: usize,
) -> Vec<H2Event> {
    let mut out = Vec::new();
    for (dir, bytes) in [(ToServer, client), (ToClient, server)] {
        if chunk == 0 {
            conn.feed(dir, bytes, STD, &mut out);
        } else {
            for c in bytes.chunks(chunk) {
                conn.feed(dir, c, STD, &mut out);
            }
        }
    }
    conn.finish(STD, &mut out);
    out
}

pub(super) fn requests(events: &[H2Event]) -> Vec<(u32, &Request, bool, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            H2Event::Request {
                stream_id,
                request,
                grpc,
                header_state_broken,
            } => Some((*stream_id, request, *grpc, *header_state_broken)),
            _ => None,
        })
        .collect()
}

pub(super) fn responses(events: &[H2Event]) -> BTreeMap<u32, Option<u16>> {
    events
        .iter()
        .filter_map(|e| match e {
            H2Event::Response { stream_id, status } => Some((*stream_id, *status)),
            _ => None,
        })
        .collect()
}

fn hex(b: &[u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The requests and responses must be exactly those gen.py recorded.
pub(super) fn assert_matches_expect(events: &[H2Event], expect: &serde_json::Value) {
    let got = requests(events);
    let want = expect["requests"].as_array().unwrap();
    assert_eq!(got.len(), want.len(), "request count");
    for ((id, req, grpc, broken), w) in got.iter().zip(want) {
        assert_eq!(u64::from(*id), w["stream_id"].as_u64().unwrap());
        assert!(!broken, "stream {id} decoded");
        assert_eq!(req.method, w["method"].as_str().unwrap(), "stream {id}");
        assert_eq!(req.path, w["path"].as_str().unwrap(), "stream {id}");
        assert_eq!(req.host.as_deref(), w["host"].as_str(), "stream {id}");
        assert_eq!(*grpc, w["grpc"].as_bool().unwrap(), "stream {id}");
        let creds: Vec<(String, String)> = req
            .credentials
            .iter()
            .map(|c| (c.header.to_string(), hex(c.fingerprint.as_bytes())))
            .collect();
        let want_creds: Vec<(String, String)> = w["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c[0].as_str().unwrap().into(), c[1].as_str().unwrap().into()))
            .collect();
        assert_eq!(creds, want_creds, "stream {id}");
    }
    let want_resp: BTreeMap<u32, Option<u16>> = expect["responses"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.parse().unwrap(), Some(v.as_u64().unwrap() as u16)))
        // Pushed streams (even) are not client requests.
        .filter(|(k, _)| k % 2 == 1)
        .collect();
    assert_eq!(responses(events), want_resp);
}

pub(super) fn clean(stats: &H2Stats) {
    assert_eq!(stats.malformed, 0, "{stats:?}");
    assert_eq!(stats.header_state_broken, 0, "{stats:?}");
    assert_eq!(stats.undecodable_blocks, 0, "{stats:?}");
    assert_eq!(stats.oversized, 0, "{stats:?}");
    assert_eq!(stats.resyncs, 0, "{stats:?}");
}

pub(super) const FIXTURES: [&str; 9] = [
    "indexed_credentials",
    "never_indexed",
    "continuation",
    "padding_priority",
    "grpc_trailers",
    "rst_goaway",
    "multiplex",
    "push",
    "table_size",
];

#[test]
fn h2_fixtures_decode_exactly_whole_and_in_small_chunks() {
    for name in FIXTURES {
        let (c, s, expect) = fixture(name);
        for chunk in [0, 1, 7, 1000] {
            let mut conn = H2Connection::new(H2Limits::default());
            let events = run(&mut conn, &c, &s, chunk);
            assert_matches_expect(&events, &expect);
            clean(conn.stats());
            assert_eq!(
                conn.stats().requests as usize,
                expect["requests"].as_array().unwrap().len(),
                "{name}"
            );
        }
    }
}

/// Offsets and headers of the frames in `bytes` (after `skip` bytes).
pub(super) fn frames(bytes: &[u8], skip: usize) -> Vec<(usize, FrameHeader)> {
    let mut at = skip;
    let mut out = Vec::new();
    while let Some(h) = bytes.get(at..at + HEADER_LEN) {
        let h = FrameHeader::parse(h.try_into().unwrap());
        out.push((at, h));
        at += HEADER_LEN + h.len as usize;
    }
    out
}

pub(super) fn headers_frame(bytes: &[u8], stream: u32) -> (usize, FrameHeader) {
    frames(bytes, PREFACE.len())
        .into_iter()
        .find(|(_, h)| h.kind == super::frame::Kind::Headers && h.stream == stream)
        .unwrap()
}

#[test]
fn h2_repeated_credentials_are_dynamic_table_references() {
    let (c, _, _) = fixture("indexed_credentials");
    // The first block carries the 40-byte token as a Huffman literal; the
    // later ones refer to the table for it (only :path is new).
    let (_, first) = headers_frame(&c, 1);
    let (_, second) = headers_frame(&c, 3);
    assert!(first.len > 60, "{first:?}");
    assert!(second.len < 20, "{second:?}");
}

#[test]
fn h2_upgrade_counts_only_streams_after_the_upgraded_request() {
    let (c, s, expect) = fixture("upgrade");
    let split = |b: &[u8]| b.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let (head, c2) = c.split_at(split(&c));
    let s2 = &s[split(&s)..];
    let http1 = crate::protocol::http::parse_requests(head);
    assert_eq!(http1.len(), 1);
    assert!(http1[0].upgrade_h2c);
    let mut conn = H2Connection::after_upgrade(H2Limits::default());
    let events = run(&mut conn, c2, s2, 0);
    assert_matches_expect(&events, &expect);
    clean(conn.stats());
    assert_eq!(responses(&events).get(&1), Some(&Some(200)));
}

/// nghttp2's encoder (testdata/capture.sh: nghttp to nghttpd, captured
/// with tcpdump): PRIORITY frames on idle streams 3..11 first, then three
/// requests at once on 13, 15, 17.
#[test]
fn h2_nghttp2_capture_counts_three_requests_not_priority_frames() {
    let (c, s) = {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/protocol/h2/testdata/");
        let read = |f: &str| std::fs::read(format!("{dir}{f}")).unwrap();
        (read("nghttp.client.bin"), read("nghttp.server.bin"))
    };
    let mut conn = H2Connection::new(H2Limits::default());
    let events = run(&mut conn, &c, &s, 3);
    let reqs = requests(&events);
    let auth = credential_fingerprint("authorization", b"Bearer nghttp-token-4b1d");
    let key = credential_fingerprint("x-api-key", b"nghttp-key-77");
    let got: Vec<_> = reqs
        .iter()
        .map(|(id, r, grpc, broken)| {
            let mut creds: Vec<_> = r
                .credentials
                .iter()
                .map(|c| (c.header.to_string(), c.fingerprint))
                .collect();
            creds.sort();
            (
                *id,
                r.method.as_str(),
                r.path.as_str(),
                r.host.as_deref(),
                creds,
                *grpc,
                *broken,
            )
        })
        .collect();
    let creds = vec![
        ("authorization".to_string(), auth),
        ("x-api-key".to_string(), key),
    ];
    let host = Some("api.example.com");
    assert_eq!(
        got,
        [
            (13, "GET", "/v1/payments", host, creds.clone(), false, false),
            (15, "GET", "/v1/orders", host, creds.clone(), false, false),
            (17, "GET", "/v1/missing", host, creds, false, false),
        ]
    );
    assert_eq!(
        responses(&events),
        BTreeMap::from([(13, Some(200)), (15, Some(200)), (17, Some(404))])
    );
    assert!(events.contains(&H2Event::GoAway {
        from: ToServer,
        last_stream_id: 0,
        error_code: 0
    }));
    clean(conn.stats());
    // The second request's block is short: x-api-key is a table reference.
    assert!(headers_frame(&c, 15).1.len < 50);
}

/// gRPC C-core's encoder (testdata/grpc_pair.py via capture.sh): three
/// unary calls, the third with a wrong token; the server answers it with a
/// trailers-only response (`:status` 200, grpc-status 16).
#[test]
fn h2_grpcio_capture_names_the_method_and_hashes_the_metadata_token() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/protocol/h2/testdata/");
    let read = |f: &str| std::fs::read(format!("{dir}{f}")).unwrap();
    let (c, s) = (read("grpc.client.bin"), read("grpc.server.bin"));
    let mut conn = H2Connection::new(H2Limits::default());
    let events = run(&mut conn, &c, &s, 0);
    let good = credential_fingerprint("authorization", b"Bearer grpc-live-token-5e2");
    let bad = credential_fingerprint("authorization", b"Bearer wrong");
    let got: Vec<_> = requests(&events)
        .iter()
        .map(|(id, r, grpc, broken)| {
            let creds: Vec<_> = r.credentials.iter().map(|c| c.fingerprint).collect();
            (
                *id,
                r.method.as_str(),
                r.path.as_str(),
                r.host.as_deref(),
                creds,
                *grpc,
                *broken,
            )
        })
        .collect();
    let path = "/helloworld.Greeter/SayHello";
    let host = Some("127.0.0.1");
    assert_eq!(
        got,
        [
            (1, "POST", path, host, vec![good], true, false),
            (3, "POST", path, host, vec![good], true, false),
            (5, "POST", path, host, vec![bad], true, false),
        ]
    );
    assert_eq!(
        responses(&events),
        BTreeMap::from([(1, Some(200)), (3, Some(200)), (5, Some(200))])
    );
    clean(conn.stats());
    // The second call's block refers to the table for the token.
    assert!(headers_frame(&c, 3).1.len < headers_frame(&c, 1).1.len / 2);
}

#[test]
fn h2_resets_and_goaway_are_reported_and_end_their_streams() {
    let (c, s, expect) = fixture("rst_goaway");
    let mut conn = H2Connection::new(H2Limits::default());
    let events = run(&mut conn, &c, &s, 0);
    assert_matches_expect(&events, &expect);
    let resets: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, H2Event::Reset { .. }))
        .collect();
    assert_eq!(
        resets,
        [
            &H2Event::Reset {
                stream_id: 5,
                from: ToServer,
                error_code: 8
            },
            &H2Event::Reset {
                stream_id: 3,
                from: ToClient,
                error_code: 7
            },
        ]
    );
    assert!(events.contains(&H2Event::GoAway {
        from: ToClient,
        last_stream_id: 5,
        error_code: 0
    }));
}

#[test]
fn h2_grpc_path_names_the_method_and_trailers_are_not_requests() {
    let (c, s, _) = fixture("grpc_trailers");
    let mut conn = H2Connection::new(H2Limits::default());
    let events = run(&mut conn, &c, &s, 0);
    let reqs = requests(&events);
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].1.path, "/helloworld.Greeter/SayHello");
    assert!(reqs[0].2);
    assert_eq!(reqs[0].1.host.as_deref(), Some("grpc.internal"));
    assert_eq!(
        reqs[0].1.credentials[0].fingerprint,
        credential_fingerprint("authorization", b"Bearer grpc-token-99")
    );
    assert!(!reqs[1].2);
}

#[test]
fn h2_cookie_crumbs_hash_as_one_http1_cookie_header() {
    let (c, s, _) = fixture("never_indexed");
    let mut conn = H2Connection::new(H2Limits::default());
    let events = run(&mut conn, &c, &s, 0);
    let reqs = requests(&events);
    let cookie = reqs[0]
        .1
        .credentials
        .iter()
        .find(|c| c.header == "cookie")
        .unwrap();
    assert_eq!(
        cookie.fingerprint,
        credential_fingerprint("cookie", b"sid=31d4d96e407aad42; lang=en-US")
    );
}

#[test]
fn h2_debug_output_holds_no_raw_credential() {
    let mut text = String::new();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/protocol/h2/testdata/");
    let read = |f: String| std::fs::read(format!("{dir}{f}")).unwrap();
    let captures = ["nghttp", "grpc"].map(|n| {
        (
            read(format!("{n}.client.bin")),
            read(format!("{n}.server.bin")),
        )
    });
    let generated = FIXTURES.map(|n| {
        let (c, s, _) = fixture(n);
        (c, s)
    });
    for (c, s) in captures.iter().chain(&generated) {
        let mut conn = H2Connection::new(H2Limits::default());
        let events = run(&mut conn, c, s, 0);
        text += &format!("{events:?} {conn:?}");
    }
    for secret in [
        "tok-acme",
        "first-token",
        "grpc-token-99",
        "key-0123456789",
        "31d4d96e",
        "dXNlcjpwYXNz",
        "tenant-1-token",
        "nghttp-token",
        "nghttp-key",
        "grpc-live-token",
    ] {
        assert!(!text.contains(secret), "{secret} in Debug output");
    }
    // The output did include the requests.
    assert!(text.contains("/v1/payments/1"));
}
