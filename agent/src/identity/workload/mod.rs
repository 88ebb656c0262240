//! The workload behind a cgroup id: which pod, container, systemd unit or
//! process owns a socket.
//!
//! The kernel reports the socket's cgroup v2 id (`bpf_skb_cgroup_id`,
//! `bpf_get_current_cgroup_id`), which is the inode number of the cgroup's
//! directory in cgroupfs. [`WorkloadResolver`] indexes the host's cgroupfs by
//! inode, walks it again when an id is not in the index (at most once per
//! [`WorkloadConfig::min_rewalk`]), reads the runtime, container id, pod UID
//! or unit from the path ([`path`]), and names the pod from the kubelet's
//! log directories ([`pods`]) without API credentials.
//!
//! ```no_run
//! use agent::identity::workload::{FlowWorkload, WorkloadConfig, WorkloadResolver};
//! let resolver = WorkloadResolver::new(WorkloadConfig::host("/sys/fs/cgroup".into()))?;
//! let cgroup_id = 4242; // from a flow record
//! if let Some(w) = resolver.resolve(cgroup_id) {
//!     // `{"namespace":"payments","pod":"api-7f9c","container":"api"}`
//!     let json = serde_json::to_string(&FlowWorkload::new(Some(&w), None))?;
//!     println!("{json}");
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What cannot be named stays `None`: a cgroup outside Kubernetes and
//! systemd gives a [`Workload`] with only its path; a pod whose log
//! directory is not there (yet) has its UID but no name, and the name is
//! looked up again on a later resolve. Nothing is guessed from addresses.
//!
//! Memory is bounded whatever the churn: the index holds the cgroups alive
//! at the last walk (at most [`WorkloadConfig::max_cgroups`]), and resolved
//! workloads live in a two-generation cache of
//! [`WorkloadConfig::cache_entries`] per generation, so a cgroup removed
//! after its flow started still resolves while it is recent. The kernel
//! never reuses a cgroup id while the machine is up (kernfs ids are 64-bit
//! and only grow), so a cached entry cannot come to mean another cgroup.

mod cache;
pub mod path;
pub mod pods;
pub mod process;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::{DirEntryExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub use path::Runtime;
pub use process::Process;
use serde::Serialize;

use self::{cache::TwoGen, pods::PodDir};

/// Where the host's facts are, and how hard to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadConfig {
    /// The cgroup v2 root as this process sees it (on a hybrid host
    /// `/sys/fs/cgroup/unified`; in the DaemonSet the host's, mounted at
    /// `/host/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// The host's `/proc` (`/host/proc` in a container).
    pub proc_root: PathBuf,
    /// The kubelet's `/var/log/pods`.
    pub pod_logs: PathBuf,
    /// The kubelet's `/var/log/containers`.
    pub container_logs: PathBuf,
    /// Least time between two walks of cgroupfs (or scans of the pod
    /// directories) caused by misses.
    pub min_rewalk: Duration,
    /// Resolved workloads kept per cache generation.
    pub cache_entries: usize,
    /// Most cgroups indexed by one walk (and pod directories read by one
    /// scan); the rest are counted in [`WorkloadStats::truncated`].
    pub max_cgroups: usize,
}

impl WorkloadConfig {
    /// This machine's own paths, with the cgroup v2 root the capture
    /// attaches to (it finds it in `/proc/self/mountinfo` or takes
    /// `--cgroup`).
    pub fn host(cgroup_root: PathBuf) -> Self {
        Self::under_host_root(Path::new("/"), cgroup_root)
    }

    /// The host's paths under `host_root` (`/` on the host; in a container
    /// that mounts the host's `/proc` at `/host/proc` and its
    /// `/var/log/{pods,containers}` at `/host/var/log/…`, `/host`), with
    /// the cgroup v2 root given separately (it is what `--cgroup` names).
    pub fn under_host_root(host_root: &Path, cgroup_root: PathBuf) -> Self {
        Self {
            cgroup_root,
            proc_root: host_root.join("proc"),
            pod_logs: host_root.join("var/log/pods"),
            container_logs: host_root.join("var/log/containers"),
            min_rewalk: Duration::from_millis(100),
            cache_entries: 8192,
            max_cgroups: 200_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(
        "cannot read the cgroup v2 root {path}: {source}; mount the host's cgroup v2 hierarchy there"
    )]
    CgroupRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What is known about the owner of one cgroup. Each field is `None` unless
/// the host says so; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub cgroup_id: u64,
    /// Relative to the cgroup v2 root, with a leading `/`.
    pub cgroup_path: String,
    /// The systemd unit, off Kubernetes and outside containers.
    pub unit: Option<String>,
    pub runtime: Option<Runtime>,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
}

impl Workload {
    /// True when everything the path promises has been named: a pod UID has
    /// its namespace and name, a pod's container its name.
    fn complete(&self) -> bool {
        self.pod_uid.is_none()
            || (self.pod.is_some() && (self.container_id.is_none() || self.container.is_some()))
    }
}

/// The workload as flows, violations and audit records carry it:
/// `{"namespace","pod","container","pid","exe"}`, absent fields skipped;
/// off Kubernetes the systemd `unit`, and (set by the engine) the socket's
/// `cgroup` path and `cgroup_id`, so a local socket nothing could name is
/// still reported as what it is rather than left out or guessed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FlowWorkload {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// The systemd unit, off Kubernetes and outside containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The socket's cgroup, relative to the cgroup v2 root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
}

impl FlowWorkload {
    pub fn new(workload: Option<&Workload>, process: Option<&Process>) -> Self {
        Self {
            namespace: workload.and_then(|w| w.namespace.clone()),
            pod: workload.and_then(|w| w.pod.clone()),
            container: workload.and_then(|w| w.container.clone()),
            pid: process.map(|p| p.pid),
            exe: process.and_then(|p| p.exe.clone()),
            unit: workload.and_then(|w| w.unit.clone()),
            cgroup: None,
            cgroup_id: None,
        }
    }

    /// The socket of cgroup `cgroup_id` (and process `pid`, where the TLS
    /// probes saw it) as the node names it; without a resolver (tests),
    /// just the ids.
    pub fn of_socket(
        resolver: Option<&WorkloadResolver>,
        cgroup_id: u64,
        pid: Option<u32>,
    ) -> Self {
        let w = resolver.and_then(|r| r.resolve(cgroup_id));
        let p = resolver.zip(pid).and_then(|(r, pid)| r.process(pid));
        let mut fw = Self::new(w.as_deref(), p.as_ref());
        // A pid whose process has exited is still the fact the probe saw.
        fw.pid = fw.pid.or(pid);
        fw.cgroup = w.map(|w| w.cgroup_path.clone());
        fw.cgroup_id = Some(cgroup_id);
        fw
    }

    /// One short cell for tables: `namespace/pod[/container]`, else the
    /// unit, else the executable, else the cgroup; `-` when nothing.
    pub fn short(&self) -> String {
        match (&self.namespace, &self.pod) {
            (Some(ns), Some(pod)) => match &self.container {
                Some(c) => format!("{ns}/{pod}/{c}"),
                None => format!("{ns}/{pod}"),
            },
            _ => self
                .unit
                .clone()
                .or_else(|| self.exe.clone())
                .or_else(|| self.cgroup.clone())
                .or_else(|| self.cgroup_id.map(|id| format!("cgroup:{id}")))
                .unwrap_or_else(|| "-".to_owned()),
        }
    }

    /// Nothing known: flows leave the field out rather than print `{}`.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Counters for the agent's own metrics (all monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkloadStats {
    /// Walks of cgroupfs.
    pub walks: u64,
    /// Scans of the pod log directories.
    pub pod_scans: u64,
    /// Ids found in neither the cache nor the index after a walk.
    pub unknown: u64,
    /// Misses that could not walk because the last walk was too recent.
    pub rate_limited: u64,
    /// Cgroups or pod directories left out because a walk hit its cap.
    pub truncated: u64,
    /// Lookups ([`WorkloadResolver::resolve`]) by result: a cgroup named
    /// (pod or systemd unit), one found but not named (a pod the kubelet
    /// has not written down, a plain cgroup), an id of no cgroup.
    pub lookups_named: u64,
    pub lookups_unnamed: u64,
    pub lookups_not_found: u64,
}

/// The ids of an index's cgroups whose path names a container.
fn containers_of(index: &HashMap<u64, String>) -> Vec<u64> {
    index
        .iter()
        .filter(|(_, p)| path::parse(p).container_id.is_some())
        .map(|(id, _)| *id)
        .collect()
}

/// How long an incomplete workload (a pod not yet in the kubelet's
/// directories) is looked up again: the kubelet writes them within seconds
/// of a container's start, and a name that never comes must not cost a
/// directory read on every resolve forever.
const NAME_RETRY_FOR: Duration = Duration::from_secs(60);

struct Entry {
    workload: Arc<Workload>,
    first_resolved: Instant,
    resolved_at: Instant,
}

struct State {
    /// Inode → path relative to the root, as of the last walk.
    index: HashMap<u64, String>,
    last_walk: Option<Instant>,
    pods: HashMap<String, PodDir>,
    last_pod_scan: Option<Instant>,
    cache: TwoGen<Entry>,
    stats: WorkloadStats,
}

/// Cgroup id → workload, shared by the threads that need it.
pub struct WorkloadResolver {
    cfg: WorkloadConfig,
    state: Mutex<State>,
}

impl WorkloadResolver {
    pub fn new(cfg: WorkloadConfig) -> Result<Self, WorkloadError> {
        fs::read_dir(&cfg.cgroup_root).map_err(|source| WorkloadError::CgroupRoot {
            path: cfg.cgroup_root.clone(),
            source,
        })?;
        let state = State {
            index: HashMap::new(),
            last_walk: None,
            pods: HashMap::new(),
            last_pod_scan: None,
            cache: TwoGen::new(cfg.cache_entries),
            stats: WorkloadStats::default(),
        };
        Ok(Self {
            cfg,
            state: Mutex::new(state),
        })
    }

    pub fn config(&self) -> &WorkloadConfig {
        &self.cfg
    }

    /// The workload of cgroup `id`, or `None` when no cgroup with that id
    /// exists (or existed recently enough to be cached). Counted by result
    /// in [`WorkloadStats`].
    pub fn resolve(&self, id: u64) -> Option<Arc<Workload>> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let w = self.lookup(&mut st, id);
        let stats = &mut st.stats;
        match &w {
            Some(w) if w.pod.is_some() || w.unit.is_some() => stats.lookups_named += 1,
            Some(_) => stats.lookups_unnamed += 1,
            None => stats.lookups_not_found += 1,
        }
        w
    }

    /// Every container's cgroup alive now (a cgroup whose path names a
    /// container), named: walks cgroupfs again unless the last walk is
    /// younger than [`WorkloadConfig::min_rewalk`], so pods that came are
    /// in and pods that went are out. What endpoints served by workloads
    /// are matched against; not counted as lookups.
    ///
    /// The walk and the lookups run outside the lock (one short lock per
    /// container), so the engine's own lookups are not held up by a walk.
    pub fn containers(&self) -> Vec<Arc<Workload>> {
        let now = Instant::now();
        let lock = || self.state.lock().unwrap_or_else(|p| p.into_inner());
        let due = {
            let mut st = lock();
            let due = st
                .last_walk
                .is_none_or(|t| now.duration_since(t) >= self.cfg.min_rewalk);
            if due {
                st.last_walk = Some(now);
                st.stats.walks += 1;
            }
            due.then(|| st.index.len())
        };
        let ids: Vec<u64> = if let Some(capacity) = due {
            let (index, truncated) = self.scan(capacity);
            let ids = containers_of(&index);
            let mut st = lock();
            st.stats.truncated += truncated;
            st.index = index;
            ids
        } else {
            containers_of(&lock().index)
        };
        ids.into_iter()
            .filter_map(|id| self.lookup(&mut lock(), id))
            .collect()
    }

    fn lookup(&self, st: &mut State, id: u64) -> Option<Arc<Workload>> {
        let now = Instant::now();
        let mut first_resolved = now;
        if let Some(e) = st.cache.get(id) {
            if e.workload.complete()
                || now.duration_since(e.resolved_at) < self.cfg.min_rewalk
                || now.duration_since(e.first_resolved) > NAME_RETRY_FOR
            {
                return Some(Arc::clone(&e.workload));
            }
            first_resolved = e.first_resolved;
        }
        let path = match st.index.get(&id) {
            Some(p) => p.clone(),
            None => {
                if st
                    .last_walk
                    .is_some_and(|t| now.duration_since(t) < self.cfg.min_rewalk)
                {
                    st.stats.rate_limited += 1;
                    // A cached but incomplete entry is still the best answer.
                    return st.cache.get(id).map(|e| Arc::clone(&e.workload));
                }
                self.walk(st, now);
                match st.index.get(&id) {
                    Some(p) => p.clone(),
                    None => {
                        st.stats.unknown += 1;
                        return st.cache.get(id).map(|e| Arc::clone(&e.workload));
                    }
                }
            }
        };
        let workload = Arc::new(self.name(st, id, path, now));
        st.cache.insert(
            id,
            Entry {
                workload: Arc::clone(&workload),
                first_resolved,
                resolved_at: now,
            },
        );
        Some(workload)
    }

    /// The cgroup id of `pid` (its `/proc/<pid>/cgroup` path under the
    /// cgroup root); `None` when the process is gone or sits in a cgroup
    /// namespace whose path does not lead below the root.
    pub fn cgroup_id_of_pid(&self, pid: u32) -> Option<u64> {
        let rel = process::cgroup_path(&self.cfg.proc_root, pid)?;
        if rel.split('/').any(|c| c == "..") {
            return None;
        }
        let meta = fs::metadata(self.cfg.cgroup_root.join(rel.trim_start_matches('/'))).ok()?;
        meta.is_dir().then(|| meta.ino())
    }

    /// `comm` and `exe` of `pid` from the host's `/proc`.
    pub fn process(&self, pid: u32) -> Option<Process> {
        process::read(&self.cfg.proc_root, pid)
    }

    pub fn stats(&self) -> WorkloadStats {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).stats
    }

    /// Workloads cached now (at most two generations).
    pub fn cached(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cache
            .len()
    }

    /// Cgroups in the index as of the last walk.
    pub fn indexed(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .index
            .len()
    }

    /// Rebuilds the index from scratch, so removed cgroups leave it.
    fn walk(&self, st: &mut State, now: Instant) {
        st.stats.walks += 1;
        st.last_walk = Some(now);
        let (index, truncated) = self.scan(st.index.len());
        st.stats.truncated += truncated;
        st.index = index;
    }

    /// Inode → path of every cgroup below the root (and how many were
    /// left out at the cap); reads cgroupfs without touching the state.
    fn scan(&self, capacity: usize) -> (HashMap<u64, String>, u64) {
        let mut truncated = 0;
        let mut index = HashMap::with_capacity(capacity);
        if let Ok(meta) = fs::metadata(&self.cfg.cgroup_root) {
            index.insert(meta.ino(), "/".to_owned());
        }
        let mut stack = vec![(self.cfg.cgroup_root.clone(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            // A cgroup removed mid-walk is simply not indexed.
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if index.len() >= self.cfg.max_cgroups {
                    truncated += 1;
                    continue;
                }
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let child = format!("{rel}/{name}");
                // kernfs reports the node id as d_ino: no stat per cgroup.
                index.insert(entry.ino(), child.clone());
                stack.push((entry.path(), child));
            }
        }
        (index, truncated)
    }

    fn name(&self, st: &mut State, id: u64, cgroup_path: String, now: Instant) -> Workload {
        let facts = path::parse(&cgroup_path);
        let mut w = Workload {
            cgroup_id: id,
            cgroup_path,
            unit: facts.unit,
            runtime: facts.runtime,
            container_id: facts.container_id,
            pod_uid: facts.pod_uid,
            namespace: None,
            pod: None,
            container: None,
        };
        let Some(uid) = w.pod_uid.clone() else {
            return w;
        };
        if !st.pods.contains_key(&uid)
            && st
                .last_pod_scan
                .is_none_or(|t| now.duration_since(t) >= self.cfg.min_rewalk)
        {
            st.stats.pod_scans += 1;
            st.last_pod_scan = Some(now);
            st.pods = pods::scan_pods(&self.cfg.pod_logs, self.cfg.max_cgroups);
            if st.pods.len() >= self.cfg.max_cgroups {
                st.stats.truncated += 1;
            }
        }
        if let Some(pod) = st.pods.get(&uid) {
            w.namespace = Some(pod.namespace.clone());
            w.pod = Some(pod.pod.clone());
            if let Some(cid) = &w.container_id {
                w.container = pods::container_name(&self.cfg.container_logs, pod, cid);
            }
        }
        w
    }
}
