//! What /proc and bpftool say about the processes and programs measured.

use std::{collections::BTreeMap, fs, process::Command};

use anyhow::{Context as _, ensure};

/// utime + stime of `pid`, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised comm; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // /proc reports clock ticks in USER_HZ, which is 100 on Linux whatever
    // the kernel's own HZ.
    (ticks(11) + ticks(12)) / 100.0
}

/// A `kB` field of /proc/<pid>/status, in KiB (0 when unreadable).
fn status_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Peak resident memory (VmHWM).
pub(crate) fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM")
}

/// Resident memory now (VmRSS).
pub(crate) fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// `bpftool -j <what> show` (`what`: `prog` or `map`), parsed.
pub(crate) fn bpftool_show(what: &str) -> anyhow::Result<serde_json::Value> {
    let out = Command::new("bpftool")
        .args(["-j", what, "show"])
        .output()
        .context("running bpftool (Debian package bpftool)")?;
    ensure!(out.status.success(), "bpftool {what} show failed");
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// (name, run_cnt, run_time_ns) of every loaded `rw_*` program by id.
pub(super) fn bpf_progs() -> anyhow::Result<BTreeMap<u64, (String, u64, u64)>> {
    let v = bpftool_show("prog")?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p["name"].as_str()?;
            name.starts_with("rw_").then(|| {
                (
                    p["id"].as_u64().unwrap_or(0),
                    (
                        name.to_owned(),
                        p["run_cnt"].as_u64().unwrap_or(0),
                        p["run_time_ns"].as_u64().unwrap_or(0),
                    ),
                )
            })
        })
        .collect())
}

/// `kernel.bpf_stats_enabled` on for the benchmark, restored after.
pub(super) struct BpfStats {
    before: String,
}

impl BpfStats {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";

    pub(super) fn enable() -> anyhow::Result<Self> {
        let before =
            fs::read_to_string(Self::PATH).with_context(|| format!("reading {}", Self::PATH))?;
        fs::write(Self::PATH, "1").with_context(|| format!("writing {}", Self::PATH))?;
        Ok(Self {
            before: before.trim().to_owned(),
        })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(Self::PATH, &self.before);
    }
}
