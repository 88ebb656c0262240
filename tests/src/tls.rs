//! `openssl s_server` as a real TLS endpoint, with a throwaway certificate.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::wait::wait_until;

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
    /// Start on a free port of `ip` (retried if the port is taken first).
    pub fn start_on(ip: std::net::IpAddr) -> Self {
        crate::on_free_port(ip, "openssl s_server", |port| {
            Self::try_start(Command::new("openssl"), SocketAddr::new(ip, port))
        })
    }

    /// Start on `addr` (a concrete port), inside network namespace `netns`
    /// if given.
    pub fn start(addr: SocketAddr, netns: Option<&str>) -> Self {
        let cmd = match netns {
            Some(ns) => crate::netns::NetnsPair::command_in(ns, "openssl"),
            None => Command::new("openssl"),
        };
        Self::try_start(cmd, addr)
            .unwrap_or_else(|| panic!("openssl s_server could not listen on {addr}"))
    }

    /// `cmd` (openssl) as `s_server` on `addr`; `None` when it exits
    /// before accepting (the port is taken).
    fn try_start(mut cmd: Command, addr: SocketAddr) -> Option<Self> {
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
        let accepting = wait_until(
            "openssl s_server to accept or exit",
            Duration::from_secs(10),
            || {
                if seen.lock().expect("stdout buffer").contains("ACCEPT") {
                    return Some(true);
                }
                child.try_wait().ok().flatten().map(|_| false)
            },
        );
        if !accepting {
            return None;
        }
        Some(Self {
            child,
            addr,
            _cert: cert,
        })
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
