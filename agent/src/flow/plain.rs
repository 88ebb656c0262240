//! The clear text of a TLS connection, as the TLS library probes deliver it
//! (`Event::Plaintext`): a second pair of streams beside the wire's, with its
//! own protocol and request cursor, so the flow that holds the handshake
//! facts (version, cipher, SNI, client certificate) also holds the requests.
//!
//! Chunks carry their exact offset in the direction's plaintext stream, so
//! the same bounded reassembly as the wire serves here, with the offset as
//! sequence number: a chunk that starts past where the previous one ended is
//! a gap (bytes lost in the ring or cut by the kernel's per-call cap), and
//! the request cursor resynchronises on the next head as it does on the wire.
//!
//! HTTP/2 (ALPN `h2`) needs every byte of both directions in order, since
//! HPACK state is built across header blocks: once the client's preface is
//! seen, each direction's bytes go to one [`H2Connection`] as they come,
//! gaps passed on as such, and every client-opened stream is a request. The
//! kernel counts only HTTP/1 request starts, so these requests say so
//! ([`Request::kernel_counts`] is false) and the engine counts them.

use super::{
    Changes, Flow, Request, dissect,
    reassembly::{Placement, StreamPrefix},
    requests::{self, RequestCursor},
    responses::Responses,
    wire_h2::take_events,
};
use crate::{
    event::{Direction, Packet, Plaintext},
    protocol::{
        Protocol,
        h2::{H2Connection, H2Event, H2Limits, H2Stats},
        http::{self, CredentialHeaders},
    },
};

/// What the clear text of a TLS connection carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Inner {
    /// Nothing from the client yet (or too little to tell).
    #[default]
    Unknown,
    /// HTTP/1.x request heads.
    Http1,
    /// HTTP/2 frames (ALPN `h2`): recognised by the connection preface.
    Http2,
    /// Anything else.
    Other,
}

impl Inner {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Http1 => "http",
            Self::Http2 => "h2",
            Self::Other => "other",
        }
    }
}

/// Per-flow plaintext state, boxed in [`Flow::plain`] once a chunk arrives.
#[derive(Debug, Default)]
pub struct Plain {
    pub inner: Inner,
    streams: [StreamPrefix; 2],
    cursor: RequestCursor,
    /// Stream offset where the next chunk of each direction is expected.
    next: [Option<u64>; 2],
    /// Chunks and bytes delivered per direction ([`Direction::index`]).
    pub chunks: [u64; 2],
    pub bytes: [u64; 2],
    /// Bytes the probes saw move but that did not arrive (ring losses,
    /// per-call copy cap), per direction.
    pub lost_bytes: [u64; 2],
    /// Times the stream jumped (a gap before a chunk, or a cut chunk).
    pub gaps: u32,
    /// The HTTP/2 decoder, once the client's preface is seen.
    h2: Option<Box<H2Connection>>,
    /// Scratch for its events.
    h2_events: Vec<H2Event>,
}

impl Plain {
    /// Heap bytes held by the plaintext reassembly buffers.
    pub fn buffered(&self) -> usize {
        self.streams[0].buffered()
            + self.streams[1].buffered()
            + self.h2.as_ref().map_or(0, |h| h.buffered())
    }

    /// HTTP/2 counters, when the clear text is HTTP/2.
    pub fn h2_stats(&self) -> Option<&H2Stats> {
        self.h2.as_deref().map(H2Connection::stats)
    }

    /// Last look when the flow ends: a partial HTTP/1 head counts now.
    pub(super) fn finish(
        &mut self,
        creds: &CredentialHeaders,
        out: &mut Vec<Request>,
        responses: &mut Responses,
    ) {
        if self.inner == Inner::Http1 {
            let s = &self.streams[0];
            self.cursor
                .scan(s.bytes(), s.bytes_offset(), true, creds, out);
        }
        if let Some(h2) = &mut self.h2 {
            h2.finish(creds, &mut self.h2_events);
            take_events(&mut self.h2_events, out, responses);
        }
        for s in &mut self.streams {
            s.release();
        }
    }
}

/// Handles one plaintext chunk of `flow`. `cap` bounds the reassembled
/// prefix (0 when the table is over its memory budget).
pub(super) fn on_chunk<T>(
    flow: &mut Flow<T>,
    pt: &Plaintext,
    cap: usize,
    creds: &CredentialHeaders,
    out: &mut Vec<Request>,
    changes: &mut Changes,
) {
    if matches!(flow.protocol, Protocol::Unknown | Protocol::Other) {
        // A TLS library moved these bytes on this socket: the connection is
        // TLS, whatever the wire view made of its (possibly unseen) start.
        flow.protocol = Protocol::Tls;
        changes.protocol = true;
    }
    let plain = flow.plain.get_or_insert_with(Box::default);
    let i = pt.direction.index();
    plain.chunks[i] += 1;
    plain.bytes[i] += u64::from(pt.len);
    let captured = pt.data.len() as u64;
    let cut = u64::from(pt.len).saturating_sub(captured);
    if cut > 0 {
        plain.lost_bytes[i] += cut;
        plain.gaps = plain.gaps.saturating_add(1);
    }
    let mut before_gap = 0;
    match plain.next[i] {
        Some(n) if pt.offset > n => {
            before_gap = pt.offset - n;
            plain.lost_bytes[i] += before_gap;
            plain.gaps = plain.gaps.saturating_add(1);
        }
        // A chunk already delivered (duplicate) or from before the first
        // one seen: nothing new in it.
        Some(n) if pt.offset < n => return,
        _ => {}
    }
    plain.next[i] = Some(pt.offset.saturating_add(u64::from(pt.len)));
    if plain.inner == Inner::Http2 {
        let before = out.len();
        let responses = &mut flow.responses;
        plain.feed_h2(
            pt.direction,
            before_gap,
            &pt.data,
            cut,
            creds,
            out,
            responses,
        );
        let n = out.len() - before;
        flow.requests += n as u64;
        changes.requests += n;
        changes.answers = flow.responses.answers.len();
        return;
    }
    if pt.data.is_empty() {
        return;
    }
    let stream = &mut plain.streams[i];
    // Offsets are exact stream positions: the sequence number is the offset
    // (mod 2^32), and the stream starts at the first chunk seen (offset 0
    // unless the connection is older than the probes).
    let seq = pt.offset as u32;
    if !stream.has_base() {
        stream.syn(seq.wrapping_sub(1));
    }
    let (src, dst) = match pt.direction {
        Direction::ToServer => (flow.id.client, flow.id.server),
        Direction::ToClient => (flow.id.server, flow.id.client),
    };
    let p = Packet {
        ts: pt.ts,
        src,
        dst,
        seq,
        flags: 0,
        payload_len: pt.len,
        payload: pt.data.clone(),
        direction: Some(pt.direction),
    };
    let placement = stream.push(seq, &p.payload, p.payload_len, cap);
    let before = out.len();
    let responses = &mut flow.responses;
    match pt.direction {
        Direction::ToServer => to_server(plain, &p, placement, creds, out, responses),
        // The server may speak first (HTTP/2 SETTINGS): kept until the
        // client's bytes say what the connection carries.
        Direction::ToClient if plain.inner == Inner::Unknown => {}
        Direction::ToClient if plain.inner == Inner::Http1 => {
            responses.on_server_segment(&mut plain.streams[1], &p, placement);
        }
        Direction::ToClient => plain.streams[1].release(),
    }
    responses.open_all(&mut out[before..]);
    let n = out.len() - before;
    flow.requests += n as u64;
    changes.requests += n;
    changes.answers = flow.responses.answers.len();
}

impl Plain {
    /// The next bytes of `dir` to the HTTP/2 decoder: `gap` bytes lost
    /// before them, `cut` lost after them.
    #[expect(
        clippy::too_many_arguments,
        reason = "a chunk's place, its bytes, and where requests and answers go"
    )]
    fn feed_h2(
        &mut self,
        dir: Direction,
        gap: u64,
        data: &[u8],
        cut: u64,
        creds: &CredentialHeaders,
        out: &mut Vec<Request>,
        responses: &mut Responses,
    ) {
        let Some(h2) = self.h2.as_deref_mut() else {
            return;
        };
        h2.gap(dir, gap, &mut self.h2_events);
        h2.feed(dir, data, creds, &mut self.h2_events);
        h2.gap(dir, cut, &mut self.h2_events);
        take_events(&mut self.h2_events, out, responses);
    }

    /// The client's preface was seen: both directions' bytes so far go to a
    /// new HTTP/2 decoder, and every later chunk straight to it.
    fn start_h2(
        &mut self,
        creds: &CredentialHeaders,
        out: &mut Vec<Request>,
        responses: &mut Responses,
    ) {
        self.h2 = Some(Box::new(H2Connection::new(H2Limits::default())));
        for dir in [Direction::ToServer, Direction::ToClient] {
            let s = &mut self.streams[dir.index()];
            let held = s.take();
            // A hole that never filled: its length is unknown, and any
            // length breaks the decoder's framing the same way.
            let lost = u64::from(s.gaps > 0);
            self.feed_h2(dir, 0, &held, lost, creds, out, responses);
        }
    }
}

fn to_server(
    plain: &mut Plain,
    p: &Packet,
    placement: Placement,
    creds: &CredentialHeaders,
    out: &mut Vec<Request>,
    responses: &mut Responses,
) {
    if plain.inner == Inner::Unknown {
        let Some((bytes, complete)) = plain.streams[0].classifiable(&p.payload) else {
            return;
        };
        plain.inner = match dissect::classify(bytes, complete) {
            Some(Protocol::H2c) if bytes.starts_with(http::H2_PREFACE) => {
                plain.inner = Inner::Http2;
                plain.start_h2(creds, out, responses);
                return;
            }
            // `Upgrade: h2c` means nothing inside TLS: HTTP/1 heads.
            Some(Protocol::Http | Protocol::H2c) => Inner::Http1,
            Some(_) => Inner::Other,
            None => return,
        };
    }
    match plain.inner {
        Inner::Http1 => {
            requests::on_segment(
                &mut plain.cursor,
                &mut plain.streams[0],
                p,
                placement,
                creds,
                out,
            );
        }
        Inner::Http2 | Inner::Other | Inner::Unknown => plain.streams[0].release(),
    }
}
