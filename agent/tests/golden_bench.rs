//! Replay throughput on a large capture (not a timed test: it prints).
//!
//!     RAMPWATCH_BENCH_PCAP=/path/big.pcap \
//!         cargo test --release -p agent --test golden_bench -- --ignored --nocapture
//!
//! `cargo xtask bench replay` generates such a capture and compares with
//! tshark; this is the engine-only measurement.

use std::{path::PathBuf, time::Instant};

use agent::replay::{Format, ReplayArgs, replay};

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
    let mut out = Vec::new();
    let mut err = Vec::new();
    let started = Instant::now();
    let code = replay(&args, &mut out, &mut err, false).expect("replay writes to memory");
    let secs = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out);
    let summary = text.lines().last().unwrap_or_default();
    println!("exit {code} in {secs:.2} s");
    println!("{summary}");
    println!("{}", String::from_utf8_lossy(&err));
}
