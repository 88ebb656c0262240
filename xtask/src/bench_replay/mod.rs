//! `cargo xtask bench replay`: builds a large capture out of the golden-test
//! fixture flows and times `rampwatch replay` against `tshark` extracting the
//! same facts (SNI, TLS version, cipher, HTTP Host and method) from it.
//!
//! The capture is synthesised, not recorded: every fixture TCP connection is a
//! template, and each copy gets its own client address, client port and
//! initial sequence numbers (both directions, with acknowledgements shifted to
//! match) and freshly computed IPv4 and TCP checksums, so every copy is a
//! distinct, valid flow. Copies are interleaved packet by packet across a
//! window of concurrently open flows, the way a busy link mixes connections.
//!
//! The result is printed, never asserted: speed depends on the machine.

use std::{
    collections::HashMap,
    env, fs,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use pcap_parser::{Linktype, PcapCapture};

/// Fixture captures (Ethernet link type, classic pcap) used as flow templates.
/// The Linux-cooked, VLAN, raw-IP and pcapng variants duplicate
/// `http_bearer`/`tls12_cbc` and are left out.
const TEMPLATES: &[&str] = &[
    "http_bearer.pcap",
    "tls12.pcap",
    "tls13.pcap",
    "tls11_weak.pcap",
    "tls12_cbc.pcap",
    "mtls12.pcap",
    "quota_burst.pcap",
    "no_credentials.pcap",
    "unlisted_path.pcap",
    "revoked.pcap",
    "stale.pcap",
    "ipv6.pcap",
    "pipelined.pcap",
    "h2c.pcap",
    "tls12_cbc_split.pcap",
];

/// Size of the generated capture unless `RAMPWATCH_BENCH_MB` says otherwise.
const DEFAULT_TARGET_MB: u64 = 400;
/// Flows open at the same time; packets are taken round-robin from them.
const CONCURRENT_FLOWS: usize = 256;
/// Spacing of synthetic packet timestamps: 1 µs, i.e. a 1 M packets/s link.
const PACKET_SPACING_US: u64 = 1;

const ETHERTYPE_IPV4: u16 = agent_common::ether::IPV4;
const ETHERTYPE_IPV6: u16 = agent_common::ether::IPV6;
const ETHERNET_HEADER: usize = 14;
const IPPROTO_TCP: u8 = 6;
const TCP_SYN: u8 = agent_common::tcp::SYN;
const TCP_ACK: u8 = agent_common::tcp::ACK;
/// Ports tshark must be told to decode: the fixtures use non-standard ones.
const TSHARK_DECODE_AS: [&str; 2] = ["tcp.port==18443,tls", "tcp.port==18080-18089,http"];
const TSHARK_FIELDS: [&str; 5] = [
    "tls.handshake.extensions_server_name",
    "tls.handshake.version",
    "tls.handshake.ciphersuite",
    "http.host",
    "http.request.method",
];

/// Runs the benchmark: generates the capture in `work_dir`, then times
/// `rampwatch replay` and `tshark` on it and prints both with their ratio.
/// Returns the capture's path, for the engine-only measurement.
pub fn run(rampwatch_bin: &Path, work_dir: &Path) -> Result<PathBuf> {
    let fixtures = fixtures_dir();
    let contract = fixtures.join("contract.yaml");
    let target = target_bytes()?;
    fs::create_dir_all(work_dir)
        .with_context(|| format!("cannot create the bench directory {}", work_dir.display()))?;
    let capture = work_dir.join("bench-replay.pcap");

    println!(
        "generating {} MB of mixed TLS/HTTP flows from {} into {}",
        target / 1_000_000,
        fixtures.display(),
        capture.display()
    );
    let started = Instant::now();
    let stats = generate(&fixtures, &capture, target)?;
    println!(
        "generated {} packets, {} flows, {} bytes in {:.1} s",
        stats.packets,
        stats.flows,
        stats.bytes,
        started.elapsed().as_secs_f64()
    );

    let tshark = ensure_tshark()?;

    let mut replay = Command::new(rampwatch_bin);
    replay
        .arg("replay")
        .arg("--contract")
        .arg(&contract)
        .args(["-o", "json"])
        .arg(&capture);
    // Exit 1 only means "violations found", which this mix always has.
    let rampwatch = time_command("rampwatch replay", &mut replay, &[0, 1]);

    let mut tshark_cmd = Command::new(tshark);
    tshark_cmd.arg("-n").arg("-r").arg(&capture);
    for decode in TSHARK_DECODE_AS {
        tshark_cmd.args(["-d", decode]);
    }
    tshark_cmd.args(["-T", "fields"]);
    for field in TSHARK_FIELDS {
        tshark_cmd.args(["-e", field]);
    }
    let tshark = time_command("tshark", &mut tshark_cmd, &[0]);

    println!();
    println!(
        "{:<10} {:>12} {:>14} {:>9} {:>13} {:>9}",
        "tool", "packets", "bytes", "seconds", "packets/s", "MB/s"
    );
    for (name, result) in [("rampwatch", &rampwatch), ("tshark", &tshark)] {
        match result {
            Ok(elapsed) => print_row(name, &stats, *elapsed),
            Err(err) => println!("{name:<10} failed: {err:#}"),
        }
    }
    match (&rampwatch, &tshark) {
        (Ok(rw), Ok(ts)) => {
            println!(
                "ratio rampwatch/tshark: {:.1}x the packets/s of tshark",
                ts.as_secs_f64() / rw.as_secs_f64().max(f64::EPSILON)
            );
            Ok(capture)
        }
        (Err(_), _) => bail!("rampwatch replay did not complete; the ratio is unavailable"),
        (_, Err(_)) => bail!("tshark did not complete; the ratio is unavailable"),
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenStats {
    pub packets: u64,
    pub flows: u64,
    /// File size including the pcap headers.
    pub bytes: u64,
}

/// Writes a classic pcap (Ethernet, µs timestamps) of at least `target_bytes`
/// to `out`, made of rewritten copies of the fixture flows in `fixtures`.
pub fn generate(fixtures: &Path, out: &Path, target_bytes: u64) -> Result<GenStats> {
    let templates = load_templates(fixtures)?;
    let base_us = templates
        .first()
        .and_then(|t| t.packets.first())
        .map_or(0, |p| p.ts_us);

    let file = fs::File::create(out)
        .with_context(|| format!("cannot create the bench capture {}", out.display()))?;
    let mut w = BufWriter::with_capacity(4 << 20, file);
    write_pcap_header(&mut w)?;
    let mut stats = GenStats {
        packets: 0,
        flows: 0,
        bytes: 24,
    };

    let mut next_flow = 0u64;
    let mut active: Vec<Instance> = Vec::with_capacity(CONCURRENT_FLOWS);
    let mut frame = Vec::with_capacity(64 * 1024);
    let mut slot = 0;
    loop {
        // Keep the window full until the target size is reached, then let
        // the open flows finish so every flow in the file is complete.
        while active.len() < CONCURRENT_FLOWS && stats.bytes < target_bytes {
            active.push(Instance::new(next_flow, templates.len()));
            next_flow += 1;
        }
        if active.is_empty() {
            break;
        }
        slot %= active.len();
        let instance = &mut active[slot];
        let template = &templates[instance.template];
        let Some(packet) = template.packets.get(instance.next) else {
            active.swap_remove(slot);
            stats.flows += 1;
            continue;
        };
        instance.rewrite(packet, &mut frame);
        instance.next += 1;

        let ts_us = base_us + stats.packets * PACKET_SPACING_US;
        write_record(&mut w, ts_us, &frame)?;
        stats.packets += 1;
        stats.bytes += 16 + frame.len() as u64;
        slot += 1;
    }
    w.flush()
        .with_context(|| format!("cannot write the bench capture {}", out.display()))?;
    Ok(stats)
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("fixtures")
}

fn target_bytes() -> Result<u64> {
    match env::var("RAMPWATCH_BENCH_MB") {
        Ok(mb) => {
            let mb: u64 = mb.trim().parse().with_context(|| {
                format!("RAMPWATCH_BENCH_MB={mb:?} is not a whole number of megabytes")
            })?;
            Ok(mb * 1_000_000)
        }
        Err(_) => Ok(DEFAULT_TARGET_MB * 1_000_000),
    }
}

/// Runs `cmd` with stdout discarded and returns its wall-clock time, or an
/// error carrying its stderr when it exits with a code outside `ok_codes`.
fn time_command(name: &str, cmd: &mut Command, ok_codes: &[i32]) -> Result<Duration> {
    println!("timing {name} …");
    let started = Instant::now();
    let output = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
    let elapsed = started.elapsed();
    let code = output.status.code();
    if !code.is_some_and(|c| ok_codes.contains(&c)) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        bail!(
            "{name} exited with {}: {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(elapsed)
}

fn print_row(name: &str, stats: &GenStats, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(f64::EPSILON);
    println!(
        "{:<10} {:>12} {:>14} {:>9.2} {:>13.0} {:>9.1}",
        name,
        stats.packets,
        stats.bytes,
        secs,
        stats.packets as f64 / secs,
        stats.bytes as f64 / 1e6 / secs
    );
}

/// Finds tshark, installing it with apt-get when missing (the bench runs as
/// root under `cargo xtask`).
fn ensure_tshark() -> Result<&'static str> {
    let present = |name| {
        Command::new(name)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if present("tshark") {
        return Ok("tshark");
    }
    println!("tshark not found; installing it with apt-get");
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "tshark"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get to install tshark")?;
    ensure!(
        status.success() && present("tshark"),
        "installing tshark failed ({status}); install it with `apt-get install tshark` as root and rerun"
    );
    Ok("tshark")
}

mod synth;
#[cfg(test)]
mod tests;

use synth::*;
