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
pub mod harness;
pub mod http;
pub mod netns;
pub mod pcap;
pub mod prom;
pub mod records;
pub mod tcpdump;
pub mod tls;
pub mod tools;
pub mod wait;

use std::sync::atomic::{AtomicU32, Ordering};

/// A name no other fixture of this process (or another test run) uses:
/// `rwt-<tag>-<pid>-<n>`. Keep `tag` short, interface names have 15 chars.
pub fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("rwt-{tag}-{}-{n}", std::process::id())
}

/// A small number unique within this process, for /30 subnets and interface names.
pub fn unique_index() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A free TCP port on `ip`, found by binding port 0 and releasing it. Used for
/// external servers (`openssl s_server`) that must be told a port up front.
pub fn free_port(ip: std::net::IpAddr) -> u16 {
    let listener = std::net::TcpListener::bind((ip, 0))
        .unwrap_or_else(|e| panic!("cannot bind an ephemeral port on {ip}: {e}"));
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
        .port()
}

/// Path of a binary of this crate (`rw-helper`), next to the running test or
/// bench executable (`target/<profile>/deps/..` or `target/<profile>/..`).
pub fn helper_binary(name: &str) -> std::path::PathBuf {
    if let Some(p) = option_env_bin(name) {
        return p;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe has a parent").to_path_buf();
    for _ in 0..2 {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
        if !dir.pop() {
            break;
        }
    }
    panic!(
        "helper binary {name} not found next to {}; build it with `cargo build -p tests --bins`",
        exe.display()
    )
}

fn option_env_bin(name: &str) -> Option<std::path::PathBuf> {
    let var = format!("CARGO_BIN_EXE_{name}");
    std::env::var_os(var).map(Into::into)
}
