//! The agent's image under podman with the DaemonSet's own securityContext
//! and mounts, read from deploy/kubernetes/daemonset.yaml so the two cannot
//! drift; and the binary as a non-root user with only those capabilities.
//!
//! Needs the image (`cargo xtask image`; `cargo xtask test` builds it once
//! per run and passes its name in `RAMPWATCH_IMAGE`). Run as root under
//! `flock /tmp/rampwatch-kernel.lock`: `cargo xtask test --filter image_`.

#![expect(
    clippy::unwrap_used,
    reason = "fixture helpers of a test binary: a failed step panics, and the backtrace names it"
)]

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::fs::{PermissionsExt as _, chown},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{
    agent_proc::rampwatch_binary,
    on_free_port, unique_name,
    wait::{DEFAULT_TIMEOUT, wait_until},
};

mod node;

use node::{Container, Node, podman};

const API_HOST: &str = "api.rampwatch.test";

fn image() -> String {
    let image = std::env::var("RAMPWATCH_IMAGE")
        .unwrap_or_else(|_| format!("localhost/rampwatch:{}", env!("CARGO_PKG_VERSION")));
    let exists = Command::new("podman")
        .args(["image", "exists", &image])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        exists,
        "podman has no image {image}: build it with `cargo xtask image` (`cargo xtask test` does)"
    );
    image
}

fn daemonset() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/daemonset.yaml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).expect("the DaemonSet is YAML")
}

/// The agent container's spec and its pod's volumes.
fn agent_container(ds: &Value) -> (&Value, &Vec<Value>) {
    let pod = &ds["spec"]["template"]["spec"];
    let c = pod["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "agent"))
        .expect("the DaemonSet has an `agent` container");
    (c, pod["volumes"].as_array().expect("volumes"))
}

/// The DaemonSet's added capabilities, as `CAP_X`.
fn capabilities(ds: &Value) -> Vec<String> {
    let (c, _) = agent_container(ds);
    let caps = &c["securityContext"]["capabilities"];
    assert_eq!(
        caps["drop"],
        serde_json::json!(["ALL"]),
        "the DaemonSet must drop ALL"
    );
    caps["add"]
        .as_array()
        .expect("capabilities.add")
        .iter()
        .map(|v| format!("CAP_{}", v.as_str().expect("a capability name")))
        .collect()
}

#[test]
fn image_runs_with_the_daemonsets_security_context() {
    let ds = daemonset();
    let node = Node::new(API_HOST);
    let name = unique_name("img");
    let out = podman(&node.podman_args(&ds, &name, &[]));
    let container = Container(name);
    assert!(
        out.status.success(),
        "podman run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flow = node.attached_and_seeing_traffic(&mut || container.stopped());
    // Through --host-root=/host: the host's cgroupfs and the node's
    // kubelet directories, mounted as the DaemonSet mounts them.
    node.names_the_server_pod(&flow);
    // The socket on the host is the agent's, mode 0660, root's.
    let meta = fs::metadata(node.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    // The image holds no shell to exec into.
    let sh = Command::new("podman")
        .args(["exec", &container.0, "/bin/sh", "-c", "true"])
        .output()
        .unwrap();
    assert!(!sh.status.success(), "the image has a shell");
    drop(container);
}

#[test]
fn image_without_cap_bpf_exits_with_one_sentence() {
    let ds = daemonset();
    assert!(capabilities(&ds).iter().any(|c| c == "CAP_BPF"));
    let node = Node::new(API_HOST);
    let name = unique_name("img");
    let out = podman(&node.podman_args(&ds, &name, &["CAP_BPF"]));
    let container = Container(name);
    assert!(
        out.status.success(),
        "podman run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let why = wait_until(
        "the agent to exit without CAP_BPF",
        Duration::from_secs(30),
        || container.stopped(),
    );
    assert!(
        !why.starts_with("exited 0"),
        "the agent exited 0 without CAP_BPF: {why}"
    );
    let sentence = "rampwatch needs root or the capabilities CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON to load \
                    its kernel programs (missing: CAP_BPF); run it as root or grant them";
    assert!(
        why.contains(sentence),
        "the agent's exit does not say why: {why}"
    );
}

/// The agent as nobody, killed if the test fails before stopping it: a
/// leaked agent keeps its cgroup programs and every fd it inherited.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn image_agent_runs_as_nobody_with_only_the_daemonsets_capabilities() {
    let ds = daemonset();
    // The host's own /etc/hosts name for 127.0.0.1.
    let node = Node::new("localhost");
    // Exactly the DaemonSet's set: the agent leaves its socket owned by its
    // own uid and only chmods it (agent/src/sinks/api/server.rs), so
    // neither CAP_CHOWN nor CAP_FOWNER is needed, whatever the uid.
    let caps: Vec<String> = capabilities(&ds);
    let list = caps
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",");
    let nobody = 65534;
    for d in ["run", "audit"] {
        chown(node.path(d), Some(nobody), Some(nobody)).unwrap();
    }
    chown(node.dir.path(), Some(nobody), Some(nobody)).unwrap();
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let metrics = on_free_port(ip, "a test port", |port| Some(SocketAddr::new(ip, port)));
    let log = node.path("agent.log");
    let mut child = Reap(
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(format!("--inh-caps=-all,{list}"))
            .arg(format!("--ambient-caps=-all,{list}"))
            .arg(format!("--bounding-set=-all,{list}"))
            .arg(rampwatch_binary())
            .arg("agent")
            .arg("--contract")
            .arg(node.path("contract/contract.yaml"))
            .arg("--metrics-addr")
            .arg(metrics.to_string())
            .arg("--socket")
            .arg(node.socket())
            .arg("--audit-dir")
            .arg(node.path("audit"))
            .arg("--cgroup")
            .arg(node.cgroup.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("run setpriv"),
    );
    let pid = child.0.id();
    let binary = fs::canonicalize(rampwatch_binary()).unwrap();
    let caps_seen = wait_until("setpriv to exec the agent", DEFAULT_TIMEOUT, || {
        // Until setpriv execs the agent, the process is setpriv.
        (fs::canonicalize(format!("/proc/{pid}/exe")).ok()? == binary).then_some(())?;
        let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let uid = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
        assert_eq!(uid.split_whitespace().nth(1), Some("65534"), "{uid}");
        Some(s.lines().find(|l| l.starts_with("CapEff:"))?.to_owned())
    });
    let mut alive = || {
        child
            .0
            .try_wait()
            .ok()
            .flatten()
            .map(|s| format!("{s}: {}", fs::read_to_string(&log).unwrap_or_default()))
    };
    node.attached_and_seeing_traffic(&mut alive);
    let eff = u64::from_str_radix(caps_seen.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(
        eff.count_ones() as usize,
        caps.len(),
        "the agent held more than its set: {caps_seen}"
    );
    // SIGINT: the agent's clean shutdown.
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let status = wait_until("the agent to stop", DEFAULT_TIMEOUT, || {
        child.0.try_wait().ok().flatten()
    });
    assert!(
        status.success(),
        "the agent as nobody exited with {status}: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
}
