//! Ground truth from a pcap written by tcpdump: what the kernel carried,
//! parsed independently of rampwatch's own decoder.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

use agent_common::{ether, tcp};
use pcap_parser::{Linktype, parse_pcap};

/// One TCP segment as tcpdump saw it.
#[derive(Clone, Debug)]
pub struct TcpRecord {
    /// Microseconds since the epoch, from the pcap record.
    pub ts_us: u64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub flags: u8,
    /// Length of the IP packet (header included), from the IP header.
    pub ip_len: u32,
    /// Length of the frame on the wire, link-layer header included.
    pub frame_len: u32,
    /// TCP payload length on the wire.
    pub payload_len: u32,
    /// Captured prefix of the payload (tcpdump's snaplen may cut it).
    pub payload: Vec<u8>,
}

/// Totals for one direction of one flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirTotals {
    pub packets: u64,
    pub ip_bytes: u64,
    pub frame_bytes: u64,
    pub payload_bytes: u64,
    pub payload_segments: u64,
    /// Segments whose payload starts with an HTTP/1.x method token.
    pub request_starts: u64,
}

/// Read all TCP segments of a pcap (Ethernet or raw IP link type). Frames
/// that are not TCP are skipped; a truncated file end is tolerated.
pub fn read_pcap(path: &Path) -> Vec<TcpRecord> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    if data.len() < 24 {
        return Vec::new(); // tcpdump has not written its header yet
    }
    let (_, capture) =
        parse_pcap(&data).unwrap_or_else(|e| panic!("parse pcap {}: {e:?}", path.display()));
    let link = capture.header.network;
    capture
        .blocks
        .iter()
        .filter_map(|b| {
            let l3 = match link {
                Linktype::ETHERNET => ethernet_payload(b.data)?,
                Linktype::RAW | Linktype::IPV4 | Linktype::IPV6 => b.data,
                Linktype::LINUX_SLL => b.data.get(16..)?,
                other => panic!("unsupported pcap link type {other:?} in {}", path.display()),
            };
            let mut rec = parse_ip_tcp(l3)?;
            rec.ts_us = u64::from(b.ts_sec) * 1_000_000 + u64::from(b.ts_usec);
            rec.frame_len = b.origlen;
            Some(rec)
        })
        .collect()
}

fn ethernet_payload(frame: &[u8]) -> Option<&[u8]> {
    let mut ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let mut off = 14;
    while ethertype == ether::VLAN || ethertype == ether::QINQ {
        ethertype = u16::from_be_bytes([*frame.get(off + 2)?, *frame.get(off + 3)?]);
        off += 4;
    }
    (ethertype == ether::IPV4 || ethertype == ether::IPV6)
        .then(|| frame.get(off..))
        .flatten()
}

/// Parse an IPv4/IPv6 packet carrying TCP. IPv6 extension headers are not
/// followed: the tests never send them.
pub fn parse_ip_tcp(p: &[u8]) -> Option<TcpRecord> {
    let version = p.first()? >> 4;
    let (src_ip, dst_ip, ip_len, l4): (IpAddr, IpAddr, u32, &[u8]) = match version {
        4 => {
            let ihl = usize::from(p.first()? & 0x0f) * 4;
            if *p.get(9)? != 6 {
                return None;
            }
            let total = u32::from(u16::from_be_bytes([*p.get(2)?, *p.get(3)?]));
            let src = Ipv4Addr::from(<[u8; 4]>::try_from(p.get(12..16)?).ok()?);
            let dst = Ipv4Addr::from(<[u8; 4]>::try_from(p.get(16..20)?).ok()?);
            let end = (total as usize).min(p.len());
            (src.into(), dst.into(), total, p.get(ihl..end)?)
        }
        6 => {
            if *p.get(6)? != 6 {
                return None;
            }
            let plen = u32::from(u16::from_be_bytes([*p.get(4)?, *p.get(5)?]));
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(p.get(8..24)?).ok()?);
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(p.get(24..40)?).ok()?);
            let end = (40 + plen as usize).min(p.len());
            (src.into(), dst.into(), 40 + plen, p.get(40..end)?)
        }
        _ => return None,
    };
    let sport = u16::from_be_bytes([*l4.first()?, *l4.get(1)?]);
    let dport = u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]);
    let seq = u32::from_be_bytes(l4.get(4..8)?.try_into().ok()?);
    let doff = usize::from(l4.get(12)? >> 4) * 4;
    let flags = *l4.get(13)?;
    let ip_hdr = match version {
        4 => u32::from(p.first()? & 0x0f) * 4,
        _ => 40,
    };
    let payload_len = ip_len.saturating_sub(ip_hdr + doff as u32);
    Some(TcpRecord {
        ts_us: 0,
        src: SocketAddr::new(src_ip, sport),
        dst: SocketAddr::new(dst_ip, dport),
        seq,
        flags,
        ip_len,
        frame_len: 0,
        payload_len,
        payload: l4.get(doff..).unwrap_or_default().to_vec(),
    })
}

/// True when `payload` starts with an HTTP/1.x method token and a space.
pub fn starts_with_http_method(payload: &[u8]) -> bool {
    agent_common::http::starts_with_method(payload)
}

/// Per-direction totals of the flow `client` ↔ `server`: index 0 is client to
/// server, 1 is server to client (as `Direction::index`).
pub fn flow_totals(
    records: &[TcpRecord],
    client: SocketAddr,
    server: SocketAddr,
) -> [DirTotals; 2] {
    let mut t = [DirTotals::default(); 2];
    for r in records {
        let d = if r.src == client && r.dst == server {
            0
        } else if r.src == server && r.dst == client {
            1
        } else {
            continue;
        };
        let x = &mut t[d];
        x.packets += 1;
        x.ip_bytes += u64::from(r.ip_len);
        x.frame_bytes += u64::from(r.frame_len);
        x.payload_bytes += u64::from(r.payload_len);
        if r.payload_len > 0 {
            x.payload_segments += 1;
            if starts_with_http_method(&r.payload) {
                x.request_starts += 1;
            }
        }
    }
    t
}

/// The client addresses of all flows to `server` that opened (client SYN) in `records`.
pub fn clients_of(records: &[TcpRecord], server: SocketAddr) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = records
        .iter()
        .filter(|r| r.dst == server && r.flags & tcp::SYN != 0 && r.flags & tcp::ACK == 0)
        .map(|r| r.src)
        .collect();
    out.dedup();
    out
}

/// True once both sides of the flow sent FIN (or either sent RST) and the
/// last FIN was acknowledged: nothing more will be carried.
pub fn flow_closed(records: &[TcpRecord], client: SocketAddr, server: SocketAddr) -> bool {
    let of_flow = |r: &&TcpRecord| {
        (r.src == client && r.dst == server) || (r.src == server && r.dst == client)
    };
    let flow: Vec<&TcpRecord> = records.iter().filter(of_flow).collect();
    if flow.iter().any(|r| r.flags & tcp::RST != 0) {
        return true;
    }
    let fin_c = flow
        .iter()
        .position(|r| r.src == client && r.flags & tcp::FIN != 0);
    let fin_s = flow
        .iter()
        .position(|r| r.src == server && r.flags & tcp::FIN != 0);
    match (fin_c, fin_s) {
        (Some(c), Some(s)) => {
            // The side that sent the later FIN gets a final ACK from the other.
            let (last, acker) = if c > s { (c, server) } else { (s, client) };
            flow.iter().skip(last + 1).any(|r| r.src == acker)
        }
        _ => false,
    }
}
