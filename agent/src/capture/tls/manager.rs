//! The probe manager's state and thread: candidates from /proc and the
//! kernel's triggers, attaching and detaching uprobes per process.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    num::NonZeroU32,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use agent_common::{TlsTrigger, program_names as pn, tls_trigger};
use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData, RingBuf},
    programs::{
        ProgramError, RawTracePoint, UProbe,
        raw_trace_point::RawTracePointLink,
        uprobe::{UProbeError, UProbeLink, UProbeScope},
    },
};

use super::{
    ProbedProcess, TlsCoverage, TlsFailure, TlsRole, lock,
    procfs::{self, SslSource},
    sites::{Site, SiteCache, Sites},
};
use crate::capture::{EndpointRule, PortSpec};

/// Where one probe goes: an exported symbol or a file offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    Symbol(&'static str),
    Offset(u64),
}

/// The attach points for a library's sites: program, place, required.
/// Required ones first, so a library without OpenSSL fails fast.
fn points(sites: Sites) -> Vec<(&'static str, At, bool)> {
    let mut v = Vec::with_capacity(8);
    match sites.read {
        // `SSL_read_ex`'s arguments and return convention.
        Site::Internal(off) => {
            v.push((pn::TLS_READ_EX, At::Offset(off), true));
            v.push((pn::TLS_READ_RET, At::Offset(off), true));
        }
        Site::Exported => {
            v.push((pn::TLS_READ, At::Symbol("SSL_read"), true));
            v.push((pn::TLS_READ_RET, At::Symbol("SSL_read"), true));
        }
    }
    match sites.write {
        Site::Internal(off) => v.push((pn::TLS_WRITE_EX, At::Offset(off), true)),
        Site::Exported => v.push((pn::TLS_WRITE, At::Symbol("SSL_write"), true)),
    }
    v.push((pn::TLS_SET_FD, At::Symbol("SSL_set_fd"), false));
    v.push((pn::TLS_FREE, At::Symbol("SSL_free"), false));
    if sites.read == Site::Exported {
        v.push((pn::TLS_READ_EX, At::Symbol("SSL_read_ex"), false));
        v.push((pn::TLS_READ_RET, At::Symbol("SSL_read_ex"), false));
    }
    if sites.write == Site::Exported {
        v.push((pn::TLS_WRITE_EX, At::Symbol("SSL_write_ex"), false));
    }
    v
}

pub(super) struct Probed {
    pub(super) comm: String,
    pub(super) library: PathBuf,
    pub(super) role: TlsRole,
    pub(super) links: Vec<UProbeLink>,
    pub(super) sites: Sites,
}

pub(super) struct State {
    pub(super) ebpf: Arc<Mutex<Ebpf>>,
    pub(super) procs: BpfHashMap<MapData, u32, u32>,
    /// `RW_TLS_AWAITING`: calls waiting for the syscall naming their socket.
    pub(super) awaiting: Array<MapData, u64>,
    pub(super) rules: Vec<EndpointRule>,
    pub(super) exclude: Vec<glob::Pattern>,
    pub(super) probed: HashMap<u32, Probed>,
    /// Pids not to retry until they exit or exec.
    pub(super) given_up: HashSet<u32>,
    pub(super) sys_enter: Option<RawTracePointLink>,
    pub(super) _triggers: Vec<RawTracePointLink>,
    pub(super) coverage: TlsCoverage,
    pub(super) rescan: bool,
    /// Addresses of every network namespace on the node, and when read.
    pub(super) node_addrs: HashSet<IpAddr>,
    pub(super) node_addrs_at: Option<Instant>,
    pub(super) sites: SiteCache,
}

/// The manager thread: triggers from the kernel, a slow rescan.
pub(super) fn run(
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
        .any(|r| !r.workload && port_in(&r.ports, port) && r.prefix.is_none_or(|p| p.contains(&ip)))
}

/// A listening socket: a wildcard address serves every address, so the
/// port alone decides; a concrete address must match. A workload rule's
/// port is enough either way: the kernel checks the caller's cgroup before
/// it copies a byte.
fn listener_watched(rules: &[EndpointRule], (ip, port): (IpAddr, u16)) -> bool {
    if rules.iter().any(|r| r.workload && port_in(&r.ports, port)) {
        return true;
    }
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
    pub(super) fn snapshot(&self) -> TlsCoverage {
        let mut c = self.coverage.clone();
        c.calls_awaiting_socket = self.awaiting.get(&0, 0).unwrap_or(0);
        c.processes = self
            .probed
            .iter()
            .map(|(&pid, p)| ProbedProcess {
                pid,
                comm: p.comm.clone(),
                library: p.library.clone(),
                role: p.role,
                probes: p.links.len() as u32,
                sites: p.sites.as_str(),
            })
            .collect();
        c.processes.sort_by_key(|p| p.pid);
        c
    }

    fn fail(&mut self, pid: u32, why: TlsFailure) {
        *self.coverage.failures.entry(why).or_default() += 1;
        self.given_up.insert(pid);
    }

    pub(super) fn trigger(&mut self, t: &TlsTrigger) {
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
    pub(super) fn scan(&mut self) {
        let pids = procfs::pids();
        self.node_addrs = procfs::node_addrs(&pids);
        self.node_addrs_at = Some(Instant::now());
        let locals = &self.node_addrs;
        let mut server = HashSet::new();
        let mut client = HashSet::new();
        procfs::each_tcp_socket(&pids, |s| {
            if (s.listening() && listener_watched(&self.rules, s.local))
                || (s.established() && addr_watched(&self.rules, s.local))
            {
                server.insert(s.inode);
            } else if s.established()
                && addr_watched(&self.rules, s.remote)
                && !procfs::is_local(s.remote.0, locals)
            {
                client.insert(s.inode);
            }
        });
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
        let sites = self.sites.sites(&target);
        let mut links = Vec::new();
        let mut failure = None;
        {
            let mut e = lock(&self.ebpf);
            for (name, at, required) in points(sites) {
                let scope = UProbeScope::OneProcess(npid);
                let r = match program::<UProbe>(&mut e, name) {
                    Some(p) => match at {
                        At::Symbol(s) => p.attach(s, &target, scope),
                        At::Offset(o) => p.attach(o, &target, scope),
                    }
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
        tracing::info!(pid, comm = %comm, library = %library.display(), probes = links.len(), sites = sites.as_str(), "TLS probes attached");
        self.probed.insert(
            pid,
            Probed {
                comm,
                library,
                role,
                links,
                sites,
            },
        );
        self.coverage.attached += 1;
        self.ensure_sys_enter();
    }

    pub(super) fn detach(&mut self, pid: u32) {
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
            workload: false,
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
