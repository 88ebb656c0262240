//! The node a test runs the image on: its contract, audit key, the host
//! directories the DaemonSet mounts, a server in a pod cgroup, and the
//! podman command line built from the DaemonSet.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{
    TempDir,
    agent_proc::{json_lines, rampwatch_binary, workload_of},
    cgroup::CgroupGuard,
    on_free_port,
    wait::{DEFAULT_TIMEOUT, wait_until},
};

use super::{agent_container, capabilities, image};

/// How podman runs containers on these machines (crun refuses the hybrid
/// cgroup layout).
const PODMAN_RUN: &[&str] = &[
    "run",
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

const POD_UID: &str = "5c4b3a29-1807-4f6e-9d8c-7b6a59483726";
const POD_CONTAINER_ID: &str = "feedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedface";

/// A node for one test: the contract, the audit key, the host directories
/// the DaemonSet mounts, and the test cgroup the agent watches.
pub(crate) struct Node {
    pub(crate) dir: TempDir,
    /// The server's pod cgroups below `cgroup`, outermost first (removed
    /// innermost first, before `cgroup`).
    pod_cgroups: Vec<CgroupGuard>,
    pub(crate) cgroup: CgroupGuard,
    server: Child,
    server_addr: SocketAddr,
    api_host: String,
}

impl Node {
    /// `api_host`: the contract endpoint's only host name; it must resolve
    /// to 127.0.0.1 where the agent runs.
    pub(crate) fn new(api_host: &str) -> Self {
        let dir = TempDir::new("img").kept_with("RWT_KEEP_IMAGE");
        let cgroup = CgroupGuard::new("img");
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let server_addr = on_free_port(ip, "a test port", |port| Some(SocketAddr::new(ip, port)));
        for d in [
            "contract",
            "secret",
            "run",
            "audit",
            "var/log/pods",
            "var/log/containers",
        ] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        // The endpoint is named only by host name and has no ports: its
        // traffic is watched only if the name resolves (an unresolvable
        // port-less name is skipped), so a flow proves getaddrinfo works in
        // the image.
        fs::write(
            dir.path().join("contract/contract.yaml"),
            format!(
                r#"apiVersion: rampwatch.io/v1
kind: RampContract
metadata:
  name: image-test
spec:
  dataClasses:
    - name: public
      encryption: optional
      authentication: optional
  endpoints:
    - name: api
      dataClass: public
      hosts: ["{api_host}"]
      ports: [{port}]
  clients: []
  stages:
    - name: pilot
      startsAt: "2026-01-01T00:00:00Z"
      credentialMaxAge: 90d
      quotas: []
"#,
                // The server's port too: with any port, a loopback
                // connection matches on both sides, and the lower port
                // (sometimes the client's) is taken for the server.
                port = server_addr.port(),
            ),
        )
        .unwrap();
        // The server is a pod's container, as the kubelet's cgroupfs driver
        // and containerd name it, with the kubelet's log directory on the
        // "node" (mounted where the DaemonSet mounts /var/log/pods).
        let mut pod_cgroups: Vec<CgroupGuard> = Vec::new();
        for name in [
            "kubepods".to_owned(),
            "besteffort".to_owned(),
            format!("pod{POD_UID}"),
            POD_CONTAINER_ID.to_owned(),
        ] {
            let next = pod_cgroups.last().unwrap_or(&cgroup).child(&name);
            pod_cgroups.push(next);
        }
        let logs = dir
            .path()
            .join(format!("var/log/pods/payments_api-0_{POD_UID}/api"));
        fs::create_dir_all(&logs).unwrap();
        fs::write(logs.join("0.log"), b"").unwrap();
        std::os::unix::fs::symlink(
            logs.join("0.log"),
            dir.path().join(format!(
                "var/log/containers/api-0_payments_api-{POD_CONTAINER_ID}.log"
            )),
        )
        .unwrap();
        let server = pod_cgroups
            .last()
            .expect("the pod's container cgroup")
            .http_server(server_addr);
        Self {
            dir,
            pod_cgroups,
            cgroup,
            server,
            server_addr,
            api_host: api_host.to_owned(),
        }
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.path("run/rampwatch.sock")
    }

    /// The test cgroup as the container sees it under the DaemonSet's
    /// `/host/sys/fs/cgroup` (the host's cgroup v2 root may be below
    /// /sys/fs/cgroup, as on hybrid hosts).
    pub(crate) fn cgroup_in_container(&self, mount: &str) -> String {
        let rel = self
            .cgroup
            .path()
            .strip_prefix("/sys/fs/cgroup")
            .expect("the cgroup v2 root is under /sys/fs/cgroup");
        format!("{mount}/{}", rel.display())
    }

    /// `podman run` arguments for the DaemonSet's agent container, minus
    /// the capabilities in `without`.
    pub(crate) fn podman_args(&self, ds: &Value, name: &str, without: &[&str]) -> Vec<String> {
        let (c, volumes) = agent_container(ds);
        let sc = &c["securityContext"];
        let mut args: Vec<String> = PODMAN_RUN.iter().map(|s| s.to_string()).collect();
        args.extend(["--detach".into(), "--name".into(), name.into()]);
        assert_eq!(sc["privileged"], false);
        args.extend(["--cap-drop".into(), "ALL".into()]);
        for cap in capabilities(ds)
            .into_iter()
            .filter(|c| !without.contains(&c.as_str()))
        {
            args.extend(["--cap-add".into(), cap]);
        }
        if sc["readOnlyRootFilesystem"] == true {
            // No tmpfs on /tmp, /run either: Kubernetes adds none.
            args.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
        }
        if sc["allowPrivilegeEscalation"] == false {
            args.extend(["--security-opt".into(), "no-new-privileges".into()]);
        }
        match sc["seccompProfile"]["type"].as_str() {
            Some("RuntimeDefault") => {}
            Some("Unconfined") => {
                args.extend(["--security-opt".into(), "seccomp=unconfined".into()])
            }
            other => panic!("seccompProfile {other:?}: teach this test the podman flag for it"),
        }
        let uid = sc["runAsUser"].as_u64().expect("runAsUser");
        let gid = sc["runAsGroup"].as_u64().unwrap_or(uid);
        args.extend(["--user".into(), format!("{uid}:{gid}")]);
        let pod = &ds["spec"]["template"]["spec"];
        assert_ne!(
            pod["hostNetwork"], true,
            "the test runs the agent in its own network namespace"
        );
        if pod["hostPID"] == true {
            args.push("--pid=host".into());
        }
        // The contract names its endpoint by a host name only the
        // container's /etc/hosts knows.
        args.extend(["--add-host".into(), format!("{}:127.0.0.1", self.api_host)]);

        for m in c["volumeMounts"].as_array().expect("volumeMounts") {
            let name = m["name"].as_str().unwrap();
            let v = volumes
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("no volume {name}"));
            let source = if let Some(host) = v["hostPath"]["path"].as_str() {
                match host {
                    // The real host's, as on a node.
                    "/sys/fs/cgroup" | "/sys/kernel/btf" | "/proc" => PathBuf::from(host),
                    // Node state: this test's own directories.
                    "/run/rampwatch" => self.path("run"),
                    "/var/lib/rampwatch/audit" => self.path("audit"),
                    "/var/log/pods" => self.path("var/log/pods"),
                    "/var/log/containers" => self.path("var/log/containers"),
                    other => panic!(
                        "the DaemonSet mounts hostPath {other}: teach this test where it comes from"
                    ),
                }
            } else if v["configMap"]["name"] == "rampwatch-contract" {
                self.path("contract")
            } else if let Some(secret) = v["secret"]["secretName"].as_str() {
                assert_eq!(secret, "rampwatch-audit-key");
                let mode = v["secret"]["defaultMode"]
                    .as_u64()
                    .expect("the Secret's defaultMode");
                let key = self.path("secret/key");
                fs::write(&key, [7u8; 32]).unwrap();
                fs::set_permissions(
                    &key,
                    fs::Permissions::from_mode(u32::try_from(mode).unwrap()),
                )
                .unwrap();
                self.path("secret")
            } else {
                panic!("volume {name} is of a kind this test does not provide: {v}");
            };
            let ro = if m["readOnly"] == true { ":ro" } else { "" };
            args.extend([
                "--volume".into(),
                format!(
                    "{}:{}{ro}",
                    source.display(),
                    m["mountPath"].as_str().unwrap()
                ),
            ]);
        }
        args.push(image());
        for a in c["args"].as_array().expect("args") {
            let a = a.as_str().unwrap();
            // Narrow the watch from the node's root cgroup to the test's
            // (the same mount, one directory down).
            match a.strip_prefix("--cgroup=") {
                Some(mount) => args.push(format!("--cgroup={}", self.cgroup_in_container(mount))),
                None => args.push(a.to_owned()),
            }
        }
        args
    }

    /// `rampwatch <cmd> -o json --socket …` from the host.
    pub(crate) fn cli(&self, cmd: &str) -> Option<Vec<Value>> {
        let out = Command::new(rampwatch_binary())
            .arg(cmd)
            .args(["-o", "json", "--socket"])
            .arg(self.socket())
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| json_lines(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Waits for the agent's status over the socket, then sends a request
    /// to the watched server and waits for `rampwatch flows` to show it.
    pub(crate) fn attached_and_seeing_traffic(
        &self,
        alive: &mut dyn FnMut() -> Option<String>,
    ) -> Value {
        let status = wait_until(
            "the agent's status over the mounted socket",
            Duration::from_secs(30),
            || {
                if let Some(why) = alive() {
                    panic!("the agent stopped: {why}");
                }
                let s = self.cli("status")?.into_iter().next()?;
                s["contract"]
                    .as_str()
                    .is_some_and(|c| c == "image-test")
                    .then_some(s)
            },
        );
        let text = status.to_string();
        assert!(
            text.contains("cgroup_skb"),
            "status shows no cgroup_skb capture: {text}"
        );
        // The host name is resolved off the engine's task, so the kernel's
        // rule for it may land after the first status answer: a request
        // per poll until one is seen (each is a new connection).
        let port = format!(":{}", self.server_addr.port());
        let flow = wait_until("a request in `rampwatch flows`", DEFAULT_TIMEOUT, || {
            let curl = Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "--max-time", "10", "-H"])
                .arg(format!("Host: {}", self.api_host))
                .arg(format!("http://{}/", self.server_addr))
                .status()
                .expect("run curl");
            assert!(curl.success(), "curl failed: {curl}");
            self.cli("flows")?
                .into_iter()
                .find(|f| f["dst"].as_str().is_some_and(|d| d.ends_with(&port)))
        });
        assert_eq!(flow["endpoint"], "api", "{flow}");
        assert_eq!(flow["protocol"], "http", "{flow}");
        flow
    }

    /// The server's workload as the agent names it in `rampwatch flows`.
    pub(crate) fn names_the_server_pod(&self, flow: &Value) {
        assert_eq!(
            workload_of(&flow["server_workload"]),
            (Some("payments"), Some("api-0"), Some("api")),
            "{flow}"
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        while let Some(g) = self.pod_cgroups.pop() {
            drop(g);
        }
    }
}

/// A podman container removed on drop.
pub(crate) struct Container(pub(crate) String);

impl Container {
    pub(crate) fn logs(&self) -> String {
        let out = Command::new("podman")
            .args(["logs", &self.0])
            .output()
            .expect("podman logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
    /// `Some(why)` once the container is no longer running.
    pub(crate) fn stopped(&self) -> Option<String> {
        let out = Command::new("podman")
            .args([
                "inspect",
                "--format",
                "{{.State.Status}} {{.State.ExitCode}}",
                &self.0,
            ])
            .output()
            .ok()?;
        let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (!state.starts_with("running")).then(|| format!("{state}\n{}", self.logs()))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "--force", "--time", "5", &self.0])
            .output();
    }
}

pub(crate) fn podman(args: &[String]) -> Output {
    Command::new("podman")
        .args(args)
        .output()
        .expect("run podman")
}
