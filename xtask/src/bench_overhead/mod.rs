//! `cargo xtask bench overhead`: what the agent costs a real server, side by
//! side with no agent and with tcpdump, in one run. Reports, never fails on
//! speed: the machines are shared, so only ratios within one run mean
//! anything.
//!
//! One nginx (`return 200`, one worker) serves HTTP and HTTPS on loopback;
//! wrk (`-t1 -c32`) loads it. Each round measures every mode once, in a
//! rotating order so that drift in the machine's load spreads evenly:
//! no agent, the agent with the ports unwatched, the agent watching them
//! (TLS probes on for HTTPS), tcpdump capturing them, and the empty
//! cgroup_skb program alone (`rw_floor`, attached by `rw-helper floor`: the
//! per-packet floor any cgroup_skb design pays here). The summary gives
//! medians of the per-round ratios to "no agent", the agent's CPU seconds
//! per million requests and peak RSS, and from `bpf_stats` the kernel time
//! per request and how many program runs (packets, probe hits) one request
//! costs, and the kernel ns per packet of the cgroup_skb programs next to the
//! floor's, measured in the same rounds.
//!
//! Environment: BENCH_ROUNDS (default 5), BENCH_SECONDS (per measurement,
//! default 4), BENCH_BASELINE (another `rampwatch` binary, e.g. the build
//! before a change: adds a mode where it watches the ports, so a change is
//! measured against its predecessor in the same rounds).

mod procstat;
mod summary;

use std::{
    collections::BTreeMap,
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use procstat::{BpfStats, bpf_progs};
pub(crate) use procstat::{bpftool_show, cpu_seconds, peak_rss_kib, rss_kib};

/// What listens where, for the length of the benchmark.
struct Bench {
    dir: PathBuf,
    rampwatch: PathBuf,
    /// `BENCH_BASELINE`: the build a change is measured against.
    baseline: Option<PathBuf>,
    helper: PathBuf,
    http_port: u16,
    https_port: u16,
    nginx: Child,
    seconds: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    None,
    Unwatched,
    Watched,
    Baseline,
    Tcpdump,
    Floor,
}

impl Mode {
    const ALL: [Self; 5] = [
        Self::None,
        Self::Unwatched,
        Self::Watched,
        Self::Tcpdump,
        Self::Floor,
    ];

    /// The modes of a run: `ALL`, and the baseline build's when given.
    fn of_run(baseline: bool) -> Vec<Self> {
        let mut modes = Self::ALL.to_vec();
        if baseline {
            modes.insert(3, Self::Baseline);
        }
        modes
    }

    fn name(self) -> &'static str {
        match self {
            Self::None => "no agent",
            Self::Unwatched => "agent, port unwatched",
            Self::Watched => "agent, port watched",
            Self::Baseline => "baseline build, watched",
            Self::Tcpdump => "tcpdump on the port",
            Self::Floor => "empty cgroup_skb program",
        }
    }
}

/// One wrk run.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    rps: f64,
    requests: u64,
    /// Agent CPU seconds during the run.
    agent_cpu: f64,
    /// `bpf_stats` deltas of the agent's programs (or the floor's): runs
    /// and run time.
    bpf_runs: u64,
    bpf_ns: u64,
    /// The share of those of the packet programs (cgroup_skb, TC): runs are
    /// packets.
    packet_runs: u64,
    packet_ns: u64,
    /// Runs of the TLS probe programs alone (uprobe hits, and the
    /// `sys_enter` raw tracepoint, which runs on every syscall while a
    /// process is probed).
    probe_runs: u64,
    probe_ns: u64,
    /// Of those, the `sys_enter` runs (every syscall of the machine while
    /// a process is probed, so they also count other work on the machine).
    syscall_runs: u64,
    syscall_ns: u64,
}

pub fn run(rampwatch: &Path, helper: &Path, work: &Path) -> anyhow::Result<()> {
    let rounds = env_u64("BENCH_ROUNDS", 5);
    let seconds = env_u64("BENCH_SECONDS", 4);
    let dir = work.join("overhead");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut bench = Bench::start(&dir, rampwatch, helper, seconds)?;
    let _stats = BpfStats::enable()?;
    let mut results: BTreeMap<(bool, Mode), Vec<Sample>> = BTreeMap::new();
    let mut peak_rss_kib = 0;
    for round in 0..rounds {
        let mut order = Mode::of_run(bench.baseline.is_some());
        let n = order.len();
        order.rotate_left(round as usize % n);
        for mode in order {
            let (http, https, rss) = bench.measure(mode)?;
            peak_rss_kib = peak_rss_kib.max(rss);
            println!(
                "round {round}: {:<24} http {:>9.0} req/s   https {:>9.0} req/s",
                mode.name(),
                http.rps,
                https.rps
            );
            results.entry((false, mode)).or_default().push(http);
            results.entry((true, mode)).or_default().push(https);
        }
    }
    let modes = Mode::of_run(bench.baseline.is_some());
    println!(
        "{}",
        summary::summary(&results, &modes, rounds, peak_rss_kib)
    );
    Ok(())
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> anyhow::Result<u16> {
    // nginx binds it a moment later; nothing else on this machine picks
    // ports from the ephemeral range for listening meanwhile.
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Bench {
    fn start(dir: &Path, rampwatch: &Path, helper: &Path, seconds: u64) -> anyhow::Result<Self> {
        let baseline = std::env::var_os("BENCH_BASELINE").map(PathBuf::from);
        if let Some(b) = &baseline {
            ensure!(
                Command::new(b)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()),
                "BENCH_BASELINE={} does not run as a rampwatch binary; \
                 point it at a built `target/release/rampwatch` copied outside the tree",
                b.display()
            );
        }
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        crate::cmd::run(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
                .args(["-subj", "/CN=bench.rampwatch", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stderr(Stdio::null()),
        )?;
        let (http_port, https_port) = (free_port()?, free_port()?);
        let d = dir.display();
        let conf = format!(
            r#"daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx.err warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{http_port};
        listen 127.0.0.1:{https_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ return 200 "ok"; }}
    }}
}}
"#,
            cert = cert.display(),
            key = key.display(),
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf)?;
        let nginx = Command::new("nginx")
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir)
            .stdin(Stdio::null())
            .spawn()
            .context("starting nginx (Debian package nginx)")?;
        let mut bench = Self {
            dir: dir.to_owned(),
            rampwatch: rampwatch.to_owned(),
            baseline,
            helper: helper.to_owned(),
            http_port,
            https_port,
            nginx,
            seconds,
        };
        wait(Duration::from_secs(10), "nginx to answer", || {
            Ok(Command::new("curl")
                .args(["-sfk", "-o", "/dev/null"])
                .arg(format!("https://127.0.0.1:{}/", bench.https_port))
                .status()?
                .success())
        })?;
        if let Ok(Some(status)) = bench.nginx.try_wait() {
            bail!(
                "nginx exited with {status}; see {}/nginx.err",
                bench.dir.display()
            );
        }
        Ok(bench)
    }

    /// Both protocols under one mode; returns (http, https, agent peak RSS
    /// in KiB).
    fn measure(&mut self, mode: Mode) -> anyhow::Result<(Sample, Sample, u64)> {
        let mut agent = match mode {
            Mode::Unwatched => Some(self.agent(false, &self.rampwatch)?),
            Mode::Watched => Some(self.agent(true, &self.rampwatch)?),
            Mode::Baseline => match &self.baseline {
                Some(bin) => Some(self.agent(true, bin)?),
                None => None,
            },
            _ => None,
        };
        let mut floor = (mode == Mode::Floor).then(|| self.floor()).transpose()?;
        let mut dump = (mode == Mode::Tcpdump)
            .then(|| {
                Command::new("tcpdump")
                    .args(["-i", "lo", "-s", "4096", "-w"])
                    .arg(self.dir.join("bench.pcap"))
                    .arg(format!(
                        "tcp port {} or tcp port {}",
                        self.http_port, self.https_port
                    ))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting tcpdump")
            })
            .transpose()?;
        if dump.is_some() {
            // tcpdump prints nothing useful when it is ready; give it the
            // moment it needs to open the interface.
            thread::sleep(Duration::from_millis(500));
        }
        let pid = agent.as_ref().map(|a| a.pid);
        let progs = if let Some((_, id)) = &floor {
            Progs::Only(*id)
        } else if agent.is_some() {
            Progs::Agent
        } else {
            Progs::None
        };
        let http = self.load(false, pid, progs)?;
        let https = self.load(true, pid, progs)?;
        if let Some((child, _)) = floor.as_mut() {
            // Closing its stdin detaches the program.
            drop(child.stdin.take());
            let _ = child.wait();
        }
        let rss = agent.as_ref().map_or(0, |a| peak_rss_kib(a.pid));
        if let Some(a) = agent.as_mut() {
            a.stop();
        }
        if let Some(d) = dump.as_mut() {
            let _ = d.kill();
            let _ = d.wait();
        }
        Ok((http, https, rss))
    }

    /// `rw-helper floor`: the empty program attached to the cgroup root
    /// until its stdin closes; returns it with the program's id.
    fn floor(&self) -> anyhow::Result<(Child, u64)> {
        let mut child = Command::new(&self.helper)
            .arg("floor")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting rw-helper floor")?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)?;
        }
        let id = line
            .trim()
            .strip_prefix("floor ")
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("rw-helper floor said {line:?}, not `floor <id>`"))?;
        Ok((child, id))
    }

    fn load(&self, tls: bool, agent: Option<u32>, progs: Progs) -> anyhow::Result<Sample> {
        let url = if tls {
            format!("https://127.0.0.1:{}/", self.https_port)
        } else {
            format!("http://127.0.0.1:{}/", self.http_port)
        };
        let cpu0 = agent.map_or(0.0, cpu_seconds);
        let bpf0 = bpf_progs()?;
        let out = Command::new("wrk")
            .args(["-t1", "-c32", &format!("-d{}s", self.seconds)])
            .arg(&url)
            .output()
            .context("running wrk (Debian package wrk)")?;
        let bpf1 = bpf_progs()?;
        let cpu1 = agent.map_or(0.0, cpu_seconds);
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(out.status.success(), "wrk {url} failed: {text}");
        let rps = text
            .lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .with_context(|| format!("no Requests/sec in wrk's output: {text}"))?;
        let requests = text
            .lines()
            .find_map(|l| l.trim().split_once(" requests in "))
            .and_then(|(n, _)| n.trim().parse().ok())
            .unwrap_or(0);
        let mut s = Sample {
            rps,
            requests,
            agent_cpu: cpu1 - cpu0,
            ..Sample::default()
        };
        for (id, (name, runs, ns)) in &bpf1 {
            let counted = match progs {
                Progs::None => false,
                Progs::Only(only) => *id == only,
                Progs::Agent => name != agent_common::program_names::FLOOR,
            };
            if !counted {
                continue;
            }
            let (r0, n0) = bpf0.get(id).map_or((0, 0), |(_, r, n)| (*r, *n));
            let (dr, dn) = (runs.saturating_sub(r0), ns.saturating_sub(n0));
            s.bpf_runs += dr;
            s.bpf_ns += dn;
            if name.starts_with("rw_ssl") || name.starts_with("rw_tls") {
                s.probe_runs += dr;
                s.probe_ns += dn;
            }
            // Program names are cut at 15 bytes (`rw_tls_sys_ente`).
            if name.starts_with("rw_tls_sys") {
                s.syscall_runs += dr;
                s.syscall_ns += dn;
            }
            if name.starts_with("rw_cgroup") || name.starts_with("rw_tc") || name == "rw_floor" {
                s.packet_runs += dr;
                s.packet_ns += dn;
            }
        }
        Ok(s)
    }

    fn agent(&self, watched: bool, rampwatch: &Path) -> anyhow::Result<Agent> {
        // The unwatched contract names a port nothing listens on.
        let ports = if watched {
            format!("{}, {}", self.http_port, self.https_port)
        } else {
            "9".to_owned()
        };
        let contract = self.dir.join(format!("contract-{watched}.yaml"));
        fs::write(&contract, contract_yaml("overhead-bench", &ports))?;
        let socket = self.dir.join("agent.sock");
        let log = fs::File::create(self.dir.join("agent.log"))?;
        let child = Command::new(rampwatch)
            .arg("agent")
            .arg("--contract")
            .arg(&contract)
            .args(["--metrics-addr", "127.0.0.1:0", "--socket"])
            .arg(&socket)
            .arg("--audit-dir")
            .arg(self.dir.join("audit"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting rampwatch agent")?;
        let mut agent = Agent {
            pid: child.id(),
            child,
        };
        let nginx_worker = nginx_workers(self.nginx.id());
        wait(Duration::from_secs(30), "the agent to attach", || {
            if let Ok(Some(st)) = agent.child.try_wait() {
                bail!(
                    "the agent exited with {st}; see {}/agent.log",
                    self.dir.display()
                );
            }
            let out = Command::new(&self.rampwatch)
                .args(["status", "-o", "json", "--socket"])
                .arg(&socket)
                .stderr(Stdio::null())
                .output()?;
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
                return Ok(false);
            };
            if !watched {
                return Ok(v["contract"].as_str().is_some_and(|c| !c.is_empty()));
            }
            // Watched: the TLS probes must be on nginx's worker first.
            let probed: Vec<u64> = v["tls"]["processes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["pid"].as_u64())
                .collect();
            Ok(nginx_worker.iter().all(|w| probed.contains(&u64::from(*w))))
        })?;
        Ok(agent)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers (SIGKILL would orphan them,
        // still holding whatever they inherited).
        let _ = Command::new("kill")
            .args(["-TERM", &self.nginx.id().to_string()])
            .status();
        let _ = self.nginx.wait();
    }
}

/// Whose programs' `bpf_stats` a measurement counts.
#[derive(Clone, Copy)]
enum Progs {
    None,
    Agent,
    Only(u64),
}

pub(crate) struct Agent {
    pub(crate) pid: u32,
    pub(crate) child: Child,
}

impl Agent {
    pub(crate) fn stop(&mut self) {
        // SIGINT: the agent's clean shutdown (detach, flush).
        let _ = Command::new("kill")
            .args(["-INT", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A contract watching `ports` on 127.0.0.1, with nothing to violate: the
/// benchmarks measure capture and judging, not findings.
pub(crate) fn contract_yaml(name: &str, ports: &str) -> String {
    format!(
        r#"apiVersion: rampwatch.io/v1
kind: RampContract
metadata:
  name: {name}
spec:
  dataClasses:
    - name: internal
      encryption: optional
      authentication: optional
  endpoints:
    - name: bench
      dataClass: internal
      hosts: ["127.0.0.1"]
      ports: [{ports}]
  stages:
    - name: pilot
      startsAt: "2026-01-01T00:00:00Z"
"#
    )
}

/// Children of nginx's master: its workers.
fn nginx_workers(master: u32) -> Vec<u32> {
    let path = format!("/proc/{master}/task/{master}/children");
    fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

pub(crate) fn wait(
    limit: Duration,
    what: &str,
    mut ready: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready()? {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out after {limit:?} waiting for {what}")
}
