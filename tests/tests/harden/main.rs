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
    http::{HttpServer, curl_in},
    sha256_hex,
    tools::require_tools,
    wait::{wait_for, wait_until},
};

const TOKEN: &str = "harden-test-token";

fn contract(port: u16) -> String {
    format!(
        r#"apiVersion: rampwatch.io/v1
kind: RampContract
metadata:
  name: harden
spec:
  dataClasses:
    - name: internal
      encryption: optional
      authentication: required
  endpoints:
    - name: orders
      dataClass: internal
      hosts: ["127.0.0.1"]
      ports: [{port}]
  clients:
    - name: acme
      credentials:
        - header: authorization
          fingerprint: "sha256:{fp}"
          issuedAt: "2026-01-01T00:00:00Z"
  stages:
    - name: pilot
      startsAt: "2026-01-01T00:00:00Z"
      quotas:
        - {{ client: acme, endpoint: orders, requestsPerSecond: 1000, burst: 1000 }}
"#,
        fp = sha256_hex(TOKEN)
    )
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

fn records_lost(agent: &AgentProcess) -> u64 {
    status(agent)["audit"]["records_lost"].as_u64().unwrap_or(0)
}

/// Sends SIGHUP (each forces a reload, hence an audit record) until `n`
/// records could not be written, each one waited for.
fn lose_records(agent: &AgentProcess, n: u64) {
    for _ in 0..200 {
        if records_lost(agent) >= n {
            return;
        }
        let before = (records_lost(agent), agent.audit_records().len());
        sighup(agent);
        wait_for("the reload's audit record", Duration::from_secs(20), || {
            (records_lost(agent), agent.audit_records().len()) != before
        });
    }
    panic!("the full audit directory still takes records");
}

/// Requests while the audit log is down are still judged and counted.
fn judging_goes_on(agent: &AgentProcess, cg: &CgroupGuard, url: &str) {
    let before = wait_until("a scrape", Duration::from_secs(30), || {
        requests_judged(agent)
    });
    for _ in 0..5 {
        curl_in(cg, Some(TOKEN), &[url]);
    }
    wait_for(
        "the 5 requests to be judged",
        Duration::from_secs(20),
        || requests_judged(agent).is_some_and(|n| n >= before + 5.0),
    );
}

fn verify(dir: &Path) -> String {
    let v = cli(&["audit", "verify", &dir.display().to_string()], "info");
    assert!(v.ok, "audit verify: {}{}", v.stdout, v.stderr);
    assert!(v.stdout.contains(": INTACT"), "{}", v.stdout);
    v.stdout
}

/// Every line of every segment is a whole record: nothing torn or
/// half-written stays in the chain.
fn no_partial_lines(dir: &Path) {
    for e in std::fs::read_dir(dir)
        .expect("list the audit dir")
        .flatten()
    {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "jsonl") {
            let text = std::fs::read(&p).expect("read a segment");
            assert!(
                text.is_empty() || text.ends_with(b"\n"),
                "{} ends in a partial line",
                p.display()
            );
        }
    }
}

fn lost_record(agent: &AgentProcess) -> Value {
    agent
        .audit_records()
        .into_iter()
        .find(|r| r["kind"] == "records_lost")
        .expect("a records_lost record in the chain")
}

#[test]
fn a_full_audit_disk_is_counted_judging_goes_on_and_the_chain_says_what_was_lost() {
    require_tools();
    let orders = server();
    let url = format!("http://{}/v1/orders", orders.addr());
    let cg = CgroupGuard::new("diskfull");
    let dir = TempDir::new("diskfull");
    let audit = dir.path().join("audit");
    std::fs::create_dir(&audit).expect("mkdir audit");
    let audit_s = audit.display().to_string();
    run(
        "mount",
        &["-t", "tmpfs", "-o", "size=64k,mode=0750", "tmpfs", &audit_s],
    );
    let _mount = Mount(audit.clone());
    let mut agent = Launch {
        dir: Some(dir.path()),
        ..Launch::new(&contract(orders.addr().port()), cg.path())
    }
    .start();
    assert_eq!(status(&agent)["audit"]["writable"], true);

    // Fill the filesystem.
    let filler = audit.join("filler");
    {
        let mut f = std::fs::File::create(&filler).expect("create the filler");
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
    }
    lose_records(&agent, 3);

    // Said once, shown, counted.
    let s = status(&agent);
    assert_eq!(s["audit"]["writable"], false, "{s}");
    let problem = s["audit"]["problem"].as_str().unwrap_or_default();
    assert!(problem.contains("No space left on device"), "{s}");
    let log = agent.log_text();
    assert!(
        log.contains(
            "cannot be written (No space left on device (os error 28)); judging and metrics go on"
        ),
        "{log}"
    );
    let m = wait_until("a scrape", Duration::from_secs(30), || try_metrics(&agent));
    assert!(m.contains("rampwatch_audit_writable 0"), "{m}");
    let lost = records_lost(&agent);
    assert!(
        m.contains(&format!(
            "rampwatch_events_lost_total{{reason=\"audit_write_failed\"}} {lost}\n"
        )),
        "status says {lost} records lost: {m}"
    );
    judging_goes_on(&agent, &cg, &url);
    // What is on disk is still a whole chain, now.
    no_partial_lines(&audit);
    verify(&audit);

    // Space returns: the agent notices on its own.
    std::fs::remove_file(&filler).expect("free the space");
    wait_for(
        "the audit log to be writable again",
        Duration::from_secs(30),
        || status(&agent)["audit"]["writable"] == true,
    );
    let lost = records_lost(&agent);
    sighup(&agent);
    wait_for("records after the outage", Duration::from_secs(20), || {
        agent
            .audit_records()
            .last()
            .is_some_and(|r| r["kind"] == "contract_loaded")
    });
    assert!(agent.stop().success(), "{}", agent.log_text());
    no_partial_lines(&audit);
    let report = verify(&audit);
    let rec = lost_record(&agent);
    assert_eq!(rec["lost"].as_u64(), Some(lost), "{rec}");
    assert_eq!(
        rec["reason"], "No space left on device (os error 28)",
        "{rec}"
    );
    let seq = rec["seq"].as_u64().expect("seq");
    assert_eq!(rec["after_seq"].as_u64(), Some(seq - 1), "{rec}");
    assert!(
        report.contains(&format!(
            "lost:       {lost} records between seq {} and seq {seq}",
            seq - 1
        )),
        "{report}"
    );
    assert!(agent.log_text().contains("is writable again"));
}

#[test]
fn a_read_only_audit_dir_starts_the_agent_in_an_outage_until_it_is_writable() {
    require_tools();
    let orders = server();
    let url = format!("http://{}/v1/orders", orders.addr());
    let cg = CgroupGuard::new("rofs");
    let dir = TempDir::new("rofs");
    let audit = dir.path().join("audit");
    std::fs::create_dir(&audit).expect("mkdir audit");
    let audit_s = audit.display().to_string();
    run("mount", &["--bind", &audit_s, &audit_s]);
    let _mount = Mount(audit.clone());
    run("mount", &["-o", "remount,bind,ro", &audit_s]);

    let mut agent = Launch {
        dir: Some(dir.path()),
        ..Launch::new(&contract(orders.addr().port()), cg.path())
    }
    .start();
    let s = status(&agent);
    assert_eq!(s["audit"]["writable"], false, "{s}");
    assert!(
        s["audit"]["problem"]
            .as_str()
            .is_some_and(|p| p.contains("Read-only file system")),
        "{s}"
    );
    // agent_start and contract_loaded are already lost.
    wait_for(
        "the start records to be counted",
        Duration::from_secs(10),
        || records_lost(&agent) >= 2,
    );
    judging_goes_on(&agent, &cg, &url);
    let out = agent.cli_ok(&["status"]).expect("status answers");
    assert!(out.contains("audit log    NOT WRITABLE"), "{out}");

    run("mount", &["-o", "remount,bind,rw", &audit_s]);
    wait_for(
        "the audit log to be writable again",
        Duration::from_secs(30),
        || status(&agent)["audit"]["writable"] == true,
    );
    let lost = records_lost(&agent);
    assert!(agent.stop().success(), "{}", agent.log_text());
    verify(&audit);
    let records = agent.audit_records();
    assert_eq!(records[0]["kind"], "records_lost", "{records:?}");
    assert_eq!(records[0]["lost"].as_u64(), Some(lost));
    assert_eq!(records[0]["after_seq"].as_u64(), Some(0));
    assert_eq!(
        records.last().map(|r| r["kind"].clone()),
        Some(Value::from("agent_stop"))
    );
}

/// A peer in the socket group that opens 24 silent connections, sends 1 MiB
/// without a newline and then bytes that are not UTF-8; it reports what the
/// agent answered each, as JSON on its last stdout line. It prints
/// `HOLDING` while its silent connections are open, and waits for a line
/// on stdin before reading their answers.
const HOSTILE_PEER: &str = r#"
import json, socket, sys, time
path = sys.argv[1]
def conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s
def answer(s, timeout):
    s.settimeout(timeout)
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionError):
        pass
    return data.decode(errors="replace")
silent = [conn() for _ in range(24)]
time.sleep(0.5)
refused = []
for s in silent:
    try:
        data = s.recv(65536, socket.MSG_DONTWAIT)
        if data:
            refused.append(data.decode(errors="replace"))
    except BlockingIOError:
        pass
print("HOLDING", flush=True)
sys.stdin.readline()
timed_out = [answer(s, 30.0) for s in silent]
big = conn()
big.settimeout(10.0)
try:
    big.sendall(b"x" * (1 << 20))
except (socket.timeout, ConnectionError):
    pass
huge = answer(big, 10.0)
bad = conn()
bad.sendall(b"\xff\xfe\x00{garbage\n")
garbage = answer(bad, 10.0)
print(json.dumps({"refused": refused, "timed_out": timed_out, "huge": huge, "garbage": garbage}), flush=True)
"#;

#[test]
fn hostile_socket_peers_are_bounded_and_the_cli_keeps_answering() {
    require_tools();
    let orders = server();
    let cg = CgroupGuard::new("hostile");
    let gid = "4242";
    let mut agent = AgentProcess::start(
        &contract(orders.addr().port()),
        cg.path(),
        &["--socket-group", gid],
    );
    // The socket's directory must let the peer reach the socket itself.
    run("chmod", &["755", &agent.dir.display().to_string()]);
    let mut peer = Command::new("setpriv")
        .args(["--reuid=65534", &format!("--regid={gid}"), "--clear-groups"])
        .args(["/usr/bin/python3", "-c", HOSTILE_PEER])
        .arg(&agent.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv python3 runs");
    let mut out = BufReader::new(peer.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("the peer's first line");
    assert_eq!(line.trim(), "HOLDING", "the peer failed: {line}");

    // 16 silent connections of uid 65534 are open: root is still served,
    // at once, and so are the views.
    let s = status(&agent);
    assert_eq!(s["contract"], "harden", "{s}");
    assert!(agent.cli_ok(&["flows"]).is_some());

    peer.stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("tell the peer to go on");
    line.clear();
    out.read_line(&mut line).expect("the peer's report");
    assert!(peer.wait().expect("the peer exits").success());
    let report: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));

    let refused = report["refused"].as_array().expect("refused");
    assert_eq!(refused.len(), 8, "24 opened, 16 allowed: {report}");
    assert!(
        refused.iter().all(|r| r
            .as_str()
            .is_some_and(|r| r.contains("uid 65534 already holds 16 connections"))),
        "{report}"
    );
    let timed_out = report["timed_out"].as_array().expect("timed_out");
    let answered: Vec<_> = timed_out
        .iter()
        .filter_map(Value::as_str)
        .filter(|a| a.contains("no request line within 5 s"))
        .collect();
    assert_eq!(answered.len(), 16, "every silent slot times out: {report}");
    assert!(
        report["huge"]
            .as_str()
            .is_some_and(|h| h.contains("longer than 64 KiB")),
        "{report}"
    );
    assert!(
        report["garbage"]
            .as_str()
            .is_some_and(|g| g.contains("not UTF-8")),
        "{report}"
    );
    assert!(agent.is_running());
    assert!(agent.cli_ok(&["status"]).is_some());
    assert!(agent.stop().success(), "{}", agent.log_text());
}

/// 20 threads scraping /metrics as fast as they can, 20 connections that
/// never send a request, and one reader with a tiny window taking a byte per
/// second; prints `READY <slow reader's port>` once all run, and stops when
/// stdin closes.
const SCRAPER_CROWD: &str = r#"
import socket, sys, threading, time
host, port = sys.argv[1], int(sys.argv[2])
stop = threading.Event()
def scrape():
    while not stop.is_set():
        try:
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while s.recv(65536):
                pass
            s.close()
        except OSError:
            time.sleep(0.01)
slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
slow.connect((host, port))
slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
idle = []
for _ in range(20):
    try:
        idle.append(socket.create_connection((host, port), timeout=5))
    except OSError:
        pass
def trickle():
    slow.settimeout(1.0)
    while not stop.is_set():
        try:
            if not slow.recv(1):
                return
        except socket.timeout:
            pass
        except OSError:
            return
        time.sleep(1.0)
threads = [threading.Thread(target=scrape, daemon=True) for _ in range(20)]
threads.append(threading.Thread(target=trickle, daemon=True))
for t in threads:
    t.start()
print("READY", slow.getsockname()[1], flush=True)
sys.stdin.read()
stop.set()
"#;

/// Whether the agent's side of the connection from `client_port` to its
/// metrics port is still established.
fn established(metrics: SocketAddr, client_port: u16) -> bool {
    let out = Command::new("ss")
        .args(["-Htn", "state", "established"])
        .arg(format!(
            "( sport = :{} and dport = :{client_port} )",
            metrics.port()
        ))
        .output()
        .expect("ss runs");
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

#[test]
fn slow_and_many_scrapers_cannot_stall_judging() {
    require_tools();
    let orders = server();
    let url = format!("http://{}/v1/orders", orders.addr());
    let cg = CgroupGuard::new("scrapers");
    let mut agent = AgentProcess::start(&contract(orders.addr().port()), cg.path(), &[]);
    let mut crowd = Command::new("python3")
        .args(["-c", SCRAPER_CROWD])
        .arg(agent.metrics_addr.ip().to_string())
        .arg(agent.metrics_addr.port().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut out = BufReader::new(crowd.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("the crowd's first line");
    let slow_port: u16 = line
        .trim()
        .strip_prefix("READY ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the crowd failed: {line}"));
    assert!(established(agent.metrics_addr, slow_port));

    // Requests are judged and counted while the crowd scrapes, and the
    // socket answers.
    for round in 0..3 {
        let before = wait_until(
            "a scrape through the crowd",
            Duration::from_secs(60),
            || requests_judged(&agent),
        );
        for _ in 0..10 {
            curl_in(&cg, Some(TOKEN), &[&url]);
        }
        wait_for(
            &format!("round {round}: 10 requests judged during the crowd"),
            Duration::from_secs(60),
            || requests_judged(&agent).is_some_and(|n| n >= before + 10.0),
        );
        assert!(agent.cli_ok(&["status"]).is_some());
    }
    // The agent lets go of the slow reader although it still holds on: a
    // connection idles at most the header timeout once its answer is in
    // the socket buffers, and lives at most its lifetime while it is not.
    wait_for(
        "the agent to close the slow reader's connection",
        Duration::from_secs(120),
        || !established(agent.metrics_addr, slow_port),
    );
    assert!(crowd.try_wait().expect("poll the crowd").is_none());
    drop(crowd.stdin.take());
    assert!(crowd.wait().expect("the crowd exits").success());
    assert!(agent.is_running());
    assert!(agent.stop().success(), "{}", agent.log_text());
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
