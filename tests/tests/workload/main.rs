//! Workload identity on the real cgroupfs: cgroups named as the kubelet
//! (systemd and cgroupfs drivers), podman and systemd name them, real
//! servers and clients in them, the kernel's own cgroup ids for their
//! sockets, and the kubelet's pod directories laid out as on a node.
//!
//! Each test builds its layouts under its own `rwt-wl-…` cgroup below the
//! root (the names are matched wherever they sit, as on kind's nested
//! kubelets), so a real `kubepods.slice` on the machine is never touched.
//!
//! Run as root: `cargo xtask test --filter workload_` (under
//! `flock /tmp/rampwatch-kernel.lock`; the first test attaches a capture).

use std::{
    collections::HashMap,
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::fs::symlink,
    path::Path,
    process::Child,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use agent::identity::workload::{FlowWorkload, Runtime, WorkloadConfig, WorkloadResolver};
use agent_common::observer;
use tests::{
    TempDir,
    cgroup::{CgroupGuard, PYTHON, cgroup2_root},
    harness::{Attach, Endpoint, Harness, Tuning},
    on_free_port,
    wait::{DEFAULT_TIMEOUT, wait_until},
};

mod live_agent;
mod served;

const SERVER_UID: &str = "3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b";
const CLIENT_UID: &str = "9e8d7c6b-5a49-4382-9176-a5b4c3d2e1f0";

fn container_id(seed: char) -> String {
    std::iter::repeat_n(seed, 64).collect()
}

/// Cgroups created in order and removed in reverse (children first).
struct Chain(Vec<CgroupGuard>);

impl Chain {
    fn new(base: &CgroupGuard, rel: &str) -> Self {
        let mut v: Vec<CgroupGuard> = Vec::new();
        for name in rel.split('/') {
            let next = v.last().unwrap_or(base).child(name);
            v.push(next);
        }
        Self(v)
    }
    fn leaf(&self) -> &CgroupGuard {
        self.0.last().expect("a non-empty chain")
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        while let Some(g) = self.0.pop() {
            drop(g);
        }
    }
}

/// `/var/log/pods/<ns>_<pod>_<uid>/<container>/0.log` and the kubelet's
/// `/var/log/containers` symlink, under `root`.
fn kubelet_pod(root: &Path, ns: &str, pod: &str, uid: &str, containers: &[(&str, &str)]) {
    let dir = root.join(format!("var/log/pods/{ns}_{pod}_{uid}"));
    let links = root.join("var/log/containers");
    fs::create_dir_all(&links).expect("create the container log links dir");
    for (name, id) in containers {
        fs::create_dir_all(dir.join(name)).expect("create a container log dir");
        fs::write(dir.join(name).join("0.log"), b"").expect("write a container log");
        symlink(
            dir.join(name).join("0.log"),
            links.join(format!("{pod}_{ns}_{name}-{id}.log")),
        )
        .expect("link a container log as the kubelet does");
    }
}

fn resolver(host: &Path, min_rewalk: Duration) -> WorkloadResolver {
    let mut cfg = WorkloadConfig::under_host_root(host, cgroup2_root());
    cfg.proc_root = "/proc".into();
    cfg.min_rewalk = min_rewalk;
    WorkloadResolver::new(cfg).expect("the cgroup v2 root is readable")
}

/// `python3 -m http.server` in `cg`, listening on 127.0.0.1:port.
struct PyServer(Child, SocketAddr);

impl PyServer {
    fn start(cg: &CgroupGuard) -> Self {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let addr = on_free_port(ip, "a test port", |port| Some(SocketAddr::new(ip, port)));
        let child = cg.http_server(addr);
        Self(child, addr)
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn workload_of_kernel_reported_cgroup_ids_kubelet_systemd_and_cgroupfs_drivers() {
    tests::tools::require_tools();
    let server_id = container_id('a');
    let client_id = container_id('b');
    let base = CgroupGuard::new("wl");
    // The server as the kubelet's systemd driver and containerd name it,
    // the client as the cgroupfs driver names it.
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
    let host = TempDir::new("wl-host");
    kubelet_pod(
        host.path(),
        "payments",
        "api-7f9c",
        SERVER_UID,
        &[("api", &server_id), ("envoy", &container_id('e'))],
    );
    kubelet_pod(
        host.path(),
        "partner-acme",
        "sync-1",
        CLIENT_UID,
        &[("sync", &client_id)],
    );

    let server = PyServer::start(server_cg.leaf());
    let mut capture = Harness::start(
        Attach::Cgroup(base.path().to_owned()),
        &[Endpoint::exact(server.1)],
        Tuning::default(),
    );
    let status = client_cg
        .leaf()
        .command("curl")
        .args(["-sf", "-o", "/dev/null", "--max-time", "10"])
        .arg(format!("http://{}/", server.1))
        .status()
        .expect("run curl");
    assert!(status.success(), "curl failed: {status}");

    // The kernel's cgroup id for each side's socket.
    let ids: HashMap<u8, u64> =
        wait_until("both sockets' views of the flow", DEFAULT_TIMEOUT, || {
            capture.drain();
            let ids: HashMap<u8, u64> = capture
                .flows()
                .into_iter()
                .filter(|f| f.flow.server == server.1)
                .map(|f| (f.observer, f.cgroup_id))
                .collect();
            (ids.len() == 2).then_some(ids)
        });
    assert_eq!(ids[&observer::SERVER_SOCKET], server_cg.leaf().id());
    assert_eq!(ids[&observer::CLIENT_SOCKET], client_cg.leaf().id());

    let r = resolver(host.path(), Duration::from_millis(10));
    let s = r
        .resolve(ids[&observer::SERVER_SOCKET])
        .expect("the server's cgroup resolves");
    assert_eq!(
        (
            s.namespace.as_deref(),
            s.pod.as_deref(),
            s.container.as_deref()
        ),
        (Some("payments"), Some("api-7f9c"), Some("api"))
    );
    assert_eq!(
        (s.runtime, s.container_id.as_deref(), s.pod_uid.as_deref()),
        (
            Some(Runtime::Containerd),
            Some(server_id.as_str()),
            Some(SERVER_UID)
        )
    );
    let c = r
        .resolve(ids[&observer::CLIENT_SOCKET])
        .expect("the client's cgroup resolves");
    assert_eq!(
        (
            c.namespace.as_deref(),
            c.pod.as_deref(),
            c.container.as_deref(),
            c.runtime
        ),
        (Some("partner-acme"), Some("sync-1"), Some("sync"), None)
    );

    // The probes' view: a pid. Its cgroup, its process facts, the JSON.
    let pid = server.0.id();
    assert_eq!(r.cgroup_id_of_pid(pid), Some(server_cg.leaf().id()));
    let p = r.process(pid).expect("the server's process facts");
    let python = fs::canonicalize(PYTHON).unwrap();
    assert_eq!(p.exe.as_deref(), python.to_str());
    assert!(
        p.comm.as_deref().is_some_and(|c| c.starts_with("python3")),
        "{:?}",
        p.comm
    );
    let json = serde_json::to_value(FlowWorkload::new(Some(&s), Some(&p))).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"namespace": "payments", "pod": "api-7f9c", "container": "api", "pid": pid, "exe": python.to_str().unwrap()})
    );
    drop(capture.shutdown());
}

#[test]
fn workload_systemd_units_and_podman_containers_off_kubernetes() {
    let podman_id = container_id('c');
    let base = CgroupGuard::new("wl");
    let unit = Chain::new(&base, "system.slice/rwt-web.service");
    let podman = Chain::new(&base, &format!("libpod_parent/libpod-{podman_id}"));
    let podman_systemd = Chain::new(
        &base,
        &format!("machine.slice/libpod-{podman_id}.scope/container"),
    );
    let pod_in_unknown_node = Chain::new(
        &base,
        &format!("kubepods/pod{SERVER_UID}/{}", container_id('d')),
    );
    let web = PyServer::start(unit.leaf());
    let boxed = PyServer::start(podman.leaf());
    let boxed2 = PyServer::start(podman_systemd.leaf());
    let unnamed = PyServer::start(pod_in_unknown_node.leaf());
    let host = TempDir::new("wl-host");
    let r = resolver(host.path(), Duration::from_millis(10));

    let of = |s: &PyServer| {
        r.resolve(r.cgroup_id_of_pid(s.0.id()).expect("the pid's cgroup"))
            .expect("resolves")
    };
    let w = of(&web);
    assert_eq!(
        (w.unit.as_deref(), w.container_id.as_ref(), w.pod.as_ref()),
        (Some("rwt-web.service"), None, None)
    );
    assert!(
        w.cgroup_path.ends_with("/system.slice/rwt-web.service"),
        "{}",
        w.cgroup_path
    );
    for s in [&boxed, &boxed2] {
        let w = of(s);
        assert_eq!(
            (w.runtime, w.container_id.as_deref(), w.unit.as_ref()),
            (Some(Runtime::Podman), Some(podman_id.as_str()), None)
        );
    }
    // A pod the kubelet's directories do not know: its UID, never a name.
    let w = of(&unnamed);
    assert_eq!(
        (
            w.pod_uid.as_deref(),
            w.namespace.as_ref(),
            w.pod.as_ref(),
            w.container.as_ref()
        ),
        (Some(SERVER_UID), None, None, None)
    );
    assert!(FlowWorkload::new(Some(&w), None).is_empty());
}

#[test]
fn workload_pod_churn_keeps_names_right_and_memory_bounded() {
    let base = CgroupGuard::new("wl");
    let host = TempDir::new("wl-host");
    let mut cfg = WorkloadConfig::under_host_root(host.path(), cgroup2_root());
    cfg.min_rewalk = Duration::ZERO;
    cfg.cache_entries = 64;
    let r = WorkloadResolver::new(cfg).unwrap();

    // Another "kubelet" creating and removing pod cgroups as fast as it can.
    let stop = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicUsize::new(0));
    let churn = {
        let (stop, churned, dir) = (
            Arc::clone(&stop),
            Arc::clone(&churned),
            base.path().join("kubepods"),
        );
        fs::create_dir(&dir).unwrap();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let pod = dir.join(format!("pod{:08x}-0000-4000-8000-000000000000", i));
                let ctr = pod.join(container_id('f'));
                fs::create_dir_all(&ctr).unwrap();
                fs::remove_dir(&ctr).unwrap();
                fs::remove_dir(&pod).unwrap();
                churned.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };

    let mut max_cached = 0;
    let started = std::time::Instant::now();
    for n in 0..300u32 {
        let uid = format!("{n:08x}-1111-4111-8111-111111111111");
        let id = container_id(char::from_digit(n % 16, 16).unwrap());
        let pod = Chain::new(
            &base,
            &format!(
                "kubepods.slice/kubepods-pod{}.slice/crio-{id}.scope",
                uid.replace('-', "_")
            ),
        );
        kubelet_pod(
            host.path(),
            "churn",
            &format!("p-{n}"),
            &uid,
            &[("app", &id)],
        );
        let w = r
            .resolve(pod.leaf().id())
            .expect("a live pod cgroup resolves during churn");
        assert_eq!(
            (w.pod.as_deref(), w.container.as_deref()),
            (Some(format!("p-{n}").as_str()), Some("app")),
            "pod {n}"
        );
        max_cached = max_cached.max(r.cached());
        drop(pod);
        fs::remove_dir_all(host.path().join(format!("var/log/pods/churn_p-{n}_{uid}"))).unwrap();
        fs::remove_file(
            host.path()
                .join(format!("var/log/containers/p-{n}_churn_app-{id}.log")),
        )
        .unwrap();
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    // Figures for the record, not assertions.
    let stats = r.stats();
    eprintln!(
        "churn: {} pod cgroups created and removed by the other thread and 300 resolved in {elapsed:?}; {} walks, {} cached at most",
        churned.load(Ordering::Relaxed),
        stats.walks,
        max_cached
    );
    assert!(
        churned.load(Ordering::Relaxed) >= 300,
        "the churn thread ran only {} rounds",
        churned.load(Ordering::Relaxed)
    );
    assert!(
        max_cached <= 128,
        "{max_cached} workloads cached, above two generations of 64"
    );
    // Removed cgroups leave the index at the next walk.
    r.resolve(u64::MAX);
    let live = count_cgroups(&cgroup2_root());
    assert!(
        r.indexed() <= live + 8,
        "{} indexed, {live} cgroups exist",
        r.indexed()
    );
    let _ = fs::remove_dir(base.path().join("kubepods"));
}

fn count_cgroups(root: &Path) -> usize {
    let mut n = 1;
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                n += 1;
                stack.push(e.path());
            }
        }
    }
    n
}
