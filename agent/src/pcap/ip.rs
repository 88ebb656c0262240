//! IPv4/IPv6 + TCP headers → [`Packet`].
//!
//! The decoders work on slices and report the payload as a range, so the pcap
//! reader can hand out [`Bytes`] that share its read buffer instead of copying
//! every payload. Header fields are read from fixed-size arrays taken with
//! `get(..N)`, so a short or lying packet is a [`SkipReason`], never a panic.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    ops::Range,
};

use bytes::Bytes;

use super::{DecodeError, DecodeStats, SkipReason};
use crate::event::{Nanos, Packet};

const IPPROTO_TCP: u8 = 6;
/// How many IPv6 extension headers we walk before giving up; real traffic has
/// zero or one, a long chain is either an attack or garbage.
const MAX_IPV6_EXT_HEADERS: usize = 8;

/// A TCP segment found in an IP packet; `payload` indexes the input slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub flags: u8,
    pub payload_len: u32,
    pub payload: Range<usize>,
}

impl Segment {
    pub(crate) fn into_packet(self, ts: Nanos, payload: Bytes) -> Packet {
        Packet {
            ts,
            src: self.src,
            dst: self.dst,
            seq: self.seq,
            flags: self.flags,
            payload_len: self.payload_len,
            payload,
            direction: None,
        }
    }
}

/// Decodes a raw IP packet (version from the first nibble) into a TCP
/// [`Packet`], copying the captured payload.
///
/// `Ok(None)` means the packet is fine but not for us (not TCP, a fragment,
/// unsupported IPv6); `Err` means it is truncated or malformed.
pub fn parse_ip(data: &[u8], ts: Nanos) -> Result<Option<Packet>, DecodeError> {
    match decode_ip(data) {
        Ok(seg) => {
            let payload = data
                .get(seg.payload.clone())
                .map(Bytes::copy_from_slice)
                .unwrap_or_default();
            Ok(Some(seg.into_packet(ts, payload)))
        }
        Err(reason) => skip_to_result(reason),
    }
}

/// Like [`parse_ip`], but the payload shares `data`'s buffer (no copy).
pub fn parse_ip_bytes(data: &Bytes, ts: Nanos) -> Result<Option<Packet>, DecodeError> {
    match decode_ip(data) {
        Ok(seg) => {
            let payload = data.slice(seg.payload.clone());
            Ok(Some(seg.into_packet(ts, payload)))
        }
        Err(reason) => skip_to_result(reason),
    }
}

/// Like [`parse_ip_bytes`], counting the packet or the reason it was skipped
/// in `stats` (for sources that decode many packets, e.g. a raw-IP stream).
pub fn parse_ip_counted(data: &Bytes, ts: Nanos, stats: &mut DecodeStats) -> Option<Packet> {
    stats.frames += 1;
    match decode_ip(data) {
        Ok(seg) => {
            stats.packets += 1;
            let payload = data.slice(seg.payload.clone());
            Some(seg.into_packet(ts, payload))
        }
        Err(reason) => {
            stats.count(reason);
            None
        }
    }
}

fn skip_to_result(reason: SkipReason) -> Result<Option<Packet>, DecodeError> {
    match reason {
        SkipReason::Truncated | SkipReason::Malformed => Err(DecodeError::Packet(reason)),
        _ => Ok(None),
    }
}

/// Decodes an IP packet starting at `data[0]`.
pub(crate) fn decode_ip(data: &[u8]) -> Result<Segment, SkipReason> {
    match data.first().map(|b| b >> 4) {
        Some(4) => decode_ipv4(data),
        Some(6) => decode_ipv6(data),
        Some(_) => Err(SkipReason::Malformed),
        None => Err(SkipReason::Truncated),
    }
}

fn decode_ipv4(data: &[u8]) -> Result<Segment, SkipReason> {
    let h: &[u8; 20] = header(data)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(SkipReason::Malformed);
    }
    let mut total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if total == 0 {
        // Captured on the sending host with TCP segmentation offload: the
        // kernel has not filled in the length yet. The capture is all we know.
        total = data.len();
    }
    if total < ihl {
        return Err(SkipReason::Malformed);
    }
    if data.len() < ihl {
        return Err(SkipReason::Truncated);
    }
    // More-fragments flag or a non-zero offset: a piece of a larger packet.
    if u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
        return Err(SkipReason::Fragment);
    }
    if h[9] != IPPROTO_TCP {
        return Err(SkipReason::NonTcp);
    }
    let src = IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19]));
    // Bytes past `total` are link-layer padding (short Ethernet frames).
    let captured_end = data.len().min(total);
    decode_tcp(data, ihl, captured_end, total - ihl, src, dst)
}

fn decode_ipv6(data: &[u8]) -> Result<Segment, SkipReason> {
    let h: &[u8; 40] = header(data)?;
    let plen = usize::from(u16::from_be_bytes([h[4], h[5]]));
    // Zero: a jumbogram or (more likely) segmentation offload on the sender.
    let total = if plen == 0 { data.len() } else { 40 + plen };
    let captured_end = data.len().min(total);
    let mut next = h[6];
    let mut off = 40usize;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            IPPROTO_TCP => {
                let src = IpAddr::V6(Ipv6Addr::from(array16(&h[8..24])));
                let dst = IpAddr::V6(Ipv6Addr::from(array16(&h[24..40])));
                let wire = total.checked_sub(off).ok_or(SkipReason::Malformed)?;
                return decode_tcp(data, off, captured_end, wire, src, dst);
            }
            // Hop-by-hop, routing, destination options, mobility, HIP, shim6:
            // length in 8-octet units, not counting the first 8.
            0 | 43 | 60 | 135 | 139 | 140 => {
                let (nh, len) = ext_header(data, off)?;
                next = nh;
                off += (usize::from(len) + 1) * 8;
            }
            // Fragment header: skip only "atomic" fragments (offset 0, no M).
            44 => {
                let frag = data
                    .get(off..)
                    .and_then(<[u8]>::first_chunk::<8>)
                    .ok_or(SkipReason::Truncated)?;
                let offset_m = u16::from_be_bytes([frag[2], frag[3]]);
                if offset_m & 0xfff9 != 0 {
                    return Err(SkipReason::Fragment);
                }
                next = frag[0];
                off += 8;
            }
            // Authentication header: length in 4-octet units, minus 2.
            51 => {
                let (nh, len) = ext_header(data, off)?;
                next = nh;
                off += (usize::from(len) + 2) * 4;
            }
            // ESP: the rest is encrypted.
            50 => return Err(SkipReason::UnsupportedIpv6),
            _ => return Err(SkipReason::NonTcp),
        }
        if off > total {
            return Err(SkipReason::Malformed);
        }
    }
    Err(SkipReason::UnsupportedIpv6)
}

fn ext_header(data: &[u8], off: usize) -> Result<(u8, u8), SkipReason> {
    match data.get(off..off + 2) {
        Some(&[nh, len]) => Ok((nh, len)),
        _ => Err(SkipReason::Truncated),
    }
}

/// Decodes the TCP header at `data[off..]`. `captured_end` is where the
/// captured IP packet ends, `wire_len` the TCP segment's length on the wire.
fn decode_tcp(
    data: &[u8],
    off: usize,
    captured_end: usize,
    wire_len: usize,
    src: IpAddr,
    dst: IpAddr,
) -> Result<Segment, SkipReason> {
    let seg = data.get(off..captured_end).unwrap_or_default();
    let Some(t) = seg.first_chunk::<20>() else {
        return Err(if wire_len < 20 {
            SkipReason::Malformed
        } else {
            SkipReason::Truncated
        });
    };
    let doff = usize::from(t[12] >> 4) * 4;
    if doff < 20 || wire_len < doff {
        return Err(SkipReason::Malformed);
    }
    let payload_len = u32::try_from(wire_len - doff).map_err(|_| SkipReason::Malformed)?;
    // A short snaplen may cut into the TCP options (`tcpdump -s 64` with
    // timestamps on): ports, sequence, flags and lengths are all known, so
    // the packet still counts, with no captured payload.
    let payload_start = (off + doff).min(captured_end);
    Ok(Segment {
        src: SocketAddr::new(src, u16::from_be_bytes([t[0], t[1]])),
        dst: SocketAddr::new(dst, u16::from_be_bytes([t[2], t[3]])),
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        flags: t[13],
        payload_len,
        payload: payload_start..captured_end,
    })
}

fn header<const N: usize>(data: &[u8]) -> Result<&[u8; N], SkipReason> {
    data.first_chunk::<N>().ok_or(SkipReason::Truncated)
}

fn array16(s: &[u8]) -> [u8; 16] {
    let mut a = [0u8; 16];
    for (d, b) in a.iter_mut().zip(s) {
        *d = *b;
    }
    a
}
