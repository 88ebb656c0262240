//! Bounded reassembly of the first bytes of one direction of a TCP flow.
//!
//! Only the start of a stream matters for what rampwatch checks: the TLS
//! handshake (including the client's Certificate flight) and the first HTTP
//! request heads. So each direction keeps at most `cap` bytes in sequence
//! order; out-of-order segments inside that window wait in a short list,
//! retransmissions are trimmed, and holes that never fill are counted as
//! gaps. Past the window (or after a hole or a truncated capture) the stream
//! is *done* and later segments are looked at one by one.

use bytes::Bytes;

/// Out-of-order segments kept while waiting for a hole to fill.
const MAX_PENDING: usize = 16;

/// Where a segment landed relative to the reassembled prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The prefix grew; it now ends at `end` (bytes from the stream start).
    Extended { end: usize },
    /// Held until the bytes before it arrive, or a copy of bytes already held.
    Held,
    /// Already in the prefix (a retransmission) or before the stream start.
    Old,
    /// The prefix is done; the segment starts `offset` bytes into the stream
    /// (`None` when the stream start was never seen).
    Beyond { offset: Option<u64> },
}

/// The reassembled prefix of one direction.
#[derive(Debug, Default)]
pub struct StreamPrefix {
    /// Sequence number of the first byte of the stream (offsets count from
    /// here).
    base: Option<u32>,
    /// Sequence number of the first byte of `buf`: the stream start, or
    /// where [`StreamPrefix::restart`] put it.
    start: u32,
    buf: Vec<u8>,
    pending: Vec<(u32, Bytes)>,
    done: bool,
    /// Holes that never filled, and captures that cut a segment short.
    pub gaps: u32,
    /// Segments that arrived before bytes that precede them.
    pub out_of_order: u32,
}

impl StreamPrefix {
    /// The contiguous bytes from the start of the stream.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Heap bytes held (buffer and segments waiting for a hole).
    pub fn buffered(&self) -> usize {
        self.buf.capacity() + self.pending.iter().map(|(_, b)| b.len()).sum::<usize>()
    }

    /// No more bytes will be added.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether the start of the stream is known (a SYN or a first segment).
    pub fn has_base(&self) -> bool {
        self.base.is_some()
    }

    /// Notes a SYN: data starts one past its sequence number.
    pub fn syn(&mut self, seq: u32) {
        if self.buf.is_empty() && self.pending.is_empty() && !self.done {
            self.base = Some(seq.wrapping_add(1));
            self.start = seq.wrapping_add(1);
        }
    }

    /// Stream offset of the first byte of [`StreamPrefix::bytes`].
    pub fn bytes_offset(&self) -> u64 {
        self.offset_of(self.start).unwrap_or(0)
    }

    /// Starts a new prefix at `seq` (a request head cut across segments after
    /// the first prefix was released), keeping the stream's offsets.
    pub fn restart(&mut self, seq: u32) {
        if self.base.is_none() {
            self.base = Some(seq);
        }
        self.start = seq;
        self.buf.clear();
        self.pending.clear();
        self.done = false;
    }

    /// What to classify a stream by, given the segment `payload` that just
    /// arrived: the contiguous prefix (and whether it is final), or the
    /// segment alone when the prefix was already released; `None` while
    /// nothing contiguous is there (a segment held out of order).
    pub fn classifiable<'a>(&'a self, payload: &'a [u8]) -> Option<(&'a [u8], bool)> {
        if self.is_done() && self.buf.is_empty() {
            Some((payload, true))
        } else if self.buf.is_empty() {
            None
        } else {
            Some((&self.buf, self.is_done()))
        }
    }

    /// Takes the reassembled bytes and stops reassembly: another parser
    /// reads this direction from here on.
    pub fn take(&mut self) -> Vec<u8> {
        self.finish();
        std::mem::take(&mut self.buf)
    }

    /// Stops reassembly and frees the buffer: the parsers are done with it.
    pub fn release(&mut self) {
        self.finish();
        self.buf = Vec::new();
    }

    /// Stops reassembly, counting a hole that is still waiting as a gap.
    pub fn finish(&mut self) {
        if !self.done {
            if !self.pending.is_empty() {
                self.gaps = self.gaps.saturating_add(1);
                self.pending = Vec::new();
            }
            self.done = true;
            // Keep the bytes: parsers may still look at them; the memory
            // bound is the cap, not the lifetime.
        }
    }

    /// Offset of `seq` from the stream start, when that start is known and
    /// `seq` is not before it.
    pub fn offset_of(&self, seq: u32) -> Option<u64> {
        let base = self.base?;
        let off = seq.wrapping_sub(base);
        // Offsets past 2^31 are sequence numbers before the base.
        (off < 1 << 31).then_some(u64::from(off))
    }

    /// Adds a segment. `payload` is what was captured of a segment of
    /// `wire_len` bytes; `cap` bounds the prefix.
    pub fn push(&mut self, seq: u32, payload: &Bytes, wire_len: u32, cap: usize) -> Placement {
        if payload.is_empty() {
            return Placement::Old;
        }
        if self.base.is_none() {
            self.base = Some(seq);
            self.start = seq;
        }
        let base = self.start;
        if self.done {
            return Placement::Beyond {
                offset: self.offset_of(seq),
            };
        }
        let off = seq.wrapping_sub(base);
        if off >= 1 << 31 {
            // Starts before the stream start: keep only what is new.
            let skip = base.wrapping_sub(seq) as usize;
            if skip >= payload.len() {
                return Placement::Old;
            }
            let rest = payload.slice(skip..);
            let rest_wire = wire_len.saturating_sub(skip as u32);
            return self.push(base, &rest, rest_wire, cap);
        }
        let off = off as usize;
        let truncated = (payload.len() as u64) < u64::from(wire_len);
        let have = self.buf.len();
        if off > have {
            if off >= cap {
                self.finish();
                return Placement::Beyond {
                    offset: self.offset_of(seq),
                };
            }
            if self.pending.iter().any(|(s, _)| *s == seq) {
                return Placement::Held;
            }
            self.out_of_order = self.out_of_order.saturating_add(1);
            if self.pending.len() >= MAX_PENDING {
                self.finish();
                return Placement::Beyond {
                    offset: self.offset_of(seq),
                };
            }
            // A copy, not a share: a live payload is cut from a 64 KiB
            // chunk of the ring reader's (`capture::handover::Payloads`),
            // a pcap's from its read buffer, and a segment held for a hole
            // must not keep either alive.
            self.pending.push((seq, Bytes::copy_from_slice(payload)));
            return Placement::Held;
        }
        let end = off + payload.len();
        if end <= have {
            return Placement::Old;
        }
        self.append(&payload[have - off..], cap);
        if self.buf.len() == have {
            // No room at all (cap reached or no budget): look at it alone.
            return Placement::Beyond {
                offset: self.offset_of(seq),
            };
        }
        if truncated {
            // The bytes after the captured part are unknown: a hole for good.
            self.gaps = self.gaps.saturating_add(1);
            self.finish();
        }
        self.drain_pending(base, cap);
        Placement::Extended {
            end: self.buf.len(),
        }
    }

    fn append(&mut self, bytes: &[u8], cap: usize) {
        let room = cap.saturating_sub(self.buf.len());
        let take = bytes.len().min(room);
        if let Some(b) = bytes.get(..take) {
            self.buf.extend_from_slice(b);
        }
        if self.buf.len() >= cap {
            self.pending.clear();
            self.done = true;
        }
    }

    fn drain_pending(&mut self, base: u32, cap: usize) {
        while !self.done && !self.pending.is_empty() {
            let have = self.buf.len();
            let mut progressed = false;
            let mut i = 0;
            while i < self.pending.len() {
                let (seq, _) = self.pending[i];
                let off = seq.wrapping_sub(base) as usize;
                if off <= have {
                    let (_, data) = self.pending.swap_remove(i);
                    if off + data.len() > have {
                        self.append(&data[have - off..], cap);
                        progressed = true;
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            if !progressed {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn in_order_and_retransmission() {
        let mut s = StreamPrefix::default();
        s.syn(999);
        assert_eq!(
            s.push(1000, &b("abc"), 3, 64),
            Placement::Extended { end: 3 }
        );
        assert_eq!(s.push(1000, &b("abc"), 3, 64), Placement::Old);
        // Overlapping retransmission with new bytes.
        assert_eq!(
            s.push(1001, &b("bcde"), 4, 64),
            Placement::Extended { end: 5 }
        );
        assert_eq!(s.bytes(), b"abcde");
        assert_eq!(s.gaps, 0);
    }

    #[test]
    fn out_of_order_fills_in() {
        let mut s = StreamPrefix::default();
        s.syn(0);
        assert_eq!(s.push(4, &b("def"), 3, 64), Placement::Held);
        assert_eq!(s.push(7, &b("gh"), 2, 64), Placement::Held);
        assert_eq!(s.push(1, &b("abc"), 3, 64), Placement::Extended { end: 8 });
        assert_eq!(s.bytes(), b"abcdefgh");
        assert_eq!(s.out_of_order, 2);
        assert_eq!(s.gaps, 0);
    }

    #[test]
    fn bound_is_respected_and_later_segments_are_beyond() {
        let mut s = StreamPrefix::default();
        s.syn(0);
        assert_eq!(
            s.push(1, &b("0123456789"), 10, 8),
            Placement::Extended { end: 8 }
        );
        assert!(s.is_done());
        assert_eq!(s.bytes(), b"01234567");
        assert_eq!(
            s.push(11, &b("x"), 1, 8),
            Placement::Beyond { offset: Some(10) }
        );
    }

    #[test]
    fn unfilled_hole_counts_a_gap() {
        let mut s = StreamPrefix::default();
        s.syn(0);
        s.push(1, &b("ab"), 2, 64);
        s.push(10, &b("zz"), 2, 64);
        s.finish();
        assert_eq!(s.gaps, 1);
        assert_eq!(s.bytes(), b"ab");
    }

    #[test]
    fn truncated_capture_ends_the_prefix() {
        let mut s = StreamPrefix::default();
        assert_eq!(
            s.push(50, &b("abcd"), 100, 64),
            Placement::Extended { end: 4 }
        );
        assert!(s.is_done());
        assert_eq!(s.gaps, 1);
        assert_eq!(
            s.push(150, &b("GET"), 3, 64),
            Placement::Beyond { offset: Some(100) }
        );
    }

    #[test]
    fn segment_before_syn_base_is_trimmed() {
        let mut s = StreamPrefix::default();
        s.syn(100);
        assert_eq!(
            s.push(100, &b("xab"), 3, 64),
            Placement::Extended { end: 2 }
        );
        assert_eq!(s.bytes(), b"ab");
        assert_eq!(s.push(90, &b("xx"), 2, 64), Placement::Old);
    }

    #[test]
    fn sequence_wraparound() {
        let mut s = StreamPrefix::default();
        s.syn(u32::MAX - 1);
        assert_eq!(
            s.push(u32::MAX, &b("ab"), 2, 64),
            Placement::Extended { end: 2 }
        );
        assert_eq!(s.push(1, &b("cd"), 2, 64), Placement::Extended { end: 4 });
        assert_eq!(s.bytes(), b"abcd");
    }
}
