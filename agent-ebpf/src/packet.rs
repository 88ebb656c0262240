//! Header parsing with `bpf_skb_load_bytes` (works for linear and paged skbs
//! at both hooks). Never reads past what it checked.

use core::{ffi::c_void, mem::MaybeUninit};

use agent_common::{ether, stat};
use aya_ebpf::{bindings::__sk_buff, helpers::bpf_skb_load_bytes};

use crate::maps::count;

const IPPROTO_TCP: u8 = 6;

/// What the programs need from one TCP packet. The addresses are read
/// separately ([`addrs`]), only for packets that pass the port prefilter.
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub flags: u8,
    pub v6: bool,
    /// Offset of the IP header from `skb->data`.
    pub l3: u32,
    /// IP header + TCP header + payload, from the IP length fields.
    pub ip_len: u32,
    /// Offset of the payload from `skb->data`.
    pub payload_off: u32,
    pub payload_len: u32,
}

/// Reads a fixed-size value at `off`; the length is a constant, so the
/// verifier accepts it.
#[inline(always)]
pub fn load<T: Copy>(skb: *mut __sk_buff, off: u32) -> Option<T> {
    let mut v = MaybeUninit::<T>::uninit();
    // SAFETY: the helper writes exactly size_of::<T>() bytes into `v` or fails.
    let r = unsafe {
        bpf_skb_load_bytes(
            skb as *const c_void,
            off,
            v.as_mut_ptr() as *mut c_void,
            core::mem::size_of::<T>() as u32,
        )
    };
    if r < 0 {
        None
    } else {
        // SAFETY: fully written by the helper, and T is plain bytes.
        Some(unsafe { v.assume_init() })
    }
}

/// `N` 32-bit words at `off`, as they are in the packet (network order
/// bytes, so a word's first byte is its low byte on little-endian BPF).
/// Directly from the linear packet data when they are there, else through
/// `bpf_skb_load_bytes`. Word loads, not byte arrays: an unaligned byte-array
/// read compiles to one load (and usually one stack spill) per byte, which
/// was most of an unmonitored packet's cost. The packet pointer may be only
/// 2-byte aligned (TC, after the Ethernet header), so the read is
/// `read_unaligned`; the verifier enforces no alignment on packet loads
/// where the CPU has efficient unaligned access (x86_64, arm64, the JITs
/// this agent runs on).
#[inline(always)]
pub fn words<const N: usize>(skb: *mut __sk_buff, off: u32) -> Option<[u32; N]> {
    // SAFETY: context pointer; data/data_end are packet pointers.
    let (data, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    // The mask gives the verifier a bound on the variable offset.
    let o = (off & 0x1fff) as usize;
    if o == off as usize && data + o + 4 * N <= end {
        // SAFETY: bounds checked right above (and by the verifier). The
        // address may be only 2-byte aligned, so the read must not assume
        // alignment (a plain `ptr::read` would be undefined behaviour,
        // whatever the JIT tolerates).
        return Some(unsafe { core::ptr::read_unaligned((data + o) as *const [u32; N]) });
    }
    load(skb, off)
}

/// Byte `i` (0 = first in the packet) of a word read by [`words`].
#[inline(always)]
fn byte(w: u32, i: u32) -> u8 {
    (w >> (8 * i)) as u8
}

/// The big-endian 16-bit field at byte `i` (0 or 2) of a word.
#[inline(always)]
fn field16(w: u32, i: u32) -> u16 {
    u16::from_be((w >> (8 * i)) as u16)
}

/// Source and destination address of `p` (IPv4 as `::ffff:a.b.c.d`), read
/// from the packet again: cheaper than carrying them through the prefilter.
#[inline(always)]
pub fn addrs(skb: *mut __sk_buff, p: &Tcp) -> Option<([u8; 16], [u8; 16])> {
    if p.v6 {
        let a: [u32; 8] = words(skb, p.l3 + 8)?;
        Some((
            to_bytes([a[0], a[1], a[2], a[3]]),
            to_bytes([a[4], a[5], a[6], a[7]]),
        ))
    } else {
        let a: [u32; 2] = words(skb, p.l3 + 12)?;
        let ffff = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
        Some((to_bytes([0, 0, ffff, a[0]]), to_bytes([0, 0, ffff, a[1]])))
    }
}

/// Four words as loaded from the packet (native order), back to their 16
/// bytes in wire order: through two 64-bit halves, which LLVM keeps in
/// registers (a byte-wise rebuild spills every byte and overflows the
/// 512-byte BPF stack).
#[inline(always)]
fn to_bytes(w: [u32; 4]) -> [u8; 16] {
    #[cfg(target_endian = "little")]
    let v = u128::from(w[0])
        | (u128::from(w[1]) << 32)
        | (u128::from(w[2]) << 64)
        | (u128::from(w[3]) << 96);
    #[cfg(target_endian = "big")]
    let v = (u128::from(w[0]) << 96)
        | (u128::from(w[1]) << 64)
        | (u128::from(w[2]) << 32)
        | u128::from(w[3]);
    v.to_ne_bytes()
}

/// Offset of the IP header and its ethertype after the Ethernet header and
/// up to two in-band VLAN tags.
#[inline(always)]
pub fn ethernet(skb: *mut __sk_buff) -> Option<(u32, u16)> {
    let mut off = 12u32;
    let mut proto = u16::from_be_bytes(load::<[u8; 2]>(skb, off)?);
    if proto == ether::VLAN || proto == ether::QINQ {
        off += 4;
        proto = u16::from_be_bytes(load::<[u8; 2]>(skb, off)?);
        if proto == ether::VLAN || proto == ether::QINQ {
            off += 4;
            proto = u16::from_be_bytes(load::<[u8; 2]>(skb, off)?);
        }
    }
    Some((off + 2, proto))
}

/// Parses IPv4/IPv6 + TCP at `l3` (ethertype `proto`). `None` for anything
/// that is not a parseable TCP packet (non-TCP is not counted; broken or
/// unsupported TCP packets are).
#[inline(always)]
pub fn tcp(skb: *mut __sk_buff, l3: u32, proto: u16) -> Option<Tcp> {
    // SAFETY: `skb` is the program's context pointer.
    let skb_len = unsafe { (*skb).len };
    let avail = skb_len.checked_sub(l3)?;
    if proto == ether::IPV4 {
        if avail < 40 {
            return None;
        }
        // Version/IHL/length, fragment bits, protocol.
        let h: [u32; 3] = words(skb, l3)?;
        if byte(h[2], 1) != IPPROTO_TCP {
            return None;
        }
        let b0 = byte(h[0], 0);
        let ihl = u32::from(b0 & 0x0f) * 4;
        if b0 >> 4 != 4 || ihl < 20 {
            count(stat::MALFORMED);
            return None;
        }
        if field16(h[1], 2) & 0x3fff != 0 {
            // A fragment: only the first carries the TCP header, and the
            // payload length would be wrong. Rare for TCP.
            count(stat::SKIPPED_UNPARSED);
            return None;
        }
        let tot = u32::from(field16(h[0], 2));
        // 0 with BIG TCP GSO packets: the skb length is the truth then.
        let ip_len = if tot == 0 || tot > avail { avail } else { tot };
        finish(skb, l3, false, ip_len, ihl)
    } else if proto == ether::IPV6 {
        if avail < 60 {
            return None;
        }
        // Version/class/label, payload length/next header/hop limit.
        let h: [u32; 2] = words(skb, l3)?;
        let plen = u32::from(field16(h[1], 0));
        let ip_len = if plen == 0 || plen + 40 > avail {
            avail
        } else {
            plen + 40
        };
        let mut next = byte(h[1], 2);
        if next == IPPROTO_TCP {
            return finish(skb, l3, true, ip_len, 40);
        }
        // Skip up to three hop-by-hop / routing / destination-options
        // headers (MLD, segment routing). Fragments and AH are not parsed;
        // TCP behind them is counted as skipped.
        let mut off = 40u32;
        for _ in 0..3 {
            if !matches!(next, 0 | 43 | 60) {
                break;
            }
            let Some(e) = load::<[u8; 2]>(skb, l3 + off) else {
                count(stat::MALFORMED);
                return None;
            };
            next = e[0];
            off += (u32::from(e[1]) + 1) * 8;
        }
        if next != IPPROTO_TCP {
            if matches!(next, 0 | 43 | 44 | 51 | 60) {
                count(stat::SKIPPED_UNPARSED);
            }
            return None;
        }
        finish(skb, l3, true, ip_len, off)
    } else {
        None
    }
}

/// Reads the TCP header after `ip_hdr` bytes of IP headers.
#[inline(always)]
fn finish(skb: *mut __sk_buff, l3: u32, v6: bool, ip_len: u32, ip_hdr: u32) -> Option<Tcp> {
    let l4 = l3 + ip_hdr;
    // Ports, sequence number, (ack), data offset and flags.
    let Some(t) = words::<4>(skb, l4) else {
        count(stat::MALFORMED);
        return None;
    };
    let doff = u32::from(byte(t[3], 0) >> 4) * 4;
    if doff < 20 || ip_len < ip_hdr + doff {
        count(stat::MALFORMED);
        return None;
    }
    Some(Tcp {
        sport: field16(t[0], 0),
        dport: field16(t[0], 2),
        seq: u32::from_be(t[1]),
        flags: byte(t[3], 1),
        v6,
        l3,
        ip_len,
        payload_off: l4 + doff,
        payload_len: ip_len - ip_hdr - doff,
    })
}
