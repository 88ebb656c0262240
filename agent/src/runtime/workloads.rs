//! Endpoints served by workloads (`endpoints[].workloads`): which local
//! sockets serve them, kept in the kernel's `RW_WL_ENDPOINTS` as pods come
//! and go, and the resolver's own metrics.
//!
//! Every [`SYNC_EVERY`] (and at once after a reload) the resolver walks
//! cgroupfs again (inode → name, no stat per cgroup; pods it named before
//! come from its cache) and every container cgroup whose workload an
//! endpoint's selectors match gets one (cgroup id, port) entry per port of
//! the endpoint. The capture installs the result as a diff: new pods' cgroups
//! in, stale ids out, at most `WORKLOAD_ENDPOINT_ENTRIES` (the rest counted
//! as `workload_map_full`). The match is `Endpoint::served_by`, the very test
//! the engine makes on a flow's server workload, so the kernel watches
//! exactly the sockets the engine will attribute to the endpoint.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use agent_common::WorkloadKey;
use tokio::sync::mpsc;

use crate::{
    capture::{CaptureStats, WorkloadEntries},
    contract::{Contract, Endpoint},
    identity::workload::{FlowWorkload, WorkloadConfig, WorkloadResolver, WorkloadStats},
    sinks::metrics::Metrics,
};

/// How often the cgroups serving workload endpoints are looked up again:
/// a restarted pod is watched within about this long.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The endpoints served by workloads with their kernel rule ids: `0..n` in
/// file order ([`super::rules::kernel_rules`] gives them the first ids, so
/// the ids depend on the contract alone, not on DNS answers).
pub fn workload_endpoints(contract: &Contract) -> impl Iterator<Item = (u32, &Endpoint)> {
    contract
        .endpoints()
        .iter()
        .filter(|e| !e.workloads.is_empty())
        .zip(0..)
        .map(|(e, id)| (id, e))
}

/// (cgroup, port) → rule id for every container cgroup alive now whose
/// workload one of `contract`'s workload endpoints selects; the first
/// endpoint (in file order) wins a (cgroup, port) two of them claim.
pub fn entries(contract: &Contract, resolver: &WorkloadResolver) -> WorkloadEntries {
    let endpoints: Vec<(u32, &Endpoint)> = workload_endpoints(contract).collect();
    let mut out = WorkloadEntries::new();
    if endpoints.is_empty() {
        return out;
    }
    for w in resolver.containers() {
        let fw = FlowWorkload::new(Some(&w), None);
        for (id, e) in &endpoints {
            if !e.served_by(&fw) {
                continue;
            }
            for &port in e.ports.iter().flatten() {
                let key = WorkloadKey {
                    cgroup_id: w.cgroup_id,
                    port,
                    ..WorkloadKey::default()
                };
                out.entry(key).or_insert(*id);
            }
        }
    }
    out
}

/// The resolver that names local sockets' workloads from the host's
/// cgroupfs, `/proc` and kubelet directories under `--host-root`. Without
/// one the agent still runs, and flows name a local socket by its cgroup id.
pub fn resolver(settings: &super::config::Settings) -> Option<Arc<WorkloadResolver>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Some(root) = crate::capture::workload_cgroup_root(&mountinfo, &settings.host_root) else {
        tracing::warn!(
            host_root = %settings.host_root.display(),
            "no cgroup v2 hierarchy is mounted below the host root, so workloads are not named; mount the host's /sys/fs/cgroup there"
        );
        return None;
    };
    let cfg = WorkloadConfig::under_host_root(&settings.host_root, root);
    match WorkloadResolver::new(cfg) {
        Ok(r) => Some(Arc::new(r)),
        Err(e) => {
            tracing::warn!(error = %e, "workloads are not named");
            None
        }
    }
}

/// The sync's state on the agent's task.
pub struct WorkloadSync {
    resolver: Option<Arc<WorkloadResolver>>,
    /// A lookup still running (a slow cgroupfs): the next tick skips.
    busy: Arc<AtomicBool>,
    /// The resolver's counters as last exported.
    exported: WorkloadStats,
    /// Generation of the contract last warned about having workload
    /// endpoints and no resolver.
    warned: Option<u64>,
}

impl WorkloadSync {
    pub fn new(resolver: Option<Arc<WorkloadResolver>>) -> Self {
        Self {
            resolver,
            busy: Arc::new(AtomicBool::new(false)),
            exported: WorkloadStats::default(),
            warned: None,
        }
    }

    /// Computes the entries for `contract` off the agent's task and sends
    /// them tagged with `generation` (a late answer for an older contract
    /// is dropped by the receiver).
    pub fn spawn(
        &mut self,
        contract: Arc<Contract>,
        generation: u64,
        tx: mpsc::Sender<(u64, WorkloadEntries)>,
    ) {
        let Some(resolver) = self.resolver.clone() else {
            let names: Vec<&str> = workload_endpoints(&contract)
                .map(|(_, e)| &*e.name)
                .collect();
            if !names.is_empty() && self.warned != Some(generation) {
                self.warned = Some(generation);
                tracing::warn!(
                    endpoints = %names.join(", "),
                    "these endpoints are served by workloads, but workloads cannot be named here (no cgroup v2 hierarchy below the host root), so their traffic is not watched; mount the host's /sys/fs/cgroup there"
                );
            }
            return;
        };
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let busy = Arc::clone(&self.busy);
        tokio::spawn(async move {
            let computed = tokio::task::spawn_blocking(move || entries(&contract, &resolver)).await;
            busy.store(false, Ordering::Release);
            if let Ok(entries) = computed {
                let _ = tx.send((generation, entries)).await;
            }
        });
    }

    /// The resolver's metrics (cache size, lookups by result, re-walks) and
    /// the kernel map's cgroup count.
    pub fn publish(&mut self, metrics: &Metrics, capture: Option<&CaptureStats>) {
        if let Some(c) = capture {
            metrics
                .workload_endpoint_cgroups
                .set(i64::try_from(c.workload_cgroups).unwrap_or(i64::MAX));
        }
        let Some(r) = &self.resolver else {
            return;
        };
        metrics
            .workload_cache_entries
            .set(i64::try_from(r.cached()).unwrap_or(i64::MAX));
        let now = r.stats();
        let last = &mut self.exported;
        for (result, total, seen) in [
            ("named", now.lookups_named, &mut last.lookups_named),
            ("unnamed", now.lookups_unnamed, &mut last.lookups_unnamed),
            (
                "not_found",
                now.lookups_not_found,
                &mut last.lookups_not_found,
            ),
        ] {
            metrics
                .workload_lookups
                .with_label_values(&[result])
                .inc_by(total.saturating_sub(*seen));
            *seen = (*seen).max(total);
        }
        metrics
            .workload_rewalks
            .inc_by(now.walks.saturating_sub(last.walks));
        last.walks = last.walks.max(now.walks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_endpoints_get_the_first_ids_in_file_order() {
        let c: Contract = crate::contract::tests::workload_endpoints::with_endpoints(
            r#"
    - { name: a, dataClass: pii, hosts: [10.0.0.1] }
    - { name: b, dataClass: pii, workloads: [{namespace: pay, pod: "api-*"}], ports: [8080] }
    - { name: c, dataClass: pii, hosts: [api.example.com], workloads: [{pod: web}], ports: [443, 8443] }
"#,
        );
        let ids: Vec<(u32, &str)> = workload_endpoints(&c).map(|(i, e)| (i, &*e.name)).collect();
        assert_eq!(ids, vec![(0, "b"), (1, "c")]);
    }

    /// A container cgroup whose pod a selector names gets one entry per
    /// port of its endpoint; the first endpoint wins a shared pair; other
    /// pods and pods not named yet get none.
    #[test]
    fn entries_are_the_selected_pods_cgroups_on_their_endpoints_ports() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let cgroup = |rel: &str| {
            let p = root.join("cgroup").join(rel);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::metadata(&p).unwrap().ino()
        };
        let pod = |ns: &str, name: &str, uid: &str| {
            std::fs::create_dir_all(root.join(format!("var/log/pods/{ns}_{name}_{uid}/c")))
                .unwrap();
        };
        let (uid_a, uid_b, uid_c) = (
            "11111111-2222-4333-8444-555555555555",
            "66666666-7777-4888-9999-000000000000",
            "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee",
        );
        let id = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
        let api = cgroup(&format!("kubepods/pod{uid_a}/{}", id('a')));
        let _web = cgroup(&format!("kubepods/pod{uid_b}/{}", id('b')));
        let _unnamed = cgroup(&format!("kubepods/pod{uid_c}/{}", id('c')));
        pod("payments", "api-1", uid_a);
        pod("shop", "web-1", uid_b);
        let mut cfg =
            crate::identity::workload::WorkloadConfig::under_host_root(root, root.join("cgroup"));
        cfg.min_rewalk = Duration::ZERO;
        let resolver = WorkloadResolver::new(cfg).unwrap();
        let c: Contract = crate::contract::tests::workload_endpoints::with_endpoints(
            r#"
    - { name: pay, dataClass: pii, workloads: [{namespace: payments, pod: "api-*"}], ports: [8080, 9090] }
    - { name: all, dataClass: pii, workloads: [{namespace: payments}, {pod: "nothing"}], ports: [8080, 7070] }
"#,
        );
        let got: Vec<(u64, u16, u32)> = entries(&c, &resolver)
            .into_iter()
            .map(|(k, id)| (k.cgroup_id, k.port, id))
            .collect();
        assert_eq!(got, vec![(api, 7070, 1), (api, 8080, 0), (api, 9090, 0)]);
        // No workload endpoints: no walk at all.
        let walks = resolver.stats().walks;
        let plain = crate::contract::tests::workload_endpoints::with_endpoints(
            "    - { name: a, dataClass: pii, hosts: [10.0.0.1] }",
        );
        assert!(entries(&plain, &resolver).is_empty());
        assert_eq!(resolver.stats().walks, walks);
    }
}
