//! The TLS probe manager: which processes get OpenSSL uprobes, attaching
//! and detaching them, and the coverage operators see.
//!
//! A uprobe on a library file traps in every process that maps it (load
//! generators, curl, most daemons), and each hit costs microseconds, so
//! probes are attached per process (`UProbeScope::OneProcess`) and only to
//! processes that serve a watched endpoint (a socket listening on, or
//! accepted on, a watched port) or call a watched endpoint that is not on
//! this node. A client of a server on this node (loopback, a sidecar, a pod
//! in another network namespace: any address of any namespace here) is not
//! probed: the server side sees each request once. Clients of remote endpoints are probed when
//! their connect is seen: the requests they send before the probes are in
//! are not seen in clear (counted in `late_clients`).
//!
//! Candidates come from /proc at start and then from kernel triggers
//! (`discover.rs`): LISTEN on a watched port, SYN_SENT to a watched
//! endpoint, fork of a probed process (nginx workers), exec and exit. A
//! slow rescan catches anything a trigger missed. Links are file
//! descriptors: dropping them (stop, or the agent's death) detaches.

mod btf;
mod coverage;
mod manager;
mod procfs;
mod sites;

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use agent_common::{TlsConfig, map_names, program_names as pn};
use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData, RingBuf},
    programs::{ProgramError, RawTracePoint, UProbe},
};
pub use coverage::{ProbedProcess, TlsCoverage, TlsFailure, TlsRole};
use manager::State;
use sites::SiteCache;

use super::EndpointRule;

/// Operator settings of the TLS probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    /// Probe OpenSSL in processes serving or calling watched endpoints.
    pub enabled: bool,
    /// Glob patterns on a process's name (comm) or executable path: matching
    /// processes are never probed.
    pub exclude: Vec<String>,
    /// Most plaintext bytes copied per call (rounded down to 4 KiB, at most
    /// 64 KiB); the rest is counted as cut.
    pub max_copy: u32,
    /// How often /proc is rescanned for candidates a trigger missed.
    pub rescan_interval: Duration,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            exclude: Vec::new(),
            max_copy: agent_common::TLS_COPY_CAP_MAX,
            rescan_interval: Duration::from_secs(30),
        }
    }
}

const UPROBES: [&str; 7] = [
    pn::TLS_READ,
    pn::TLS_READ_EX,
    pn::TLS_READ_RET,
    pn::TLS_WRITE,
    pn::TLS_WRITE_EX,
    pn::TLS_SET_FD,
    pn::TLS_FREE,
];

/// The discovery raw tracepoints: program, tracepoint.
const TRIGGERS: [(&str, &str); 4] = [
    (pn::TLS_FORK, "sched_process_fork"),
    (pn::TLS_EXEC, "sched_process_exec"),
    (pn::TLS_EXIT, "sched_process_exit"),
    (pn::TLS_SOCK_STATE, "inet_sock_set_state"),
];

/// Every TLS program name (for run statistics).
pub const PROGRAMS: [&str; 12] = [
    pn::TLS_READ,
    pn::TLS_READ_EX,
    pn::TLS_READ_RET,
    pn::TLS_WRITE,
    pn::TLS_WRITE_EX,
    pn::TLS_SET_FD,
    pn::TLS_FREE,
    pn::TLS_SYS_ENTER,
    pn::TLS_FORK,
    pn::TLS_EXEC,
    pn::TLS_EXIT,
    pn::TLS_SOCK_STATE,
];

/// The running probe manager. Dropping it detaches every probe.
pub struct TlsProbes {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TlsProbes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsProbes").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why the TLS probes cannot run on this host (wire-only capture goes on).
#[derive(Debug, thiserror::Error)]
pub enum TlsUnavailable {
    #[error(
        "the kernel has no uprobe support (/sys/bus/event_source/devices/uprobe is missing); TLS plaintext is not seen, only handshakes"
    )]
    NoUprobes,
    #[error("the kernel's BTF lacks a member the TLS probes need ({0}); TLS plaintext is not seen")]
    Btf(String),
    /// The source (with the verifier's log) is logged at debug level; the
    /// sentence stays one line.
    #[error(
        "the TLS probe program {name} could not be loaded or attached ({}); TLS plaintext is not seen",
        short(source)
    )]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("the TLS probe map {0} is missing or failed; rebuild the agent")]
    Map(&'static str),
}

/// The first line of an error, without a verifier log.
fn short(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError { io_error, .. } => format!("the verifier refused it: {io_error}"),
        other => other
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

/// Reads the BTF offsets and the syscall numbers into the kernel's config.
fn kernel_config(max_copy: u32) -> Result<TlsConfig, TlsUnavailable> {
    let btf = btf::Btf::from_sys_fs().map_err(|e| TlsUnavailable::Btf(e.to_string()))?;
    let off = |s: &str, m: &str| {
        btf.offset(s, m)
            .map_err(|e| TlsUnavailable::Btf(e.to_string()))
    };
    let sk = |m: &str| off("sock", &format!("__sk_common.{m}"));
    // x86_64 names the first argument register `di`; arm64 has `regs[0]`.
    let regs_arg0 = off("pt_regs", "di").or_else(|_| off("pt_regs", "regs"))?;
    // The walk dereferences these: a kernel where one is not a pointer
    // (a changed layout) must not be walked with them.
    for (s, m) in [
        ("task_struct", "files"),
        ("files_struct", "fdt"),
        ("fdtable", "fd"),
        ("file", "private_data"),
        ("socket", "sk"),
        ("socket", "file"),
    ] {
        if !btf.is_pointer(s, m) {
            return Err(TlsUnavailable::Btf(format!("{s}.{m} is not a pointer")));
        }
    }
    let n = |v: libc::c_long| u32::try_from(v).unwrap_or(u32::MAX);
    let chunk = agent_common::TLS_CHUNK_MAX;
    let max_copy = (max_copy.min(agent_common::TLS_COPY_CAP_MAX) / chunk * chunk).max(chunk);
    Ok(TlsConfig {
        enabled: 1,
        max_copy,
        task_files: off("task_struct", "files")?,
        task_tgid: off("task_struct", "tgid")?,
        files_fdt: off("files_struct", "fdt")?,
        fdt_max_fds: off("fdtable", "max_fds")?,
        fdt_fd: off("fdtable", "fd")?,
        file_private_data: off("file", "private_data")?,
        socket_file: off("socket", "file")?,
        socket_sk: off("socket", "sk")?,
        skc_family: sk("skc_family")?,
        skc_num: sk("skc_num")?,
        skc_dport: sk("skc_dport")?,
        skc_daddr: sk("skc_daddr")?,
        skc_rcv_saddr: sk("skc_rcv_saddr")?,
        skc_v6_daddr: sk("skc_v6_daddr")?,
        skc_v6_rcv_saddr: sk("skc_v6_rcv_saddr")?,
        regs_arg0,
        sys_read: n(libc::SYS_read),
        sys_write: n(libc::SYS_write),
        sys_readv: n(libc::SYS_readv),
        sys_writev: n(libc::SYS_writev),
        sys_sendto: n(libc::SYS_sendto),
        sys_recvfrom: n(libc::SYS_recvfrom),
        sys_sendmsg: n(libc::SYS_sendmsg),
        sys_recvmsg: n(libc::SYS_recvmsg),
    })
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, TlsUnavailable>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(TlsUnavailable::Map(name))?;
    T::try_from(map).map_err(|_| TlsUnavailable::Map(name))
}

fn prog_err(name: &'static str) -> impl Fn(ProgramError) -> TlsUnavailable {
    move |source| TlsUnavailable::Program { name, source }
}

impl TlsProbes {
    /// Loads the TLS programs, writes their configuration, attaches the
    /// discovery triggers, probes the processes already serving or calling
    /// watched endpoints and starts the manager thread.
    pub fn start(
        ebpf: Arc<Mutex<Ebpf>>,
        options: &TlsOptions,
        rules: Vec<EndpointRule>,
    ) -> Result<Self, TlsUnavailable> {
        if !Path::new("/sys/bus/event_source/devices/uprobe").exists() {
            return Err(TlsUnavailable::NoUprobes);
        }
        let cfg = kernel_config(options.max_copy)?;
        let (procs, awaiting, ring, triggers) = {
            let mut e = lock(&ebpf);
            let mut config: Array<MapData, TlsConfig> = take(&mut e, map_names::TLS_CONFIG)?;
            config
                .set(0, cfg, 0)
                .map_err(|_| TlsUnavailable::Map(map_names::TLS_CONFIG))?;
            for name in UPROBES {
                let p: &mut UProbe = e
                    .program_mut(name)
                    .ok_or(TlsUnavailable::Map(name))?
                    .try_into()
                    .map_err(prog_err(name))?;
                p.load().map_err(prog_err(name))?;
            }
            let p: &mut RawTracePoint = e
                .program_mut(pn::TLS_SYS_ENTER)
                .ok_or(TlsUnavailable::Map(pn::TLS_SYS_ENTER))?
                .try_into()
                .map_err(prog_err(pn::TLS_SYS_ENTER))?;
            p.load().map_err(prog_err(pn::TLS_SYS_ENTER))?;
            let procs: BpfHashMap<MapData, u32, u32> = take(&mut e, map_names::TLS_PROCS)?;
            let awaiting: Array<MapData, u64> = take(&mut e, map_names::TLS_AWAITING)?;
            let ring: RingBuf<MapData> = take(&mut e, map_names::TLS_TRIGGERS)?;
            let mut links = Vec::new();
            for (name, tp) in TRIGGERS {
                let p: &mut RawTracePoint = e
                    .program_mut(name)
                    .ok_or(TlsUnavailable::Map(name))?
                    .try_into()
                    .map_err(prog_err(name))?;
                p.load().map_err(prog_err(name))?;
                let id = p.attach(tp).map_err(prog_err(name))?;
                links.push(p.take_link(id).map_err(prog_err(name))?);
            }
            (procs, awaiting, ring, links)
        };
        let exclude = options
            .exclude
            .iter()
            .filter_map(|p| match glob::Pattern::new(p) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(pattern = %p, error = %e, "ignoring an invalid TLS exclusion pattern");
                    None
                }
            })
            .collect();
        let state = Arc::new(Mutex::new(State {
            ebpf,
            procs,
            awaiting,
            rules,
            exclude,
            probed: HashMap::new(),
            given_up: HashSet::new(),
            sys_enter: None,
            _triggers: triggers,
            coverage: TlsCoverage {
                active: true,
                ..TlsCoverage::default()
            },
            rescan: false,
            node_addrs: HashSet::new(),
            node_addrs_at: None,
            sites: SiteCache::default(),
        }));
        // Triggers are attached first, so nothing between the scan and the
        // thread's start is missed.
        lock(&state).scan();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            let every = options.rescan_interval;
            std::thread::Builder::new()
                .name("rw-tls-probes".into())
                .spawn(move || manager::run(state, ring, stop, every))
                .map_err(|e| TlsUnavailable::Btf(e.to_string()))?
        };
        Ok(Self {
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// Which processes are probed, which failed and why, and the manager's
    /// counters. Cheap: a copy of the manager's current view.
    pub fn coverage(&self) -> TlsCoverage {
        lock(&self.state).snapshot()
    }

    /// New endpoint rules: the candidates are looked for again.
    pub fn set_rules(&self, rules: Vec<EndpointRule>) {
        let mut s = lock(&self.state);
        s.rules = rules;
        s.rescan = true;
    }

    /// Stops the thread and detaches every probe.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut s = lock(&self.state);
        let pids: Vec<u32> = s.probed.keys().copied().collect();
        for pid in pids {
            s.detach(pid);
        }
        s.sys_enter = None;
        s._triggers.clear();
    }
}

impl Drop for TlsProbes {
    fn drop(&mut self) {
        self.shutdown();
    }
}
