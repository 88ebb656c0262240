//! `openssl s_server` as a real TLS endpoint, with a throwaway certificate.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::wait::wait_for;

/// A self-signed certificate and key in a temporary directory.
pub struct TestCert {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCert {
    pub fn generate() -> Self {
        let dir = std::env::temp_dir().join(crate::unique_name("cert"));
        std::fs::create_dir_all(&dir).expect("create cert dir");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args([
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=rampwatch.test",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl req");
        assert!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir, cert, key }
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `openssl s_server -www` on `addr`; answers `GET /` with a status page.
pub struct TlsServer {
    child: Child,
    pub addr: SocketAddr,
    _cert: TestCert,
}

impl TlsServer {
    /// Start on `addr` (a concrete port; see [`crate::free_port`]), inside
    /// network namespace `netns` if given.
    pub fn start(addr: SocketAddr, netns: Option<&str>) -> Self {
        let cmd = match netns {
            Some(ns) => crate::netns::NetnsPair::command_in(ns, "openssl"),
            None => Command::new("openssl"),
        };
        Self::spawn(cmd, addr)
    }

    /// Start on `addr` in `cgroup`, so its sockets (and its TLS library
    /// calls) are in the agent's watched subtree.
    pub fn start_in(addr: SocketAddr, cgroup: &crate::cgroup::CgroupGuard) -> Self {
        Self::spawn(cgroup.command("openssl"), addr)
    }

    fn spawn(mut cmd: Command, addr: SocketAddr) -> Self {
        let cert = TestCert::generate();
        cmd.args(["s_server", "-www", "-accept"])
            .arg(addr.to_string())
            .arg("-cert")
            .arg(&cert.cert)
            .arg("-key")
            .arg(&cert.key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn openssl s_server");
        let seen = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("piped stdout");
        let sink = Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().expect("stdout buffer").push_str(&line);
            }
        });
        wait_for(
            "openssl s_server to accept",
            Duration::from_secs(10),
            || seen.lock().expect("stdout buffer").contains("ACCEPT"),
        );
        Self {
            child,
            addr,
            _cert: cert,
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
