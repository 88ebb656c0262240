//! Probes come and go with their processes and the capture: nothing stays
//! attached after stop, after the capture's process is killed, or after a
//! probed process exits.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use tests::{https::PyHttpsServer, tls_servers::require_tls_tools, wait::wait_for};

use crate::{EVENT_TIMEOUT, loopback, tls_capture, wait_probed};

/// Names (as bpftool shows them, 15 characters at most) of loaded
/// programs that are TLS probes.
fn tls_programs_loaded() -> Vec<String> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("run bpftool prog show");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("name")?.as_str().map(str::to_owned))
        .filter(|n| n.starts_with("rw_tls"))
        .collect()
}

fn bpftool_json(args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("run bpftool");
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// Uprobes of the TLS programs attached anywhere: perf-event links (or,
/// on kernels without them, perf event fds) whose program is a TLS probe.
/// Kernel tests run one at a time, so every one is this test's.
fn tls_uprobes() -> usize {
    let tls_progs: std::collections::HashSet<u64> = bpftool_json(&["prog", "show"])
        .iter()
        .filter(|p| {
            p.get("name")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|n| n.starts_with("rw_tls"))
        })
        .filter_map(|p| p.get("id")?.as_u64())
        .collect();
    let is_tls = |e: &serde_json::Value| {
        e.get("prog_id")
            .and_then(serde_json::Value::as_u64)
            .is_some_and(|id| tls_progs.contains(&id))
    };
    let links = bpftool_json(&["link", "show"])
        .iter()
        .filter(|l| l.get("type").and_then(serde_json::Value::as_str) == Some("perf_event"))
        .filter(|l| is_tls(l))
        .count();
    let fds = bpftool_json(&["perf", "show"])
        .iter()
        .filter(|e| {
            matches!(
                e.get("fd_type").and_then(serde_json::Value::as_str),
                Some("uprobe" | "uretprobe")
            )
        })
        .filter(|e| is_tls(e))
        .count();
    links + fds
}

#[test]
fn tls_stop_detaches_every_probe_and_exit_detaches_its_own() {
    require_tls_tools();
    let ip = loopback(false);
    let a = PyHttpsServer::start_here(ip);
    let (_cg, h) = tls_capture("tlsstop", a.addr);
    wait_probed(&h, &[a.pid()]);
    assert!(tls_uprobes() >= 4, "uprobes attached for {}", a.pid());
    assert!(!tls_programs_loaded().is_empty());
    // The probed process exits: its probes go with it.
    let pid = a.pid();
    drop(a);
    wait_for(
        "the exited server's probes to be detached",
        EVENT_TIMEOUT,
        || {
            let c = h.tls_coverage();
            c.processes.iter().all(|p| p.pid != pid) && c.detached >= 1 && tls_uprobes() == 0
        },
    );
    h.shutdown();
    // Raw tracepoint links on faultable tracepoints (sys_enter) release
    // their program after an RCU tasks-trace grace period: soon, not at once.
    wait_for(
        "every TLS program to be unloaded after stop",
        EVENT_TIMEOUT,
        || tls_programs_loaded().is_empty(),
    );
}

#[test]
fn tls_killed_capture_process_leaves_nothing_attached() {
    require_tls_tools();
    let ip = loopback(false);
    let server = PyHttpsServer::start_here(ip);
    let cg = tests::cgroup::CgroupGuard::new("tlskill");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rw-helper"))
        .arg("capture-cgroup-tls")
        .arg(cg.path())
        .arg(server.addr.to_string())
        .arg(server.pid().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn capture process");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("read from capture process");
    assert_eq!(line.trim(), "probed");
    // Read entry, its return, write and SSL_set_fd (OpenSSL 3.0 here).
    assert!(tls_uprobes() >= 4);
    // SIGKILL: no destructor runs; the kernel drops the links with the fds.
    child.kill().expect("kill capture process");
    child.wait().expect("reap capture process");
    wait_for(
        "the kernel to detach a killed capture's probes",
        EVENT_TIMEOUT,
        || tls_programs_loaded().is_empty() && tls_uprobes() == 0,
    );
}

#[test]
fn tls_excluded_process_is_not_probed() {
    require_tls_tools();
    let ip = loopback(false);
    let server = PyHttpsServer::start_here(ip);
    let cg = tests::cgroup::CgroupGuard::new("tlsexcl");
    let mut tuning = crate::tls_tuning();
    if let Some(t) = tuning.tls.as_mut() {
        t.exclude = vec!["python3*".to_owned()];
    }
    let h = tests::harness::Harness::start(
        tests::harness::Attach::Cgroup(cg.path().into()),
        &[tests::harness::Endpoint::exact(server.addr)],
        tuning,
    );
    wait_for("the excluded server to be skipped", EVENT_TIMEOUT, || {
        h.tls_coverage().excluded >= 1
    });
    let cov = h.tls_coverage();
    assert!(
        cov.processes.iter().all(|p| p.pid != server.pid()),
        "{cov:?}"
    );
    assert_eq!(tls_uprobes(), 0);
}
