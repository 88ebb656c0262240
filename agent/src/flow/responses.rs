//! Pairing each request of a flow with its response, or saying it was not
//! seen.
//!
//! Every request gets a per-flow id ([`Responses::open`]) and, exactly
//! once, an [`Answer`]: the status of its response, or `None` when the
//! response was not seen (lost or unsampled bytes, a reset stream, the flow
//! ended first) or its status could not be read. Nothing is guessed:
//!
//! - HTTP/2 pairs by stream id. RST_STREAM before a response, streams a
//!   GOAWAY says were not processed, and streams still open at the end are
//!   answered `None`.
//! - HTTP/1 responses come in request order. The server stream is followed
//!   like the client's: a head is due where the previous response's body
//!   ends (Content-Length; none for HEAD, 1xx, 204, 304), and several heads
//!   in one segment (pipelining) are all read. A head found where one was
//!   due answers the oldest unanswered request. A head found elsewhere
//!   (after lost server bytes, a chunked or read-to-close body) answers it
//!   only when it is the one request outstanding; otherwise responses may
//!   have gone unseen, so every outstanding request is answered `None` and
//!   the head is counted as unpaired. A request found after lost client
//!   bytes ([`Request::after_gap`]) may follow unseen requests whose
//!   responses come first: it is answered `None`. `1xx` interim responses
//!   are skipped; a `101` ends HTTP/1 on the connection (an `Upgrade: h2c`
//!   request is then answered on HTTP/2 stream 1).
//!
//! Live, the kernel samples every server segment that starts with
//! `HTTP/1.` (and every segment of an HTTP/2 flow), so response heads reach
//! userspace like request heads.

use std::collections::VecDeque;

use super::{
    Request,
    reassembly::{Placement, StreamPrefix},
};
use crate::{
    event::Packet,
    protocol::http_response::{self, ResponseBody, ResponseHead},
};

/// Requests awaiting an answer per flow, per queue (HTTP/1 order, HTTP/2
/// streams); past it the oldest is answered `None`. Bounds memory on a flow
/// whose server never answers (the engine keeps a small record per watched
/// request until its answer): deeper than any real pipeline, and than the
/// 100 concurrent streams HTTP/2 servers usually allow.
const MAX_OUTSTANDING: usize = 128;
/// Response heads read from one buffer at most (bounds work on garbage).
const MAX_HEADS: usize = 1024;

/// The outcome of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// [`Request::id`].
    pub request: u64,
    /// Final status; `None`: not seen or unreadable.
    pub status: Option<u16>,
}

/// Counters of response pairing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponseStats {
    /// Responses paired with a request.
    pub paired: u64,
    /// Requests answered `None`.
    pub unknown: u64,
    /// Response heads that could not be paired (see the module comment).
    pub unpaired: u64,
}

#[derive(Clone, Copy, Debug)]
struct Outstanding {
    id: u64,
    head: bool,
    after_gap: bool,
    /// A 2xx to CONNECT turns the connection into a tunnel.
    connect: bool,
}

/// Per-flow pairing state.
#[derive(Debug)]
pub struct Responses {
    last_id: u64,
    /// HTTP/1 requests in order.
    outstanding: VecDeque<Outstanding>,
    /// HTTP/2 stream → request id.
    streams: VecDeque<(u32, u64)>,
    /// Server-stream offset of the next due HTTP/1 head; `None` when lost.
    next: Option<u64>,
    /// End of the furthest server segment looked at (retransmissions).
    seen_end: u64,
    /// HTTP/1 is over on this connection (101, CONNECT tunnel).
    switched: bool,
    /// Answers not yet taken by the engine.
    pub answers: Vec<Answer>,
    pub stats: ResponseStats,
}

impl Default for Responses {
    /// A stream starts with a response head.
    fn default() -> Self {
        Self {
            last_id: 0,
            outstanding: VecDeque::new(),
            streams: VecDeque::new(),
            next: Some(0),
            seen_end: 0,
            switched: false,
            answers: Vec::new(),
            stats: ResponseStats::default(),
        }
    }
}

impl Responses {
    /// Registers requests not registered yet (id 0).
    pub fn open_all(&mut self, reqs: &mut [Request]) {
        for r in reqs.iter_mut().filter(|r| r.id == 0) {
            self.open(r);
        }
    }

    /// Gives `req` its id and waits for its answer.
    pub fn open(&mut self, req: &mut Request) {
        self.last_id += 1;
        req.id = self.last_id;
        if let Some(s) = req.stream_id {
            if self.streams.len() >= MAX_OUTSTANDING
                && let Some((_, id)) = self.streams.pop_front()
            {
                self.answer(id, None);
            }
            self.streams.push_back((s, req.id));
            return;
        }
        if self.outstanding.len() >= MAX_OUTSTANDING
            && let Some(o) = self.outstanding.pop_front()
        {
            self.answer(o.id, None);
        }
        self.outstanding.push_back(Outstanding {
            id: req.id,
            head: req.method.eq_ignore_ascii_case("HEAD"),
            after_gap: req.after_gap,
            connect: req.method.eq_ignore_ascii_case("CONNECT"),
        });
    }

    fn answer(&mut self, request: u64, status: Option<u16>) {
        if status.is_some() {
            self.stats.paired += 1;
        } else {
            self.stats.unknown += 1;
        }
        self.answers.push(Answer { request, status });
    }

    /// HTTP/2: the final response head of `stream` (`None`: undecodable).
    pub fn stream_response(&mut self, stream: u32, status: Option<u16>) {
        if let Some(at) = self.streams.iter().position(|(s, _)| *s == stream)
            && let Some((_, id)) = self.streams.remove(at)
        {
            self.answer(id, status);
        }
    }

    /// HTTP/2: `stream` was reset before its response.
    pub fn stream_reset(&mut self, stream: u32) {
        self.stream_response(stream, None);
    }

    /// HTTP/2: GOAWAY says streams above `last` were not processed.
    pub fn goaway(&mut self, last: u32) {
        let (gone, kept): (Vec<_>, Vec<_>) = self.streams.drain(..).partition(|(s, _)| *s > last);
        self.streams = kept.into();
        for (_, id) in gone {
            self.answer(id, None);
        }
    }

    /// An `Upgrade: h2c` request was answered `101`: its response comes on
    /// HTTP/2 stream 1.
    pub fn upgraded(&mut self) {
        self.switched = true;
        if let Some(o) = self.outstanding.pop_back() {
            self.streams.push_back((1, o.id));
        }
        self.flush_outstanding();
    }

    /// The flow ended: whatever is unanswered was not seen.
    pub fn finish(&mut self) {
        self.flush_outstanding();
        for (_, id) in std::mem::take(&mut self.streams) {
            self.answer(id, None);
        }
    }

    fn flush_outstanding(&mut self) {
        for o in std::mem::take(&mut self.outstanding) {
            self.answer(o.id, None);
        }
    }

    /// One server segment of an HTTP/1 flow (wire or TLS clear text),
    /// placed by `stream` as `placement`.
    pub fn on_server_segment(
        &mut self,
        stream: &mut StreamPrefix,
        p: &Packet,
        placement: Placement,
    ) {
        if self.switched {
            stream.release();
            return;
        }
        match placement {
            Placement::Extended { .. } if self.next.is_none() => stream.release(),
            Placement::Extended { .. } => {
                // Once read, the prefix is let go: later segments are read
                // one by one at their offsets (a response head starts its
                // segment, and the kernel samples those).
                let off = stream.bytes_offset();
                self.seen_end = self.seen_end.max(off + stream.bytes().len() as u64);
                let waiting = self.scan(stream.bytes(), off, true, !stream.is_done());
                if !waiting {
                    stream.release();
                }
            }
            Placement::Beyond { offset } => {
                let Some(o) = offset else {
                    // The stream's start was never seen: no offsets.
                    if http_response::status_line(&p.payload).is_some() {
                        self.next = None;
                        self.scan(&p.payload, 0, false, false);
                        self.next = None;
                    }
                    return;
                };
                if o < self.seen_end {
                    return;
                }
                self.seen_end = o + u64::from(p.payload_len);
                if self.next.is_some_and(|n| o < n) {
                    // Inside a body.
                    return;
                }
                let due = self.next == Some(o);
                if !due {
                    self.next = None;
                    if http_response::status_line(&p.payload).is_none() {
                        return;
                    }
                }
                // A head cut by the capture's snaplen counts by its status
                // line; a body's end is known from its length all the same.
                self.scan(&p.payload, o, due, false);
            }
            Placement::Held | Placement::Old => {}
        }
    }

    /// Reads heads in `bytes` (at stream offset `off`). `due`: the first
    /// head is where one was expected. `more`: more bytes of this buffer
    /// may come (a reassembling prefix), so a cut head waits. Returns
    /// whether it waits.
    fn scan(&mut self, bytes: &[u8], off: u64, mut due: bool, more: bool) -> bool {
        let end = off + bytes.len() as u64;
        let mut pos = match self.next {
            Some(n) => n.max(off),
            None if !due => off,
            None => return false,
        };
        for _ in 0..MAX_HEADS {
            if pos >= end {
                self.next = Some(pos);
                return false;
            }
            let Some(rest) = usize::try_from(pos - off).ok().and_then(|i| bytes.get(i..)) else {
                self.next = None;
                return false;
            };
            let to_head = self.outstanding.front().is_some_and(|o| o.head);
            match http_response::parse_response_head(rest, to_head) {
                ResponseHead::Complete {
                    status,
                    head_len,
                    body,
                } => {
                    self.head(status, due);
                    pos += head_len as u64;
                    match body {
                        ResponseBody::None => {}
                        ResponseBody::Length(n) => pos = pos.saturating_add(n),
                        ResponseBody::Unknown => {
                            self.next = None;
                            return false;
                        }
                    }
                    if self.switched {
                        return false;
                    }
                    due = true;
                }
                ResponseHead::StatusOnly { status } => {
                    self.head(status, due);
                    self.next = None;
                    return false;
                }
                ResponseHead::Partial if more => {
                    self.next = Some(pos);
                    return true;
                }
                ResponseHead::Partial | ResponseHead::NotResponse => {
                    self.next = None;
                    return false;
                }
            }
        }
        self.next = None;
        false
    }

    /// A response head with `status`; `due`: found where one was expected.
    fn head(&mut self, status: u16, due: bool) {
        if http_response::is_interim(status) {
            return;
        }
        let certain = match self.outstanding.front() {
            None => false,
            Some(front) if front.after_gap => false,
            Some(_) => due || self.outstanding.len() == 1,
        };
        if !certain {
            self.stats.unpaired += 1;
            self.flush_outstanding();
            return;
        }
        let connect = self.outstanding.pop_front().is_some_and(|o| {
            self.answer(o.id, Some(status));
            o.connect
        });
        if status == 101 || (connect && (200..300).contains(&status)) {
            // The connection speaks another protocol from here.
            self.switched = true;
            self.flush_outstanding();
        }
    }
}
