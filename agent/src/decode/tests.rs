//! Decoder tests: synthetic frames for every link type and skip reason,
//! pcap/pcapng containers written here byte by byte, and real captures made
//! with tcpdump (`testdata/regen.sh`).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use bytes::Bytes;

use super::{DecodeError, DecodeStats, PcapReader, SkipReason, ip, link::LinkType};
use crate::event::{Packet, tcp_flags};

// ---- frame builders -------------------------------------------------------

pub(crate) fn tcp_header(sport: u16, dport: u16, seq: u32, flags: u8, options: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let doff = ((20 + options.len()) / 4) as u8;
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.push(doff << 4);
    t.push(flags);
    t.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(options);
    t
}

pub(crate) fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, frag: u16, body: &[u8]) -> Vec<u8> {
    let total = (20 + body.len()) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 1]);
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(body);
    p
}

pub(crate) fn ipv4_tcp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = tcp_header(sport, dport, 1000, tcp_flags::ACK | tcp_flags::PSH, &[]);
    body.extend_from_slice(payload);
    ipv4([10, 0, 0, 1], [10, 0, 0, 2], 6, 0x4000, &body)
}

fn ipv6(next: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(body.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    let mut src = [0u8; 16];
    src[0] = 0xfd;
    src[15] = 1;
    let mut dst = src;
    dst[15] = 2;
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(body);
    p
}

pub(crate) fn ethernet(ethertype: u16, vlans: &[u16], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    for &tpid in vlans {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&[0x00, 0x2a]);
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn sll(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn sll2(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = ethertype.to_be_bytes().to_vec();
    f.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 6, 2, 0, 0, 0, 0, 1, 0]);
    f.extend_from_slice(payload);
    f
}

// ---- container writers ----------------------------------------------------

static FILE_SEQ: AtomicU32 = AtomicU32::new(0);

pub(crate) fn temp_path(name: &str) -> PathBuf {
    let n = FILE_SEQ.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "rampwatch-decode-{}-{n}-{name}",
        std::process::id()
    ))
}

/// A legacy pcap: (ts_sec, ts_frac, frame, orig_len) records.
pub(crate) fn legacy_pcap(
    linktype: u32,
    nanos: bool,
    big_endian: bool,
    frames: &[(u32, u32, Vec<u8>)],
) -> Vec<u8> {
    let u32b = |v: u32| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u16b = |v: u16| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut out = Vec::new();
    out.extend_from_slice(&u32b(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
    out.extend_from_slice(&u16b(2));
    out.extend_from_slice(&u16b(4));
    out.extend_from_slice(&u32b(0));
    out.extend_from_slice(&u32b(0));
    out.extend_from_slice(&u32b(262_144));
    out.extend_from_slice(&u32b(linktype));
    for (sec, frac, frame) in frames {
        out.extend_from_slice(&u32b(*sec));
        out.extend_from_slice(&u32b(*frac));
        out.extend_from_slice(&u32b(frame.len() as u32));
        out.extend_from_slice(&u32b(frame.len() as u32));
        out.extend_from_slice(frame);
    }
    out
}

fn ng_block(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
    let mut body = body.to_vec();
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    let len = (12 + body.len()) as u32;
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&len.to_le_bytes());
}

pub(crate) fn ng_section(out: &mut Vec<u8>) {
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    ng_block(out, 0x0a0d_0d0a, &shb);
}

/// Interface description with an optional if_tsresol option.
pub(crate) fn ng_interface(out: &mut Vec<u8>, linktype: u16, tsresol: Option<u8>) {
    let mut idb = Vec::new();
    idb.extend_from_slice(&linktype.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&0u32.to_le_bytes());
    if let Some(res) = tsresol {
        idb.extend_from_slice(&9u16.to_le_bytes());
        idb.extend_from_slice(&1u16.to_le_bytes());
        idb.extend_from_slice(&[res, 0, 0, 0]);
        idb.extend_from_slice(&[0, 0, 0, 0]);
    }
    ng_block(out, 1, &idb);
}

pub(crate) fn ng_packet(out: &mut Vec<u8>, iface: u32, ts: u64, frame: &[u8]) {
    let mut epb = Vec::new();
    epb.extend_from_slice(&iface.to_le_bytes());
    epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
    epb.extend_from_slice(&(ts as u32).to_le_bytes());
    epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    epb.extend_from_slice(frame);
    ng_block(out, 6, &epb);
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let path = temp_path(name);
    std::fs::write(&path, bytes).expect("write temp capture");
    path
}

fn read_all(path: &Path) -> (Vec<Packet>, DecodeStats) {
    let mut reader = PcapReader::open(path).expect("open capture");
    let packets: Vec<Packet> = reader.by_ref().map(|p| p.expect("packet")).collect();
    let stats = reader.stats();
    let _ = std::fs::remove_file(path);
    (packets, stats)
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/decode/testdata")
        .join(name)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

// ---- ip / link ------------------------------------------------------------

#[test]
fn ipv4_tcp_fields_and_payload() {
    let pkt = ip::parse_ip(&ipv4_tcp(51000, 443, b"hello"), 7)
        .unwrap()
        .unwrap();
    assert_eq!(pkt.src, addr("10.0.0.1:51000"));
    assert_eq!(pkt.dst, addr("10.0.0.2:443"));
    assert_eq!(pkt.seq, 1000);
    assert_eq!(pkt.flags, tcp_flags::ACK | tcp_flags::PSH);
    assert_eq!(pkt.payload_len, 5);
    assert_eq!(&pkt.payload[..], b"hello");
    assert_eq!(pkt.ts, 7);
    assert_eq!(pkt.direction, None);
}

#[test]
fn ipv4_options_and_tcp_options_are_skipped() {
    let mut body = tcp_header(1, 2, 3, tcp_flags::SYN, &[2, 4, 5, 0xb4, 1, 1, 4, 2]);
    body.extend_from_slice(b"xy");
    let mut p = ipv4([1, 1, 1, 1], [2, 2, 2, 2], 6, 0, &body);
    // Grow IHL to 6 words with a 4-byte NOP option block.
    p[0] = 0x46;
    p.splice(20..20, [1, 1, 1, 0]);
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    let pkt = ip::parse_ip(&p, 0).unwrap().unwrap();
    assert_eq!(&pkt.payload[..], b"xy");
    assert_eq!(pkt.payload_len, 2);
}

#[test]
fn payload_len_comes_from_ip_length_not_capture() {
    let full = ipv4_tcp(1, 2, &[b'a'; 1000]);
    // Snaplen cut after 100 bytes of payload.
    let pkt = ip::parse_ip(&full[..140], 0).unwrap().unwrap();
    assert_eq!(pkt.payload_len, 1000);
    assert_eq!(pkt.payload.len(), 100);
    // Ethernet padding after the IP packet is not payload.
    let mut padded = ipv4_tcp(1, 2, b"");
    padded.extend_from_slice(&[0; 6]);
    let pkt = ip::parse_ip(&padded, 0).unwrap().unwrap();
    assert_eq!(pkt.payload_len, 0);
    assert!(pkt.payload.is_empty());
}

#[test]
fn snaplen_inside_tcp_options_still_gives_the_packet() {
    let mut body = tcp_header(
        1,
        2,
        3,
        tcp_flags::ACK,
        &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
    );
    body.extend_from_slice(b"data");
    let p = ipv4([1; 4], [2; 4], 6, 0, &body);
    // 20 bytes IP + 24 of the 32-byte TCP header.
    let pkt = ip::parse_ip(&p[..44], 0).unwrap().unwrap();
    assert_eq!(
        (pkt.payload_len, pkt.payload.len(), pkt.flags),
        (4, 0, tcp_flags::ACK)
    );
}

#[test]
fn zero_total_length_from_segmentation_offload_uses_capture() {
    let mut p = ipv4_tcp(1, 2, b"abc");
    p[2] = 0;
    p[3] = 0;
    let pkt = ip::parse_ip(&p, 0).unwrap().unwrap();
    assert_eq!(pkt.payload_len, 3);
}

#[test]
fn skip_reasons_for_ip() {
    let check = |bytes: &[u8], want: SkipReason| {
        assert_eq!(ip::decode_ip(bytes).map(|_| ()), Err(want), "{bytes:02x?}");
    };
    let body = tcp_header(1, 2, 3, 0, &[]);
    check(&ipv4([1; 4], [2; 4], 17, 0, &body), SkipReason::NonTcp);
    check(
        &ipv4([1; 4], [2; 4], 6, 0x2000, &body),
        SkipReason::Fragment,
    ); // MF
    check(
        &ipv4([1; 4], [2; 4], 6, 0x0010, &body),
        SkipReason::Fragment,
    ); // offset
    let whole = ipv4([1; 4], [2; 4], 6, 0, &body);
    check(&whole[..30], SkipReason::Truncated);
    check(&whole[..10], SkipReason::Truncated);
    check(&[], SkipReason::Truncated);
    let mut bad_ihl = whole.clone();
    bad_ihl[0] = 0x44;
    check(&bad_ihl, SkipReason::Malformed);
    let mut bad_total = whole.clone();
    bad_total[2..4].copy_from_slice(&10u16.to_be_bytes());
    check(&bad_total, SkipReason::Malformed);
    let mut bad_doff = whole.clone();
    bad_doff[32] = 0x40;
    check(&bad_doff, SkipReason::Malformed);
    check(&[0x55; 40], SkipReason::Malformed);
    assert!(matches!(
        ip::parse_ip(&whole[..30], 0),
        Err(DecodeError::Packet(SkipReason::Truncated))
    ));
    assert!(
        ip::parse_ip(&ipv4([1; 4], [2; 4], 17, 0, &body), 0)
            .unwrap()
            .is_none()
    );
}

#[test]
fn ipv6_with_extension_headers() {
    let mut tcp = tcp_header(50000, 8443, 9, tcp_flags::ACK, &[]);
    tcp.extend_from_slice(b"GET / HTTP/1.1\r\n");
    let pkt = ip::parse_ip(&ipv6(6, &tcp), 0).unwrap().unwrap();
    assert_eq!(pkt.src, addr("[fd00::1]:50000"));
    assert_eq!(pkt.dst, addr("[fd00::2]:8443"));
    assert_eq!(pkt.payload_len, 16);
    // Hop-by-hop (8 bytes) then destination options (16 bytes) then TCP.
    let mut chain = vec![60, 0, 1, 4, 0, 0, 0, 0];
    chain.extend_from_slice(&[6, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    chain.extend_from_slice(&tcp);
    let pkt = ip::parse_ip(&ipv6(0, &chain), 0).unwrap().unwrap();
    assert_eq!(&pkt.payload[..], b"GET / HTTP/1.1\r\n");
    assert_eq!(pkt.payload_len, 16);
    // An atomic fragment header (offset 0, no M flag) is not a fragment.
    let mut atomic = vec![6, 0, 0, 0, 0, 0, 0, 1];
    atomic.extend_from_slice(&tcp);
    assert!(ip::parse_ip(&ipv6(44, &atomic), 0).unwrap().is_some());
    let mut frag = vec![6, 0, 0, 1, 0, 0, 0, 1];
    frag.extend_from_slice(&tcp);
    assert_eq!(
        ip::decode_ip(&ipv6(44, &frag)).map(|_| ()),
        Err(SkipReason::Fragment)
    );
    assert_eq!(
        ip::decode_ip(&ipv6(50, &tcp)).map(|_| ()),
        Err(SkipReason::UnsupportedIpv6)
    );
    assert_eq!(
        ip::decode_ip(&ipv6(17, &tcp)).map(|_| ()),
        Err(SkipReason::NonTcp)
    );
    // Ten hop-by-hop headers in a row: too long a chain.
    let mut long = Vec::new();
    for _ in 0..10 {
        long.extend_from_slice(&[0, 0, 1, 4, 0, 0, 0, 0]);
    }
    long.extend_from_slice(&tcp);
    assert_eq!(
        ip::decode_ip(&ipv6(0, &long)).map(|_| ()),
        Err(SkipReason::UnsupportedIpv6)
    );
    // Extension header claiming more than the packet holds.
    let lying = vec![6, 200, 0, 0, 0, 0, 0, 0];
    assert_eq!(
        ip::decode_ip(&ipv6(0, &lying)).map(|_| ()),
        Err(SkipReason::Malformed)
    );
}

#[test]
fn link_offsets_for_every_type() {
    let ip = ipv4_tcp(1, 2, b"x");
    let cases: Vec<(LinkType, Vec<u8>, usize)> = vec![
        (LinkType::Ethernet, ethernet(0x0800, &[], &ip), 14),
        (LinkType::Ethernet, ethernet(0x0800, &[0x8100], &ip), 18),
        (
            LinkType::Ethernet,
            ethernet(0x0800, &[0x88a8, 0x8100], &ip),
            22,
        ),
        (LinkType::LinuxSll, sll(0x0800, &ip), 16),
        (LinkType::LinuxSll2, sll2(0x86dd, &ip), 20),
        (LinkType::RawIp, ip.clone(), 0),
        (LinkType::Null, [&2u32.to_le_bytes()[..], &ip].concat(), 4),
        (LinkType::Null, [&30u32.to_be_bytes()[..], &ip].concat(), 4),
        (LinkType::Loop, [&2u32.to_be_bytes()[..], &ip].concat(), 4),
    ];
    for (link, frame, want) in cases {
        assert_eq!(link.ip_offset(&frame), Ok(want), "{link}");
    }
    assert_eq!(
        LinkType::Ethernet.ip_offset(&ethernet(0x0806, &[], &[0; 28])),
        Err(SkipReason::NonIp)
    );
    assert_eq!(
        LinkType::Ethernet.ip_offset(&[0; 10]),
        Err(SkipReason::Truncated)
    );
    assert_eq!(
        LinkType::Ethernet.ip_offset(&ethernet(0x8100, &[], &[])),
        Err(SkipReason::Truncated)
    );
    let many_tags = ethernet(0x0800, &[0x8100; 6], &ip);
    assert_eq!(
        LinkType::Ethernet.ip_offset(&many_tags),
        Err(SkipReason::Malformed)
    );
    assert_eq!(
        LinkType::Null.ip_offset(&[7, 0, 0, 0, 0x45]),
        Err(SkipReason::NonIp)
    );
    for n in [0, 1, 12, 14, 101, 108, 113, 228, 229, 276] {
        assert!(LinkType::from_number(n).is_some(), "{n}");
    }
    assert_eq!(LinkType::from_number(105), None);
}

// ---- containers -----------------------------------------------------------

#[test]
fn legacy_pcap_every_link_type_both_endians_and_precisions() {
    let ip = ipv4_tcp(40000, 80, b"GET / HTTP/1.1\r\n\r\n");
    let frames: Vec<(u32, Vec<u8>)> = vec![
        (1, ethernet(0x0800, &[0x8100], &ip)),
        (113, sll(0x0800, &ip)),
        (276, sll2(0x0800, &ip)),
        (101, ip.clone()),
        (12, ip.clone()),
        (14, ip.clone()),
        (0, [&2u32.to_le_bytes()[..], &ip].concat()),
        (108, [&2u32.to_be_bytes()[..], &ip].concat()),
    ];
    for (linktype, frame) in frames {
        for (nanos, big_endian) in [(false, false), (true, false), (false, true), (true, true)] {
            let frac = if nanos { 123_456_789 } else { 123_456 };
            let bytes = legacy_pcap(
                linktype,
                nanos,
                big_endian,
                &[(1_700_000_000, frac, frame.clone())],
            );
            let (packets, stats) = read_all(&write("link.pcap", &bytes));
            assert_eq!(packets.len(), 1, "linktype {linktype}");
            let want_ts = 1_700_000_000_000_000_000 + if nanos { 123_456_789 } else { 123_456_000 };
            assert_eq!(packets[0].ts, want_ts);
            assert_eq!(&packets[0].payload[..], b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(stats.frames, 1);
            assert_eq!(stats.packets, 1);
        }
    }
}

#[test]
fn skipped_frames_are_counted_by_reason() {
    let body = tcp_header(1, 2, 3, 0, &[]);
    let tcp = ipv4_tcp(1, 2, b"ok");
    let frames = vec![
        (0, 0, ethernet(0x0800, &[], &tcp)),
        (0, 0, ethernet(0x0806, &[], &[0; 28])),
        (
            0,
            0,
            ethernet(0x0800, &[], &ipv4([1; 4], [2; 4], 17, 0, &body)),
        ),
        (
            0,
            0,
            ethernet(0x0800, &[], &ipv4([1; 4], [2; 4], 6, 0x2000, &body)),
        ),
        (0, 0, ethernet(0x0800, &[], &tcp[..25])),
        (0, 0, ethernet(0x0800, &[], &[0x41; 40])),
        (0, 0, ethernet(0x86dd, &[], &ipv6(50, &body))),
        (0, 0, vec![]),
    ];
    let (packets, stats) = read_all(&write("skips.pcap", &legacy_pcap(1, false, false, &frames)));
    assert_eq!(packets.len(), 1);
    assert_eq!(
        stats,
        DecodeStats {
            frames: 8,
            packets: 1,
            non_ip: 1,
            non_tcp: 1,
            fragments: 1,
            truncated: 2,
            malformed: 1,
            unsupported_link_type: 0,
            unsupported_ipv6: 1,
        }
    );
    assert_eq!(stats.skipped(), 7);
    let by_reason: u64 = stats.by_reason().iter().map(|(_, n)| n).sum();
    assert_eq!(by_reason, 7);
}

#[test]
fn big_endian_pcapng_and_vlan_ipv6() {
    let mut tcp = tcp_header(443, 50000, 77, tcp_flags::ACK, &[]);
    tcp.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    let frame = ethernet(0x86dd, &[0x88a8, 0x8100], &ipv6(6, &tcp));
    let block = |out: &mut Vec<u8>, kind: u32, body: &[u8]| {
        let mut body = body.to_vec();
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        let len = (12 + body.len()) as u32;
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&len.to_be_bytes());
    };
    let mut f = Vec::new();
    let mut shb = 0x1a2b_3c4du32.to_be_bytes().to_vec();
    shb.extend_from_slice(&[0, 1, 0, 0]);
    shb.extend_from_slice(&u64::MAX.to_be_bytes());
    block(&mut f, 0x0a0d_0d0a, &shb);
    let mut idb = 1u16.to_be_bytes().to_vec();
    idb.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    idb.extend_from_slice(&[0, 9, 0, 1, 9, 0, 0, 0, 0, 0, 0, 0]); // if_tsresol 9
    block(&mut f, 1, &idb);
    let mut epb = 0u32.to_be_bytes().to_vec();
    let ts: u64 = 1_800_000_000_987_654_321;
    epb.extend_from_slice(&((ts >> 32) as u32).to_be_bytes());
    epb.extend_from_slice(&(ts as u32).to_be_bytes());
    epb.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    epb.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    epb.extend_from_slice(&frame);
    block(&mut f, 6, &epb);
    let (packets, stats) = read_all(&write("be.pcapng", &f));
    assert_eq!(stats.packets, 1, "{stats:?}");
    assert_eq!(packets[0].ts, 1_800_000_000_987_654_321);
    assert_eq!(packets[0].src, addr("[fd00::1]:443"));
    assert_eq!(&packets[0].payload[..], b"HTTP/1.1 200 OK\r\n");
}

#[test]
fn pcapng_interfaces_tsresol_and_unsupported_link_types() {
    let tcp = ipv4_tcp(1, 2, b"p");
    let mut f = Vec::new();
    ng_section(&mut f);
    ng_interface(&mut f, 1, None); // microseconds by default
    ng_interface(&mut f, 101, Some(9)); // nanoseconds
    ng_interface(&mut f, 147, None); // a user DLT: unsupported
    ng_interface(&mut f, 276, Some(0x80 | 20)); // 2^-20 s units
    ng_packet(
        &mut f,
        0,
        1_700_000_000_123_456,
        &ethernet(0x0800, &[], &tcp),
    );
    ng_packet(&mut f, 1, 1_700_000_000_123_456_789, &tcp);
    ng_packet(&mut f, 2, 5, &tcp);
    ng_packet(&mut f, 3, 3 << 20 | 1 << 19, &sll2(0x0800, &tcp));
    ng_packet(&mut f, 9, 0, &tcp); // no such interface
    // A name resolution block in between is ignored.
    ng_block(&mut f, 4, &[0, 0, 0, 0]);
    // A second section resets the interfaces.
    ng_section(&mut f);
    ng_interface(&mut f, 228, Some(3));
    ng_packet(&mut f, 0, 42, &tcp);
    let (packets, stats) = read_all(&write("multi.pcapng", &f));
    let ts: Vec<i64> = packets.iter().map(|p| p.ts).collect();
    assert_eq!(
        ts,
        vec![
            1_700_000_000_123_456_000,
            1_700_000_000_123_456_789,
            3_500_000_000,
            42_000_000
        ]
    );
    assert_eq!(stats.frames, 6);
    assert_eq!(stats.unsupported_link_type, 1);
    assert_eq!(stats.malformed, 1);
}

#[test]
fn big_files_cross_chunk_boundaries() {
    // Enough 1400-byte frames to span several read chunks.
    let payload = vec![b'z'; 1400];
    let frame = ethernet(0x0800, &[], &ipv4_tcp(1, 2, &payload));
    let frames: Vec<_> = (0..3000u32).map(|i| (i, 0, frame.clone())).collect();
    let bytes = legacy_pcap(1, false, false, &frames);
    assert!(bytes.len() > 3 * super::pcap::CHUNK_SIZE);
    let path = write("big.pcap", &bytes);
    let mut reader = PcapReader::open(&path).unwrap();
    let mut n = 0u32;
    while let Some(p) = reader.next_packet().unwrap() {
        assert_eq!(p.ts, i64::from(n) * 1_000_000_000);
        assert_eq!(p.payload.len(), 1400);
        assert!(p.payload.iter().all(|&b| b == b'z'));
        n += 1;
    }
    assert_eq!(n, 3000);
    let progress = reader.progress();
    assert_eq!(progress.bytes_done, progress.bytes_total);
    assert_eq!(progress.bytes_total, bytes.len() as u64);
    let _ = std::fs::remove_file(path);
}

#[test]
fn truncated_last_record_is_counted_not_an_error() {
    let frame = ethernet(0x0800, &[], &ipv4_tcp(1, 2, b"abc"));
    let mut bytes = legacy_pcap(1, false, false, &[(1, 0, frame.clone()), (2, 0, frame)]);
    bytes.truncate(bytes.len() - 10);
    let (packets, stats) = read_all(&write("cut.pcap", &bytes));
    assert_eq!(packets.len(), 1);
    assert_eq!(stats.truncated, 1);
}

#[test]
fn unusable_files_give_clear_errors() {
    let not_pcap = write("text.pcap", b"this is not a capture file at all\n");
    let err = PcapReader::open(&not_pcap).unwrap_err();
    assert!(matches!(err, DecodeError::NotPcap { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("is not a pcap or pcapng capture file")
    );
    let empty = write("empty.pcap", b"");
    assert!(matches!(
        PcapReader::open(&empty),
        Err(DecodeError::NotPcap { .. })
    ));
    let usb = write("usb.pcap", &legacy_pcap(189, false, false, &[]));
    let err = PcapReader::open(&usb).unwrap_err();
    assert!(
        matches!(err, DecodeError::UnsupportedLinkType { linktype: 189, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("link type 189"));
    let missing = PcapReader::open("/nonexistent/capture.pcap").unwrap_err();
    assert!(matches!(missing, DecodeError::Io { .. }));
    for p in [not_pcap, empty, usb] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn corrupt_record_length_is_an_error_not_an_allocation() {
    let frame = ethernet(0x0800, &[], &ipv4_tcp(1, 2, b"abc"));
    let mut bytes = legacy_pcap(1, false, false, &[(1, 0, frame.clone()), (2, 0, frame)]);
    let second = 24 + 16 + 14 + 43;
    bytes[second + 8..second + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    let path = write("corrupt.pcap", &bytes);
    let mut reader = PcapReader::open(&path).unwrap();
    assert!(reader.next_packet().unwrap().is_some());
    let err = reader.next_packet().unwrap_err();
    assert!(matches!(err, DecodeError::Corrupt { .. }), "{err}");
    // The iterator is over after an error.
    assert!(reader.next().is_none());
    let _ = std::fs::remove_file(path);
}

#[test]
fn random_bytes_after_a_valid_header_never_panic() {
    let mut rng = super::tests::XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..200 {
        let mut bytes = if round % 2 == 0 {
            legacy_pcap(1, false, false, &[])
        } else {
            let mut f = Vec::new();
            ng_section(&mut f);
            ng_interface(&mut f, 1, None);
            f
        };
        let len = (rng.next() % 4096) as usize;
        bytes.extend((0..len).map(|_| rng.next() as u8));
        let path = write("random.pcap", &bytes);
        if let Ok(reader) = PcapReader::open(&path) {
            for item in reader.take(10_000) {
                if item.is_err() {
                    break;
                }
            }
        }
        let _ = std::fs::remove_file(path);
    }
    // And frames of random bytes in a valid container are counted.
    for linktype in [0, 1, 101, 108, 113, 276] {
        let frames: Vec<_> = (0..300)
            .map(|_| {
                let len = (rng.next() % 120) as usize;
                let mut f: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if let Some(b) = f.get_mut(0) {
                    *b = 0x45;
                }
                (0, 0, f)
            })
            .collect();
        let (packets, stats) = read_all(&write(
            "frames.pcap",
            &legacy_pcap(linktype, false, false, &frames),
        ));
        assert_eq!(stats.frames, 300);
        assert_eq!(stats.packets as usize, packets.len());
        assert_eq!(stats.packets + stats.skipped(), 300);
    }
}

/// Small deterministic generator for property-style loops.
pub(crate) struct XorShift(pub u64);

impl XorShift {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn parse_ip_bytes_shares_the_buffer() {
    let data = Bytes::from(ipv4_tcp(1, 2, b"shared"));
    let pkt = ip::parse_ip_bytes(&data, 0).unwrap().unwrap();
    assert_eq!(pkt.payload.as_ptr(), data[40..].as_ptr());
    let mut stats = DecodeStats::default();
    assert!(ip::parse_ip_counted(&data, 0, &mut stats).is_some());
    assert!(ip::parse_ip_counted(&Bytes::from_static(&[0x45, 0]), 0, &mut stats).is_none());
    assert_eq!((stats.frames, stats.packets, stats.truncated), (2, 1, 1));
}

// ---- real captures (testdata/regen.sh) -------------------------------------

fn real(name: &str) -> (Vec<Packet>, DecodeStats) {
    let mut reader = PcapReader::open(testdata(name)).expect("open testdata");
    let packets: Vec<Packet> = reader.by_ref().map(|p| p.expect("packet")).collect();
    (packets, reader.stats())
}

#[test]
fn real_captures_of_one_http_exchange_agree() {
    let (eth, stats) = real("lo_eth.pcap");
    assert_eq!((stats.frames, stats.packets), (12, 12));
    let request = eth.iter().find(|p| !p.payload.is_empty()).expect("request");
    assert!(request.payload.starts_with(b"GET /index.html HTTP/1.1\r\n"));
    assert_eq!(request.payload_len as usize, request.payload.len());
    assert_eq!(request.dst.port(), 48080);
    assert_eq!(eth[0].flags, tcp_flags::SYN);
    let summary = |packets: &[Packet]| {
        packets
            .iter()
            .map(|p| (p.src, p.dst, p.seq, p.flags, p.payload.clone()))
            .collect::<Vec<_>>()
    };
    for other in [
        "any_sll1.pcap",
        "any_sll2.pcap",
        "lo_nano.pcap",
        "lo_eth.pcapng",
        "lo_nano.pcapng",
    ] {
        let (packets, stats) = real(other);
        assert_eq!(stats.skipped(), 0, "{other}");
        assert_eq!(summary(&packets), summary(&eth), "{other}");
    }
    // Nanosecond captures (pcap magic, pcapng if_tsresol=9) keep the digits.
    let (nano, _) = real("lo_nano.pcap");
    let (nano_ng, _) = real("lo_nano.pcapng");
    let (micro_ng, _) = real("lo_eth.pcapng");
    for ((e, n), (nn, mn)) in eth.iter().zip(&nano).zip(nano_ng.iter().zip(&micro_ng)) {
        // Two tcpdump processes, one rounding to microseconds.
        assert!((e.ts - n.ts).abs() < 1000, "{} vs {}", e.ts, n.ts);
        assert_eq!(n.ts, nn.ts);
        assert_eq!(e.ts, mn.ts);
    }
    assert!(nano.iter().any(|p| p.ts % 1000 != 0));
}

/// Micro benchmark (not a timed test): decode + classify ~1M packets of a
/// synthetic mixed TLS/HTTP capture. Run in release:
/// `cargo test --release -p agent bench_decode_classify -- --ignored --nocapture`
#[test]
#[ignore = "benchmark; run explicitly in release"]
fn bench_decode_classify() {
    use crate::protocol::{Protocol, classify};

    let hello = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/protocol/testdata/tls13.client.bin"),
    )
    .unwrap();
    let hello = &hello[..5 + usize::from(u16::from_be_bytes([hello[3], hello[4]]))];
    let request = b"GET /v1/payments/123 HTTP/1.1\r\nHost: payments.example.com\r\n\
Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123456789\r\nAccept: */*\r\n\r\n";
    let server_blob = vec![0x17u8; 1400];
    let path = temp_path("bench.pcap");
    let flows = 100_000u32;
    {
        use std::io::Write;
        let file = std::fs::File::create(&path).unwrap();
        let mut out = std::io::BufWriter::new(file);
        out.write_all(&legacy_pcap(1, false, false, &[])).unwrap();
        let mut record = |ts: u32, frame: Vec<u8>| {
            out.write_all(&ts.to_le_bytes()).unwrap();
            out.write_all(&0u32.to_le_bytes()).unwrap();
            out.write_all(&(frame.len() as u32).to_le_bytes()).unwrap();
            out.write_all(&(frame.len() as u32).to_le_bytes()).unwrap();
            out.write_all(&frame).unwrap();
        };
        for i in 0..flows {
            let port = 1024 + (i % 60000) as u16;
            let (c, s) = ([10, 0, (i >> 8) as u8, i as u8], [10, 20, 0, 1]);
            let seg = |from_client: bool, flags: u8, payload: &[u8]| {
                let (src, dst, sp, dp) = if from_client {
                    (c, s, port, 443)
                } else {
                    (s, c, 443, port)
                };
                let mut body = tcp_header(sp, dp, i, flags, &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
                body.extend_from_slice(payload);
                ethernet(0x0800, &[], &ipv4(src, dst, 6, 0x4000, &body))
            };
            let first: &[u8] = if i % 2 == 0 { hello } else { request };
            record(i, seg(true, tcp_flags::SYN, b""));
            record(i, seg(false, tcp_flags::SYN | tcp_flags::ACK, b""));
            record(i, seg(true, tcp_flags::ACK, b""));
            record(i, seg(true, tcp_flags::ACK | tcp_flags::PSH, first));
            record(i, seg(false, tcp_flags::ACK, b""));
            record(i, seg(false, tcp_flags::ACK | tcp_flags::PSH, &server_blob));
            record(i, seg(true, tcp_flags::ACK, b""));
            record(
                i,
                seg(false, tcp_flags::ACK | tcp_flags::PSH, &server_blob[..600]),
            );
            record(i, seg(true, tcp_flags::FIN | tcp_flags::ACK, b""));
            record(i, seg(false, tcp_flags::FIN | tcp_flags::ACK, b""));
        }
    }
    let size = std::fs::metadata(&path).unwrap().len();
    let start = std::time::Instant::now();
    let mut reader = PcapReader::open(&path).unwrap();
    let (mut packets, mut tls, mut http) = (0u64, 0u64, 0u64);
    while let Some(p) = reader.next_packet().unwrap() {
        packets += 1;
        if !p.payload.is_empty() {
            match classify(&p.payload) {
                Protocol::Tls => tls += 1,
                Protocol::Http => http += 1,
                _ => {}
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    assert_eq!(packets, u64::from(flows) * 10);
    assert_eq!((tls, http), (u64::from(flows) / 2, u64::from(flows) / 2));
    println!(
        "decode+classify: {packets} packets, {:.1} MB in {secs:.3} s = {:.2} M packets/s, {:.0} MB/s",
        size as f64 / 1e6,
        packets as f64 / secs / 1e6,
        size as f64 / secs / 1e6
    );
}
