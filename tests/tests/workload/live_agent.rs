//! The live agent names the workloads: a server and clients in pod cgroups
//! named as the kubelet names them, the kubelet's log directories and the
//! host's cgroupfs and `/proc` bind-mounted under a host root as the
//! DaemonSet mounts them (`--host-root`), real curl traffic; the workload
//! in `flows -o json`, the tables, `violations -o json` and the audit log,
//! and a contract client identified by its workload.

use std::{path::PathBuf, process::Command};

use serde_json::Value;
use tests::{
    TempDir,
    agent_proc::{AgentProcess, workload_of},
    cgroup::{CgroupGuard, cgroup2_root},
    wait::{DEFAULT_TIMEOUT, wait_until},
};

use super::{CLIENT_UID, Chain, PyServer, SERVER_UID, container_id, kubelet_pod};

const OTHER_UID: &str = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";

/// A host root as the DaemonSet lays it out: the kubelet's directories,
/// and read-only bind mounts of the real cgroup v2 root at
/// `sys/fs/cgroup` and of `/proc` at `proc`. Drop unmounts them before the
/// directory is removed, and leaks the directory if an unmount fails, so a
/// recursive removal never reaches the real cgroupfs.
pub(super) struct HostRoot {
    dir: Option<TempDir>,
    mounts: Vec<PathBuf>,
}

impl HostRoot {
    pub(super) fn new() -> Self {
        let mut h = Self {
            dir: Some(TempDir::new("wl-hostroot")),
            mounts: Vec::new(),
        };
        h.bind(&cgroup2_root(), "sys/fs/cgroup");
        h.bind(std::path::Path::new("/proc"), "proc");
        h
    }

    pub(super) fn path(&self) -> &std::path::Path {
        self.dir.as_ref().expect("the host root").path()
    }

    fn bind(&mut self, src: &std::path::Path, rel: &str) {
        let dst = self.path().join(rel);
        std::fs::create_dir_all(&dst).expect("create a mount point");
        let ok = Command::new("mount")
            .arg("--bind")
            .arg(src)
            .arg(&dst)
            .status()
            .expect("run mount")
            .success();
        assert!(ok, "mount --bind {} {}", src.display(), dst.display());
        self.mounts.push(dst.clone());
        let ok = Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&dst)
            .status()
            .expect("run mount")
            .success();
        assert!(ok, "remount {} read-only", dst.display());
    }
}

impl Drop for HostRoot {
    fn drop(&mut self) {
        let mut all = true;
        for m in self.mounts.drain(..).rev() {
            all &= Command::new("umount")
                .arg(&m)
                .status()
                .is_ok_and(|s| s.success());
        }
        if !all {
            eprintln!("an unmount below the host root failed; leaving the directory in place");
            std::mem::forget(self.dir.take());
        }
    }
}

fn contract(port: u16) -> String {
    format!(
        r#"apiVersion: rampwatch.io/v1
kind: RampContract
metadata:
  name: workloads
spec:
  dataClasses:
    - name: pii
      encryption: required
      authentication: required
  endpoints:
    - name: orders
      dataClass: pii
      hosts: ["127.0.0.1"]
      ports: [{port}]
  clients:
    - name: sync
      workloads:
        - namespace: partner-acme
          pod: "sync-*"
  stages:
    - name: pilot
      startsAt: "2026-01-01T00:00:00Z"
      quotas:
        - {{ client: sync, endpoint: orders, requestsPerSecond: 100, burst: 100 }}
"#
    )
}

fn curl(cg: &CgroupGuard, url: &str) {
    let status = cg
        .command("curl")
        .args(["-sf", "-o", "/dev/null", "--max-time", "10", url])
        .status()
        .expect("run curl");
    assert!(status.success(), "curl {url}: {status}");
}

#[test]
fn workload_agent_names_flows_violations_and_audit_and_identifies_clients_by_workload() {
    tests::tools::require_tools();
    let server_id = container_id('a');
    let client_id = container_id('b');
    let other_id = container_id('c');
    let base = CgroupGuard::new("wl");
    let server_cg = Chain::new(
        &base,
        &format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{server_id}.scope",
            SERVER_UID.replace('-', "_")
        ),
    );
    let client_cg = Chain::new(
        &base,
        &format!("kubepods/besteffort/pod{CLIENT_UID}/{client_id}"),
    );
    // A second (nested, kind-like) kubelet's tree, so the two cgroupfs
    // driver paths do not collide.
    let node2 = base.child("node2");
    let other_cg = Chain::new(
        &node2,
        &format!("kubepods/burstable/pod{OTHER_UID}/{other_id}"),
    );
    let host = HostRoot::new();
    kubelet_pod(
        host.path(),
        "payments",
        "api-7f9c",
        SERVER_UID,
        &[("api", &server_id)],
    );
    kubelet_pod(
        host.path(),
        "partner-acme",
        "sync-1",
        CLIENT_UID,
        &[("sync", &client_id)],
    );
    kubelet_pod(
        host.path(),
        "partner-beta",
        "batch-1",
        OTHER_UID,
        &[("batch", &other_id)],
    );

    let server = PyServer::start(server_cg.leaf());
    let host_root = host.path().display().to_string();
    let agent = AgentProcess::start(
        &contract(server.1.port()),
        base.path(),
        &["--host-root", &host_root, "--no-tls-probes"],
    );
    let url = format!("http://{}/", server.1);
    curl(client_cg.leaf(), &url);
    curl(other_cg.leaf(), &url);

    // flows -o json: both ends named; sync identified by its workload, the
    // other pod unknown but still named.
    let flows = wait_until("both flows with their workloads", DEFAULT_TIMEOUT, || {
        let flows = agent.cli_json(&["flows"]);
        let named = |pod: &str| {
            flows
                .iter()
                .find(|f| f["client_workload"]["pod"] == pod && f["server_workload"].is_object())
                .cloned()
        };
        Some((named("sync-1")?, named("batch-1")?))
    });
    let (sync, batch) = flows;
    assert_eq!(
        workload_of(&sync["client_workload"]),
        (Some("partner-acme"), Some("sync-1"), Some("sync")),
        "{sync}"
    );
    assert_eq!(
        workload_of(&sync["server_workload"]),
        (Some("payments"), Some("api-7f9c"), Some("api")),
        "{sync}"
    );
    assert_eq!(
        (sync["client"].as_str(), sync["identified_by"].as_str()),
        (Some("sync"), Some("workload")),
        "{sync}"
    );
    assert_eq!(
        sync["client_workload"]["cgroup_id"],
        client_cg.leaf().id(),
        "{sync}"
    );
    assert_eq!(
        workload_of(&batch["client_workload"]),
        (Some("partner-beta"), Some("batch-1"), Some("batch")),
        "{batch}"
    );
    assert_eq!(batch["client"], "unknown", "{batch}");

    // The table shows them too.
    let table = agent.cli_ok(&["flows"]).expect("rampwatch flows");
    assert!(
        table.contains("partner-acme/sync-1/sync") && table.contains("payments/api-7f9c/api"),
        "{table}"
    );

    // Violations carry their client's workload: plaintext to a pii
    // endpoint from sync (unencrypted_flow), and an unknown client.
    let violations = wait_until("both violations", DEFAULT_TIMEOUT, || {
        let v = agent.cli_json(&["violations"]);
        let find = |kind: &str, client: &str| {
            v.iter()
                .find(|v| v["kind"] == kind && v["client"] == client)
                .cloned()
        };
        Some((
            find("unencrypted_flow", "sync")?,
            find("unknown_client", "unknown")?,
        ))
    });
    assert_eq!(
        workload_of(&violations.0["client_workload"]),
        (Some("partner-acme"), Some("sync-1"), Some("sync")),
        "{}",
        violations.0
    );
    assert_eq!(
        workload_of(&violations.1["client_workload"]),
        (Some("partner-beta"), Some("batch-1"), Some("batch")),
        "{}",
        violations.1
    );
    let table = agent.cli_ok(&["violations"]).expect("rampwatch violations");
    assert!(
        // The violations table keeps 80 columns: the workload is a line
        // under its row.
        table.contains("client workload partner-beta/batch-1/batch"),
        "{table}"
    );

    // And so do the audit records of their opening.
    let opened = wait_until(
        "the audit records of both openings",
        DEFAULT_TIMEOUT,
        || {
            let recs: Vec<Value> = agent
                .audit_records()
                .into_iter()
                .filter(|r| r["kind"] == "violation_opened")
                .collect();
            (recs.len() >= 2).then_some(recs)
        },
    );
    let rec = opened
        .iter()
        .find(|r| r["violation"] == "unencrypted_flow")
        .unwrap_or_else(|| panic!("no unencrypted_flow record: {opened:?}"));
    assert_eq!(
        workload_of(&rec["client_workload"]),
        (Some("partner-acme"), Some("sync-1"), Some("sync")),
        "{rec}"
    );
    // Never in metric labels.
    let metrics = agent.metrics();
    assert!(
        !metrics.contains("sync-1") && !metrics.contains("partner-acme"),
        "a workload leaked into a metric label"
    );
}
