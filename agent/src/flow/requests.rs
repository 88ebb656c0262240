//! Finding every HTTP request head in the client's stream.
//!
//! While the stream's prefix is being reassembled, heads are split out of it
//! by `protocol::http::scan_requests` (bodies skipped by Content-Length), so
//! heads cut across segments and pipelined heads all count. Once everything
//! buffered is consumed the prefix is released and each later segment that
//! starts where the next head is expected (or, after a chunked body, unseen
//! bytes or other loss of track, any segment that starts with a method token
//! or with a whole lenient head naming HTTP/1.x) is scanned on its own; a head cut short there restarts a small prefix at that segment
//! to wait for its end.

use super::{
    dissect,
    facts::Request,
    reassembly::{Placement, StreamPrefix},
};
use crate::{
    event::Packet,
    protocol::{
        http::{self, CredentialHeaders, ScanEnd},
        http_lenient,
    },
};

/// Bytes buffered for one head cut across segments after the first prefix.
const HEAD_CAP: usize = http::MAX_HEAD;

/// Where the next request head is expected in the client's stream.
#[derive(Debug)]
pub struct RequestCursor {
    /// Stream offset of the next head; `None` when lost (chunked body,
    /// protocol switch, garbage) until a segment starts with a method.
    next: Option<u64>,
    /// End of the furthest segment looked at, to skip retransmissions.
    seen_end: u64,
    /// See [`RequestCursor::switched_at`].
    switched_at: Option<u64>,
    /// The next head found is a resynchronisation after lost track
    /// ([`Request::after_gap`]).
    resync: bool,
}

/// How a scan ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// Every byte was accounted for.
    Consumed,
    /// A head is cut short; more bytes needed.
    Waiting,
    /// Not at a head any more.
    Lost,
}

impl Default for RequestCursor {
    /// A stream starts with a head: one is due at offset 0, whatever its
    /// method (a lenient server serves extension methods too).
    fn default() -> Self {
        Self {
            next: Some(0),
            seen_end: 0,
            switched_at: None,
            resync: false,
        }
    }
}

impl RequestCursor {
    /// Stream offset right after a head that switches protocols (an
    /// `Upgrade: h2c` request, CONNECT): where the other protocol begins.
    pub fn switched_at(&self) -> Option<u64> {
        self.switched_at
    }

    /// Parses heads in `bytes` (which start at stream offset `off`).
    /// `last` means no more bytes will follow: a partial head counts.
    pub fn scan(
        &mut self,
        bytes: &[u8],
        off: u64,
        last: bool,
        creds: &CredentialHeaders,
        out: &mut Vec<Request>,
    ) -> Scan {
        let end = off + bytes.len() as u64;
        let pos = match self.next {
            Some(n) => n.max(off),
            None if http::starts_with_method(bytes) || http_lenient::resynchronises(bytes) => {
                self.resync = true;
                off
            }
            None => return Scan::Lost,
        };
        if pos >= end {
            self.next = Some(pos);
            return Scan::Consumed;
        }
        let Some(rest) = usize::try_from(pos - off).ok().and_then(|i| bytes.get(i..)) else {
            self.next = None;
            return Scan::Lost;
        };
        let scan = http::scan_requests_with(rest, creds);
        let first = out.len();
        out.extend(scan.requests);
        if let Some(r) = out.get_mut(first) {
            r.after_gap = std::mem::take(&mut self.resync);
        }
        let after = pos + scan.consumed as u64;
        match scan.end {
            ScanEnd::Complete => {
                self.next = Some(after);
                Scan::Consumed
            }
            ScanEnd::InBody { remaining } => {
                self.next = Some(after.saturating_add(remaining));
                Scan::Consumed
            }
            ScanEnd::NeedMore if !last => {
                self.next = Some(after);
                Scan::Waiting
            }
            ScanEnd::NeedMore => {
                if let Some(req) = rest.get(scan.consumed..).and_then(dissect::partial_request) {
                    out.push(req);
                }
                self.next = None;
                Scan::Lost
            }
            ScanEnd::Stopped | ScanEnd::NotHttp => {
                if scan.end == ScanEnd::Stopped {
                    self.switched_at = Some(after);
                }
                self.next = None;
                Scan::Lost
            }
        }
    }
}

/// Handles one client segment of an HTTP flow.
pub fn on_segment(
    cursor: &mut RequestCursor,
    stream: &mut StreamPrefix,
    p: &Packet,
    placement: Placement,
    creds: &CredentialHeaders,
    out: &mut Vec<Request>,
) {
    match placement {
        Placement::Extended { .. } => {
            let off = stream.bytes_offset();
            cursor.seen_end = cursor.seen_end.max(off + stream.bytes().len() as u64);
            let scan = cursor.scan(stream.bytes(), off, stream.is_done(), creds, out);
            if scan != Scan::Waiting || stream.is_done() {
                stream.release();
            }
        }
        Placement::Beyond { offset } => {
            if let Some(o) = offset {
                if o < cursor.seen_end {
                    // A retransmission (or late reordering) of bytes looked at.
                    return;
                }
                cursor.seen_end = o + u64::from(p.payload_len);
                if cursor.next.is_some_and(|n| o < n) {
                    // Inside a body.
                    return;
                }
            }
            // Where a head is due, any request line a lenient server
            // takes counts; elsewhere (track lost) a known method
            // resynchronises, or a whole lenient head that names
            // HTTP/1.x (the kernel samples segments that start like one),
            // but no looser form, or body bytes would pass for requests.
            let due = offset.is_some() && cursor.next == offset;
            if !due
                && !http::starts_with_method(&p.payload)
                && !http_lenient::resynchronises(&p.payload)
            {
                return;
            }
            cursor.resync |= !due;
            cursor.next = offset;
            let truncated = p.payload.len() < p.payload_len as usize;
            let scan = cursor.scan(&p.payload, offset.unwrap_or(0), truncated, creds, out);
            if offset.is_none() {
                cursor.next = None;
            } else if scan == Scan::Waiting {
                wait_for_rest(cursor, stream, p, creds, out);
            }
        }
        Placement::Held | Placement::Old => {}
    }
}

/// A head cut at the end of a segment past the first prefix: buffer from
/// the head on and scan again when the rest arrives.
fn wait_for_rest(
    cursor: &mut RequestCursor,
    stream: &mut StreamPrefix,
    p: &Packet,
    creds: &CredentialHeaders,
    out: &mut Vec<Request>,
) {
    let Some(head_off) = cursor.next else { return };
    let Some(seg_off) = stream.offset_of(p.seq) else {
        return;
    };
    let skip = usize::try_from(head_off.saturating_sub(seg_off)).unwrap_or(usize::MAX);
    if skip >= p.payload.len() {
        return;
    }
    let seq = p.seq.wrapping_add(skip as u32);
    let rest = p.payload.slice(skip..);
    stream.restart(seq);
    let wire = p.payload_len.saturating_sub(skip as u32);
    if let Placement::Extended { .. } = stream.push(seq, &rest, wire, HEAD_CAP) {
        let off = stream.bytes_offset();
        if cursor.scan(stream.bytes(), off, stream.is_done(), creds, out) != Scan::Waiting {
            stream.release();
        }
    }
}
