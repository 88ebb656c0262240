//! `cargo xtask bench capture|replay|overhead|decode|metrics|flows`: figures, never pass/fail on
//! speed.

use std::process::Command;

use anyhow::bail;

use crate::{
    cmd::{self, is_root, root},
    setup,
};

#[derive(clap::Subcommand, Clone, Copy)]
pub enum Which {
    /// Kernel cost per packet (bpf_stats) and userspace decode rate.
    Capture,
    /// `rampwatch replay` against `tshark` on one large generated capture,
    /// then the engine and the decoder alone on the same file.
    Replay,
    /// wrk against nginx over HTTP and HTTPS: no agent, agent unwatched,
    /// agent watching (TLS probes on), tcpdump; ratios per round.
    Overhead,
    /// Userspace decode + classify (+ parse) of a synthetic capture.
    Decode,
    /// Encoding /metrics at 10k series.
    Metrics,
    /// Agent and kernel-map memory holding 100k concurrent flows
    /// (BENCH_FLOWS).
    Flows,
}

pub fn run(which: Which) -> anyhow::Result<()> {
    setup::toolchain()?;
    match which {
        Which::Capture => {
            if !is_root() {
                bail!("the capture benchmark loads eBPF programs: run it as root");
            }
            setup::packages(&["curl", "wrk", "bpftool"])?;
            cmd::run(Command::new(env!("CARGO")).current_dir(root()).args([
                "run",
                "--release",
                "--package",
                "tests",
                "--bin",
                "bench_capture",
            ]))
        }
        Which::Replay => {
            setup::packages(&["tshark"])?;
            cmd::cargo(&["build", "--package", "agent", "--bin", "rampwatch"], true)?;
            let work = root().join("target/bench");
            std::fs::create_dir_all(&work)?;
            let capture =
                crate::bench_replay::run(&root().join("target/release/rampwatch"), &work)?;
            cmd::run(
                Command::new(env!("CARGO"))
                    .current_dir(root())
                    .env("RAMPWATCH_BENCH_PCAP", &capture)
                    .args([
                        "test",
                        "--release",
                        "--package",
                        "agent",
                        "--features",
                        "bench",
                        "--test",
                        "golden_bench",
                        "--",
                        "--nocapture",
                        "--test-threads=1",
                    ]),
            )
        }
        Which::Overhead => {
            if !is_root() {
                bail!("the overhead benchmark runs the live agent: run it as root");
            }
            setup::packages(&["nginx", "wrk", "curl", "openssl", "tcpdump", "bpftool"])?;
            cmd::cargo(&["build", "--package", "agent", "--bin", "rampwatch"], true)?;
            // rw-helper attaches the empty cgroup_skb program (the floor).
            cmd::cargo(&["build", "--package", "tests", "--bin", "rw-helper"], true)?;
            let work = root().join("target/bench");
            std::fs::create_dir_all(&work)?;
            crate::bench_overhead::run(
                &root().join("target/release/rampwatch"),
                &root().join("target/release/rw-helper"),
                &work,
            )
        }
        Which::Flows => {
            if !is_root() {
                bail!("the flows benchmark runs the live agent: run it as root");
            }
            setup::packages(&["nginx", "bpftool"])?;
            cmd::cargo(&["build", "--package", "agent", "--bin", "rampwatch"], true)?;
            let work = root().join("target/bench");
            std::fs::create_dir_all(&work)?;
            crate::bench_flows::run(&root().join("target/release/rampwatch"), &work)
        }
        Which::Metrics => cmd::run(Command::new(env!("CARGO")).current_dir(root()).args([
            "test",
            "--release",
            "--package",
            "agent",
            "--features",
            "bench",
            "--lib",
            "bench_encode_10k_series",
            "--",
            "--nocapture",
        ])),
        Which::Decode => cmd::run(Command::new(env!("CARGO")).current_dir(root()).args([
            "test",
            "--release",
            "--package",
            "agent",
            "--features",
            "bench",
            "--lib",
            "bench_decode_classify",
            "--",
            "--nocapture",
        ])),
    }
}
