//! Why live capture could not start, or an operation on it failed. The
//! host problems come first, each one sentence saying what to do.

use std::path::PathBuf;

use super::RuleError;

/// Why live capture could not start or an operation failed. The first group
/// are host problems with one sentence saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "rampwatch needs root or the capabilities CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON to load its kernel programs (missing: {missing}); run it as root or grant them"
    )]
    NotPermitted { missing: String },
    #[error(
        "no cgroup v2 hierarchy is mounted (none in /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup` or capture on interfaces only"
    )]
    NoCgroupV2,
    #[error("network interface `{0}` does not exist; check the name with `ip link`")]
    UnknownInterface(String),
    #[error(
        "the kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing); use a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf,
    #[error("kernel programs not built: run `cargo xtask setup` and rebuild")]
    NotBuilt,
    #[error("cannot open cgroup directory {path}: {source}; pass an existing cgroup v2 directory")]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid endpoint rules: {0}")]
    Rules(#[from] RuleError),
    #[error("loading the kernel object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("kernel program {name} could not be loaded or attached: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("kernel map {name} failed: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("kernel map {0} is missing from the kernel object; rebuild the agent")]
    MissingMap(&'static str),
    #[error("kernel program {0} is missing from the kernel object; rebuild the agent")]
    MissingProgram(&'static str),
    #[error("cannot watch the ring buffer for readiness: {0}")]
    RingWatch(#[source] std::io::Error),
    #[error(
        "cannot turn on kernel BPF run-time statistics (kernel.bpf_stats_enabled): {0}; it needs CAP_SYS_ADMIN"
    )]
    RunStats(#[source] aya::sys::SyscallError),
}

pub(super) fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> CaptureError {
    move |source| CaptureError::Map { name, source }
}

pub(super) fn prog_err(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> CaptureError {
    move |source| CaptureError::Program { name, source }
}
