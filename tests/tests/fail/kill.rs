//! `kill -9`, twenty times, at random moments while plaintext and TLS
//! traffic and violations flow: sometimes mid-start (attaching, writing its
//! first audit records), mostly while running. After every restart the
//! audit chain verifies (torn tails moved aside with a `recovery` record)
//! and the agent attaches again (time to attach measured); after every kill
//! nothing of the killed agent stays attached, and at the end only the one
//! running agent's programs are loaded.

use std::{
    collections::HashSet,
    fs,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{
    TempDir,
    agent_proc::{cli, json_lines, rampwatch_binary},
    canary::Rng,
    cgroup::CgroupGuard,
    https::PyHttpsServer,
    sha256_hex,
    tools::require_tools,
    wait::{wait_for, wait_until},
};

use super::{TOKEN, server};

const KILLS: usize = 20;

/// Plaintext `orders` in a class that requires encryption (every flow is an
/// `unencrypted_flow`) and TLS `secure`, whose server's OpenSSL is probed.
fn contract(plain: u16, tls: u16) -> String {
    format!(
        r#"apiVersion: rampwatch.io/v1
kind: RampContract
metadata:
  name: kill
spec:
  dataClasses:
    - name: pii
      encryption: required
      authentication: required
  endpoints:
    - name: orders
      dataClass: pii
      hosts: ["127.0.0.1"]
      ports: [{plain}]
    - name: secure
      dataClass: pii
      hosts: ["127.0.0.1"]
      ports: [{tls}]
  clients:
    - name: acme
      credentials:
        - {{ header: authorization, fingerprint: "sha256:{fp}", issuedAt: "2026-11-01T00:00:00Z" }}
  stages:
    - name: pilot
      startsAt: "2026-01-01T00:00:00Z"
      quotas:
        - {{ client: acme, endpoint: orders, requestsPerSecond: 1000, burst: 1000 }}
        - {{ client: acme, endpoint: secure, requestsPerSecond: 1000, burst: 1000 }}
"#,
        fp = sha256_hex(TOKEN)
    )
}

/// Ids of the BPF programs `pid` holds, directly or through a link: the
/// `prog_id` of every fd (bpftool's pid column needs a bpftool built with
/// its skeletons, which Debian's is not).
fn held_programs(pid: u64) -> HashSet<u64> {
    let dir = format!("/proc/{pid}/fdinfo");
    fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .filter_map(Result::ok)
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:")?.trim().parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect()
}

/// Ids of loaded BPF programs named `rw_*` (ours).
fn rw_programs() -> Vec<u64> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("run bpftool prog show");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("rw_")))
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

/// BPF links (uprobe perf links included) whose program is one of `progs`.
fn links_of(progs: &[u64]) -> usize {
    let out = Command::new("bpftool")
        .args(["-j", "link", "show"])
        .output()
        .expect("run bpftool link show");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["prog_id"].as_u64().is_some_and(|id| progs.contains(&id)))
        .count()
}

/// Legacy (netlink) TC filters on loopback that run one of our programs:
/// none expected, tcx attachments are links.
fn tc_filters_on_lo() -> String {
    let mut text = String::new();
    for dir in ["ingress", "egress"] {
        let out = Command::new("tc")
            .args(["filter", "show", "dev", "lo", dir])
            .output()
            .expect("run tc filter show");
        text.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    text.lines()
        .filter(|l| l.contains("rw_"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One life of the agent: started directly (not through `AgentProcess`,
/// which waits for it to be ready) so it can be killed at any moment.
struct Life {
    child: Child,
    socket: PathBuf,
    started: Instant,
}

fn free_port() -> u16 {
    TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn spawn(dir: &Path, cg: &CgroupGuard, n: usize) -> Life {
    let socket = dir.join("rampwatch.sock");
    let log = fs::File::create(dir.join(format!("agent-{n}.log"))).expect("create the agent log");
    let child = Command::new(rampwatch_binary())
        .arg("agent")
        .arg("--contract")
        .arg(dir.join("contract.yaml"))
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--socket")
        .arg(&socket)
        .arg("--audit-dir")
        .arg(dir.join("audit"))
        .arg("--cgroup")
        .arg(cg.path())
        // TC too (tcx links on 6.6+), so a leaked classifier would show.
        .args(["--iface", "lo"])
        .env("RAMPWATCH_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start rampwatch agent");
    Life {
        child,
        socket,
        started: Instant::now(),
    }
}

impl Life {
    fn pid(&self) -> u64 {
        u64::from(self.child.id())
    }

    fn status(&self) -> Option<Value> {
        let socket = self.socket.to_string_lossy();
        let run = cli(&["status", "-o", "json", "--socket", &socket], "warn");
        json_lines(&run.stdout)
            .into_iter()
            .next()
            .filter(|s| s["contract"] == "kill")
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL the agent");
        self.child.wait().expect("reap the agent");
    }
}

impl Drop for Life {
    /// A failing assertion must not leave an agent running (attached, and
    /// holding whatever fds the test process had).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn audit_records(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "jsonl"));
    files.sort();
    files
        .iter()
        .flat_map(|f| json_lines(&fs::read_to_string(f).unwrap_or_default()))
        .collect()
}

fn count_kind(records: &[Value], kind: &str) -> usize {
    records.iter().filter(|r| r["kind"] == kind).count()
}

/// Traffic that keeps violations coming: curl over plaintext and TLS, new
/// connections every round, until dropped.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Traffic {
    fn start(cg: &CgroupGuard, plain: String, tls: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cmd = |url: &str, insecure: bool| {
            let mut c = cg.command("curl");
            c.args(["-s", "-o", "/dev/null", "--max-time", "5"]);
            if insecure {
                c.arg("-k");
            }
            c.args(["-H", &format!("Authorization: Bearer {TOKEN}")])
                .arg(url)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            c
        };
        let (mut a, mut b) = (cmd(&plain, false), cmd(&tls, true));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop2.load(Ordering::Relaxed) {
                let _ = a.status();
                let _ = b.status();
                rounds += 1;
            }
            rounds
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Appends half a record to the newest segment: what a kill in the middle
/// of the writer's `write(2)` leaves (the random kills rarely land there).
fn tear_tail(audit: &Path) {
    let mut segments: Vec<PathBuf> = fs::read_dir(audit)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    segments.retain(|p| p.extension().is_some_and(|e| e == "jsonl"));
    segments.sort();
    let last = segments.last().expect("a segment to tear");
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(last)
        .expect("open the last segment");
    f.write_all(br#"{"seq":999999,"time":"2026-"#)
        .expect("append a torn record");
}

#[test]
fn twenty_kill_9s_leave_a_verifiable_log_and_nothing_attached() {
    require_tools();
    let mut rng = Rng::from_entropy();
    println!("kill: seed {}", rng.seed());
    let plain = server();
    let tls = PyHttpsServer::start_here(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let cg = CgroupGuard::new("kill");
    let dir = TempDir::new("kill");
    fs::write(
        dir.path().join("contract.yaml"),
        contract(plain.addr().port(), tls.addr.port()),
    )
    .expect("write the contract");
    let audit = dir.path().join("audit");
    let before = rw_programs();
    let _traffic = Traffic::start(
        &cg,
        format!("http://{}/orders", plain.addr()),
        tls.url("/secure"),
    );

    let mut attach_times = Vec::new();
    let mut torn = 0;
    let mut early = 0;
    for n in 0..KILLS {
        let life = spawn(dir.path(), &cg, n);
        // A quarter of the kills land while the agent starts (loading,
        // attaching, recovering its log); the rest while it runs.
        if rng.below(4) == 0 {
            early += 1;
            let ms = rng.below(400) as u64;
            // The random moment is the stimulus, not a wait for state.
            std::thread::sleep(Duration::from_millis(ms));
        } else {
            wait_for(
                &format!("agent life {n} to attach"),
                Duration::from_secs(30),
                || cg.attached().len() == 2,
            );
            attach_times.push(life.started.elapsed());
            wait_until(
                &format!("agent life {n} to answer"),
                Duration::from_secs(30),
                || life.status(),
            );
            // Its start is on record, and it judges traffic again.
            wait_for(
                &format!("agent life {n}'s start and a violation in the audit log"),
                Duration::from_secs(30),
                || {
                    let r = audit_records(&audit);
                    let last_start = r.iter().rposition(|x| x["kind"] == "agent_start");
                    last_start
                        .is_some_and(|i| r[i..].iter().any(|x| x["kind"] == "violation_opened"))
                },
            );
            let v = cli(&["audit", "verify", &audit.to_string_lossy()], "warn");
            assert!(
                v.ok,
                "audit verify after restart {n}: {}{}",
                v.stdout, v.stderr
            );
            let ms = rng.below(500) as u64;
            std::thread::sleep(Duration::from_millis(ms));
        }
        let pid = life.pid();
        life.kill();
        // Nothing of the killed agent stays: no cgroup program, no program
        // or link its fds held.
        wait_for(
            &format!("the kernel to drop killed agent {pid}'s programs"),
            Duration::from_secs(30),
            || {
                let progs = rw_programs();
                cg.attached().is_empty() && progs.iter().all(|id| before.contains(id))
            },
        );
        if n % 5 == 4 && audit.exists() {
            tear_tail(&audit);
            torn += 1;
        }
    }

    // The one agent left: it recovers the log and is all that is attached.
    let last = spawn(dir.path(), &cg, KILLS);
    wait_for("the last agent to attach", Duration::from_secs(30), || {
        cg.attached().len() == 2
    });
    attach_times.push(last.started.elapsed());
    wait_until("the last agent to answer", Duration::from_secs(30), || {
        last.status()
    });
    wait_until(
        "the last agent to probe the TLS server",
        Duration::from_secs(30),
        || {
            let s = last.status()?;
            s["tls"]["processes"]
                .as_array()?
                .iter()
                .any(|p| p["pid"].as_u64() == Some(u64::from(tls.pid())))
                .then_some(())
        },
    );
    let v = cli(&["audit", "verify", &audit.to_string_lossy()], "warn");
    assert!(v.ok, "audit verify at the end: {}{}", v.stdout, v.stderr);
    let records = audit_records(&audit);
    let recoveries = count_kind(&records, "recovery");
    assert!(
        recoveries >= torn,
        "{torn} torn tails but {recoveries} recovery records"
    );
    let starts = count_kind(&records, "agent_start");
    assert!(starts >= KILLS + 1 - early, "{starts} agent_start records");
    let progs: Vec<u64> = rw_programs()
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    let held = held_programs(last.pid());
    let foreign: Vec<_> = progs.iter().filter(|id| !held.contains(id)).collect();
    assert!(
        !progs.is_empty() && foreign.is_empty(),
        "programs not held by the running agent {}: {foreign:?}",
        last.pid()
    );
    let links = links_of(&progs);
    assert!(links >= 2, "the running agent's links: {links}");
    assert_eq!(tc_filters_on_lo(), "", "no TC filter of ours on lo");
    attach_times.sort();
    let ms = |d: &Duration| d.as_millis();
    println!(
        "kill: {KILLS} kills ({early} mid-start), {torn} torn tails injected, {recoveries} recovery records; \
         time to attach over {} starts: min {} ms, median {} ms, max {} ms; {} programs, {links} links held by the last agent",
        attach_times.len(),
        ms(&attach_times[0]),
        ms(&attach_times[attach_times.len() / 2]),
        ms(&attach_times[attach_times.len() - 1]),
        progs.len()
    );
    last.kill();
}
