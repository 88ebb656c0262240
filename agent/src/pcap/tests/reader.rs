//! pcap/pcapng containers, synthetic and real.

use bytes::Bytes;

use super::*;
use crate::{
    event::{Packet, tcp_flags},
    pcap::{DecodeError, DecodeStats, PcapReader, ip},
};

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
fn pcapng_tsoffset_and_simple_packet_blocks() {
    let tcp = ipv4_tcp(1, 2, b"q");
    let mut f = Vec::new();
    ng_section(&mut f);
    // Raw IP, if_tsresol 3 (ms) and if_tsoffset 1000 s.
    let mut idb = 101u16.to_le_bytes().to_vec();
    idb.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    idb.extend_from_slice(&[9, 0, 1, 0, 3, 0, 0, 0]);
    idb.extend_from_slice(&[14, 0, 8, 0]);
    idb.extend_from_slice(&1000i64.to_le_bytes());
    idb.extend_from_slice(&[0, 0, 0, 0]);
    ng_block(&mut f, 1, &idb);
    ng_packet(&mut f, 0, 2500, &tcp);
    // A simple packet block has no timestamp: it gets the last one seen.
    let mut spb = (tcp.len() as u32).to_le_bytes().to_vec();
    spb.extend_from_slice(&tcp);
    ng_block(&mut f, 3, &spb);
    let (packets, stats) = read_all(&write("spb.pcapng", &f));
    assert_eq!(stats.packets, 2);
    assert_eq!(packets[0].ts, 1_002_500_000_000);
    assert_eq!(packets[1].ts, 1_002_500_000_000);
    assert_eq!(&packets[1].payload[..], b"q");
}

#[test]
fn big_files_cross_chunk_boundaries() {
    // Enough 1400-byte frames to span several read chunks.
    let payload = vec![b'z'; 1400];
    let frame = ethernet(0x0800, &[], &ipv4_tcp(1, 2, &payload));
    let frames: Vec<_> = (0..3000u32).map(|i| (i, 0, frame.clone())).collect();
    let bytes = legacy_pcap(1, false, false, &frames);
    assert!(bytes.len() > 3 * crate::pcap::reader::CHUNK_SIZE);
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
fn pcapng_packet_longer_than_its_block_is_corrupt() {
    let tcp = ipv4_tcp(1, 2, b"abc");
    let mut f = Vec::new();
    ng_section(&mut f);
    ng_interface(&mut f, 101, None);
    ng_packet(&mut f, 0, 1, &tcp);
    let second = f.len();
    ng_packet(&mut f, 0, 2, &tcp);
    // Lie in the second packet's captured length.
    f[second + 20..second + 24].copy_from_slice(&5000u32.to_le_bytes());
    for i in 0..2000u64 {
        ng_packet(&mut f, 0, i, &tcp);
    }
    let path = write("lying.pcapng", &f);
    let mut reader = PcapReader::open(&path).unwrap();
    assert!(reader.next_packet().unwrap().is_some());
    let err = reader.next_packet().unwrap_err();
    assert!(matches!(err, DecodeError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("longer than its block"), "{err}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn random_bytes_after_a_valid_header_never_panic() {
    let mut rng = super::XorShift(0x9e37_79b9_7f4a_7c15);
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

#[test]
fn mutated_real_captures_never_panic() {
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    for name in [
        "lo_eth.pcap",
        "any_sll1.pcap",
        "any_sll2.pcap",
        "lo_nano.pcapng",
    ] {
        let original = std::fs::read(testdata(name)).unwrap();
        for _ in 0..150 {
            let mut bytes = original.clone();
            for _ in 0..=(rng.next() % 8) {
                // Leave the file header alone half of the time so the
                // mutations reach the records.
                let from = if rng.next().is_multiple_of(2) { 0 } else { 32 };
                let at = from + (rng.next() as usize) % (bytes.len() - from);
                bytes[at] = rng.next() as u8;
            }
            bytes.truncate(bytes.len() - (rng.next() as usize) % 64);
            let path = write("mutated", &bytes);
            if let Ok(mut reader) = PcapReader::open(&path) {
                while let Ok(Some(_)) = reader.next_packet() {}
                let stats = reader.stats();
                assert_eq!(stats.packets + stats.skipped(), stats.frames, "{stats:?}");
            }
            let _ = std::fs::remove_file(path);
        }
    }
}
