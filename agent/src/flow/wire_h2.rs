//! HTTP/2 in clear text on the wire (h2c): each direction's bytes, in
//! stream order, into one [`H2Connection`].
//!
//! A prior-knowledge connection speaks HTTP/2 from its first byte; an
//! upgraded one (`Upgrade: h2c`) from the end of the client's upgrade
//! request and of the server's `101` head. Until the first reassembled
//! prefix of a direction is complete its bytes come from the reassembly
//! (which puts reordered segments back in place); after that each segment
//! goes in at its stream offset, a retransmission trimmed, a jump passed to
//! the decoder as a gap. The decoder counts every client-opened stream as a
//! request whether or not its header block decodes, so requests are counted
//! across losses; the HPACK state those losses break is counted there.

use super::{
    Request,
    reassembly::{Placement, StreamPrefix},
    responses::Responses,
};
use crate::{
    event::{Direction, Packet},
    protocol::{
        h2::{H2Connection, H2Event, H2Limits, H2Stats},
        http::CredentialHeaders,
    },
};

/// The HTTP/2 side of an h2c flow.
#[derive(Debug)]
pub struct WireH2 {
    conn: H2Connection,
    /// Stream offset of the next byte each direction's decoder takes;
    /// `None` while that direction's HTTP/2 start is unknown (the server's
    /// `101` not seen yet).
    next: [Option<u64>; 2],
    events: Vec<H2Event>,
}

impl WireH2 {
    /// A prior-knowledge connection: both directions are HTTP/2 from
    /// their first byte.
    pub fn prior_knowledge() -> Self {
        Self {
            conn: H2Connection::new(H2Limits::default()),
            next: [Some(0), Some(0)],
            events: Vec::new(),
        }
    }

    /// An upgraded connection whose client speaks HTTP/2 from `client_from`
    /// (the end of its upgrade request); the server's start follows from
    /// its `101` head ([`WireH2::server_from`]).
    pub fn upgraded(client_from: u64) -> Self {
        Self {
            conn: H2Connection::after_upgrade(H2Limits::default()),
            next: [Some(client_from), None],
            events: Vec::new(),
        }
    }

    /// Whether the server's HTTP/2 start is known.
    pub fn server_started(&self) -> bool {
        self.next[1].is_some()
    }

    /// The server's HTTP/2 bytes start at `offset` (after its `101`).
    pub fn server_from(&mut self, offset: u64) {
        self.next[1] = Some(offset);
    }

    pub fn stats(&self) -> &H2Stats {
        self.conn.stats()
    }

    pub fn buffered(&self) -> usize {
        self.conn.buffered()
    }

    /// One segment of `dir`, placed by `stream` as `placement`; requests
    /// go to `out`, their answers to `responses`.
    #[expect(
        clippy::too_many_arguments,
        reason = "a segment, its placement, and where requests and answers go"
    )]
    pub fn segment(
        &mut self,
        dir: Direction,
        stream: &StreamPrefix,
        p: &Packet,
        placement: Placement,
        creds: &CredentialHeaders,
        out: &mut Vec<Request>,
        responses: &mut Responses,
    ) {
        match placement {
            Placement::Extended { .. } => {
                let bytes = stream.bytes();
                self.feed_at(dir, stream.bytes_offset(), bytes, bytes.len() as u64, creds);
                // The prefix may have stopped at its bound inside this
                // segment: the segment's own bytes carry the rest.
                if let Some(off) = stream.offset_of(p.seq) {
                    self.feed_at(dir, off, &p.payload, u64::from(p.payload_len), creds);
                }
            }
            Placement::Beyond { offset: Some(off) } => {
                self.feed_at(dir, off, &p.payload, u64::from(p.payload_len), creds);
            }
            // Held segments come out of the reassembly later; old ones and
            // segments of a stream whose start was never seen hold nothing
            // the decoder can place.
            Placement::Held | Placement::Old | Placement::Beyond { offset: None } => {}
        }
        take_events(&mut self.events, out, responses);
    }

    /// What `stream` already holds of `dir` when the decoder starts: the
    /// server's first bytes when they were read before the client's
    /// preface.
    pub fn held(
        &mut self,
        dir: Direction,
        stream: &StreamPrefix,
        creds: &CredentialHeaders,
        out: &mut Vec<Request>,
        responses: &mut Responses,
    ) {
        let bytes = stream.bytes();
        if !bytes.is_empty() {
            self.feed_at(dir, stream.bytes_offset(), bytes, bytes.len() as u64, creds);
        }
        take_events(&mut self.events, out, responses);
    }

    /// The flow ended: a header block cut short counts as it stands.
    pub fn finish(
        &mut self,
        creds: &CredentialHeaders,
        out: &mut Vec<Request>,
        responses: &mut Responses,
    ) {
        self.conn.finish(creds, &mut self.events);
        take_events(&mut self.events, out, responses);
    }

    /// `bytes` (captured of `wire_len`) at stream offset `off` of `dir`:
    /// what precedes the decoder's position is dropped, a jump past it is
    /// a gap, and so is what the capture cut.
    fn feed_at(
        &mut self,
        dir: Direction,
        off: u64,
        bytes: &[u8],
        wire_len: u64,
        creds: &CredentialHeaders,
    ) {
        let i = dir.index();
        let Some(next) = self.next[i] else {
            return;
        };
        let end = off.saturating_add(wire_len);
        if end <= next {
            return;
        }
        if off > next {
            self.conn.gap(dir, off - next, &mut self.events);
        }
        let at = next.max(off);
        let captured_end = off + bytes.len() as u64;
        let mut pos = at;
        if at < captured_end
            && let Some(rest) = usize::try_from(at - off).ok().and_then(|s| bytes.get(s..))
        {
            self.conn.feed(dir, rest, creds, &mut self.events);
            pos = captured_end;
        }
        if pos < end {
            self.conn.gap(dir, end - pos, &mut self.events);
        }
        self.next[i] = Some(end);
    }
}

/// Requests out of the decoder's events, registered with `responses` at
/// once (a response may follow in the same batch), and their answers.
pub(super) fn take_events(
    events: &mut Vec<H2Event>,
    out: &mut Vec<Request>,
    responses: &mut Responses,
) {
    for ev in events.drain(..) {
        match ev {
            H2Event::Request {
                stream_id,
                mut request,
                ..
            } => {
                request.stream_id = Some(stream_id);
                responses.open(&mut request);
                out.push(request);
            }
            H2Event::Response { stream_id, status } => {
                responses.stream_response(stream_id, status);
            }
            // A reset from either side before the response head: the
            // request was not answered (REFUSED_STREAM included).
            H2Event::Reset { stream_id, .. } => responses.stream_reset(stream_id),
            // Only the server's GOAWAY speaks of client streams (a client's
            // names the last *server-initiated* stream it took, usually 0:
            // applied to client streams it would drop every answer not yet
            // read, which is what nghttp's GOAWAY after its last response
            // did when the server's segment was read after it).
            H2Event::GoAway {
                from: Direction::ToClient,
                last_stream_id,
                ..
            } => responses.goaway(last_stream_id),
            H2Event::GoAway { .. } => {}
        }
    }
}

/// Where the HTTP/2 bytes of an upgraded server start, from the first bytes
/// of its stream: `Some(Some(len))` after a `101` head of `len` bytes,
/// `Some(None)` when the server answered otherwise (no upgrade), `None`
/// while the head is incomplete.
pub fn after_switching_protocols(server_bytes: &[u8]) -> Option<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(server_bytes) {
        Ok(httparse::Status::Complete(len)) => Some((resp.code == Some(101)).then_some(len)),
        Ok(httparse::Status::Partial) => None,
        Err(_) => Some(None),
    }
}
