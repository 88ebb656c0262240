//! Replay throughput on a large capture (not a timed test: it prints).
//!
//!     RAMPWATCH_BENCH_PCAP=/path/big.pcap \
//!         cargo test --release -p agent --test golden_bench -- --ignored --nocapture
//!
//! `cargo xtask bench replay` generates such a capture and compares with
//! tshark; this is the engine-only measurement.

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

#[test]
#[ignore = "needs RAMPWATCH_BENCH_PCAP and a release build"]
fn replay_throughput() {
    let Some(pcap) = std::env::var_os("RAMPWATCH_BENCH_PCAP") else {
        eprintln!("set RAMPWATCH_BENCH_PCAP to a large capture");
        return;
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let args = ReplayArgs {
        contract: dir.join("contract.yaml"),
        at: None,
        output: Format::Json,
        pcaps: vec![PathBuf::from(pcap)],
    };
    let mut out = LastLine::default();
    let mut err = Vec::new();
    let started = Instant::now();
    let code = replay(&args, &mut out, &mut err, false).expect("replay writes to memory");
    let secs = started.elapsed().as_secs_f64();
    let summary = String::from_utf8_lossy(&out.last);
    println!("exit {code} in {secs:.2} s");
    println!("{summary}");
    println!("{}", String::from_utf8_lossy(&err));
}

/// The decoder alone, for comparison: the ceiling replay can reach.
#[test]
#[ignore = "needs RAMPWATCH_BENCH_PCAP and a release build"]
fn decode_only_throughput() {
    let Some(pcap) = std::env::var_os("RAMPWATCH_BENCH_PCAP") else {
        return;
    };
    let started = Instant::now();
    let mut reader = agent::decode::PcapReader::open(PathBuf::from(pcap)).expect("a capture");
    let mut n = 0u64;
    while let Ok(Some(p)) = reader.next_packet() {
        n += u64::from(p.payload_len > 0);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "decoded {} packets in {secs:.2} s: {:.0} packets/s ({n} with payload)",
        reader.stats().packets,
        reader.stats().packets as f64 / secs
    );
}
