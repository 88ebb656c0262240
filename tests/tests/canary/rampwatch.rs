//! The real `rampwatch` binary: built (or found), started as a live agent
//! with its stderr in a file, queried through its CLI, stopped with SIGINT.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use tests::wait::{wait_for, wait_until};

/// The `rampwatch` binary. `cargo test -p tests` does not build other
/// packages' binaries, so this asks cargo for it (a no-op when it is
/// fresh; cargo holds no lock while tests run). `RAMPWATCH_BIN` overrides.
pub fn binary() -> PathBuf {
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
}

/// Output of one CLI run.
pub struct CliRun {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

pub fn cli(bin: &Path, args: &[&str]) -> CliRun {
    let out = Command::new(bin)
        .args(args)
        .env("RAMPWATCH_LOG", "trace")
        .output()
        .unwrap_or_else(|e| panic!("run rampwatch {args:?}: {e}"));
    CliRun {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Objects of a `-o json` answer (one per line).
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A running `rampwatch agent`, stopped (SIGINT) on drop if still running.
pub struct Agent {
    child: Child,
    pub bin: PathBuf,
    pub socket: PathBuf,
    pub stderr: PathBuf,
    pub stdout: PathBuf,
}

impl Agent {
    pub fn start(bin: &Path, dir: &Path, args: &[String]) -> Self {
        let socket = dir.join("s.sock");
        let (stderr, stdout) = (dir.join("agent.stderr"), dir.join("agent.stdout"));
        let child = Command::new(bin)
            .arg("agent")
            .args(args)
            .arg("--socket")
            .arg(&socket)
            .env("RAMPWATCH_LOG", "trace")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("create agent stdout file"))
            .stderr(fs::File::create(&stderr).expect("create agent stderr file"))
            .spawn()
            .expect("start rampwatch agent");
        let mut agent = Self {
            child,
            bin: bin.to_owned(),
            socket,
            stderr,
            stdout,
        };
        wait_until(
            "the agent to answer on its socket",
            Duration::from_secs(30),
            || {
                if let Ok(Some(status)) = agent.child.try_wait() {
                    panic!(
                        "the agent exited at start ({status}):\n{}",
                        agent.log_tail()
                    );
                }
                agent.query(&["status", "-o", "json"]).ok.then_some(())
            },
        );
        agent
    }

    /// `rampwatch <args> --socket <ours>`.
    pub fn query(&self, args: &[&str]) -> CliRun {
        let socket = self.socket.to_string_lossy().into_owned();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--socket", &socket]);
        cli(&self.bin, &all)
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGINT, then wait for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        let pid = i32::try_from(self.child.id()).expect("pid fits i32");
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let child = &mut self.child;
        wait_until(
            "the agent to exit after SIGINT",
            Duration::from_secs(20),
            || child.try_wait().ok().flatten(),
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.stop();
        }
    }
}

/// A `rampwatch watch` streaming into a file until dropped.
pub struct Watch {
    child: Child,
    pub out: PathBuf,
}

impl Watch {
    pub fn start(agent: &Agent, format: &str, out: PathBuf) -> Self {
        let child = Command::new(&agent.bin)
            .args(["watch", "-o", format, "--socket"])
            .arg(&agent.socket)
            .env("RAMPWATCH_LOG", "trace")
            .stdout(fs::File::create(&out).expect("create watch output file"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rampwatch watch");
        Self { child, out }
    }

    /// Waits until at least `lines` lines were written.
    pub fn wait_lines(&self, lines: usize) {
        wait_for(
            &format!(
                "{lines} lines from `rampwatch watch` in {}",
                self.out.display()
            ),
            Duration::from_secs(20),
            || fs::read_to_string(&self.out).is_ok_and(|s| s.lines().count() >= lines),
        );
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Program ids attached to a cgroup directory, per `bpftool cgroup show`.
pub fn attached(dir: &Path) -> Vec<u64> {
    let out = Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(dir)
        .output()
        .expect("run bpftool cgroup show");
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_u64())
        .collect()
}
