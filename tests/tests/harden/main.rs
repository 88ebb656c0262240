//! The live agent under failure and a hostile local user, on a real kernel
//! with real clients: an audit directory that fills up (a small tmpfs) or is
//! read-only (a read-only bind mount), socket peers that send garbage, huge
//! requests or hold connections silently, a crowd of slow and concurrent
//! scrapers, and files another user could swap.
//!
//! Needs root; run by `cargo xtask test`.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{
    TempDir,
    agent_proc::{AgentProcess, Launch, cli, rampwatch_binary},
    cgroup::CgroupGuard,
    contract::ContractYaml,
    http::{HttpServer, curl_in},
    tools::require_tools,
    wait::{wait_for, wait_until},
};

mod audit;
mod peers;

const TOKEN: &str = "harden-test-token";

fn contract(port: u16) -> String {
    ContractYaml::new("harden")
        .class("internal", "optional")
        .endpoint("orders", "internal", &["127.0.0.1"], &[port], &[])
        .client("acme", TOKEN, "2026-01-01T00:00:00Z")
        .stage(
            "pilot",
            "2026-01-01T00:00:00Z",
            None,
            &[("acme", "orders", 1000, 1000)],
        )
        .render()
}

fn server() -> HttpServer {
    HttpServer::start(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), 8)
}

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd} runs: {e}"));
    assert!(status.success(), "{cmd} {args:?} failed: {status}");
}

/// A mount this test made, lazily unmounted when dropped (also on failure).
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn status(agent: &AgentProcess) -> Value {
    agent
        .cli_json(&["status"])
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// One scrape that may fail (the crowd tests fill the scraper slots).
fn try_metrics(agent: &AgentProcess) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "5"])
        .arg(format!("http://{}/metrics", agent.metrics_addr))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The sum of every series of `name` (with or without labels).
fn sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn requests_judged(agent: &AgentProcess) -> Option<f64> {
    try_metrics(agent).map(|m| sum(&m, "rampwatch_requests_total"))
}

fn sighup(agent: &AgentProcess) {
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(agent.pid(), libc::SIGHUP);
    }
}

/// `rampwatch agent` with its files under `dir`; returns (exit ok, stderr).
fn start_refused(dir: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(rampwatch_binary())
        .arg("agent")
        .arg("--contract")
        .arg(dir.join("contract.yaml"))
        .args(["--metrics-addr", "127.0.0.1:0", "--socket"])
        .arg(dir.join("rw.sock"))
        .arg("--audit-dir")
        .arg(dir.join("audit"))
        .args(extra)
        .env("RAMPWATCH_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("rampwatch runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn files_another_user_could_swap_are_refused_with_the_fix() {
    require_tools();
    use std::os::unix::fs::PermissionsExt as _;
    let chmod = |p: &Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let dir = TempDir::new("paths");
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::write(shared.join("contract.yaml"), contract(1)).expect("write the contract");
    chmod(&shared, 0o777);
    let (ok, err) = start_refused(&shared, &[]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "refusing the contract {}: the directory {} is writable by its group and every user (mode 0777)",
            shared.join("contract.yaml").display(),
            shared.display()
        )),
        "{err}"
    );
    assert!(err.contains("`chmod go-w "), "{err}");
    assert_eq!(err.lines().count(), 1, "one sentence: {err}");

    // A key file others can write.
    chmod(&shared, 0o755);
    let key = shared.join("audit.key");
    std::fs::write(&key, [7u8; 32]).expect("write the key");
    chmod(&key, 0o666);
    let key_s = key.display().to_string();
    let (ok, err) = start_refused(&shared, &["--audit-key", &key_s]);
    assert!(!ok);
    assert!(err.contains("refusing the audit key file"), "{err}");
    assert!(err.contains("(mode 0666)"), "{err}");

    // An audit directory others can write.
    let audit = shared.join("audit");
    std::fs::create_dir(&audit).expect("mkdir");
    chmod(&audit, 0o1777);
    let (ok, err) = start_refused(&shared, &[]);
    assert!(!ok);
    assert!(err.contains("refusing the audit directory"), "{err}");
}

#[test]
fn a_key_others_can_read_is_used_with_a_warning() {
    require_tools();
    use std::os::unix::fs::PermissionsExt as _;
    let orders = server();
    let cg = CgroupGuard::new("keyread");
    let keys = TempDir::new("keys");
    let key = keys.path().join("audit.key");
    std::fs::write(&key, [b'Z'; 32]).expect("write the key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let key_s = key.display().to_string();
    let mut agent = AgentProcess::start(
        &contract(orders.addr().port()),
        cg.path(),
        &["--audit-key", &key_s],
    );
    let log = agent.log_text();
    assert!(
        log.contains(
            "is readable by users other than root (mode 0644): they can forge audit records"
        ),
        "{log}"
    );
    assert!(agent.stop().success());
    let v = cli(
        &[
            "audit",
            "verify",
            &agent.audit_dir.display().to_string(),
            "--key",
            &key_s,
        ],
        "info",
    );
    assert!(v.ok, "{}{}", v.stdout, v.stderr);
}
