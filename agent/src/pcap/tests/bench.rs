//! Decode + classify throughput.

use super::*;
use crate::pcap::PcapReader;

/// Micro benchmark (not a timed test; its assertions check the counts):
/// decode + classify ~1M packets of a synthetic mixed TLS/HTTP capture.
/// `cargo xtask bench decode` runs it in release.
#[test]
fn bench_decode_classify() {
    use crate::protocol::{
        Protocol, classify,
        http::scan_requests,
        tls::{TlsParse, parse_client_hello},
    };

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
    // Pass 1: decode + classify every payload. Pass 2: also parse what a
    // flow's first client segment holds (ClientHello or request heads).
    for parse in [false, true] {
        let start = std::time::Instant::now();
        let mut reader = PcapReader::open(&path).unwrap();
        let (mut packets, mut tls, mut http, mut parsed) = (0u64, 0u64, 0u64, 0u64);
        while let Some(p) = reader.next_packet().unwrap() {
            packets += 1;
            if p.payload.is_empty() {
                continue;
            }
            match classify(&p.payload) {
                Protocol::Tls => {
                    tls += 1;
                    if parse && let TlsParse::Done(hello) = parse_client_hello(&p.payload) {
                        parsed += u64::from(hello.sni.is_some());
                    }
                }
                Protocol::Http => {
                    http += 1;
                    if parse {
                        parsed += scan_requests(&p.payload).requests.len() as u64;
                    }
                }
                _ => {}
            }
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(packets, u64::from(flows) * 10);
        assert_eq!((tls, http), (u64::from(flows) / 2, u64::from(flows) / 2));
        assert_eq!(parsed, if parse { u64::from(flows) } else { 0 });
        println!(
            "decode+classify{}: {packets} packets, {:.1} MB in {secs:.3} s = {:.2} M packets/s, {:.0} MB/s",
            if parse { "+parse" } else { "" },
            size as f64 / 1e6,
            packets as f64 / secs / 1e6,
            size as f64 / secs / 1e6
        );
    }
    let _ = std::fs::remove_file(&path);
}
