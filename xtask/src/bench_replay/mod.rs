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
//! Each tool's wall-clock time, CPU time (user + system, from `wait4`) and
//! peak RSS are printed; on a shared machine the CPU time is the figure to
//! compare ("packets per second on one core"), the wall clock also counts
//! the time other work held the core.
//!
//! `RAMPWATCH_BENCH_MB` sets the size (default 400), `RAMPWATCH_BENCH_SPACING_US`
//! the packet spacing (default 1 µs), `RAMPWATCH_BENCH_TSHARK=0` leaves tshark
//! out (memory runs at several sizes). At 1 µs a 400 MB capture spans 1.5 s
//! of capture time, inside the 10 s an ended flow lingers for its last
//! ACKs, so no flow can be settled before the end and peak memory grows with
//! the file; a wider spacing spreads the same flows over more capture time,
//! which shows whether memory follows the file's size or only the flows open
//! (or lingering) at once.
//!
//! The result is printed, never asserted: speed depends on the machine.

use std::{
    collections::HashMap,
    env, fs,
    io::{BufWriter, Read, Seek, SeekFrom, Write},
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
/// Spacing of synthetic packet timestamps unless `RAMPWATCH_BENCH_SPACING_US`
/// says otherwise: 1 µs, i.e. a 1 M packets/s link.
const DEFAULT_SPACING_US: u64 = 1;

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
    let target = env_number("RAMPWATCH_BENCH_MB", DEFAULT_TARGET_MB, "megabytes")? * 1_000_000;
    let spacing_us = env_number(
        "RAMPWATCH_BENCH_SPACING_US",
        DEFAULT_SPACING_US,
        "microseconds",
    )?;
    fs::create_dir_all(work_dir)
        .with_context(|| format!("cannot create the bench directory {}", work_dir.display()))?;
    // One file per size and spacing, so runs at several sizes can be
    // compared (and replayed by hand) without regenerating.
    let capture = work_dir.join(format!(
        "bench-replay-{}mb-{spacing_us}us.pcap",
        target / 1_000_000
    ));

    println!(
        "generating {} MB of mixed TLS/HTTP flows ({spacing_us} µs between packets) from {} into {}",
        target / 1_000_000,
        fixtures.display(),
        capture.display()
    );
    let started = Instant::now();
    let stats = generate(&fixtures, &capture, target, spacing_us)?;
    println!(
        "generated {} packets, {} flows, {} bytes, {:.1} s of capture time, in {:.1} s",
        stats.packets,
        stats.flows,
        stats.bytes,
        (stats.packets * spacing_us) as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    let with_tshark = env_number("RAMPWATCH_BENCH_TSHARK", 1, "0 skips tshark")? != 0;
    let tshark = if with_tshark {
        Some(ensure_tshark()?)
    } else {
        None
    };

    let mut replay = Command::new(rampwatch_bin);
    replay
        .arg("replay")
        .arg("--contract")
        .arg(&contract)
        .args(["-o", "json"])
        .arg(&capture);
    // Exit 1 only means "violations found", which this mix always has.
    let rampwatch = time_command("rampwatch replay", &mut replay, &[0, 1]);

    let tshark = tshark.map(|tshark| {
        let mut tshark_cmd = Command::new(tshark);
        tshark_cmd.arg("-n").arg("-r").arg(&capture);
        for decode in TSHARK_DECODE_AS {
            tshark_cmd.args(["-d", decode]);
        }
        tshark_cmd.args(["-T", "fields"]);
        for field in TSHARK_FIELDS {
            tshark_cmd.args(["-e", field]);
        }
        time_command("tshark", &mut tshark_cmd, &[0])
    });

    println!();
    println!(
        "{:<10} {:>10} {:>11} {:>8} {:>8} {:>11} {:>11} {:>9}",
        "tool", "packets", "bytes", "wall s", "cpu s", "packets/s", "pkts/cpu-s", "peak RSS"
    );
    for (name, result) in [("rampwatch", Some(&rampwatch)), ("tshark", tshark.as_ref())] {
        match result {
            Some(Ok(run)) => print_row(name, &stats, run),
            Some(Err(err)) => println!("{name:<10} failed: {err:#}"),
            None => println!("{name:<10} skipped (RAMPWATCH_BENCH_TSHARK=0)"),
        }
    }
    let Some(tshark) = tshark else {
        rampwatch?;
        return Ok(capture);
    };
    match (&rampwatch, &tshark) {
        (Ok(rw), Ok(ts)) => {
            println!(
                "ratio rampwatch/tshark: {:.1}x the packets/s of tshark (wall clock), {:.1}x per CPU second",
                ts.wall.as_secs_f64() / rw.wall.as_secs_f64().max(f64::EPSILON),
                ts.cpu.as_secs_f64() / rw.cpu.as_secs_f64().max(f64::EPSILON)
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
/// to `out`, made of rewritten copies of the fixture flows in `fixtures`,
/// packets
/// `spacing_us` apart.
pub fn generate(
    fixtures: &Path,
    out: &Path,
    target_bytes: u64,
    spacing_us: u64,
) -> Result<GenStats> {
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

        let ts_us = base_us + stats.packets * spacing_us;
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

/// A whole number from the environment variable `name`, else `default`.
fn env_number(name: &str, default: u64, unit: &str) -> Result<u64> {
    match env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v:?} is not a whole number ({unit})")),
        Err(_) => Ok(default),
    }
}

/// What one measured run took.
struct Run {
    wall: Duration,
    /// User + system time of the process.
    cpu: Duration,
    /// Peak resident set size.
    max_rss_kib: u64,
}

/// Runs `cmd` with stdout discarded and returns its wall-clock time, CPU
/// time and peak RSS, or an error carrying its stderr when it exits with a
/// code outside `ok_codes`.
fn time_command(name: &str, cmd: &mut Command, ok_codes: &[i32]) -> Result<Run> {
    println!("timing {name} …");
    // stderr goes to a file: read after the exit, a pipe could fill first.
    let mut stderr_file = stderr_scratch(name)?;
    let started = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            stderr_file
                .try_clone()
                .context("cannot duplicate a file handle")?,
        )
        .spawn()
        .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
    let pid = libc::pid_t::try_from(child.id()).context("a process id out of range")?;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero `rusage` is a valid value of that plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not reaped yet (std's `Child` is never
    // waited on after this), and both pointers are to live locals.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    ensure!(
        reaped == pid,
        "cannot wait for {name}: {}",
        std::io::Error::last_os_error()
    );
    let exited = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    if !exited.is_some_and(|c| ok_codes.contains(&c)) {
        let mut stderr = String::new();
        stderr_file.seek(SeekFrom::Start(0))?;
        stderr_file.read_to_string(&mut stderr)?;
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        bail!(
            "{name} exited with {}: {}",
            exited.map_or_else(
                || format!("signal/status {status}"),
                |c| format!("code {c}")
            ),
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.unsigned_abs())
            + Duration::from_micros(t.tv_usec.unsigned_abs())
    };
    Ok(Run {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        // Linux reports ru_maxrss in KiB.
        max_rss_kib: usage.ru_maxrss.unsigned_abs(),
    })
}

/// A scratch file for a child's stderr, unlinked at once (the open handle
/// keeps it until dropped).
fn stderr_scratch(name: &str) -> Result<fs::File> {
    let path = env::temp_dir().join(format!(
        "rampwatch-bench-{}-{}.stderr",
        std::process::id(),
        name.replace(' ', "-")
    ));
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    Ok(file)
}

fn print_row(name: &str, stats: &GenStats, run: &Run) {
    let wall = run.wall.as_secs_f64().max(f64::EPSILON);
    let cpu = run.cpu.as_secs_f64().max(f64::EPSILON);
    println!(
        "{:<10} {:>10} {:>11} {:>8.2} {:>8.2} {:>11.0} {:>11.0} {:>5} MiB",
        name,
        stats.packets,
        stats.bytes,
        wall,
        cpu,
        stats.packets as f64 / wall,
        stats.packets as f64 / cpu,
        run.max_rss_kib / 1024
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
