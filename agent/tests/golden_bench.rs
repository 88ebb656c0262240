//! Replay throughput on a large capture (not a timed test: it prints).
//! Built only with the `bench` feature; `cargo xtask bench replay`
//! generates the capture, compares `rampwatch replay` with tshark, then runs
//! this (the engine-only measurement) on the same file:
//!
//!     RAMPWATCH_BENCH_PCAP=/path/big.pcap \
//!         cargo test --release -p agent --features bench --test golden_bench -- --nocapture

use std::{path::PathBuf, time::Instant};

use agent::replay::{Format, ReplayArgs, replay};

/// Keeps only the last line written, like a consumer reading stdout would
/// (a growing Vec would time its own reallocations).
#[derive(Default)]
struct LastLine {
    cur: Vec<u8>,
    last: Vec<u8>,
}

impl std::io::Write for LastLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match buf.iter().rposition(|b| *b == b'\n') {
            Some(i) => {
                // The last complete line ends at i.
                let (head, tail) = buf.split_at(i);
                let start = head.iter().rposition(|b| *b == b'\n').map_or(0, |j| j + 1);
                if start == 0 {
                    self.cur.extend_from_slice(head);
                    std::mem::swap(&mut self.cur, &mut self.last);
                } else {
                    self.last.clear();
                    self.last.extend_from_slice(&head[start..]);
                }
                self.cur.clear();
                self.cur.extend_from_slice(&tail[1..]);
            }
            None => self.cur.extend_from_slice(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn bench_pcap() -> PathBuf {
    let pcap = std::env::var_os("RAMPWATCH_BENCH_PCAP")
        .expect("set RAMPWATCH_BENCH_PCAP to a large capture (`cargo xtask bench replay` does)");
    PathBuf::from(pcap)
}

#[test]
fn replay_throughput() {
    let pcap = bench_pcap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let args = ReplayArgs {
        contract: dir.join("contract.yaml"),
        at: None,
        stage: None,
        rate_window: 300_000_000_000,
        output: Format::Json,
        pcaps: vec![pcap],
    };
    let mut out = LastLine::default();
    let mut err = Vec::new();
    let started = Instant::now();
    let code = replay(&args, &mut out, &mut err, false).expect("replay writes to memory");
    assert!(code == 0 || code == 1, "replay failed: exit {code}");
    let secs = started.elapsed().as_secs_f64();
    let summary = String::from_utf8_lossy(&out.last);
    println!("exit {code} in {secs:.2} s");
    println!("{summary}");
    println!("{}", String::from_utf8_lossy(&err));
}

/// The decoder alone, for comparison: the ceiling replay can reach.
#[test]
fn decode_only_throughput() {
    let pcap = bench_pcap();
    let started = Instant::now();
    let mut reader = agent::pcap::PcapReader::open(pcap).expect("a capture");
    let mut n = 0u64;
    while let Ok(Some(p)) = reader.next_packet() {
        n += u64::from(p.payload_len > 0);
    }
    let secs = started.elapsed().as_secs_f64();
    assert!(reader.stats().packets > 0, "the capture holds no packets");
    println!(
        "decoded {} packets in {secs:.2} s: {:.0} packets/s ({n} with payload)",
        reader.stats().packets,
        reader.stats().packets as f64 / secs
    );
}
