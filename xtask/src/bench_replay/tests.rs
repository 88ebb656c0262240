//! The generator's output must be valid TCP/IP that tools read back.

use std::collections::HashSet;

use super::{synth::*, *};

/// Generates a small capture and reads it back: every packet must parse,
/// carry valid IPv4 and TCP checksums and monotonic timestamps, and every
/// copy must be its own connection whose handshake still lines up.
#[test]
fn generated_capture_is_valid_tcp() {
    let dir = env::temp_dir().join(format!("rampwatch-bench-test-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let out = dir.join("small.pcap");
    let stats = generate(&fixtures_dir(), &out, 3_000_000, 1).unwrap();
    let bytes = fs::read(&out).unwrap();
    fs::remove_dir_all(&dir).unwrap();

    assert_eq!(stats.bytes, bytes.len() as u64);
    assert!(stats.bytes >= 3_000_000);
    let capture = PcapCapture::from_file(&bytes).unwrap();
    assert_eq!(capture.header.network, Linktype::ETHERNET);
    assert_eq!(capture.blocks.len() as u64, stats.packets);

    let mut last_ts = 0;
    // Per client socket: (flags, seq, ack) of each packet.
    let mut flows: HashMap<SocketKey, Vec<(u8, u32, u32)>> = HashMap::new();
    let mut saw_v6 = false;
    for block in &capture.blocks {
        let ts = u64::from(block.ts_sec) * 1_000_000 + u64::from(block.ts_usec);
        assert!(ts >= last_ts, "timestamps go backwards");
        last_ts = ts;
        let view = parse_frame(block.data).expect("every record is Ethernet/IP/TCP");
        let ip = &block.data[ETHERNET_HEADER..view.end];
        let tcp = view.tcp - ETHERNET_HEADER;
        if view.v6 {
            saw_v6 = true;
        } else {
            assert_eq!(checksum(&[&ip[..tcp]]), 0, "bad IPv4 header checksum");
        }
        assert_eq!(tcp_checksum(ip, view.v6, tcp), 0, "bad TCP checksum");
        // The client side is the one that is not a fixture server port.
        let client = if [18080, 18081, 18089, 18443].contains(&view.dport) {
            (view.src.clone(), view.sport)
        } else {
            (view.dst.clone(), view.dport)
        };
        let seg = &block.data[view.tcp..];
        let seq = u32::from_be_bytes([seg[4], seg[5], seg[6], seg[7]]);
        let ack = u32::from_be_bytes([seg[8], seg[9], seg[10], seg[11]]);
        flows
            .entry(client)
            .or_default()
            .push((view.flags, seq, ack));
    }
    assert!(saw_v6, "the IPv6 fixture flows are part of the mix");
    assert_eq!(
        flows.len() as u64,
        stats.flows,
        "every copy has its own client address/port"
    );
    let mut isns = HashSet::new();
    for packets in flows.values() {
        let [
            (syn, client_isn, _),
            (synack, server_isn, synack_ack),
            (_, _, ack),
            ..,
        ] = packets[..]
        else {
            panic!("flow shorter than a handshake");
        };
        assert_eq!(syn & (TCP_SYN | TCP_ACK), TCP_SYN);
        assert_eq!(synack & (TCP_SYN | TCP_ACK), TCP_SYN | TCP_ACK);
        assert_eq!(synack_ack, client_isn.wrapping_add(1));
        assert_eq!(ack, server_isn.wrapping_add(1));
        isns.insert(client_isn);
    }
    assert!(
        isns.len() > flows.len() / 2,
        "sequence numbers differ between copies"
    );
}

#[test]
fn checksum_matches_rfc1071_example() {
    // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
    let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
    assert_eq!(checksum(&[&data]), !0xddf2);
    assert_eq!(checksum(&[&data[..4], &data[4..]]), !0xddf2);
    assert_eq!(checksum(&[&[0xab]]), !0xab00);
}

#[test]
fn garbage_frames_are_not_templates() {
    assert!(parse_frame(&[]).is_none());
    assert!(parse_frame(&[0u8; 13]).is_none());
    let mut frame = vec![0u8; 60];
    frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    frame[14] = 0x45;
    frame[16..18].copy_from_slice(&2000u16.to_be_bytes()); // longer than the frame
    frame[23] = IPPROTO_TCP;
    assert!(parse_frame(&frame).is_none());
}
