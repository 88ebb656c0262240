//! Two network namespaces joined by a veth pair, for TC tests: the client
//! lives in one, the server in the other, and all traffic crosses the veth.
//! Addresses are 10.199.<n>.0/30 and fd00:199:<n>::/64, only inside these
//! namespaces. Everything is deleted on drop.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    process::{Command, Output},
};

#[derive(Debug)]
pub struct NetnsPair {
    pub client_ns: String,
    pub server_ns: String,
    /// veth end inside `client_ns`.
    pub client_if: String,
    /// veth end inside `server_ns`.
    pub server_if: String,
    pub client_v4: Ipv4Addr,
    pub server_v4: Ipv4Addr,
    pub client_v6: Ipv6Addr,
    pub server_v6: Ipv6Addr,
}

/// Run `ip` with `args`, panicking with its stderr if it fails.
pub fn ip(args: &[&str]) -> Output {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

impl NetnsPair {
    pub fn new() -> Self {
        let n = (std::process::id() + crate::unique_index()) % 250 + 1;
        let idx = crate::unique_index();
        let pid = std::process::id() % 100_000;
        let pair = Self {
            client_ns: crate::unique_name("c"),
            server_ns: crate::unique_name("s"),
            client_if: format!("rwc{pid}x{idx}"),
            server_if: format!("rws{pid}x{idx}"),
            client_v4: Ipv4Addr::new(10, 199, n as u8, 1),
            server_v4: Ipv4Addr::new(10, 199, n as u8, 2),
            client_v6: format!("fd00:199:{n:x}::1").parse().expect("valid v6"),
            server_v6: format!("fd00:199:{n:x}::2").parse().expect("valid v6"),
        };
        ip(&["netns", "add", &pair.client_ns]);
        // From here on Drop cleans up whatever was created.
        ip(&["netns", "add", &pair.server_ns]);
        ip(&[
            "-n",
            &pair.client_ns,
            "link",
            "add",
            &pair.client_if,
            "type",
            "veth",
            "peer",
            "name",
            &pair.server_if,
            "netns",
            &pair.server_ns,
        ]);
        for (ns, ifname, v4, v6) in [
            (
                &pair.client_ns,
                &pair.client_if,
                pair.client_v4,
                pair.client_v6,
            ),
            (
                &pair.server_ns,
                &pair.server_if,
                pair.server_v4,
                pair.server_v6,
            ),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/30"), "dev", ifname]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                ifname,
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", ifname, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    pub fn client_ip(&self, v6: bool) -> IpAddr {
        if v6 {
            self.client_v6.into()
        } else {
            self.client_v4.into()
        }
    }

    pub fn server_ip(&self, v6: bool) -> IpAddr {
        if v6 {
            self.server_v6.into()
        } else {
            self.server_v4.into()
        }
    }

    /// `ip netns exec <ns> <program>`.
    pub fn command_in(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }

    /// Move the calling thread into namespace `ns` (netns is per thread).
    /// Sockets, netlink requests and interface-name lookups made by this
    /// thread afterwards happen inside `ns`; threads it spawns inherit it.
    pub fn enter_thread(ns: &str) {
        let path = format!("/run/netns/{ns}");
        let f = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns with a valid namespace fd only changes this thread's
        // network namespace.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
    }
}

impl Default for NetnsPair {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth end inside it, and with it the peer.
        for ns in [&self.client_ns, &self.server_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
