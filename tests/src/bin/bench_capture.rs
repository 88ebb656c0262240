//! `cargo xtask bench capture`: what the kernel programs cost per packet and
//! how fast one userspace core decodes samples. Reports, never asserts.
//!
//! Kernel cost: BPF run-time statistics (`kernel.bpf_stats_enabled`, turned
//! on for the duration through `BPF_ENABLE_STATS`, which the sysctl mirrors),
//! `run_time_ns / run_cnt` of the capture's own programs (found with
//! `bpftool cgroup show` on the bench cgroup), under a bounded loopback load
//! from the Rust keep-alive client: first to an unmonitored port, then to a
//! monitored one with the default sampling, then with every segment sampled.
//!
//! Decode: ring-buffer records built in memory, decoded into pipeline events
//! in a loop on this core, no kernel involved.
//!
//! Run: `cargo run --release -p tests --bin bench_capture` as root.
//! Environment: BENCH_REQUESTS (default 20000) requests per phase,
//! BENCH_DECODE_RECORDS (default 2000000).

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use tests::{
    cgroup::CgroupGuard,
    harness::{Attach, Endpoint, Harness, Tuning},
    http::{ClientReport, HttpServer},
};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// run_time_ns and run_cnt of one program, from `bpftool prog show id`.
fn prog_stats(id: u64) -> anyhow::Result<(u64, u64)> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show", "id", &id.to_string()])
        .output()
        .context("run bpftool (install the Debian package bpftool)")?;
    ensure!(
        out.status.success(),
        "bpftool prog show id {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok((
        v["run_time_ns"].as_u64().unwrap_or(0),
        v["run_cnt"].as_u64().unwrap_or(0),
    ))
}

/// (id, name) of the programs attached to `dir`.
fn attached(dir: &Path) -> anyhow::Result<Vec<(u64, String)>> {
    let out = Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(dir)
        .output()?;
    ensure!(
        out.status.success(),
        "bpftool cgroup show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["id"].as_u64()?,
                p["name"].as_str().unwrap_or("?").to_string(),
            ))
        })
        .collect())
}

struct Phase {
    label: &'static str,
    requests: u64,
    secs: f64,
    /// Per program: (name, run_time_ns delta, run_cnt delta).
    progs: Vec<(String, u64, u64)>,
}

impl Phase {
    fn ns_per_run(&self) -> f64 {
        let (t, c) = self
            .progs
            .iter()
            .fold((0, 0), |(t, c), p| (t + p.1, c + p.2));
        if c == 0 {
            f64::NAN
        } else {
            t as f64 / c as f64
        }
    }
    fn runs(&self) -> u64 {
        self.progs.iter().map(|p| p.2).sum()
    }
}

fn load_phase(
    label: &'static str,
    cg: &CgroupGuard,
    server: SocketAddr,
    requests: u64,
) -> anyhow::Result<Phase> {
    let ids = attached(cg.path())?;
    ensure!(
        !ids.is_empty(),
        "no programs attached to {}",
        cg.path().display()
    );
    let before: Vec<(u64, u64)> = ids
        .iter()
        .map(|(id, _)| prog_stats(*id))
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    let out = cg
        .command(std::env::current_exe().context("path of the bench binary")?)
        .args([CLIENT_ARG, &server.to_string(), &requests.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .context("run rw-helper")?;
    let secs = start.elapsed().as_secs_f64();
    ensure!(out.status.success(), "load client failed");
    let report = ClientReport::from_json(&String::from_utf8_lossy(&out.stdout));
    ensure!(
        report.requests == requests,
        "client made {} requests",
        report.requests
    );
    let mut progs = Vec::new();
    for ((id, name), (t0, c0)) in ids.iter().zip(before) {
        let (t1, c1) = prog_stats(*id)?;
        progs.push((name.clone(), t1.saturating_sub(t0), c1.saturating_sub(c0)));
    }
    Ok(Phase {
        label,
        requests,
        secs,
        progs,
    })
}

/// argv[1] that makes this binary the load client (run inside the bench
/// cgroup), so the bench needs no other binary.
const CLIENT_ARG: &str = "--load-client";

fn load_client(args: &[String]) -> anyhow::Result<()> {
    let (Some(server), Some(n)) = (args.first(), args.get(1)) else {
        bail!("usage: bench_capture {CLIENT_ARG} <server addr> <requests>");
    };
    let report = tests::http::run_client(server.parse()?, n.parse()?, "/bench")?;
    println!("{}", report.to_json());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(CLIENT_ARG) {
        return load_client(&args[1..]);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the capture bench loads BPF programs and must run as root (use `cargo xtask bench capture`)"
        );
    }
    let requests = env_u64("BENCH_REQUESTS", 20_000);
    let decode_records = env_u64("BENCH_DECODE_RECORDS", 2_000_000);
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enable BPF run-time statistics (kernel.bpf_stats_enabled)")?;

    let monitored = HttpServer::start("127.0.0.1:0".parse()?, 64);
    let unmonitored = HttpServer::start("127.0.0.1:0".parse()?, 64);
    let cg = CgroupGuard::new("bench");
    let mut phases = Vec::new();
    let every = Tuning {
        sample_one_in: 1,
        ..Tuning::default()
    };
    for (label, tuning, drain) in [
        ("unmonitored port", None, true),
        ("monitored, default sampling", Some(Tuning::default()), true),
        // Counters only: what the flow lookup and exact counts cost alone.
        (
            "monitored, not sampled",
            Some(Tuning {
                first_segments: 0,
                sample_one_in: 0,
                ..Tuning::default()
            }),
            true,
        ),
        (
            "monitored, every segment sampled",
            Some(every.clone()),
            true,
        ),
        // The consumer stalls (1-batch channel, never drained) while the
        // 16 MiB ring still has room: what sampling costs when the reader
        // falls behind (wake-up policy, ring filling), not a drop test.
        (
            "  same, consumer stalled",
            Some(Tuning {
                channel: 1,
                ..every
            }),
            false,
        ),
    ] {
        let mut h = Harness::start(
            Attach::Cgroup(cg.path().into()),
            &[Endpoint::exact(monitored.addr())],
            tuning.clone().unwrap_or_default(),
        );
        let target = if tuning.is_some() {
            monitored.addr()
        } else {
            unmonitored.addr()
        };
        // The consumer keeps up: drain while the load runs.
        let phase = std::thread::scope(|s| {
            let load = s.spawn(|| load_phase(label, &cg, target, requests));
            while !load.is_finished() {
                if drain {
                    h.drain();
                    h.events.clear();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            load.join().expect("load thread")
        })?;
        let c = h.counters();
        if c.ring_full > 0 {
            eprintln!("note: {label}: {} samples dropped (ring full)", c.ring_full);
        }
        h.shutdown();
        phases.push(phase);
    }

    let (decoded, decode_secs) = decode_bench(decode_records)?;

    println!(
        "rampwatch capture bench ({} requests per phase, loopback, 1 keep-alive connection)",
        requests
    );
    println!(
        "{:<36} {:>10} {:>12} {:>12}  per program",
        "phase", "req/s", "BPF runs", "ns/packet"
    );
    for p in &phases {
        let per: Vec<String> = p
            .progs
            .iter()
            .map(|(n, t, c)| {
                format!(
                    "{n}={:.0}ns",
                    if *c == 0 {
                        f64::NAN
                    } else {
                        *t as f64 / *c as f64
                    }
                )
            })
            .collect();
        println!(
            "{:<36} {:>10.0} {:>12} {:>12.1}  {}",
            p.label,
            p.requests as f64 / p.secs,
            p.runs(),
            p.ns_per_run(),
            per.join(" ")
        );
    }
    println!(
        "{:<36} {:>10} {:>12} {:>12.0}  samples/s on one core ({decoded} records, {decode_secs:.2}s)",
        "userspace decode",
        "-",
        "-",
        decoded as f64 / decode_secs
    );
    println!(
        "targets: <= 50 ns/packet unmonitored, <= 200 ns/packet sampled, >= 500k samples/s decode"
    );
    Ok(())
}

/// Decode `n` in-memory sample records (typical sizes: a ClientHello-sized
/// and a request-sized payload alternate) into events; returns (count, seconds).
fn decode_bench(n: u64) -> anyhow::Result<(u64, f64)> {
    let records = [
        tests::records::sample_record(517, 0),
        tests::records::sample_record(180, 1),
    ];
    let mut decoder = tests::records::Decoder::new();
    let start = Instant::now();
    let mut ok = 0u64;
    for i in 0..n {
        let rec = &records[(i & 1) as usize];
        if let Some(ev) = decoder.decode(std::hint::black_box(rec)) {
            std::hint::black_box(ev);
            ok += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    ensure!(ok == n, "only {ok} of {n} synthetic records decoded");
    Ok((ok, secs))
}
