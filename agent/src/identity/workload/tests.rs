use std::{fs, os::unix::fs::MetadataExt as _, path::Path, time::Duration};

use super::{
    path::{PathFacts, Runtime, parse},
    pods::{parse_container_log_name, parse_pod_dir_name},
    *,
};

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const UID: &str = "6b7e1a2c-3d4f-4a5b-8c9d-0e1f2a3b4c5d";
const UID_: &str = "6b7e1a2c_3d4f_4a5b_8c9d_0e1f2a3b4c5d";

fn facts(runtime: Option<Runtime>, id: bool, uid: bool, unit: Option<&str>) -> PathFacts {
    PathFacts {
        runtime,
        container_id: id.then(|| ID.to_owned()),
        pod_uid: uid.then(|| UID.to_owned()),
        unit: unit.map(str::to_owned),
    }
}

#[test]
fn systemd_driver_paths_of_every_runtime_and_qos() {
    for (scope, runtime) in [
        (format!("cri-containerd-{ID}.scope"), Runtime::Containerd),
        (format!("crio-{ID}.scope"), Runtime::Crio),
        (format!("docker-{ID}.scope"), Runtime::Docker),
    ] {
        for qos in [
            "kubepods-burstable.slice/kubepods-burstable-",
            "kubepods-besteffort.slice/kubepods-besteffort-",
            "",
        ] {
            let path = format!(
                "/kubepods.slice/{qos}{}pod{UID_}.slice/{scope}",
                if qos.is_empty() { "kubepods-" } else { "" }
            );
            assert_eq!(
                parse(&path),
                facts(Some(runtime), true, true, None),
                "{path}"
            );
        }
    }
    // kind and other nested kubelets: the slice names still say kubepods.
    let kind = format!(
        "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/\
         kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
    );
    assert_eq!(
        parse(&kind),
        facts(Some(Runtime::Containerd), true, true, None)
    );
}

#[test]
fn cgroupfs_driver_paths() {
    assert_eq!(
        parse(&format!("/kubepods/burstable/pod{UID}/{ID}")),
        facts(None, true, true, None),
        "containerd names the container by its bare id: the runtime is not guessed"
    );
    assert_eq!(
        parse(&format!("/kubepods/pod{UID}/crio-{ID}")),
        facts(Some(Runtime::Crio), true, true, None)
    );
    assert_eq!(
        parse(&format!("/kubepods/besteffort/pod{UID}")),
        facts(None, false, true, None),
        "the pod's own cgroup has its UID and no container"
    );
}

#[test]
fn podman_docker_and_systemd_units_off_kubernetes() {
    assert_eq!(
        parse(&format!("/libpod_parent/libpod-{ID}")),
        facts(Some(Runtime::Podman), true, false, None)
    );
    assert_eq!(
        parse(&format!("/machine.slice/libpod-{ID}.scope/container")),
        facts(Some(Runtime::Podman), true, false, None),
        "processes in a child of the container's cgroup are the container's"
    );
    assert_eq!(
        parse(&format!("/system.slice/docker-{ID}.scope")),
        facts(Some(Runtime::Docker), true, false, None)
    );
    assert_eq!(
        parse(&format!("/docker/{ID}")),
        facts(Some(Runtime::Docker), true, false, None)
    );
    assert_eq!(
        parse("/system.slice/nginx.service"),
        facts(None, false, false, Some("nginx.service"))
    );
    assert_eq!(
        parse("/user.slice/user-0.slice/session-3.scope"),
        facts(None, false, false, Some("session-3.scope"))
    );
    assert_eq!(
        parse(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
        facts(
            None,
            false,
            false,
            Some(&format!("libpod-conmon-{ID}.scope"))
        ),
        "conmon's scope is a unit, not the container"
    );
}

#[test]
fn malformed_paths_name_nothing() {
    for path in [
        "",
        "/",
        "//",
        "/kubepods.slice",
        "/kubepods/burstable/podnot-a-uid/abc",
        &format!("/kubepods.slice/kubepods-pod{}.slice", &UID_[1..]),
        &format!("/kubepods/pod{UID}/{}", &ID[1..]),
        &format!("/kubepods/pod{UID}/{}", ID.to_uppercase()),
        &format!("/system.slice/cri-containerd-{}.scope", &ID[..12]),
        &format!("/libpod_parent/libpod-{ID}x"),
        "/system.slice/.scope",
        "/init.slice",
        &format!("/somewhere/{ID}"),
        "/\u{0}\u{ff}/pod/../..",
    ] {
        let f = parse(path);
        assert!(f.container_id.is_none(), "{path:?} gave a container: {f:?}");
        if !path.contains(&format!("pod{UID}")) {
            assert!(f.pod_uid.is_none(), "{path:?} gave a pod: {f:?}");
        }
    }
    // A unit-looking name inside kubepods is the kubelet's, not a unit.
    assert_eq!(
        parse(&format!(
            "/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID}.scope"
        ))
        .unit,
        None
    );
}

#[test]
fn kubelet_directory_names() {
    assert_eq!(
        parse_pod_dir_name(&format!("payments_api-7f9c_{UID}")),
        Some(("payments".into(), "api-7f9c".into(), UID.into()))
    );
    for bad in [
        "payments_api-7f9c".to_owned(),
        format!("payments_api_7f9c_{UID}"),
        format!("_api_{UID}"),
        "a_b_c".to_owned(),
    ] {
        assert_eq!(parse_pod_dir_name(&bad), None, "{bad}");
    }
    assert_eq!(
        parse_container_log_name(&format!("api-7f9c_payments_server-{ID}.log")),
        Some((
            "payments".into(),
            "api-7f9c".into(),
            "server".into(),
            ID.into()
        ))
    );
    assert_eq!(
        parse_container_log_name(&format!("api_payments_server-{ID}")),
        None
    );
    assert_eq!(
        parse_container_log_name("api_payments_server-abc.log"),
        None
    );
}

/// A fake host: a cgroup tree, `/proc`-less, with kubelet log directories.
struct FakeHost {
    dir: tempfile::TempDir,
}

impl FakeHost {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for d in ["cgroup", "var/log/pods", "var/log/containers", "proc"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Self { dir }
    }
    fn root(&self) -> &Path {
        self.dir.path()
    }
    fn cgroup(&self, rel: &str) -> u64 {
        let p = self.root().join("cgroup").join(rel);
        fs::create_dir_all(&p).unwrap();
        fs::metadata(&p).unwrap().ino()
    }
    fn pod_dir(&self, ns: &str, pod: &str, uid: &str, containers: &[&str]) {
        let d = self.root().join(format!("var/log/pods/{ns}_{pod}_{uid}"));
        for c in containers {
            fs::create_dir_all(d.join(c)).unwrap();
            fs::write(d.join(c).join("0.log"), b"").unwrap();
        }
        fs::create_dir_all(d).unwrap();
    }
    fn container_link(&self, ns: &str, pod: &str, uid: &str, container: &str, id: &str) {
        std::os::unix::fs::symlink(
            self.root()
                .join(format!("var/log/pods/{ns}_{pod}_{uid}/{container}/0.log")),
            self.root().join(format!(
                "var/log/containers/{pod}_{ns}_{container}-{id}.log"
            )),
        )
        .unwrap();
    }
    fn resolver(&self) -> WorkloadResolver {
        let mut cfg = WorkloadConfig::under_host_root(self.root(), self.root().join("cgroup"));
        cfg.min_rewalk = Duration::ZERO;
        WorkloadResolver::new(cfg).unwrap()
    }
}

#[test]
fn names_pods_and_containers_from_the_kubelets_directories() {
    let host = FakeHost::new();
    let id2 = ID.replace('0', "9");
    let uid2 = UID.replace('6', "7");
    let api = host.cgroup(&format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
    ));
    let sidecar = host.cgroup(&format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{id2}.scope"
    ));
    let single = host.cgroup(&format!("kubepods/besteffort/pod{uid2}/{ID}"));
    let nginx = host.cgroup("system.slice/nginx.service");
    let bare = host.cgroup("odd/place");
    host.pod_dir("payments", "api-7f9c", UID, &["server", "envoy"]);
    host.container_link("payments", "api-7f9c", UID, "server", ID);
    host.pod_dir("batch", "sync-1", &uid2, &["job"]);
    let r = host.resolver();

    let w = r.resolve(api).expect("the pod container's cgroup");
    assert_eq!(
        (
            w.namespace.as_deref(),
            w.pod.as_deref(),
            w.container.as_deref()
        ),
        (Some("payments"), Some("api-7f9c"), Some("server"))
    );
    assert_eq!(
        (w.runtime, w.pod_uid.as_deref()),
        (Some(Runtime::Containerd), Some(UID))
    );
    let json = serde_json::to_value(FlowWorkload::new(Some(&w), None)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"namespace": "payments", "pod": "api-7f9c", "container": "server"})
    );

    let w = r.resolve(sidecar).unwrap();
    assert_eq!(
        (w.pod.as_deref(), w.container.as_deref()),
        (Some("api-7f9c"), None),
        "two containers and no symlink for this id: the name is not guessed"
    );
    let w = r.resolve(single).unwrap();
    assert_eq!(
        w.container.as_deref(),
        Some("job"),
        "a pod's only container"
    );
    let w = r.resolve(nginx).unwrap();
    assert_eq!(
        (w.unit.as_deref(), w.pod.as_deref()),
        (Some("nginx.service"), None)
    );
    let w = r.resolve(bare).unwrap();
    assert_eq!(
        (
            w.cgroup_path.as_str(),
            w.unit.as_ref(),
            w.container_id.as_ref()
        ),
        ("/odd/place", None, None)
    );
    assert!(FlowWorkload::new(Some(&w), None).is_empty());
    assert_eq!(r.resolve(u64::MAX), None, "an id no cgroup has");
}

#[test]
fn a_pod_named_after_its_cgroup_appeared_is_named_on_a_later_resolve() {
    let host = FakeHost::new();
    let id = host.cgroup(&format!("kubepods/pod{UID}/{ID}"));
    let r = host.resolver();
    let w = r.resolve(id).unwrap();
    assert_eq!((w.pod_uid.as_deref(), w.pod.as_ref()), (Some(UID), None));
    host.pod_dir("payments", "api-1", UID, &["api"]);
    let w = r.resolve(id).unwrap();
    assert_eq!(
        (w.pod.as_deref(), w.container.as_deref()),
        (Some("api-1"), Some("api"))
    );
}

#[test]
fn new_cgroups_are_found_by_walking_again_and_removed_ones_leave_the_index() {
    let host = FakeHost::new();
    let r = host.resolver();
    let first = host.cgroup("system.slice/a.service");
    assert_eq!(r.resolve(first).unwrap().unit.as_deref(), Some("a.service"));
    let later = host.cgroup("system.slice/b.service");
    assert_eq!(r.resolve(later).unwrap().unit.as_deref(), Some("b.service"));
    let walks = r.stats().walks;
    assert_eq!(r.resolve(later).unwrap().unit.as_deref(), Some("b.service"));
    assert_eq!(r.stats().walks, walks, "a cached id does not walk");

    fs::remove_dir(host.root().join("cgroup/system.slice/a.service")).unwrap();
    assert_eq!(r.resolve(u64::MAX), None);
    assert_eq!(
        r.indexed(),
        3,
        "root, system.slice, b.service: {:?}",
        r.indexed()
    );
    assert_eq!(
        r.resolve(first).unwrap().unit.as_deref(),
        Some("a.service"),
        "a removed cgroup still resolves from the cache while it is recent"
    );
}

#[test]
fn misses_walk_at_most_once_per_interval() {
    let host = FakeHost::new();
    let mut cfg = WorkloadConfig::under_host_root(host.root(), host.root().join("cgroup"));
    cfg.min_rewalk = Duration::from_secs(3600);
    let r = WorkloadResolver::new(cfg).unwrap();
    for id in 0..100 {
        assert_eq!(r.resolve(u64::MAX - id), None);
    }
    let s = r.stats();
    assert_eq!((s.walks, s.unknown, s.rate_limited), (1, 1, 99));
}

#[test]
fn memory_stays_bounded_under_churn() {
    let host = FakeHost::new();
    let mut cfg = WorkloadConfig::under_host_root(host.root(), host.root().join("cgroup"));
    cfg.min_rewalk = Duration::ZERO;
    cfg.cache_entries = 64;
    let r = WorkloadResolver::new(cfg).unwrap();
    // A temp file system reuses inode numbers (cgroupfs never reuses ids),
    // so only the bounds are asserted here; tests/tests/workload checks
    // names under churn on the real cgroupfs.
    for round in 0..100 {
        let rels: Vec<String> = (0..10)
            .map(|i| format!("system.slice/c-{round}-{i}.service"))
            .collect();
        for rel in &rels {
            let id = host.cgroup(rel);
            assert!(r.resolve(id).is_some(), "{rel}");
        }
        for rel in &rels {
            fs::remove_dir(host.root().join("cgroup").join(rel)).unwrap();
        }
        assert!(
            r.cached() <= 128,
            "{} cached after round {round}",
            r.cached()
        );
        assert!(
            r.indexed() <= 12,
            "{} indexed after round {round}",
            r.indexed()
        );
    }
}

#[test]
fn a_missing_cgroup_root_is_one_sentence() {
    let cfg = WorkloadConfig::under_host_root(Path::new("/"), "/nonexistent-rw".into());
    let e = WorkloadResolver::new(cfg).err().unwrap().to_string();
    assert!(
        e.starts_with("cannot read the cgroup v2 root /nonexistent-rw"),
        "{e}"
    );
}

#[test]
fn process_facts_from_proc() {
    let me = std::process::id();
    let p = process::read(Path::new("/proc"), me).unwrap();
    assert_eq!(p.pid, me);
    assert_eq!(
        p.exe.as_deref(),
        std::env::current_exe()
            .ok()
            .and_then(|e| e.to_str().map(str::to_owned))
            .as_deref()
    );
    assert!(p.comm.is_some());
    assert_eq!(process::read(Path::new("/proc"), u32::MAX), None);
    let json = serde_json::to_value(FlowWorkload::new(None, Some(&p))).unwrap();
    assert_eq!(json["pid"], me);
    assert!(json.get("namespace").is_none());
}

/// What endpoints served by workloads are matched against: every
/// container's cgroup alive at this walk, named, and nothing else (pod
/// cgroups, units, plain cgroups); a removed one is gone at the next walk.
/// These are not lookups; `resolve` counts its own by result.
#[test]
fn containers_are_the_live_container_cgroups_and_lookups_are_counted() {
    let host = FakeHost::new();
    let id2 = ID.replace('0', "9");
    let pod = format!("kubepods/burstable/pod{UID}");
    let api = host.cgroup(&format!("{pod}/{ID}"));
    let second = format!("{pod}/{id2}");
    let gone = host.cgroup(&second);
    let unit = host.cgroup("system.slice/nginx.service");
    host.pod_dir("payments", "api-7f9c", UID, &["server"]);
    host.container_link("payments", "api-7f9c", UID, "server", ID);
    let r = host.resolver();

    let mut ids: Vec<u64> = r.containers().iter().map(|w| w.cgroup_id).collect();
    ids.sort_unstable();
    let mut want = vec![api, gone];
    want.sort_unstable();
    assert_eq!(ids, want);
    let named = r
        .containers()
        .into_iter()
        .find(|w| w.cgroup_id == api)
        .expect("the api container");
    assert_eq!(
        (named.pod.as_deref(), named.container.as_deref()),
        (Some("api-7f9c"), Some("server"))
    );
    assert_eq!(r.stats().lookups_named + r.stats().lookups_unnamed, 0);

    fs::remove_dir(host.root().join("cgroup").join(&second)).unwrap();
    let ids: Vec<u64> = r.containers().iter().map(|w| w.cgroup_id).collect();
    assert_eq!(ids, vec![api], "a removed cgroup leaves at the next walk");
    assert!(r.stats().walks >= 3);

    assert!(r.resolve(api).is_some());
    assert!(r.resolve(unit).is_some());
    let plain = host.cgroup("odd/place");
    assert!(r.resolve(plain).is_some());
    assert!(r.resolve(u64::MAX).is_none());
    let s = r.stats();
    assert_eq!(
        (s.lookups_named, s.lookups_unnamed, s.lookups_not_found),
        (2, 1, 1),
        "pod and unit named, a plain cgroup unnamed, no such id"
    );
}
