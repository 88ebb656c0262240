//! Failure, end to end, on the live agent with real clients: a flood the
//! starved agent cannot keep up with (every request the kernel saw is
//! charged or counted as uncharged by reason, exactly; the loss alert
//! fires in a real Prometheus and Alertmanager; the agent recovers), twenty
//! `kill -9`s at random moments (the audit chain verifies after each
//! restart, the agent attaches again, nothing stays attached), and contract
//! reloads, valid and invalid, many per second while traffic flows.
//!
//! Needs root; run by `cargo xtask test`.

mod flood;
mod kill;
mod reload;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Command,
};

use tests::{
    agent_proc::AgentProcess, cgroup::CgroupGuard, contract::ContractYaml, http::HttpServer,
};

const TOKEN: &str = "fail-test-token";

/// One endpoint `orders` on `ports` of 127.0.0.1 (plaintext allowed,
/// authentication required), client `acme` by bearer token, one stage named
/// `stage` whose quota for acme is `rps`.
fn contract(name: &str, stage: &str, ports: &[u16], rps: u32) -> String {
    ContractYaml::new(name)
        .class("internal", "optional")
        .endpoint("orders", "internal", &["127.0.0.1"], ports, &[])
        .client("acme", TOKEN, "2026-11-01T00:00:00Z")
        .stage(
            stage,
            "2026-01-01T00:00:00Z",
            None,
            &[("acme", "orders", rps, rps)],
        )
        .render()
}

fn server() -> HttpServer {
    HttpServer::start(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), 16)
}

/// Requests the server answered, over all its connections.
fn served(s: &HttpServer) -> u64 {
    s.connections().iter().map(|c| c.requests).sum()
}

/// `h2load` over HTTP/1.1 from inside `cg`: `requests` requests on
/// `clients` connections (one after the other on each), with acme's token.
/// Returns the number that succeeded.
fn h2load_h1(cg: &CgroupGuard, server: SocketAddr, requests: u64, clients: u64) -> u64 {
    let out = cg
        .command("h2load")
        .arg("--h1")
        .args(["-n", &requests.to_string(), "-c", &clients.to_string()])
        .args(["-H", &format!("authorization: Bearer {TOKEN}")])
        .arg(format!("http://{server}/orders"))
        .output()
        .expect("run h2load (Debian package nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "h2load failed: {text}");
    succeeded(&text)
}

/// The `succeeded` figure of h2load's `requests:` line.
fn succeeded(text: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("requests:")?;
            let (_, tail) = rest.split_once("started, ")?;
            let (_, tail) = tail.split_once("done, ")?;
            tail.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no `requests:` line in h2load's output:\n{text}"))
}

/// /metrics of the agent, `None` when the scrape fails (a starved agent may
/// answer late).
fn scrape(agent: &AgentProcess) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "10"])
        .arg(format!("http://{}/metrics", agent.metrics_addr))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Sum of every series of `name` whose labels contain `labels` (`""`: all).
fn sum(metrics: &str, name: &str, labels: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            (n == name && rest.contains(labels)).then(|| value.parse::<f64>().ok())?
        })
        .map(|v| v as u64)
        .sum()
}

/// The request balance as the agent exports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Balance {
    kernel: u64,
    engine: u64,
    charged: u64,
    uncharged: u64,
}

impl Balance {
    fn of(metrics: &str) -> Self {
        Self {
            kernel: sum(metrics, "rampwatch_kernel_request_starts_total", ""),
            engine: sum(metrics, "rampwatch_engine_requests_total", ""),
            charged: sum(metrics, "rampwatch_requests_total", ""),
            uncharged: sum(metrics, "rampwatch_requests_uncharged_total", ""),
        }
    }

    /// Every request the kernel saw (and every one the engine counted
    /// itself) is charged or counted as uncharged by reason.
    fn adds_up(&self) -> bool {
        self.kernel + self.engine == self.charged + self.uncharged
    }
}

/// What the agent `pid`'s kernel flow map holds, read with bpftool: how
/// many entries, how many ended (and with the record lost), and the request
/// starts they hold, with the entries that hold any. For the failure message
/// of a balance that does not add up: starts held in entries the agent
/// never reported point at userspace, starts in no entry at the kernel.
fn kernel_flows(pid: i32) -> String {
    let ids: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("map_id:").map(|v| v.trim().to_owned()))
        })
        .collect();
    let bpftool = |args: &[&str]| -> Option<serde_json::Value> {
        let out = Command::new("bpftool").arg("-j").args(args).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    let Some(id) = ids
        .iter()
        .find(|id| bpftool(&["map", "show", "id", id]).is_some_and(|m| m["name"] == "RW_FLOWS"))
    else {
        return format!("kernel flow map: not found among the maps of pid {pid} ({ids:?})");
    };
    let Some(serde_json::Value::Array(entries)) = bpftool(&["map", "dump", "id", id]) else {
        return "kernel flow map: bpftool map dump failed".to_owned();
    };
    let bytes = |v: &serde_json::Value| -> Vec<u8> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| u8::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok())
            .collect()
    };
    let word = |b: &[u8], off: usize| {
        b.get(off..off + 8)
            .map_or(0, |w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
    };
    // FlowKey: addresses (32 bytes), client port at 32; FlowStats: the
    // to-server DirStats first (request_starts at 32, first_seen at 40),
    // state at 152 (see agent-common).
    let (mut n, mut ended, mut lost, mut starts) = (0, 0, 0, 0);
    let mut holding = Vec::new();
    for e in &entries {
        let (k, v) = (bytes(&e["key"]), bytes(&e["value"]));
        let (s, state) = (word(&v, 32), word(&v, 152));
        n += 1;
        ended += u64::from(state & 4 != 0);
        lost += u64::from(state & 16 != 0);
        starts += s;
        if s > 0 && holding.len() < 40 {
            let port = k
                .get(32..34)
                .map_or(0, |p| u16::from_le_bytes([p[0], p[1]]));
            holding.push(format!(
                "port {port}: {s} starts, state {state:#x}, first seen {}",
                word(&v, 40)
            ));
        }
    }
    format!(
        "kernel flow map {id}: {n} entries, {ended} ended ({lost} with the record lost), {starts} request starts held\n  {}",
        holding.join("\n  ")
    )
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}
