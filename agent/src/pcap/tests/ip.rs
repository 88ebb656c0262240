//! IP, TCP and link-layer header decoding.

use super::*;
use crate::{
    event::tcp_flags,
    pcap::{DecodeError, SkipReason, ip, link::LinkType},
};

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
