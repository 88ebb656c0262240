//! Header parsing with `bpf_skb_load_bytes` (works for linear and paged skbs
//! at both hooks). Never reads past what it checked.

use core::{ffi::c_void, mem::MaybeUninit};

use agent_common::stat;
use aya_ebpf::{bindings::__sk_buff, helpers::bpf_skb_load_bytes};

use crate::maps::count;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;

/// What the programs need from one TCP packet.
pub struct Tcp {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub flags: u8,
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

/// `::ffff:a.b.c.d`, built without a zero-fill (the BPF backend cannot
/// emit a memset call).
#[inline(always)]
fn mapped_v4(a: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// `M` bytes of `h` from `at` (constant offsets, checked at compile time by
/// the callers' sizes).
#[inline(always)]
fn sub<const N: usize, const M: usize>(h: &[u8; N], at: usize) -> [u8; M] {
    core::array::from_fn(|i| h[at + i])
}

/// Reads the first `N` bytes at `off` directly from the linear packet data
/// when `off` is 0 (cgroup_skb: the skb starts at the IP header) and they are
/// in the linear part, which saves a helper call; else `bpf_skb_load_bytes`.
#[inline(always)]
fn header<const N: usize>(skb: *mut __sk_buff, off: u32) -> Option<[u8; N]> {
    if off == 0 {
        // SAFETY: context pointer; data/data_end are packet pointers.
        let (data, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
        if data + N <= end {
            // SAFETY: bounds checked right above (and by the verifier).
            return Some(unsafe { core::ptr::read_unaligned(data as *const [u8; N]) });
        }
    }
    load(skb, off)
}

/// `N` bytes at a variable offset: directly from linear data when they are
/// there, else through the helper.
#[inline(always)]
pub fn peek<const N: usize>(skb: *mut __sk_buff, off: u32) -> Option<[u8; N]> {
    // SAFETY: context pointer; data/data_end are packet pointers.
    let (data, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    // The mask gives the verifier a bound on the variable offset.
    let o = (off & 0x1fff) as usize;
    if o == off as usize && data + o + N <= end {
        // SAFETY: bounds checked right above (and by the verifier).
        return Some(unsafe { core::ptr::read_unaligned((data + o) as *const [u8; N]) });
    }
    load(skb, off)
}

#[inline(always)]
fn be16(b0: u8, b1: u8) -> u16 {
    u16::from_be_bytes([b0, b1])
}

#[inline(always)]
fn be32(b: [u8; 4]) -> u32 {
    u32::from_be_bytes(b)
}

/// Offset of the IP header and its ethertype after the Ethernet header and
/// up to two in-band VLAN tags.
#[inline(always)]
pub fn ethernet(skb: *mut __sk_buff) -> Option<(u32, u16)> {
    let mut off = 12u32;
    let mut proto = u16::from_be_bytes(load::<[u8; 2]>(skb, off)?);
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        off += 4;
        proto = u16::from_be_bytes(load::<[u8; 2]>(skb, off)?);
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
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
    if proto == ETH_P_IP {
        // The common case (no IP options) needs a single load for both headers.
        if avail < 40 {
            return None;
        }
        let h: [u8; 40] = header(skb, l3)?;
        if h[9] != IPPROTO_TCP {
            return None;
        }
        let ihl = u32::from(h[0] & 0x0f) * 4;
        if h[0] >> 4 != 4 || ihl < 20 {
            count(stat::MALFORMED);
            return None;
        }
        if be16(h[6], h[7]) & 0x3fff != 0 {
            // A fragment: only the first carries the TCP header, and the
            // payload length would be wrong. Rare for TCP.
            count(stat::SKIPPED_UNPARSED);
            return None;
        }
        let tot = u32::from(be16(h[2], h[3]));
        // 0 with BIG TCP GSO packets: the skb length is the truth then.
        let ip_len = if tot == 0 || tot > avail { avail } else { tot };
        let src = mapped_v4([h[12], h[13], h[14], h[15]]);
        let dst = mapped_v4([h[16], h[17], h[18], h[19]]);
        let th: [u8; 20] = if ihl == 20 {
            sub::<40, 20>(&h, 20)
        } else {
            match load(skb, l3 + ihl) {
                Some(t) => t,
                None => {
                    count(stat::MALFORMED);
                    return None;
                }
            }
        };
        finish(src, dst, &th, l3 + ihl, ip_len, ihl)
    } else if proto == ETH_P_IPV6 {
        if avail < 60 {
            return None;
        }
        let h: [u8; 60] = header(skb, l3)?;
        let plen = u32::from(be16(h[4], h[5]));
        let ip_len = if plen == 0 || plen + 40 > avail {
            avail
        } else {
            plen + 40
        };
        let src = sub::<60, 16>(&h, 8);
        let dst = sub::<60, 16>(&h, 24);
        let mut next = h[6];
        if next == IPPROTO_TCP {
            let th = sub::<60, 20>(&h, 40);
            return finish(src, dst, &th, l3 + 40, ip_len, 40);
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
        let Some(th) = load::<[u8; 20]>(skb, l3 + off) else {
            count(stat::MALFORMED);
            return None;
        };
        finish(src, dst, &th, l3 + off, ip_len, off)
    } else {
        None
    }
}

#[inline(always)]
fn finish(
    src: [u8; 16],
    dst: [u8; 16],
    th: &[u8; 20],
    l4: u32,
    ip_len: u32,
    ip_hdr: u32,
) -> Option<Tcp> {
    let doff = u32::from(th[12] >> 4) * 4;
    if doff < 20 || ip_len < ip_hdr + doff {
        count(stat::MALFORMED);
        return None;
    }
    Some(Tcp {
        src,
        dst,
        sport: be16(th[0], th[1]),
        dport: be16(th[2], th[3]),
        seq: be32([th[4], th[5], th[6], th[7]]),
        flags: th[13],
        ip_len,
        payload_off: l4 + doff,
        payload_len: ip_len - ip_hdr - doff,
    })
}
