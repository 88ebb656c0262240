//! HTTP/2 parser tests with lost bytes at chosen places, malformed frames
//! and HPACK, truncated, mutated and random input: exact counts where the
//! outcome is determined, no panic and bounded memory everywhere.

use super::{
    H2Connection, H2Event, H2Limits,
    frame::{FrameHeader, HEADER_LEN, Kind, PREFACE},
    tests::{
        FIXTURES, STD, assert_matches_expect, clean, fixture, frames, headers_frame, requests,
        responses, run,
    },
};
use crate::{
    event::Direction::{self, ToClient, ToServer},
    identity::credential_fingerprint,
    protocol::http::CredentialHeaders,
};

#[test]
fn h2_gap_inside_data_payload_keeps_everything() {
    let (c, s, expect) = fixture("multiplex");
    for (dir, bytes, skip) in [(ToServer, &c, PREFACE.len()), (ToClient, &s, 0)] {
        let (at, h) = frames(bytes, skip)
            .into_iter()
            .find(|(_, h)| h.kind == Kind::Data && h.len >= 8)
            .unwrap();
        let cut = at + HEADER_LEN + 2;
        let lost = h.len as usize - 3;
        let mut conn = H2Connection::new(H2Limits::default());
        let mut out = Vec::new();
        let (other, other_bytes) = match dir {
            ToServer => (ToClient, &s),
            ToClient => (ToServer, &c),
        };
        if dir == ToClient {
            conn.feed(other, other_bytes, STD, &mut out);
        }
        conn.feed(dir, &bytes[..cut], STD, &mut out);
        conn.gap(dir, lost as u64, &mut out);
        conn.feed(dir, &bytes[cut + lost..], STD, &mut out);
        if dir == ToServer {
            conn.feed(other, other_bytes, STD, &mut out);
        }
        assert_matches_expect(&out, &expect);
        assert_eq!(conn.stats().gaps, 1);
        clean(conn.stats());
    }
}

#[test]
fn h2_gap_inside_a_header_block_breaks_state_but_counts_every_request() {
    let (c, s, _) = fixture("indexed_credentials");
    let (at, h) = headers_frame(&c, 3);
    let cut = at + HEADER_LEN + 1;
    let lost = h.len as usize - 2;
    let mut conn = H2Connection::new(H2Limits::default());
    let mut out = Vec::new();
    conn.feed(ToServer, &c[..cut], STD, &mut out);
    conn.gap(ToServer, lost as u64, &mut out);
    conn.feed(ToServer, &c[cut + lost..], STD, &mut out);
    conn.feed(ToClient, &s, STD, &mut out);
    let reqs = requests(&out);
    let ids: Vec<_> = reqs.iter().map(|r| (r.0, r.3)).collect();
    // Stream 1 decoded; 3 lost its block; 5 and 7 refer to table entries
    // whose values are unknown now.
    assert_eq!(ids, [(1, false), (3, true), (5, true), (7, true)]);
    assert_eq!(reqs[1].1.method, "");
    assert_eq!(reqs[1].1.path, "");
    assert!(reqs[1].1.credentials.is_empty());
    let st = conn.stats();
    assert_eq!(
        (st.gaps, st.header_state_broken, st.resyncs, st.requests),
        (1, 1, 0, 4)
    );
    assert_eq!(st.undecodable_blocks, 3);
    assert!(conn.header_state_broken(ToServer));
    assert!(!conn.header_state_broken(ToClient));
    // The server's state is intact: every status is known.
    let r = responses(&out);
    assert_eq!(
        r.values().copied().collect::<Vec<_>>(),
        [Some(200), Some(401), Some(403), Some(200)]
    );
}

#[test]
fn h2_gap_across_frame_boundaries_rescans_and_counts_later_requests() {
    let (c, s, _) = fixture("indexed_credentials");
    let (at3, h3) = headers_frame(&c, 3);
    // Lose the whole HEADERS frame of stream 3 and the first bytes after
    // it: boundaries are gone; the scan finds stream 5's HEADERS... no:
    // those first bytes belong to it, so stream 7's is the next one whole.
    let cut = at3;
    let lost = HEADER_LEN + h3.len as usize + 3;
    let mut conn = H2Connection::new(H2Limits::default());
    let mut out = Vec::new();
    conn.feed(ToServer, &c[..cut], STD, &mut out);
    conn.gap(ToServer, lost as u64, &mut out);
    // Chunked, so the scan has to wait for the confirming header.
    for chunk in c[cut + lost..].chunks(5) {
        conn.feed(ToServer, chunk, STD, &mut out);
    }
    // A last frame after stream 7's HEADERS confirms it as a boundary.
    conn.feed(ToServer, &ping(), STD, &mut out);
    conn.feed(ToClient, &s, STD, &mut out);
    let ids: Vec<_> = requests(&out).iter().map(|r| (r.0, r.3)).collect();
    assert_eq!(ids, [(1, false), (7, true)]);
    let st = conn.stats();
    assert_eq!((st.gaps, st.header_state_broken, st.resyncs), (1, 1, 1));
    // Responses still pair with the streams seen.
    assert_eq!(responses(&out).keys().copied().collect::<Vec<_>>(), [1, 7]);
}

#[test]
fn h2_gap_exactly_at_a_boundary_rescans_from_the_next_frame() {
    let (c, s, _) = fixture("indexed_credentials");
    let (at3, h3) = headers_frame(&c, 3);
    let mut conn = H2Connection::new(H2Limits::default());
    let mut out = Vec::new();
    conn.feed(ToServer, &c[..at3], STD, &mut out);
    conn.gap(ToServer, (HEADER_LEN + h3.len as usize) as u64, &mut out);
    conn.feed(
        ToServer,
        &c[at3 + HEADER_LEN + h3.len as usize..],
        STD,
        &mut out,
    );
    conn.feed(ToServer, &ping(), STD, &mut out);
    conn.feed(ToClient, &s, STD, &mut out);
    let ids: Vec<_> = requests(&out).iter().map(|r| (r.0, r.3)).collect();
    assert_eq!(ids, [(1, false), (5, true), (7, true)]);
    assert_eq!(conn.stats().resyncs, 1);
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ping() -> Vec<u8> {
    frame(6, 0, 0, &[0; 8])
}

/// A preface and an empty SETTINGS, as every client starts.
fn start() -> Vec<u8> {
    let mut b = PREFACE.to_vec();
    b.extend(frame(4, 0, 0, &[]));
    b
}

/// `:method GET`, `:scheme http`, `:path /` from the static table, then
/// `name: value` as a literal without indexing.
fn get_block(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut b = vec![0x82, 0x86, 0x84, 0x00, name.len() as u8];
    b.extend_from_slice(name);
    b.push(value.len() as u8);
    b.extend_from_slice(value);
    b
}

fn feed_client(conn: &mut H2Connection, bytes: &[u8], creds: &CredentialHeaders) -> Vec<H2Event> {
    let mut out = Vec::new();
    conn.feed(ToServer, bytes, creds, &mut out);
    conn.finish(creds, &mut out);
    out
}

#[test]
fn h2_contract_credential_headers_are_hashed_too() {
    let mut b = start();
    b.extend(frame(1, 0x5, 1, &get_block(b"x-tenant-token", b"t-123")));
    let creds = CredentialHeaders::with_extra(["X-Tenant-Token"]);
    let out = feed_client(&mut H2Connection::new(H2Limits::default()), &b, &creds);
    let reqs = requests(&out);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].1.credentials.len(), 1);
    assert_eq!(reqs[0].1.credentials[0].header, "x-tenant-token");
    assert_eq!(
        reqs[0].1.credentials[0].fingerprint,
        credential_fingerprint("x-tenant-token", b"t-123")
    );
    // Without the contract naming it, it is just a header.
    let out = feed_client(&mut H2Connection::new(H2Limits::default()), &b, STD);
    assert!(requests(&out)[0].1.credentials.is_empty());
}

#[test]
fn h2_malformed_hpack_counts_the_request_with_broken_state() {
    let mut b = start();
    // A truncated integer, then a valid block on the next stream that
    // only uses the static table: it decodes even though the state is
    // broken.
    b.extend(frame(1, 0x5, 1, &[0xff]));
    b.extend(frame(1, 0x5, 3, &get_block(b"x-a", b"1")));
    let mut conn = H2Connection::new(H2Limits::default());
    let out = feed_client(&mut conn, &b, STD);
    let ids: Vec<_> = requests(&out).iter().map(|r| (r.0, r.3)).collect();
    assert_eq!(ids, [(1, true), (3, false)]);
    assert_eq!(requests(&out)[1].1.method, "GET");
    let st = conn.stats();
    assert_eq!(
        (st.malformed, st.header_state_broken, st.undecodable_blocks),
        (1, 1, 1)
    );
}

#[test]
fn h2_size_update_to_zero_makes_a_broken_state_known_again() {
    let mut conn = H2Connection::new(H2Limits::default());
    let mut out = Vec::new();
    conn.feed(ToServer, &start(), STD, &mut out);
    conn.gap(ToServer, 100, &mut out);
    // Size update 0, then :authority inserted with indexing (table 4096
    // after a second update), then a block that refers to it.
    let mut block = vec![0x20, 0x3f, 0xe1, 0x1f, 0x82, 0x86, 0x84, 0x41, 0x03];
    block.extend_from_slice(b"a.b");
    let mut b = frame(1, 0x5, 1, &block);
    b.extend(frame(1, 0x5, 3, &[0x82, 0x86, 0x84, 0xbe]));
    conn.feed(ToServer, &b, STD, &mut out);
    conn.finish(STD, &mut out);
    let reqs = requests(&out);
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].1.host.as_deref(), Some("a.b"));
    assert!(!reqs[1].3);
    let st = conn.stats();
    assert_eq!(
        (
            st.header_state_broken,
            st.header_state_recovered,
            st.resyncs
        ),
        (1, 1, 1)
    );
    assert!(!conn.header_state_broken(ToServer));
}

#[test]
fn h2_interleaved_frame_inside_a_header_block_is_malformed_and_still_a_request() {
    let mut b = start();
    let block = get_block(b"x-a", b"1");
    b.extend(frame(1, 0x1, 1, &block[..3]));
    b.extend(ping());
    b.extend(frame(9, 0x4, 1, &block[3..]));
    let mut conn = H2Connection::new(H2Limits::default());
    let out = feed_client(&mut conn, &b, STD);
    let ids: Vec<_> = requests(&out).iter().map(|r| (r.0, r.3)).collect();
    assert_eq!(ids, [(1, true)]);
    // The interleaved PING and the orphan CONTINUATION.
    assert_eq!(conn.stats().malformed, 2);
}

#[test]
fn h2_bad_padding_and_bad_lengths_are_malformed_not_panics() {
    let mut b = start();
    // HEADERS PADDED with a pad length beyond the payload.
    b.extend(frame(1, 0x4 | 0x8, 1, &[200, 0x82]));
    // RST_STREAM of 3 bytes, PING of 2, WINDOW_UPDATE of 5, SETTINGS of 5.
    b.extend(frame(3, 0, 1, &[0, 0, 0]));
    b.extend(frame(6, 0, 0, &[0, 0]));
    b.extend(frame(8, 0, 0, &[0; 5]));
    b.extend(frame(4, 0, 0, &[0; 5]));
    // HEADERS on stream 0 and on an even stream.
    b.extend(frame(1, 0x4, 0, &[0x82]));
    b.extend(frame(1, 0x4, 4, &[0x82]));
    // An unknown extension frame is fine.
    b.extend(frame(0xfa, 0xff, 1, b"ext"));
    let mut conn = H2Connection::new(H2Limits::default());
    let out = feed_client(&mut conn, &b, STD);
    let ids: Vec<_> = requests(&out).iter().map(|r| (r.0, r.3)).collect();
    assert_eq!(ids, [(1, true)]);
    assert_eq!(conn.stats().malformed, 8);
}

#[test]
fn h2_oversized_header_block_is_undecodable_and_bounded() {
    let (c, s, _) = fixture("continuation");
    let limits = H2Limits {
        max_header_block: 16 * 1024,
        ..H2Limits::default()
    };
    let mut conn = H2Connection::new(limits);
    let mut out = Vec::new();
    let mut peak = 0;
    for chunk in c.chunks(1000) {
        conn.feed(ToServer, chunk, STD, &mut out);
        peak = peak.max(conn.buffered());
    }
    conn.feed(ToClient, &s, STD, &mut out);
    let reqs = requests(&out);
    let ids: Vec<_> = reqs.iter().map(|r| (r.0, r.3)).collect();
    // Stream 1's 37 KB of fillers evicted everything from the client's
    // 4096-byte table, so stream 3's block is all literals: it decodes
    // exactly although the state is broken.
    assert_eq!(ids, [(1, true), (3, false)]);
    assert_eq!(reqs[1].1.path, "/v1/after");
    assert_eq!(
        reqs[1].1.credentials[0].fingerprint,
        credential_fingerprint("authorization", b"Bearer tok-acme-7f3a9c1e5b2d4f60")
    );
    assert_eq!(conn.stats().oversized, 1);
    assert!(conn.header_state_broken(ToServer));
    assert!(peak < 3 * 16 * 1024, "{peak}");
    assert_eq!(responses(&out).len(), 2);
}

#[test]
fn h2_connection_ending_inside_a_header_block_counts_it() {
    let (c, _, _) = fixture("continuation");
    let (at, h) = frames(&c, PREFACE.len())
        .into_iter()
        .find(|(_, h)| h.kind == Kind::Continuation)
        .unwrap();
    let mut conn = H2Connection::new(H2Limits::default());
    let out = feed_client(&mut conn, &c[..at + HEADER_LEN + h.len as usize / 2], STD);
    let ids: Vec<_> = requests(&out).iter().map(|r| (r.0, r.3)).collect();
    assert_eq!(ids, [(1, true)]);
}

#[test]
fn h2_streams_awaiting_a_response_are_bounded() {
    let (c, s, _) = fixture("multiplex");
    let limits = H2Limits {
        max_streams: 10,
        ..H2Limits::default()
    };
    let mut conn = H2Connection::new(limits);
    let events = run(&mut conn, &c, &s, 0);
    assert_eq!(requests(&events).len(), 60);
    assert_eq!(conn.stats().streams_evicted, 50);
    // The ten newest streams (101..=119) keep their responses.
    assert_eq!(
        responses(&events).keys().copied().collect::<Vec<_>>(),
        (101..=119).step_by(2).collect::<Vec<u32>>()
    );
}

#[test]
fn h2_huge_frames_are_skipped_without_buffering() {
    let max = (1 << 24) - 1;
    let len = u32::to_be_bytes(max);
    let mut conn = H2Connection::new(H2Limits::default());
    let mut out = Vec::new();
    conn.feed(ToServer, &start(), STD, &mut out);
    // DATA of 16 MiB - 1 (past the default SETTINGS_MAX_FRAME_SIZE), then
    // a HEADERS frame of the same size: the first is skipped, the second
    // kept only up to the header block cap.
    for kind in [0u8, 1] {
        let stream = if kind == 0 { 1 } else { 3 };
        let mut head = vec![len[1], len[2], len[3], kind, 0x4];
        head.extend_from_slice(&u32::to_be_bytes(stream));
        conn.feed(ToServer, &head, STD, &mut out);
        let chunk = vec![0x82; 64 * 1024];
        let mut left = max as usize;
        while left > 0 {
            let n = left.min(chunk.len());
            conn.feed(ToServer, &chunk[..n], STD, &mut out);
            left -= n;
            assert!(conn.buffered() <= 64 * 1024 + 4096, "{}", conn.buffered());
        }
    }
    conn.feed(
        ToServer,
        &frame(1, 0x5, 5, &get_block(b"x-a", b"1")),
        STD,
        &mut out,
    );
    let ids: Vec<_> = requests(&out).iter().map(|r| (r.0, r.3)).collect();
    // Stream 3's block is lost (too large); stream 5's decodes on its own.
    assert_eq!(ids, [(3, true), (5, false)]);
    let st = conn.stats();
    // Both frames exceed the frame size; the HEADERS also the block cap.
    assert_eq!((st.oversized, st.malformed, st.frames), (3, 0, 4));
    assert!(conn.buffered() <= 4096 * 2, "{}", conn.buffered());
}

#[test]
fn h2_response_crossing_a_client_reset_still_counts_but_not_after_a_server_reset() {
    let mut c = start();
    c.extend(frame(1, 0x5, 1, &get_block(b"x-a", b"1")));
    c.extend(frame(1, 0x5, 3, &get_block(b"x-a", b"1")));
    c.extend(frame(3, 0, 1, &8u32.to_be_bytes()));
    let mut s = frame(4, 0, 0, &[]);
    // :status 200 (static index 8) for stream 1, which the client reset;
    // stream 3 reset by the server (REFUSED_STREAM), then a stray HEADERS.
    s.extend(frame(1, 0x5, 1, &[0x88]));
    s.extend(frame(3, 0, 3, &7u32.to_be_bytes()));
    s.extend(frame(1, 0x5, 3, &[0x88]));
    let mut conn = H2Connection::new(H2Limits::default());
    let mut out = Vec::new();
    conn.feed(ToServer, &c, STD, &mut out);
    conn.feed(ToClient, &s, STD, &mut out);
    assert_eq!(
        responses(&out).into_iter().collect::<Vec<_>>(),
        [(1, Some(200))]
    );
    assert_eq!(
        out.iter()
            .filter(|e| matches!(e, H2Event::Reset { .. }))
            .count(),
        2
    );
}

#[test]
fn h2_server_state_broken_at_the_start_still_reads_statuses_that_refer_to_later_entries() {
    // The server's SETTINGS lost: its direction starts with a gap, so its
    // HPACK state is unknown. The first response indexes `server`, the
    // second refers to it: both statuses are exact all the same.
    let mut c = start();
    c.extend(frame(1, 0x5, 1, &get_block(b"x-a", b"1")));
    c.extend(frame(1, 0x5, 3, &get_block(b"x-a", b"1")));
    let settings = frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]);
    // Then as nghttpd writes it: SETTINGS ACK, the two heads, a body.
    let mut s = frame(4, 0x1, 0, &[]);
    s.extend(frame(1, 0x4, 1, b"\x88\x76\x07nghttpd"));
    s.extend(frame(1, 0x5, 3, &[0x8d, 0xbe]));
    s.extend(frame(0, 0x1, 1, b"ok"));
    let mut conn = H2Connection::new(H2Limits::default());
    let mut out = Vec::new();
    conn.feed(ToServer, &c, STD, &mut out);
    conn.gap(ToClient, settings.len() as u64, &mut out);
    conn.feed(ToClient, &s, STD, &mut out);
    assert!(conn.header_state_broken(ToClient));
    assert_eq!(
        responses(&out).into_iter().collect::<Vec<_>>(),
        [(1, Some(200)), (3, Some(404))]
    );
}

#[test]
fn h2_not_a_preface_is_malformed_and_yields_nothing() {
    let mut conn = H2Connection::new(H2Limits::default());
    let out = feed_client(
        &mut conn,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        STD,
    );
    assert!(out.is_empty());
    assert_eq!(conn.stats().malformed, 1);
    assert_eq!(conn.stats().requests, 0);
}

/// A small deterministic generator (xorshift) for the mutation tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn feed_mutated(rng: &mut Rng, c: &[u8], s: &[u8]) -> H2Connection {
    let mut conn = H2Connection::new(H2Limits::default());
    let mut out = Vec::new();
    for (dir, bytes) in [(ToServer, c), (ToClient, s)] {
        let mut b = bytes.to_vec();
        match rng.below(4) {
            0 => {
                for _ in 0..=rng.below(8) {
                    let i = rng.below(b.len());
                    b[i] ^= 1 << rng.below(8);
                }
            }
            1 => b.truncate(rng.below(b.len())),
            2 => {
                let i = rng.below(b.len());
                let n = rng.below(b.len() - i);
                b.drain(i..i + n);
            }
            _ => {
                for _ in 0..=rng.below(4) {
                    let i = rng.below(b.len());
                    b[i] = rng.next() as u8;
                }
            }
        }
        let mut at = 0;
        while at < b.len() {
            let n = 1 + rng.below(64);
            let end = (at + n).min(b.len());
            conn.feed(dir, &b[at..end], STD, &mut out);
            at = end;
            if rng.below(16) == 0 {
                conn.gap(dir, rng.below(40) as u64, &mut out);
            }
        }
        assert!(conn.buffered() < 4 * 64 * 1024 + 4096);
    }
    conn.finish(STD, &mut out);
    let st = *conn.stats();
    assert_eq!(st.requests as usize, requests(&out).len());
    assert!(st.responses as usize == responses(&out).len());
    conn
}

#[test]
fn h2_mutated_truncated_and_regapped_fixtures_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for name in FIXTURES {
        let (c, s, expect) = fixture(name);
        let n = expect["requests"].as_array().unwrap().len() as u64;
        for _ in 0..200 {
            let conn = feed_mutated(&mut rng, &c, &s);
            // Mutations can invent at most a few requests (a flipped bit in
            // a stream id), never unbounded numbers.
            assert!(conn.stats().requests <= n + 8, "{name}: {:?}", conn.stats());
        }
    }
}

#[test]
fn h2_random_bytes_never_panic_and_stay_bounded() {
    let mut rng = Rng(42);
    for round in 0..200 {
        let mut conn = H2Connection::new(H2Limits::default());
        let mut out = Vec::new();
        let len = 1 + rng.below(20_000);
        let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let dir: Direction = if round % 2 == 0 { ToServer } else { ToClient };
        if dir == ToServer && round % 4 == 0 {
            conn.feed(dir, PREFACE, STD, &mut out);
        }
        for chunk in junk.chunks(1 + rng.below(3000)) {
            conn.feed(dir, chunk, STD, &mut out);
        }
        conn.finish(STD, &mut out);
        assert!(conn.buffered() < 4 * 64 * 1024 + 4096);
    }
}

#[test]
fn h2_truncation_at_every_offset_counts_exactly_the_headers_frames_begun() {
    let (c, s, _) = fixture("indexed_credentials");
    let heads: Vec<(usize, FrameHeader)> = frames(&c, PREFACE.len())
        .into_iter()
        .filter(|(_, h)| h.kind == Kind::Headers)
        .collect();
    assert_eq!(heads.len(), 4);
    for cut in 0..=c.len() {
        let mut conn = H2Connection::new(H2Limits::default());
        let events = run(&mut conn, &c[..cut], &s, 0);
        // A HEADERS frame whose 9-byte header arrived is a request; it is
        // decoded if its payload arrived whole too.
        let want: Vec<(u32, bool)> = heads
            .iter()
            .filter(|(at, _)| at + HEADER_LEN <= cut)
            .map(|(at, h)| (h.stream, at + HEADER_LEN + h.len as usize > cut))
            .collect();
        let got: Vec<(u32, bool)> = requests(&events).iter().map(|r| (r.0, r.3)).collect();
        assert_eq!(got, want, "cut at {cut}");
    }
}
