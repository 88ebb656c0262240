//! The real `rampwatch agent` binary as a child process: started on a test
//! cgroup with its own metrics port, socket and audit directory, queried
//! through its CLI, stopped with SIGINT (its clean shutdown path).

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use crate::{free_port, helper_binary, wait::wait_until};

pub struct AgentProcess {
    child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub audit_dir: PathBuf,
    pub metrics_addr: SocketAddr,
    pub log: PathBuf,
}

/// The `rampwatch` binary built alongside the tests.
pub fn rampwatch_binary() -> PathBuf {
    std::env::var_os("RAMPWATCH_BIN").map_or_else(|| helper_binary("rampwatch"), PathBuf::from)
}

impl AgentProcess {
    /// Writes `contract` to a temp dir and starts the agent attached to
    /// `cgroup`, with `extra_args` after the standard ones; returns once its
    /// socket answers.
    pub fn start(contract: &str, cgroup: &Path, extra_args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(crate::unique_name("agent"));
        fs::create_dir_all(&dir).expect("create the agent's temp dir");
        let contract_path = dir.join("contract.yaml");
        fs::write(&contract_path, contract).expect("write the contract");
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let metrics_addr = SocketAddr::new(ip, free_port(ip));
        let socket = dir.join("rampwatch.sock");
        let audit_dir = dir.join("audit");
        let log = dir.join("agent.log");
        let mut cmd = Command::new(rampwatch_binary());
        cmd.arg("agent")
            .arg("--contract")
            .arg(&contract_path)
            .arg("--metrics-addr")
            .arg(metrics_addr.to_string())
            .arg("--socket")
            .arg(&socket)
            .arg("--audit-dir")
            .arg(&audit_dir)
            .arg("--cgroup")
            .arg(cgroup)
            .args(extra_args)
            .env("RAMPWATCH_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("create the agent log"));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start rampwatch: {e}"));
        let mut agent = Self {
            child: Some(child),
            dir,
            socket,
            audit_dir,
            metrics_addr,
            log,
        };
        wait_until(
            "the agent's socket to answer",
            Duration::from_secs(30),
            || {
                if let Some(status) = agent
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    panic!("the agent exited with {status}:\n{}", agent.log_text());
                }
                agent.cli_ok(&["status"]).map(|_| ())
            },
        );
        agent
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
            .flat_map(|f| {
                fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }

    /// The body of /metrics.
    pub fn metrics(&self) -> String {
        Command::new("curl")
            .args(["-sf", &format!("http://{}/metrics", self.metrics_addr)])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// `rampwatch <args> --socket <ours>`; stdout when it succeeds.
    pub fn cli_ok(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(rampwatch_binary())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `rampwatch <args> -o json`, one JSON value per line.
    pub fn cli_json(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-o", "json"]);
        self.cli_ok(&all)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
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
        let status = wait_until(
            "the agent to exit after SIGINT",
            Duration::from_secs(20),
            || child.try_wait().ok().flatten(),
        );
        status
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
