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

use super::{
    Changes, Flow, Request, dissect,
    reassembly::{Placement, StreamPrefix},
    requests::{self, RequestCursor},
};
use crate::{
    event::{Direction, Packet, Plaintext},
    protocol::{
        Protocol,
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
}

impl Plain {
    /// Heap bytes held by the plaintext reassembly buffers.
    pub fn buffered(&self) -> usize {
        self.streams[0].buffered() + self.streams[1].buffered()
    }

    /// Last look when the flow ends: a partial HTTP/1 head counts now.
    pub(super) fn finish(&mut self, creds: &CredentialHeaders, out: &mut Vec<Request>) {
        if self.inner == Inner::Http1 {
            let s = &self.streams[0];
            self.cursor
                .scan(s.bytes(), s.bytes_offset(), true, creds, out);
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
    if captured < u64::from(pt.len) {
        plain.lost_bytes[i] += u64::from(pt.len) - captured;
        plain.gaps = plain.gaps.saturating_add(1);
    }
    match plain.next[i] {
        Some(n) if pt.offset > n => {
            plain.lost_bytes[i] += pt.offset - n;
            plain.gaps = plain.gaps.saturating_add(1);
        }
        // A chunk already delivered (duplicate) or from before the first
        // one seen: nothing new in it.
        Some(n) if pt.offset < n => return,
        _ => {}
    }
    plain.next[i] = Some(pt.offset.saturating_add(u64::from(pt.len)));
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
    match pt.direction {
        Direction::ToServer => to_server(plain, &p, placement, creds, out),
        // Response heads reach userspace (the kernel copies both
        // directions); their status is not judged yet.
        Direction::ToClient => plain.streams[1].release(),
    }
    let n = out.len() - before;
    flow.requests += n as u64;
    changes.requests += n;
}

fn to_server(
    plain: &mut Plain,
    p: &Packet,
    placement: Placement,
    creds: &CredentialHeaders,
    out: &mut Vec<Request>,
) {
    if plain.inner == Inner::Unknown {
        let s = &plain.streams[0];
        let (bytes, complete) = if s.is_done() && s.bytes().is_empty() {
            (&p.payload[..], true)
        } else if s.bytes().is_empty() {
            return;
        } else {
            (s.bytes(), s.is_done())
        };
        plain.inner = match dissect::classify(bytes, complete) {
            Some(Protocol::H2c) if bytes.starts_with(http::H2_PREFACE) => Inner::Http2,
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
