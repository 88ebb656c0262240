//! Pod and container names from what the kubelet keeps on the node, so no
//! API credentials are needed:
//!
//! - `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log`: one
//!   directory per pod (namespaces, pod names and UIDs cannot contain `_`,
//!   so the split is exact), one subdirectory per container that has run;
//! - `/var/log/containers/<pod>_<namespace>_<container>-<container id>.log`:
//!   the kubelet's symlink per container, the only place on the node that
//!   ties a container id to its name without asking the runtime.
//!
//! A container's name is taken from its symlink; failing that, from the pod
//! directory only when the pod has exactly one container directory. Anything
//! else leaves the name empty.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use super::path::is_uid;

/// One pod directory under the pod log root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDir {
    pub namespace: String,
    pub pod: String,
    pub dir: PathBuf,
}

/// Splits `<namespace>_<pod>_<uid>`; `None` for anything else.
pub fn parse_pod_dir_name(name: &str) -> Option<(String, String, String)> {
    let mut parts = name.split('_');
    let (ns, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || ns.is_empty() || pod.is_empty() || !is_uid(uid) {
        return None;
    }
    Some((ns.to_owned(), pod.to_owned(), uid.to_owned()))
}

/// Splits `<pod>_<namespace>_<container>-<64 hex id>.log` into
/// (namespace, pod, container, id).
pub fn parse_container_log_name(name: &str) -> Option<(String, String, String, String)> {
    let stem = name.strip_suffix(".log")?;
    let (rest, id) = stem.rsplit_once('-')?;
    if id.len() != 64 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut parts = rest.split('_');
    let (pod, ns, container) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || pod.is_empty() || ns.is_empty() || container.is_empty() {
        return None;
    }
    Some((
        ns.to_owned(),
        pod.to_owned(),
        container.to_owned(),
        id.to_owned(),
    ))
}

/// Reads every pod directory under `root`, keyed by UID. A missing root (not
/// a Kubernetes node) is an empty map.
pub fn scan_pods(root: &Path, limit: usize) -> HashMap<String, PodDir> {
    let mut pods = HashMap::new();
    let Ok(entries) = fs::read_dir(root) else {
        return pods;
    };
    for entry in entries.flatten().take(limit) {
        let name = entry.file_name();
        let Some((namespace, pod, uid)) = name.to_str().and_then(parse_pod_dir_name) else {
            continue;
        };
        pods.insert(
            uid,
            PodDir {
                namespace,
                pod,
                dir: entry.path(),
            },
        );
    }
    pods
}

/// The name of container `id` of `pod`: from its `/var/log/containers`
/// symlink, else the pod's only container directory.
pub fn container_name(containers_root: &Path, pod: &PodDir, id: &str) -> Option<String> {
    if let Ok(entries) = fs::read_dir(containers_root) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if let Some((ns, p, container, cid)) = name.to_str().and_then(parse_container_log_name)
                && cid == id
                && ns == pod.namespace
                && p == pod.pod
            {
                return Some(container);
            }
        }
    }
    let mut dirs = fs::read_dir(&pod.dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()));
    let only = dirs.next()?;
    if dirs.next().is_some() {
        return None;
    }
    only.file_name().into_string().ok()
}
