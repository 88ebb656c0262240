//! The real `rampwatch agent` binary as a child process: started on a test
//! cgroup with its own metrics port, socket and audit directory, queried
//! through its CLI, stopped with SIGINT (its clean shutdown path).

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::OnceLock,
    time::Duration,
};

use crate::{
    TempDir, on_free_port,
    wait::{wait_for, wait_until},
};

/// The `rampwatch` binary. `cargo test -p tests` does not build other
/// packages' binaries, so this asks cargo for it once per test process (a
/// no-op when it is fresh; cargo holds no lock while tests run).
/// `RAMPWATCH_BIN` overrides.
pub fn rampwatch_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("RAMPWATCH_BIN") {
            return p.into();
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--quiet", "-p", "agent", "--bin", "rampwatch"])
            .args(["--message-format", "json-render-diagnostics"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build -p agent --bin rampwatch");
        assert!(
            out.status.success(),
            "cargo build -p agent --bin rampwatch failed"
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "rampwatch")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no rampwatch executable")
    })
    .clone()
}

/// Output of one CLI run.
pub struct CliRun {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// `rampwatch <args>` with `RAMPWATCH_LOG=<log_level>`, for commands that
/// need no agent (`audit verify`).
pub fn cli(args: &[&str], log_level: &str) -> CliRun {
    let out = Command::new(rampwatch_binary())
        .args(args)
        .env("RAMPWATCH_LOG", log_level)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run rampwatch {args:?}: {e}"));
    CliRun {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A workload as `rampwatch flows -o json` names it: (namespace, pod,
/// container).
pub fn workload_of(w: &serde_json::Value) -> (Option<&str>, Option<&str>, Option<&str>) {
    (
        w["namespace"].as_str(),
        w["pod"].as_str(),
        w["container"].as_str(),
    )
}

/// Objects of a `-o json` answer (one per line).
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// How to start the agent. [`AgentProcess::start`] covers the usual case;
/// other settings go through struct update syntax:
/// `Launch { log_level: "trace", ..Launch::new(&yaml, cg.path()) }.start()`.
pub struct Launch<'a> {
    /// Contract YAML, written to `<dir>/contract.yaml`.
    pub contract: &'a str,
    /// cgroup v2 directory the agent watches.
    pub cgroup: &'a Path,
    /// Arguments after the standard ones (`--config FILE`).
    pub extra_args: &'a [&'a str],
    /// `RAMPWATCH_LOG` of the agent and of the CLI runs against it.
    pub log_level: &'a str,
    /// Where the agent's files go; the caller keeps it. `None`: a fresh
    /// temp dir, removed when the agent is dropped.
    pub dir: Option<&'a Path>,
}

impl<'a> Launch<'a> {
    pub fn new(contract: &'a str, cgroup: &'a Path) -> Self {
        Self {
            contract,
            cgroup,
            extra_args: &[],
            log_level: "debug",
            dir: None,
        }
    }

    /// Starts the agent; returns once its socket answers with published
    /// views.
    /// The metrics port is chosen free and tried again if another process
    /// takes it before the agent binds.
    pub fn start(self) -> AgentProcess {
        let owned = self.dir.is_none().then(|| TempDir::new("agent"));
        let dir: PathBuf = self
            .dir
            .or_else(|| owned.as_ref().map(TempDir::path))
            .expect("the caller's directory or our own")
            .into();
        let mut owned = owned;
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        on_free_port(ip, "the agent's metrics listener", |port| {
            self.try_start(&dir, &mut owned, SocketAddr::new(ip, port))
        })
    }

    /// `None` when the agent exits because its metrics address is in use.
    fn try_start(
        &self,
        dir: &Path,
        owned: &mut Option<TempDir>,
        metrics_addr: SocketAddr,
    ) -> Option<AgentProcess> {
        let dir = dir.to_path_buf();
        let contract_path = dir.join("contract.yaml");
        fs::write(&contract_path, self.contract).expect("write the contract");
        let socket = dir.join("rampwatch.sock");
        let audit_dir = dir.join("audit");
        let (log, stdout) = (dir.join("agent.log"), dir.join("agent.stdout"));
        let child = Command::new(rampwatch_binary())
            .arg("agent")
            .arg("--contract")
            .arg(&contract_path)
            .arg("--metrics-addr")
            .arg(metrics_addr.to_string())
            .arg("--socket")
            .arg(&socket)
            .arg("--audit-dir")
            .arg(&audit_dir)
            .arg("--cgroup")
            .arg(self.cgroup)
            .args(self.extra_args)
            .env("RAMPWATCH_LOG", self.log_level)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("create the agent's stdout file"))
            .stderr(fs::File::create(&log).expect("create the agent log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start rampwatch: {e}"));
        let mut agent = AgentProcess {
            child: Some(child),
            log_level: self.log_level.to_owned(),
            _owned: None,
            dir,
            socket,
            audit_dir,
            metrics_addr,
            log,
            stdout,
        };
        let up = wait_until(
            "the agent's socket to answer with its first views",
            Duration::from_secs(30),
            || {
                if let Some(status) = agent
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    let log = agent.log_text();
                    if log.contains("Address already in use") {
                        agent.child = None;
                        return Some(false);
                    }
                    panic!("the agent exited with {status}:\n{log}");
                }
                // The socket answers before the engine publishes its first
                // views (until then `status` shows an empty contract name);
                // the tests want the running agent, not that window.
                let status = agent.cli_json(&["status"]).into_iter().next()?;
                status["contract"]
                    .as_str()
                    .is_some_and(|c| !c.is_empty())
                    .then_some(true)
            },
        );
        if !up {
            return None;
        }
        agent._owned = owned.take();
        Some(agent)
    }
}

pub struct AgentProcess {
    child: Option<Child>,
    log_level: String,
    /// The temp dir when the caller gave none; removed after the agent stops.
    _owned: Option<TempDir>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub audit_dir: PathBuf,
    pub metrics_addr: SocketAddr,
    /// The agent's stderr (its log).
    pub log: PathBuf,
    pub stdout: PathBuf,
}

impl AgentProcess {
    /// Starts the agent on `contract` (YAML text) attached to `cgroup`, with
    /// `extra_args` after the standard ones and debug logging.
    pub fn start(contract: &str, cgroup: &Path, extra_args: &[&str]) -> Self {
        Launch {
            extra_args,
            ..Launch::new(contract, cgroup)
        }
        .start()
    }

    /// The contract file the agent watches (rewrite it to test reloads).
    pub fn contract_path(&self) -> PathBuf {
        self.dir.join("contract.yaml")
    }

    /// The agent's pid, for signals.
    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
            .expect("the agent is running")
    }

    /// Every audit record written so far, in order (all segments).
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.audit_dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "jsonl"));
        files.sort();
        files
            .iter()
            .flat_map(|f| json_lines(&fs::read_to_string(f).unwrap_or_default()))
            .collect()
    }

    /// The body of /metrics; panics when the scrape fails (the metrics
    /// listener is bound before the socket answers).
    pub fn metrics(&self) -> String {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "5"])
            .arg(format!("http://{}/metrics", self.metrics_addr))
            .output()
            .expect("run curl for /metrics");
        assert!(out.status.success(), "GET /metrics failed");
        String::from_utf8(out.stdout).expect("/metrics is UTF-8")
    }

    /// `rampwatch <args> --socket <ours>`, logging at the agent's level.
    pub fn cli(&self, args: &[&str]) -> CliRun {
        let socket = self.socket.to_string_lossy().into_owned();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--socket", &socket]);
        cli(&all, &self.log_level)
    }

    /// [`Self::cli`]'s stdout when it succeeds.
    pub fn cli_ok(&self, args: &[&str]) -> Option<String> {
        let run = self.cli(args);
        run.ok.then_some(run.stdout)
    }

    /// `rampwatch <args> -o json`, one JSON value per line.
    pub fn cli_json(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-o", "json"]);
        json_lines(&self.cli_ok(&all).unwrap_or_default())
    }

    /// Flows (live and ended) to a server on `port`, from `rampwatch flows
    /// -o json`.
    pub fn flows_to(&self, port: u16) -> Vec<serde_json::Value> {
        let suffix = format!(":{port}");
        self.cli_json(&["flows"])
            .into_iter()
            .filter(|f| f["dst"].as_str().is_some_and(|d| d.ends_with(&suffix)))
            .collect()
    }

    /// Waits until `rampwatch status` lists `pid` among the processes whose
    /// OpenSSL the TLS probes read.
    pub fn wait_tls_probed(&self, pid: u32) {
        wait_until(
            &format!("the agent to probe the TLS library of pid {pid}"),
            Duration::from_secs(20),
            || {
                let status = self.cli_json(&["status"]).into_iter().next()?;
                status["tls"]["processes"]
                    .as_array()?
                    .iter()
                    .any(|p| p["pid"].as_u64() == Some(u64::from(pid)))
                    .then_some(())
            },
        );
    }

    /// `rampwatch watch -o <format>` streaming into `<dir>/watch.<format>`.
    pub fn watch(&self, format: &str) -> Watch {
        let out = self.dir.join(format!("watch.{format}"));
        let err = self.dir.join(format!("watch.{format}.stderr"));
        let child = Command::new(rampwatch_binary())
            .args(["watch", "-o", format, "--socket"])
            .arg(&self.socket)
            .env("RAMPWATCH_LOG", &self.log_level)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).expect("create the watch output file"))
            .stderr(fs::File::create(&err).expect("create the watch stderr file"))
            .spawn()
            .expect("start rampwatch watch");
        Watch { child, out, err }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 30 lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log_text();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGINT, then waits for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the agent was already stopped");
        let pid = i32::try_from(child.id()).expect("pid fits i32");
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
        wait_until(
            "the agent to exit after SIGINT",
            Duration::from_secs(20),
            || child.try_wait().ok().flatten(),
        )
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

/// A `rampwatch watch` streaming into a file until dropped.
pub struct Watch {
    child: Child,
    pub out: PathBuf,
    pub err: PathBuf,
}

impl Watch {
    pub fn text(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until at least `lines` lines were written.
    pub fn wait_lines(&self, lines: usize) {
        wait_for(
            &format!(
                "{lines} lines from `rampwatch watch` in {}",
                self.out.display()
            ),
            Duration::from_secs(20),
            || self.text().lines().count() >= lines,
        );
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
