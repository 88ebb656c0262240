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
mod procfs;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    num::NonZeroU32,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use agent_common::{TlsConfig, TlsTrigger, map_names, program_names as pn, tls_trigger};
use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData, RingBuf},
    programs::{
        ProgramError, RawTracePoint, UProbe,
        raw_trace_point::RawTracePointLink,
        uprobe::{UProbeError, UProbeLink, UProbeScope},
    },
};
use procfs::SslSource;

use super::{EndpointRule, PortSpec};

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

/// Why a process is not probed. Bounded: usable as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsFailure {
    /// The process exited before or while probes were attached.
    Exited,
    /// Neither a libssl nor OpenSSL symbols in the executable (stripped, or
    /// another TLS library: Go, rustls, BoringSSL, Java).
    NoOpenssl,
    /// The kernel or /proc refused (missing CAP_SYS_PTRACE, another user
    /// namespace, lockdown).
    Permission,
    /// Any other attach error (logged once per process).
    AttachFailed,
}

impl TlsFailure {
    pub const ALL: [Self; 4] = [
        Self::Exited,
        Self::NoOpenssl,
        Self::Permission,
        Self::AttachFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exited => "exited",
            Self::NoOpenssl => "no_openssl",
            Self::Permission => "permission",
            Self::AttachFailed => "attach_failed",
        }
    }
}

/// Why a process is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsRole {
    /// It listens on or accepted connections of a watched endpoint.
    Server,
    /// It connects to a watched endpoint off this node.
    Client,
}

/// One probed process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbedProcess {
    pub pid: u32,
    pub comm: String,
    /// The libssl (or executable) probed, as the process sees it.
    pub library: PathBuf,
    pub role: TlsRole,
    /// Uprobes attached (5 to 7: the `_ex` calls and `SSL_set_fd` are
    /// optional).
    pub probes: u32,
}

/// What the TLS probes cover right now, for `rampwatch status` and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsCoverage {
    /// The probes run (false: turned off, or the host cannot; see `unavailable`).
    pub active: bool,
    /// Why the probes do not run, one operator sentence.
    pub unavailable: Option<String>,
    /// Probed processes, by pid.
    pub processes: Vec<ProbedProcess>,
    /// Processes not probed, by reason (cumulative).
    pub failures: BTreeMap<TlsFailure, u64>,
    /// Processes skipped because an exclusion pattern matched (cumulative).
    pub excluded: u64,
    /// Clients of endpoints on this node, not probed (the server side is).
    pub local_clients_skipped: u64,
    /// Clients of remote endpoints probed after their connect: their first
    /// requests were not seen in clear.
    pub late_clients: u64,
    /// Probe sets attached and detached (cumulative).
    pub attached: u64,
    pub detached: u64,
    /// Kernel triggers received.
    pub triggers: u64,
}

/// The attach points: program, symbol, required.
const POINTS: [(&str, &str, bool); 7] = [
    (pn::TLS_READ, "SSL_read", true),
    (pn::TLS_READ_RET, "SSL_read", true),
    (pn::TLS_WRITE, "SSL_write", true),
    (pn::TLS_SET_FD, "SSL_set_fd", false),
    (pn::TLS_READ_EX, "SSL_read_ex", false),
    (pn::TLS_READ_RET, "SSL_read_ex", false),
    (pn::TLS_WRITE_EX, "SSL_write_ex", false),
];

const UPROBES: [&str; 6] = [
    pn::TLS_READ,
    pn::TLS_READ_EX,
    pn::TLS_READ_RET,
    pn::TLS_WRITE,
    pn::TLS_WRITE_EX,
    pn::TLS_SET_FD,
];

/// The discovery raw tracepoints: program, tracepoint.
const TRIGGERS: [(&str, &str); 4] = [
    (pn::TLS_FORK, "sched_process_fork"),
    (pn::TLS_EXEC, "sched_process_exec"),
    (pn::TLS_EXIT, "sched_process_exit"),
    (pn::TLS_SOCK_STATE, "inet_sock_set_state"),
];

/// Every TLS program name (for run statistics).
pub const PROGRAMS: [&str; 11] = [
    pn::TLS_READ,
    pn::TLS_READ_EX,
    pn::TLS_READ_RET,
    pn::TLS_WRITE,
    pn::TLS_WRITE_EX,
    pn::TLS_SET_FD,
    pn::TLS_SYS_ENTER,
    pn::TLS_FORK,
    pn::TLS_EXEC,
    pn::TLS_EXIT,
    pn::TLS_SOCK_STATE,
];

struct Probed {
    comm: String,
    library: PathBuf,
    role: TlsRole,
    links: Vec<UProbeLink>,
}

struct State {
    ebpf: Arc<Mutex<Ebpf>>,
    procs: BpfHashMap<MapData, u32, u32>,
    rules: Vec<EndpointRule>,
    exclude: Vec<glob::Pattern>,
    probed: HashMap<u32, Probed>,
    /// Pids not to retry until they exit or exec.
    given_up: HashSet<u32>,
    sys_enter: Option<RawTracePointLink>,
    _triggers: Vec<RawTracePointLink>,
    coverage: TlsCoverage,
    rescan: bool,
    /// Addresses of every network namespace on the node, and when read.
    node_addrs: HashSet<IpAddr>,
    node_addrs_at: Option<Instant>,
}

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
        let (procs, ring, triggers) = {
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
            (procs, ring, links)
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
                .spawn(move || run(state, ring, stop, every))
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

/// The manager thread: triggers from the kernel, a slow rescan.
fn run(
    state: Arc<Mutex<State>>,
    mut ring: RingBuf<MapData>,
    stop: Arc<AtomicBool>,
    every: Duration,
) {
    let mut last_scan = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut fds = libc::pollfd {
            fd: ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; the ring's fd outlives the call.
        unsafe { libc::poll(&mut fds, 1, 100) };
        let mut triggers = Vec::new();
        while let Some(item) = ring.next() {
            match TlsTrigger::try_from(&*item) {
                Ok(t) => triggers.push(t),
                Err(e) => tracing::debug!(error = %e, "skipping an undecodable TLS trigger"),
            }
        }
        let mut s = lock(&state);
        for t in triggers {
            s.coverage.triggers += 1;
            s.trigger(&t);
        }
        if s.rescan || last_scan.elapsed() >= every {
            s.rescan = false;
            last_scan = Instant::now();
            s.scan();
        }
    }
}

/// Whether a rule covers this port (any address).
fn port_in(spec: &PortSpec, port: u16) -> bool {
    match spec {
        PortSpec::Any => true,
        PortSpec::List(l) => l.contains(&port),
        PortSpec::Ranges(r) => r.iter().any(|r| r.contains(&port)),
    }
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn addr_watched(rules: &[EndpointRule], (ip, port): (IpAddr, u16)) -> bool {
    let ip = unmap(ip);
    rules
        .iter()
        .any(|r| port_in(&r.ports, port) && r.prefix.is_none_or(|p| p.contains(&ip)))
}

/// A listening socket: a wildcard address serves every address, so the
/// port alone decides; a concrete address must match.
fn listener_watched(rules: &[EndpointRule], (ip, port): (IpAddr, u16)) -> bool {
    if unmap(ip).is_unspecified() {
        rules.iter().any(|r| match &r.ports {
            PortSpec::Any => false,
            spec => port_in(spec, port),
        })
    } else {
        addr_watched(rules, (ip, port))
    }
}

/// A program of the object as its type.
fn program<'a, T>(e: &'a mut Ebpf, name: &str) -> Option<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
{
    e.program_mut(name)?.try_into().ok()
}

/// Sorts an attach error into a bounded reason.
fn classify(e: &ProgramError) -> TlsFailure {
    if let ProgramError::UProbeError(UProbeError::SymbolError { .. }) = e {
        return TlsFailure::NoOpenssl;
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = src {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.raw_os_error() {
                Some(libc::ESRCH | libc::ENOENT) => TlsFailure::Exited,
                Some(libc::EPERM | libc::EACCES) => TlsFailure::Permission,
                _ => TlsFailure::AttachFailed,
            };
        }
        src = err.source();
    }
    TlsFailure::AttachFailed
}

impl State {
    fn snapshot(&self) -> TlsCoverage {
        let mut c = self.coverage.clone();
        c.processes = self
            .probed
            .iter()
            .map(|(&pid, p)| ProbedProcess {
                pid,
                comm: p.comm.clone(),
                library: p.library.clone(),
                role: p.role,
                probes: p.links.len() as u32,
            })
            .collect();
        c.processes.sort_by_key(|p| p.pid);
        c
    }

    fn fail(&mut self, pid: u32, why: TlsFailure) {
        *self.coverage.failures.entry(why).or_default() += 1;
        self.given_up.insert(pid);
    }

    fn trigger(&mut self, t: &TlsTrigger) {
        match t.kind {
            tls_trigger::LISTEN => {
                self.probe(t.pid, TlsRole::Server);
                // Workers forked before the parent was marked hold the
                // socket too.
                self.rescan = true;
            }
            tls_trigger::CONNECT => {
                let ip = unmap(IpAddr::from(t.addr));
                if self.on_node(ip) {
                    self.coverage.local_clients_skipped += 1;
                } else if !self.probed.contains_key(&t.pid) && !self.given_up.contains(&t.pid) {
                    self.coverage.late_clients += 1;
                    self.probe(t.pid, TlsRole::Client);
                }
            }
            tls_trigger::FORK => {
                if let Some(role) = self.probed.get(&t.ppid).map(|p| p.role) {
                    self.probe(t.pid, role);
                }
            }
            tls_trigger::EXEC => {
                self.detach(t.pid);
                self.given_up.remove(&t.pid);
                self.rescan = true;
            }
            tls_trigger::EXIT => {
                self.detach(t.pid);
                self.given_up.remove(&t.pid);
            }
            _ => {}
        }
    }

    /// Whether `ip` is an address of this node (any network namespace).
    /// Read again at most once a second, when an address is not known.
    fn on_node(&mut self, ip: IpAddr) -> bool {
        if procfs::is_local(ip, &self.node_addrs) {
            return true;
        }
        if self
            .node_addrs_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return false;
        }
        self.node_addrs = procfs::node_addrs(&procfs::pids());
        self.node_addrs_at = Some(Instant::now());
        procfs::is_local(ip, &self.node_addrs)
    }

    /// Finds the processes holding sockets of watched endpoints and probes
    /// the new ones; forgets processes that are gone.
    fn scan(&mut self) {
        let pids = procfs::pids();
        let sockets = procfs::tcp_sockets(&pids);
        self.node_addrs = procfs::node_addrs(&pids);
        self.node_addrs_at = Some(Instant::now());
        let locals = self.node_addrs.clone();
        let mut server = HashSet::new();
        let mut client = HashSet::new();
        for s in &sockets {
            if (s.listening() && listener_watched(&self.rules, s.local))
                || (s.established() && addr_watched(&self.rules, s.local))
            {
                server.insert(s.inode);
            } else if s.established()
                && addr_watched(&self.rules, s.remote)
                && !procfs::is_local(s.remote.0, &locals)
            {
                client.insert(s.inode);
            }
        }
        let wanted: HashSet<u64> = server.union(&client).copied().collect();
        let me = std::process::id();
        let mut holders: Vec<_> = procfs::holders(&pids, &wanted).into_iter().collect();
        holders.sort_by_key(|(pid, _)| *pid);
        for (pid, inodes) in holders {
            if pid == me {
                continue;
            }
            let role = if inodes.iter().any(|i| server.contains(i)) {
                TlsRole::Server
            } else {
                TlsRole::Client
            };
            self.probe(pid, role);
        }
        let alive: HashSet<u32> = pids.into_iter().collect();
        let gone: Vec<u32> = self
            .probed
            .keys()
            .filter(|p| !alive.contains(p))
            .copied()
            .collect();
        for pid in gone {
            self.detach(pid);
        }
        self.given_up.retain(|p| alive.contains(p));
    }

    fn excluded(&self, comm: &str, exe: Option<&Path>) -> bool {
        self.exclude
            .iter()
            .any(|p| p.matches(comm) || exe.is_some_and(|e| p.matches_path(e)))
    }

    fn probe(&mut self, pid: u32, role: TlsRole) {
        if pid == 0 || self.probed.contains_key(&pid) || self.given_up.contains(&pid) {
            return;
        }
        let Some(comm) = procfs::comm(pid) else {
            self.fail(pid, TlsFailure::Exited);
            return;
        };
        let exe = procfs::exe(pid);
        if self.excluded(&comm, exe.as_deref()) {
            self.coverage.excluded += 1;
            self.given_up.insert(pid);
            return;
        }
        let Some(source) = procfs::ssl_source(pid) else {
            self.fail(pid, TlsFailure::Exited);
            return;
        };
        // Marked before attaching, so a fork from now on is reported.
        let _ = self.procs.insert(pid, 1, 0);
        let target = procfs::through_root(pid, source.path());
        let Some(npid) = NonZeroU32::new(pid) else {
            return;
        };
        let mut links = Vec::new();
        let mut failure = None;
        {
            let mut e = lock(&self.ebpf);
            for (name, symbol, required) in POINTS {
                let r = match program::<UProbe>(&mut e, name) {
                    Some(p) => p
                        .attach(symbol, &target, UProbeScope::OneProcess(npid))
                        .and_then(|id| p.take_link(id)),
                    None => Err(ProgramError::NotLoaded),
                };
                match r {
                    Ok(l) => links.push(l),
                    Err(err) if required => {
                        let why = classify(&err);
                        if why == TlsFailure::AttachFailed {
                            tracing::warn!(pid, comm = %comm, error = %err, "attaching TLS probes failed");
                        }
                        failure = Some(why);
                        break;
                    }
                    Err(_) => {}
                }
            }
        }
        if failure.is_none() && !procfs::alive(pid) {
            failure = Some(TlsFailure::Exited);
        }
        if let Some(why) = failure {
            drop(links);
            let _ = self.procs.remove(&pid);
            // An executable without OpenSSL is the common case of a
            // non-OpenSSL server: worth a debug line, not a warning.
            tracing::debug!(pid, comm = %comm, reason = why.as_str(), "process not probed");
            self.fail(pid, why);
            return;
        }
        let library = match &source {
            SslSource::Library(p) | SslSource::Executable(p) => p.clone(),
        };
        tracing::info!(pid, comm = %comm, library = %library.display(), probes = links.len(), "TLS probes attached");
        self.probed.insert(
            pid,
            Probed {
                comm,
                library,
                role,
                links,
            },
        );
        self.coverage.attached += 1;
        self.ensure_sys_enter();
    }

    fn detach(&mut self, pid: u32) {
        if let Some(p) = self.probed.remove(&pid) {
            drop(p.links);
            self.coverage.detached += 1;
            tracing::debug!(pid, "TLS probes detached");
        }
        let _ = self.procs.remove(&pid);
        if self.probed.is_empty() {
            self.sys_enter = None;
        }
    }

    /// The `sys_enter` hook runs on every syscall of the machine: attached
    /// only while some process is probed.
    fn ensure_sys_enter(&mut self) {
        if self.sys_enter.is_some() {
            return;
        }
        let mut e = lock(&self.ebpf);
        let r = match program::<RawTracePoint>(&mut e, pn::TLS_SYS_ENTER) {
            Some(p) => p.attach("sys_enter").and_then(|id| p.take_link(id)),
            None => Err(ProgramError::NotLoaded),
        };
        match r {
            Ok(l) => self.sys_enter = Some(l),
            Err(err) => {
                tracing::warn!(error = %err, "the TLS syscall hook could not be attached; connections without SSL_set_fd are not joined");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str, ports: PortSpec) -> EndpointRule {
        EndpointRule {
            id: 1,
            prefix: Some(prefix.parse().unwrap()),
            ports,
        }
    }

    #[test]
    fn listeners_and_connections_match_the_rules() {
        let rules = [rule("127.0.0.1/32", PortSpec::List(vec![8443]))];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(listener_watched(&rules, (ip("0.0.0.0"), 8443)));
        assert!(listener_watched(&rules, (ip("::"), 8443)));
        assert!(listener_watched(&rules, (ip("127.0.0.1"), 8443)));
        assert!(!listener_watched(&rules, (ip("10.0.0.1"), 8443)));
        assert!(!listener_watched(&rules, (ip("0.0.0.0"), 8444)));
        assert!(addr_watched(&rules, (ip("::ffff:127.0.0.1"), 8443)));
        // An any-port rule does not make every wildcard listener a candidate.
        let any = [rule("10.0.0.0/8", PortSpec::Any)];
        assert!(!listener_watched(&any, (ip("0.0.0.0"), 22)));
        assert!(addr_watched(&any, (ip("10.1.1.1"), 22)));
    }

    #[test]
    fn failure_reasons_are_bounded_labels() {
        let labels: HashSet<&str> = TlsFailure::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(labels.len(), TlsFailure::ALL.len());
        let e = ProgramError::UProbeError(UProbeError::SymbolError {
            symbol: "SSL_read".into(),
            error: "not found".into(),
        });
        assert_eq!(classify(&e), TlsFailure::NoOpenssl);
    }
}
