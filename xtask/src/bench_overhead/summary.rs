//! The summary of `cargo xtask bench overhead`: medians of the per-round
//! ratios, and the agent's and the kernel's cost per request and packet.

use std::{collections::BTreeMap, fmt::Write as _};

use super::{Mode, Sample};

pub(super) fn summary(
    results: &BTreeMap<(bool, Mode), Vec<Sample>>,
    modes: &[Mode],
    rounds: u64,
    rss: u64,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nmedians over {rounds} rounds (wrk -t1 -c32 -> nginx return 200, loopback)"
    );
    for tls in [false, true] {
        let base = &results[&(tls, Mode::None)];
        let _ = writeln!(out, "{}:", if tls { "HTTPS" } else { "HTTP" });
        for &mode in modes {
            let s = &results[&(tls, mode)];
            let ratios: Vec<f64> = s.iter().zip(base).map(|(a, b)| a.rps / b.rps).collect();
            let rps: Vec<f64> = s.iter().map(|x| x.rps).collect();
            let mut line = format!(
                "  {:<24} {:>9.0} req/s   ratio {:.3}",
                mode.name(),
                median(rps),
                median(ratios)
            );
            let per_packet = |m: Mode| {
                let s = &results[&(tls, m)];
                let runs: u64 = s.iter().map(|x| x.packet_runs).sum();
                let ns: u64 = s.iter().map(|x| x.packet_ns).sum();
                ns as f64 / runs.max(1) as f64
            };
            if matches!(
                mode,
                Mode::Unwatched | Mode::Watched | Mode::Baseline | Mode::Floor
            ) {
                let floor = per_packet(Mode::Floor);
                let here = per_packet(mode);
                let _ = write!(line, "   kernel {here:.0} ns/packet");
                if mode != Mode::Floor {
                    let _ = write!(line, " (floor {floor:.0}, +{:.0})", here - floor);
                }
            }
            if matches!(mode, Mode::Unwatched | Mode::Watched | Mode::Baseline) {
                let reqs: u64 = s.iter().map(|x| x.requests).sum();
                let per_m = |v: f64| v / reqs.max(1) as f64 * 1e6;
                let cpu: f64 = s.iter().map(|x| x.agent_cpu).sum();
                let runs: u64 = s.iter().map(|x| x.bpf_runs).sum();
                let ns: u64 = s.iter().map(|x| x.bpf_ns).sum();
                let probes: u64 = s.iter().map(|x| x.probe_runs).sum();
                let _ = write!(
                    line,
                    "   agent {:.2} CPU s/M req   {:.2} kernel us/req over {:.2} runs/req",
                    per_m(cpu),
                    ns as f64 / reqs.max(1) as f64 / 1000.0,
                    runs as f64 / reqs.max(1) as f64,
                );
                if matches!(mode, Mode::Watched | Mode::Baseline) && probes > 0 {
                    let sys: u64 = s.iter().map(|x| x.syscall_runs).sum();
                    let probe_ns: u64 = s.iter().map(|x| x.probe_ns).sum();
                    let sys_ns: u64 = s.iter().map(|x| x.syscall_ns).sum();
                    let per_req = |v: u64| v as f64 / reqs.max(1) as f64;
                    // BPF time per run, not the trap: a uprobe hit's trap
                    // is paid by the process, outside `bpf_stats`.
                    let per_run = |ns: u64, runs: u64| ns as f64 / runs.max(1) as f64;
                    let hits = probes.saturating_sub(sys);
                    let _ = write!(
                        line,
                        " (TLS probes: {:.2} uprobe hits at {:.0} BPF ns and {:.2} sys_enter runs at {:.0} ns of them)",
                        per_req(hits),
                        per_run(probe_ns.saturating_sub(sys_ns), hits),
                        per_req(sys),
                        per_run(sys_ns, sys),
                    );
                }
            }
            let _ = writeln!(out, "{line}");
        }
    }
    let _ = writeln!(out, "agent peak RSS: {:.1} MiB", rss as f64 / 1024.0);
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
