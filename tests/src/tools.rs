//! Preconditions every real-kernel test checks first, so that a missing tool
//! or missing privilege fails with one sentence instead of a confusing error
//! deep inside a fixture.

/// Debian packages that provide the tools below (installed by `cargo xtask`).
pub const APT_PACKAGES: &[&str] = &["curl", "openssl", "tcpdump", "iproute2", "bpftool"];

const TOOLS: &[&str] = &["curl", "openssl", "tcpdump", "ip", "bpftool"];

/// Panic unless we are root and all external tools the tests use exist.
pub fn require_tools() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the real-kernel tests must run as root (they load BPF programs, create cgroups and network namespaces); run them with `cargo xtask test`"
    );
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| which::which(t).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "missing tools {missing:?}; install the Debian packages {APT_PACKAGES:?} (`cargo xtask setup` does)"
    );
}
