//! nghttpd (nghttp2's server, Debian `nghttp2-server`) without TLS: the
//! h2c server of the HTTP/2 tests, in a test cgroup so the agent watches
//! its sockets.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    path::Path,
    process::{Child, Stdio},
    time::Duration,
};

use crate::{cgroup::CgroupGuard, on_free_port, wait::wait_until};

/// A running nghttpd serving a directory on 127.0.0.1; killed on drop.
pub struct Nghttpd(Child, pub SocketAddr);

impl Nghttpd {
    /// Starts nghttpd in `cgroup`, serving the files under `root`, on a
    /// free port (another is tried if one is taken meanwhile).
    pub fn start(cgroup: &CgroupGuard, root: &Path) -> Self {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        on_free_port(ip, "nghttpd", |port| {
            let child = cgroup
                .command("nghttpd")
                .args(["--no-tls", "-a", "127.0.0.1", "-d"])
                .arg(root)
                .arg(port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nghttpd (Debian package nghttp2-server)");
            let mut server = Self(child, SocketAddr::new(ip, port));
            let up = wait_until("nghttpd to listen or exit", Duration::from_secs(10), || {
                if TcpStream::connect(server.1).is_ok() {
                    return Some(true);
                }
                server.0.try_wait().ok().flatten().map(|_| false)
            });
            up.then_some(server)
        })
    }
}

impl Drop for Nghttpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
