//! Real HTTPS servers and clients linked against the system OpenSSL, for
//! the TLS probe tests: Debian's nginx (libssl 3) and python3's `ssl`
//! module (server with worker threads, keep-alive and pipelining clients).

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use crate::{TempDir, tls::TestCert, wait::wait_for};

/// Debian's python3 (its `_ssl` links the system libssl.so.3).
pub const PYTHON: &str = "/usr/bin/python3";

/// [`crate::tools::require_tools`] plus what the TLS probe tests run:
/// Debian's nginx and python3 (both linked against the system libssl).
pub fn require_tls_tools() {
    crate::tools::require_tools();
    let missing: Vec<&str> = ["nginx", PYTHON]
        .into_iter()
        .filter(|t| which::which(t).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}; install the Debian packages nginx and python3 (`cargo xtask setup` does)"
    );
}

/// `host:port` for URLs (IPv6 in brackets).
pub fn url_host(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) {
    wait_for(what, Duration::from_secs(15), || {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("{what}: exited early with {st}");
        }
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
}

/// nginx serving HTTPS on `addr` (HTTP/1.1, or with [`Nginx::start_h2`]
/// HTTP/2 by ALPN too), `return 200` for every path.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    dir: TempDir,
    _cert: TestCert,
}

impl Nginx {
    pub fn start(addr: SocketAddr, workers: u32) -> Self {
        Self::start_with(addr, workers, "ssl")
    }

    /// nginx offering `h2` by ALPN (`listen … ssl http2`), HTTP/1.1 to
    /// clients that do not ask for it.
    pub fn start_h2(addr: SocketAddr, workers: u32) -> Self {
        Self::start_with(addr, workers, "ssl http2")
    }

    fn start_with(addr: SocketAddr, workers: u32, listen_opts: &str) -> Self {
        let cert = TestCert::generate();
        let dir = TempDir::new("nginx");
        let d = dir.path().display().to_string();
        let listen = match addr {
            SocketAddr::V4(a) => a.to_string(),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        };
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes {workers};\npid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             keepalive_requests 100000;\n\
             server {{\n  listen {listen} {listen_opts};\n  ssl_certificate {};\n  ssl_certificate_key {};\n\
             location / {{ return 200 \"ok\\n\"; }}\n }}\n}}\n",
            cert.cert.display(),
            cert.key.display()
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        let mut cmd = Command::new("nginx");
        // The workers outlive a killed master: they must not inherit fds
        // of this process (`flock`'s lock fd among them, which would hold
        // the kernel-test lock for as long as they live).
        // SAFETY: close_range is async-signal-safe and touches no memory.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                // Its own process group, which the workers stay in: one
                // kill(2) ends them all.
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        let mut child = cmd
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        wait_listening(addr, &mut child, "nginx to listen");
        // The master listens before it forks the workers.
        let master = child.id();
        wait_for("nginx's workers", Duration::from_secs(15), || {
            children(master).len() == workers as usize
        });
        Self {
            child,
            addr,
            dir,
            _cert: cert,
        }
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The worker processes' pids (children of the master).
    pub fn workers(&self) -> Vec<u32> {
        children(self.child.id())
    }

    pub fn error_log(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // The whole process group (master and workers): a master killed
        // alone would leave its workers running, and one killed after its
        // workers could fork new ones.
        // SAFETY: plain kill(2) of the group this fixture started.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Pids whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 2..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// A python client: `n` requests on one keep-alive connection (each
/// response read before the next request), or all `n` written at once
/// (`pipelined`), `path` with `?i=<index>`. Prints the local port first,
/// then one status per response.
const PY_CLIENT: &str = r#"
import socket, ssl, sys
host, port, n, path, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
raw = socket.create_connection((host, port))
s = ctx.wrap_socket(raw, server_hostname="rampwatch.test")
print(s.getsockname()[1], flush=True)
f = s.makefile("rb")
def req(i):
    return f"GET {path}?i={i} HTTP/1.1\r\nHost: rampwatch.test\r\nUser-Agent: rw-test\r\n\r\n".encode()
def read_response():
    status = f.readline()
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    f.read(length)
    return status.split()[1].decode()
if mode == "wait":
    # Connected and handshaken: wait for the test to say go.
    sys.stdin.readline()
    mode = "serial"
if mode == "pipelined":
    s.sendall(b"".join(req(i) for i in range(n)))
    for _ in range(n):
        print(read_response(), flush=True)
else:
    for i in range(n):
        s.sendall(req(i))
        print(read_response(), flush=True)
s.close()
"#;

/// A python client that connects (TLS handshake included), reports its
/// port and waits for [`WaitingClient::go`] before it sends `n` requests.
pub struct WaitingClient {
    child: Child,
    pub local_port: u16,
}

impl WaitingClient {
    /// `cmd` is a prepared `Command` that runs [`PYTHON`] (in a cgroup, a
    /// network namespace).
    pub fn connect(mut cmd: Command, server: SocketAddr, n: u32, path: &str) -> Self {
        let mut child = cmd
            .arg("-c")
            .arg(PY_CLIENT)
            .arg(server.ip().to_string())
            .arg(server.port().to_string())
            .arg(n.to_string())
            .arg(path)
            .arg("wait")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn python client");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().expect("stdout")),
            &mut line,
        )
        .expect("read the client's port");
        let local_port = line.trim().parse().expect("client printed its port");
        Self { child, local_port }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the requests and waits for the client to finish; the statuses.
    pub fn go(mut self) -> Vec<String> {
        use std::io::Write as _;
        let mut stdin = self.child.stdin.take().expect("stdin");
        stdin.write_all(b"go\n").expect("tell the client to go");
        drop(stdin);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut self.child.stdout.take().expect("stdout"), &mut text)
            .expect("read the client's statuses");
        let status = self.child.wait().expect("wait for the client");
        assert!(status.success(), "python client failed: {status}");
        text.lines().map(str::to_owned).collect()
    }
}

impl Drop for WaitingClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a python client run did.
#[derive(Debug)]
pub struct PyClientRun {
    pub local_port: u16,
    pub statuses: Vec<String>,
}

/// Runs the python client against `server`; `cmd` is a prepared
/// `Command` for [`PYTHON`] (e.g. one that joins a cgroup).
pub fn py_client(
    mut cmd: Command,
    server: SocketAddr,
    n: u32,
    path: &str,
    pipelined: bool,
) -> PyClientRun {
    let out: Output = cmd
        .arg("-c")
        .arg(PY_CLIENT)
        .arg(server.ip().to_string())
        .arg(server.port().to_string())
        .arg(n.to_string())
        .arg(path)
        .arg(if pipelined { "pipelined" } else { "serial" })
        .stdin(Stdio::null())
        .output()
        .expect("run python client");
    assert!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let local_port = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("client printed its port");
    PyClientRun {
        local_port,
        statuses: lines.map(str::to_owned).collect(),
    }
}

/// curl: `n` requests to `path` on one keep-alive connection (the same URL
/// repeated); returns curl's local port and the statuses.
pub fn curl(mut cmd: Command, server: SocketAddr, n: u32, path: &str) -> PyClientRun {
    let url = format!("https://{}{path}", url_host(server));
    cmd.args(["-sk", "--max-time", "20"])
        .args(["-w", "%{local_port} %{http_code}\\n"]);
    for _ in 0..n {
        cmd.args(["-o", "/dev/null"]).arg(&url);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("run curl");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut port = 0;
    let statuses = text
        .lines()
        .filter_map(|l| {
            let (p, s) = l.split_once(' ')?;
            port = p.parse().ok()?;
            Some(s.to_owned())
        })
        .collect();
    PyClientRun {
        local_port: port,
        statuses,
    }
}
