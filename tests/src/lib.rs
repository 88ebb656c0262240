//! Test infrastructure for rampwatch's real-kernel integration tests.
//!
//! Everything here exists so that a test can say "run this real client in its
//! own cgroup (or network namespace), against this real server, and tell me
//! what the kernel actually carried", and compare that with what the capture
//! reported. Helpers panic with a clear message instead of returning errors:
//! a broken fixture is a failed test, and the message says which step broke.
//!
//! The tests themselves live in `tests/kernel/*.rs` (one binary, `kernel`);
//! they need root and run with `--test-threads=1` because they attach kernel
//! programs and capture on shared interfaces.

pub mod agent_proc;
pub mod canary;
pub mod cgroup;
pub mod contract;
pub mod harness;
pub mod http;
pub mod https;
pub mod netns;
pub mod nghttpd;
pub mod pcap;
pub mod prom;
pub mod records;
pub mod tcpdump;
pub mod tls;
pub mod tls_servers;
pub mod tools;
pub mod wait;

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

/// A name no other fixture of this process (or another test run) uses:
/// `rwt-<tag>-<pid>-<n>`. Keep `tag` short, interface names have 15 chars.
pub fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("rwt-{tag}-{}-{n}", std::process::id())
}

/// A fresh directory `<temp>/rwt-<tag>-…`, removed on drop.
pub struct TempDir {
    path: PathBuf,
    keep_var: Option<&'static str>,
}

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(unique_name(tag));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create temp dir {}: {e}", path.display()));
        Self {
            path,
            keep_var: None,
        }
    }

    /// Kept (and its path printed) when the environment variable `var` is
    /// set, to look at what a failed run left.
    pub fn kept_with(mut self, var: &'static str) -> Self {
        self.keep_var = Some(var);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep_var.is_some_and(|v| std::env::var_os(v).is_some()) {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A small number unique within this process, for /30 subnets and interface names.
pub fn unique_index() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// How many times a server told a port up front is started again on another
/// port when that one was taken in the meantime.
pub const PORT_ATTEMPTS: usize = 5;

/// Starts a server that must be told its port up front (`openssl
/// s_server`, the agent's metrics listener, Prometheus): a port from
/// [`free_port`] can be taken by another process between its release and the
/// server's bind, so `start` returns `None` when the server could not bind,
/// and another port is tried, up to [`PORT_ATTEMPTS`] times.
pub fn on_free_port<T>(
    ip: std::net::IpAddr,
    what: &str,
    mut start: impl FnMut(u16) -> Option<T>,
) -> T {
    for _ in 0..PORT_ATTEMPTS {
        if let Some(v) = start(free_port(ip)) {
            return v;
        }
        eprintln!("{what}: its port was taken before it could bind; trying another");
    }
    panic!("{what} could not bind any of {PORT_ATTEMPTS} free ports on {ip}");
}

/// A free TCP port on `ip`, found by binding port 0 and releasing it. Only
/// through [`on_free_port`], which retries when the port is taken before use.
fn free_port(ip: std::net::IpAddr) -> u16 {
    let listener = std::net::TcpListener::bind((ip, 0))
        .unwrap_or_else(|e| panic!("cannot bind an ephemeral port on {ip}: {e}"));
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
        .port()
}

/// Lowercase hex SHA-256 of `text`, computed by `sha256sum` so that the
/// fingerprints in test contracts do not come from the code under test.
pub fn sha256_hex(text: &str) -> String {
    use std::{
        io::Write as _,
        process::{Command, Stdio},
    };
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .expect("sha256sum's stdin")
                .write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .expect("sha256sum runs");
    assert!(out.status.success(), "sha256sum failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout)[..64].to_owned()
}
