//! What a cgroup v2 path says about its workload: the container runtime and
//! id, the Kubernetes pod UID, or the systemd unit.
//!
//! Only names the runtimes and drivers really write are recognised; anything
//! else leaves the field empty rather than guessing:
//!
//! | layout | example (relative to the cgroup v2 root) |
//! |---|---|
//! | kubelet, systemd driver | `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid, _ for ->.slice/cri-containerd-<id>.scope` (`crio-<id>.scope`, `docker-<id>.scope`) |
//! | kubelet, cgroupfs driver | `kubepods/burstable/pod<uid>/<id>` (`crio-<id>`, `docker-<id>` where the runtime adds it) |
//! | podman, cgroupfs manager | `libpod_parent/libpod-<id>` |
//! | podman, systemd manager | `machine.slice/libpod-<id>.scope` |
//! | systemd unit | `system.slice/nginx.service`, `user.slice/user-0.slice/session-3.scope` |
//!
//! A container's processes may sit in a child of the container's cgroup
//! (`libpod-<id>.scope/container`, `…/init.scope`): the deepest component that
//! names a container wins, whatever lies below it.

use serde::Serialize;

/// The container runtime a cgroup name reveals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Containerd,
    Crio,
    Docker,
    Podman,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Containerd => "containerd",
            Self::Crio => "crio",
            Self::Docker => "docker",
            Self::Podman => "podman",
        }
    }
}

/// Everything a cgroup path alone tells; each field is `None` unless the
/// path names it in one of the recognised forms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathFacts {
    /// The container runtime, when the container's cgroup name carries it
    /// (the kubelet's cgroupfs driver names containerd containers by bare
    /// id, so the runtime stays unknown there).
    pub runtime: Option<Runtime>,
    /// 64 lowercase hex digits.
    pub container_id: Option<String>,
    /// The pod's UID with dashes (the systemd driver writes `_`).
    pub pod_uid: Option<String>,
    /// The deepest systemd unit (`*.service`, `*.scope`) outside Kubernetes
    /// and containers.
    pub unit: Option<String>,
}

/// Parses a cgroup path (relative to the cgroup v2 root, with or without a
/// leading `/`). Never fails: an unrecognised path gives empty facts.
pub fn parse(path: &str) -> PathFacts {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut facts = PathFacts::default();
    let mut under_kubepods = false;
    for (i, c) in components.iter().enumerate() {
        if c.contains("kubepods") {
            under_kubepods = true;
        }
        if let Some(uid) = pod_uid(c, under_kubepods) {
            facts.pod_uid = Some(uid);
            continue;
        }
        // A bare 64-hex name is a container only directly inside a pod
        // (the cgroupfs driver's `pod<uid>/<id>`).
        let parent = i.checked_sub(1).map(|p| components[p]);
        let inside_pod = parent.is_some_and(|p| pod_uid(p, under_kubepods).is_some());
        let bare = if inside_pod {
            Some(None)
        } else if parent == Some("docker") {
            // Docker's own cgroupfs driver: `docker/<id>`.
            Some(Some(Runtime::Docker))
        } else {
            None
        };
        if let Some((runtime, id)) = container(c, bare) {
            facts.runtime = runtime;
            facts.container_id = Some(id);
            facts.unit = None;
            continue;
        }
        if facts.container_id.is_none()
            && !under_kubepods
            && (c.ends_with(".service") || c.ends_with(".scope"))
            && c.len() > ".scope".len()
        {
            facts.unit = Some((*c).to_owned());
        }
    }
    if facts.container_id.is_some() || under_kubepods {
        facts.unit = None;
    }
    facts
}

/// `kubepods-burstable-pod<uid_>.slice` / `kubepods-pod<uid_>.slice`
/// (systemd driver, `_` for `-`) or `pod<uid>` below a kubepods component
/// (cgroupfs driver).
fn pod_uid(c: &str, under_kubepods: bool) -> Option<String> {
    if let Some(stem) = c.strip_suffix(".slice")
        && stem.contains("kubepods")
        && let Some((_, uid)) = stem.rsplit_once("-pod")
    {
        let uid = uid.replace('_', "-");
        return is_uid(&uid).then_some(uid);
    }
    if under_kubepods
        && let Some(uid) = c.strip_prefix("pod")
        && is_uid(uid)
    {
        return Some(uid.to_owned());
    }
    None
}

/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`,
/// `libpod-<id>.scope`, the same without `.scope` (cgroupfs drivers), or a
/// bare id where `bare` says one may stand (with the runtime it implies).
/// Conmon's own scopes (`crio-conmon-<id>`, `libpod-conmon-<id>`) are not
/// containers.
fn container(c: &str, bare: Option<Option<Runtime>>) -> Option<(Option<Runtime>, String)> {
    let stem = c.strip_suffix(".scope").unwrap_or(c);
    const PREFIXES: [(&str, Runtime); 4] = [
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::Crio),
        ("docker-", Runtime::Docker),
        ("libpod-", Runtime::Podman),
    ];
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = stem.strip_prefix(prefix) {
            return is_container_id(id).then(|| (Some(runtime), id.to_owned()));
        }
    }
    let runtime = bare?;
    (c == stem && is_container_id(c)).then(|| (runtime, c.to_owned()))
}

/// 64 lowercase hex digits: what containerd, CRI-O, Docker and podman use.
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A Kubernetes UID: the 8-4-4-4-12 hex form the API server assigns.
pub(super) fn is_uid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}
