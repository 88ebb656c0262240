//! What the TLS probes cover, as operators see it (`rampwatch status`,
//! metrics): probed processes, failures by a bounded reason, counters.

use std::{collections::BTreeMap, path::PathBuf};

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

impl TlsRole {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
        }
    }
}

/// One probed process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbedProcess {
    pub pid: u32,
    pub comm: String,
    /// The libssl (or executable) probed, as the process sees it.
    pub library: PathBuf,
    pub role: TlsRole,
    /// Uprobes attached (3 to 8: on OpenSSL's internal functions 3 to 5;
    /// on the exported ones the `_ex` calls, `SSL_set_fd` and `SSL_free`
    /// are optional).
    pub probes: u32,
    /// See `sites::Sites::as_str`.
    pub sites: &'static str,
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
    /// SSL calls waiting for the syscall that names their socket, machine
    /// wide (`RW_TLS_AWAITING`). Near 0 at rest; while it is 0 the
    /// `sys_enter` hook skips its hash lookup. A value that stays high
    /// means calls lost without their thread returning (the lookup is then
    /// paid again, no record is lost).
    pub calls_awaiting_socket: u64,
}
