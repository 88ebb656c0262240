//! Live capture: loads the kernel programs, attaches them, keeps the
//! endpoint maps in sync and turns ring-buffer records and flow-map changes
//! into batches of [`Event`]s on a bounded channel (`handover` says why
//! batches).
//!
//! Tasks: one ring reader (`ring::run`) and one flow-map poller (request
//! start deltas, idle/evicted flow ends). The poller hands what it found to
//! the ring reader, which drains the ring before passing it on: a count
//! the poller read never reaches the engine ahead of the samples the kernel
//! wrote before it (the request heads that say whose requests they are).
//! Dropping the [`Capture`] (or
//! [`Capture::shutdown`]) stops both and detaches every program: the links
//! are file descriptors owned by the loaded object.

mod control;
mod endpoints;
mod error;
mod floor;
mod flow_map;
mod handover;
mod poller;
mod ring;
// Needs root and a built kernel object: `cargo xtask test` runs it.
#[cfg(all(test, feature = "kernel-smoke"))]
mod smoke;
mod stats;
mod system;
mod tls;

use std::{
    fs::File,
    os::fd::OwnedFd,
    path::PathBuf,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use agent_common::{Config, FlowKey, FlowStats, map_names, program_names, stat};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, SchedClassifier, TcAttachType, tc,
    },
};
use control::Control;
pub use endpoints::{Compiled, EndpointRule, PortSpec, RuleError, WorkloadEntries, compile};
pub use error::CaptureError;
use error::{map_err, prog_err};
pub use floor::Floor;
pub use flow_map::FlowSnapshot;
pub use handover::BATCH;
pub use stats::{CaptureStats, KernelCounters, ProgramCost};
pub use system::{cgroup2_root, check_privileges, workload_cgroup_root};
pub use tls::{ProbedProcess, TlsCoverage, TlsFailure, TlsOptions, TlsRole};
use tokio::{io::unix::AsyncFd, sync::mpsc::Sender, task::JoinHandle};

use crate::event::Event;

/// The kernel object built by `agent/build.rs` (empty with `AYA_BUILD_SKIP=1`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rampwatch"));

/// What to capture and how.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// Attach cgroup_skb programs (the default capture).
    pub attach_cgroup: bool,
    /// cgroup v2 directory to attach to; `None` = the root of the hierarchy.
    pub cgroup: Option<PathBuf>,
    /// Interfaces to attach TC programs to (opt-in).
    pub interfaces: Vec<String>,
    pub endpoints: Vec<EndpointRule>,
    /// Payload bytes per sample (at most `agent_common::SNAPLEN_MAX`).
    pub snaplen: u32,
    /// Payload segments per direction always sampled.
    pub first_segments: u32,
    /// 1-in-N sampling of the other segments (0 = never).
    pub sample_one_in: u32,
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Flow map capacity.
    pub flow_entries: u32,
    /// How often the flow map is read for request-start deltas and ends.
    pub poll_interval: Duration,
    /// Flows without packets for this long are ended (`FlowEndReason::Idle`).
    pub idle_timeout: Duration,
    /// OpenSSL plaintext probes (on by default; off: wire only).
    pub tls: TlsOptions,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            attach_cgroup: true,
            cgroup: None,
            interfaces: Vec::new(),
            endpoints: Vec::new(),
            snaplen: agent_common::DEFAULT_SNAPLEN,
            first_segments: agent_common::DEFAULT_FIRST_SEGMENTS,
            sample_one_in: agent_common::DEFAULT_SAMPLE_ONE_IN,
            ring_bytes: 16 << 20,
            flow_entries: 65536,
            poll_interval: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(300),
            tls: TlsOptions::default(),
        }
    }
}

/// A running capture. Dropping it detaches everything.
pub struct Capture {
    /// Shared with the TLS probe manager, which attaches uprobes at run time.
    ebpf: Option<Arc<Mutex<Ebpf>>>,
    tls: Option<tls::TlsProbes>,
    /// Why the TLS probes do not run, when they were asked for.
    tls_unavailable: Option<String>,
    control: Mutex<Control>,
    flows: Arc<Mutex<BpfHashMap<MapData, FlowKey, FlowStats>>>,
    stats: PerCpuArray<MapData, u64>,
    shared: Arc<ring::Shared>,
    tasks: Vec<JoinHandle<()>>,
    ring_task: Option<JoinHandle<()>>,
    stop: Arc<tokio::sync::Notify>,
    programs: Vec<&'static str>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("programs", &self.programs)
            .finish_non_exhaustive()
    }
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, CaptureError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(CaptureError::MissingMap(name))?;
    T::try_from(map).map_err(map_err(name))
}

/// Privileges, BTF, interfaces, and the cgroup directory to attach to (if
/// any), opened: every host problem is found before anything is loaded.
fn check_host(config: &CaptureConfig) -> Result<Option<(PathBuf, File)>, CaptureError> {
    system::check_privileges()?;
    system::check_btf()?;
    for name in &config.interfaces {
        system::check_interface(name)?;
    }
    if !config.attach_cgroup {
        return Ok(None);
    }
    let path = match &config.cgroup {
        Some(p) => p.clone(),
        None => system::cgroup2_root()?,
    };
    let file = File::open(&path).map_err(|source| CaptureError::Cgroup {
        path: path.clone(),
        source,
    })?;
    Ok(Some((path, file)))
}

/// Loads the cgroup_skb programs and attaches them to the cgroup `file`.
fn attach_cgroup(ebpf: &mut Ebpf, file: &File) -> Result<Vec<&'static str>, CaptureError> {
    let mut programs = Vec::new();
    for (name, kind) in [
        (program_names::CGROUP_INGRESS, CgroupSkbAttachType::Ingress),
        (program_names::CGROUP_EGRESS, CgroupSkbAttachType::Egress),
    ] {
        let prog: &mut CgroupSkb = ebpf
            .program_mut(name)
            .ok_or(CaptureError::MissingProgram(name))?
            .try_into()
            .map_err(prog_err(name))?;
        prog.load().map_err(prog_err(name))?;
        // With bpf links (5.7+) the kernel always allows several
        // programs per cgroup and rejects explicit flags; `Single`
        // is what makes aya pass none.
        prog.attach(file, kind, CgroupAttachMode::Single)
            .map_err(prog_err(name))?;
        programs.push(name);
    }
    Ok(programs)
}

/// Loads the TC programs and attaches them to every interface.
fn attach_tc(ebpf: &mut Ebpf, interfaces: &[String]) -> Result<Vec<&'static str>, CaptureError> {
    // tcx (6.6+) needs no qdisc; older kernels need clsact.
    let tcx = aya::util::KernelVersion::current()
        .map(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
        .unwrap_or(true);
    let mut programs = Vec::new();
    for (name, kind) in [
        (program_names::TC_INGRESS, TcAttachType::Ingress),
        (program_names::TC_EGRESS, TcAttachType::Egress),
    ] {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or(CaptureError::MissingProgram(name))?
            .try_into()
            .map_err(prog_err(name))?;
        prog.load().map_err(prog_err(name))?;
        for iface in interfaces {
            if !tcx {
                // EEXIST: the qdisc is already there, which is fine.
                let _ = tc::qdisc_add_clsact(iface);
                // tcx attachments are links and die with their process; a
                // netlink filter outlives a killed agent. Remove filters of
                // ours left behind before attaching again (NotFound, the
                // usual case, is not an error). One agent per node owns them.
                if tc::qdisc_detach_program(iface, kind, name).is_ok() {
                    tracing::info!(iface = %iface, program = name, "removed a TC filter a previous agent left attached");
                }
            }
            prog.attach(iface, kind).map_err(prog_err(name))?;
        }
        programs.push(name);
    }
    Ok(programs)
}

impl Capture {
    /// Checks the host, loads and attaches the programs, installs the
    /// endpoint rules and starts delivering events to `tx`, in order, in
    /// batches of up to [`BATCH`] (a poll's events may be more). Must be
    /// called inside a tokio runtime.
    pub fn start(config: CaptureConfig, tx: Sender<Vec<Event>>) -> Result<Self, CaptureError> {
        if OBJECT.is_empty() {
            return Err(CaptureError::NotBuilt);
        }
        let compiled = compile(&config.endpoints)?;
        let cgroup = check_host(&config)?;

        let mut ebpf = EbpfLoader::new()
            .map_max_entries(map_names::FLOWS, config.flow_entries)
            .map_max_entries(map_names::EVENTS, config.ring_bytes)
            .load(OBJECT)?;

        let mut control = Control {
            config: take(&mut ebpf, map_names::CONFIG)?,
            endpoints: take(&mut ebpf, map_names::ENDPOINTS)?,
            endpoints_any: take(&mut ebpf, map_names::ENDPOINTS_ANY_PORT)?,
            ports: take(&mut ebpf, map_names::PORTS)?,
            current: Compiled::default(),
            stale: control::Stale::default(),
            workloads: control::Workloads {
                map: take(&mut ebpf, map_names::WORKLOAD_ENDPOINTS)?,
                current: WorkloadEntries::new(),
                rejected: std::collections::BTreeSet::new(),
                full: 0,
            },
            cfg: Config {
                snaplen: config.snaplen.min(agent_common::SNAPLEN_MAX),
                first_segments: config.first_segments,
                sample_one_in: config.sample_one_in,
                flags: 0,
            },
        };
        // Rules and configuration go in before any program runs.
        control.apply(compiled)?;
        let flows: BpfHashMap<MapData, FlowKey, FlowStats> = take(&mut ebpf, map_names::FLOWS)?;
        let stats: PerCpuArray<MapData, u64> = take(&mut ebpf, map_names::STATS)?;
        let events: RingBuf<MapData> = take(&mut ebpf, map_names::EVENTS)?;

        let mut programs = Vec::new();
        if let Some((path, file)) = &cgroup {
            programs.extend(attach_cgroup(&mut ebpf, file)?);
            tracing::info!(cgroup = %path.display(), "cgroup_skb capture attached");
        }
        if !config.interfaces.is_empty() {
            programs.extend(attach_tc(&mut ebpf, &config.interfaces)?);
            tracing::info!(interfaces = ?config.interfaces, "TC capture attached");
        }

        let shared = Arc::new(ring::Shared::default());
        shared
            .boot_to_wall
            .store(system::boot_to_wall_offset(), Ordering::Relaxed);
        let flows = Arc::new(Mutex::new(flows));
        let ebpf = Arc::new(Mutex::new(ebpf));
        let (tls, tls_unavailable) = if config.tls.enabled {
            match tls::TlsProbes::start(ebpf.clone(), &config.tls, config.endpoints.clone()) {
                Ok(t) => {
                    programs.extend(tls::PROGRAMS);
                    let f = flows.clone();
                    let _ = shared
                        .tls_layer
                        .set(ring::TlsLayerLookup(Box::new(move |k| {
                            lock(&f).get(k, 0).ok()
                        })));
                    (Some(t), None)
                }
                Err(e) => {
                    // Said once; the capture goes on with the wire only.
                    tracing::warn!(error = %e, "TLS plaintext probes are off");
                    tracing::debug!(error = ?e, "TLS probe start-up failure in full");
                    (None, Some(e.to_string()))
                }
            }
        } else {
            (None, Some("turned off by configuration".to_owned()))
        };
        // SAFETY: the RingBuf owns its map fd, which stays open and
        // unchanged for as long as the AsyncFd owns the RingBuf.
        let events =
            unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
                .map_err(|e| CaptureError::RingWatch(e.into_parts().1))?;
        let stop = Arc::new(tokio::sync::Notify::new());
        let (poll_tx, poll_rx) = tokio::sync::mpsc::channel(poller::POLL_HANDOVER);
        let ring_task = tokio::spawn(ring::run(events, tx, poll_rx, shared.clone(), stop.clone()));
        let poll_task = tokio::spawn(poller::poll_flows(
            flows.clone(),
            shared.clone(),
            poll_tx,
            config.poll_interval,
            config.idle_timeout,
        ));
        Ok(Self {
            ebpf: Some(ebpf),
            tls,
            tls_unavailable,
            control: Mutex::new(control),
            flows,
            stats,
            shared,
            tasks: vec![poll_task],
            ring_task: Some(ring_task),
            stop,
            programs,
        })
    }

    /// Replaces the monitored endpoints (applied as a diff: no moment
    /// without rules). Established flows skip the rule lookup in the kernel,
    /// so flows of endpoint ids no longer in `rules` are deleted here; they
    /// end as `FlowEndReason::Idle` at the next poll.
    pub fn set_endpoints(&self, rules: &[EndpointRule]) -> Result<(), CaptureError> {
        let compiled = compile(rules)?;
        lock(&self.control).apply(compiled)?;
        if let Some(t) = &self.tls {
            t.set_rules(rules.to_vec());
        }
        let ids: std::collections::HashSet<u32> = rules.iter().map(|r| r.id).collect();
        let mut flows = lock(&self.flows);
        let stale: Vec<FlowKey> = flows
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, s)| !ids.contains(&s.endpoint_id))
            .map(|(k, _)| k)
            .collect();
        for k in &stale {
            let _ = flows.remove(k);
        }
        Ok(())
    }

    /// Replaces the sockets that serve workload endpoints: (cgroup id,
    /// port) → rule id, for the `workload` rules of [`Self::set_endpoints`]
    /// (computed from the workload resolver, again whenever pods come and
    /// go). Entries that do not fit are counted, not an error.
    pub fn set_workload_endpoints(&self, entries: WorkloadEntries) -> Result<(), CaptureError> {
        lock(&self.control).workloads.apply(entries)
    }

    /// Changes sampling at run time.
    pub fn set_sampling(
        &self,
        snaplen: u32,
        first_segments: u32,
        sample_one_in: u32,
    ) -> Result<(), CaptureError> {
        let mut c = lock(&self.control);
        c.cfg.snaplen = snaplen.min(agent_common::SNAPLEN_MAX);
        c.cfg.first_segments = first_segments;
        c.cfg.sample_one_in = sample_one_in;
        c.write_config()
    }

    /// All counters: kernel ones summed over CPUs, plus userspace ones.
    pub fn stats(&self) -> Result<CaptureStats, CaptureError> {
        let mut sums = Vec::with_capacity(stat::COUNT as usize);
        for i in 0..stat::COUNT {
            let v = self.stats.get(&i, 0).map_err(map_err(map_names::STATS))?;
            sums.push(v.iter().copied().fold(0u64, u64::wrapping_add));
        }
        // One lock for both fields: a second `lock` in the same expression
        // would wait on the first guard forever.
        let (duplicate_views, duplicate_view_requests) = {
            let t = lock(&self.shared.tracker);
            (t.duplicate_views, t.duplicate_view_requests)
        };
        let (workload_map_full, workload_cgroups) = {
            let c = lock(&self.control);
            (c.workloads.full, c.workloads.cgroups() as u64)
        };
        Ok(CaptureStats {
            kernel: KernelCounters::from_sums(&sums),
            workload_map_full,
            workload_cgroups,
            decode_errors: self.shared.decode_errors.load(Ordering::Relaxed),
            records_read: self.shared.records.load(Ordering::Relaxed),
            duplicate_views,
            duplicate_view_requests,
        })
    }

    /// A snapshot of the kernel flow map (every view, not deduplicated).
    pub fn flows(&self) -> Vec<FlowSnapshot> {
        let offset = system::mono_to_wall_offset();
        poller::read_flows(&self.flows)
            .iter()
            .map(|(k, s)| flow_map::snapshot(k, s, offset))
            .collect()
    }

    /// Run time and count of each attached program; non-zero only while
    /// BPF run statistics are enabled (see [`Capture::enable_run_stats`]).
    pub fn program_costs(&self) -> Vec<ProgramCost> {
        let Some(ebpf) = &self.ebpf else {
            return Vec::new();
        };
        let ebpf = lock(ebpf);
        self.programs
            .iter()
            .filter_map(|&name| {
                let info = match ebpf.program(name)? {
                    aya::programs::Program::CgroupSkb(p) => p.info().ok()?,
                    aya::programs::Program::SchedClassifier(p) => p.info().ok()?,
                    aya::programs::Program::UProbe(p) => p.info().ok()?,
                    aya::programs::Program::RawTracePoint(p) => p.info().ok()?,
                    _ => return None,
                };
                Some(ProgramCost {
                    name,
                    run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                    run_count: info.run_count(),
                    verified_instructions: info.verified_instruction_count(),
                })
            })
            .collect()
    }

    /// Turns on kernel BPF run-time statistics until the returned fd is
    /// dropped (same as `sysctl kernel.bpf_stats_enabled=1`).
    pub fn enable_run_stats() -> Result<OwnedFd, CaptureError> {
        aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(CaptureError::RunStats)
    }

    /// Detaches every program, then delivers the records still in the ring
    /// (waiting up to `SHUTDOWN_DRAIN` for a slow receiver) and stops.
    pub async fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        // Detach first: nothing new enters the ring while it is drained.
        self.detach();
        if let Some(mut t) = self.ring_task.take() {
            self.stop.notify_one();
            if tokio::time::timeout(SHUTDOWN_DRAIN, &mut t).await.is_err() {
                t.abort();
            }
        }
        self.ebpf.take();
        tracing::info!("capture detached");
    }

    /// What the TLS plaintext probes cover: probed processes, failures by
    /// reason, counters; `active: false` with the reason when they do not run.
    pub fn tls_coverage(&self) -> TlsCoverage {
        match &self.tls {
            Some(t) => t.coverage(),
            None => TlsCoverage {
                unavailable: self.tls_unavailable.clone(),
                ..TlsCoverage::default()
            },
        }
    }

    /// Detaches all programs, keeping the maps (and so the ring) alive.
    fn detach(&mut self) {
        if let Some(t) = self.tls.take() {
            t.stop();
        }
        let Some(ebpf) = &self.ebpf else {
            return;
        };
        let mut ebpf = lock(ebpf);
        for &name in &self.programs {
            let r = match ebpf.program_mut(name) {
                Some(aya::programs::Program::CgroupSkb(p)) => p.unload(),
                Some(aya::programs::Program::SchedClassifier(p)) => p.unload(),
                _ => Ok(()),
            };
            if let Err(e) = r {
                tracing::warn!(program = name, error = %e, "detaching failed; it is detached when the agent exits");
            }
        }
    }
}

/// Longest wait in [`Capture::shutdown`] for the receiver to take the
/// records left in the ring.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

impl Drop for Capture {
    fn drop(&mut self) {
        for t in self.tasks.iter().chain(&self.ring_task) {
            t.abort();
        }
        // `ebpf` drops after this: its program links (fds) detach.
    }
}

/// The ring reader's record → event conversion, usable without a kernel
/// (benchmarks, fuzzing): the same code path the live capture runs.
#[derive(Debug, Default)]
pub struct RecordDecoder {
    shared: ring::Shared,
    payloads: handover::Payloads,
}

impl RecordDecoder {
    /// `boot_to_wall`: nanoseconds added to kernel boot-time stamps.
    pub fn new(boot_to_wall: i64) -> Self {
        let d = Self::default();
        d.shared.boot_to_wall.store(boot_to_wall, Ordering::Relaxed);
        d
    }

    /// At most two events per record (a final request-start delta precedes
    /// a flow end); undecodable records yield none and are counted.
    pub fn convert(&mut self, record: &[u8]) -> [Option<Event>; 2] {
        self.shared.convert(record, &mut self.payloads)
    }

    pub fn decode_errors(&self) -> u64 {
        self.shared.decode_errors.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
