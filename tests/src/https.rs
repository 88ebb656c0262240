//! HTTPS servers and clients for the tests of the TLS plaintext path:
//! python's `ssl` module (it calls `SSL_read_ex`/`SSL_write_ex` on the
//! system OpenSSL) serving HTTP/1.1 keep-alive, and curl (`SSL_read` /
//! `SSL_write` through its own BIO) as the client.

use std::{
    io::{BufRead, BufReader},
    net::{IpAddr, SocketAddr},
    process::{Child, Command, Stdio},
};

use crate::{cgroup::CgroupGuard, tls::TestCert, tls_servers::PYTHON};

/// HTTP/1.1 over TLS: 200 with body `ok` for every path, except 401 for
/// paths under `/deny`, 429 under `/throttle`, and an N-byte body (one
/// `SSL_write_ex` call) for `/big/N`. Threaded: one thread per connection.
/// A fourth argument `plain` serves the same without TLS.
const PY_SERVER: &str = r#"
import http.server, socket, ssl, sys
host, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
plain = sys.argv[4:] == ["plain"]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        code = 401 if self.path.startswith("/deny") else 429 if self.path.startswith("/throttle") else 200
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        body = b"ok"
        if self.path.startswith("/big/"):
            body = b"x" * int(self.path.split("/")[2].split("?")[0])
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_POST = do_GET
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    daemon_threads = True
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = Server((host, 0), Handler)
if not plain:
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// A python `ssl` HTTPS server on `ip`, port chosen by the kernel (or the
/// same server in plain HTTP, [`PyHttpsServer::start_plain`]).
pub struct PyHttpsServer {
    child: Child,
    pub addr: SocketAddr,
    tls: bool,
    _cert: TestCert,
}

impl PyHttpsServer {
    /// Starts the server in `cgroup` (so its sockets are watched there).
    pub fn start(ip: IpAddr, cgroup: &CgroupGuard) -> Self {
        Self::spawn(cgroup.command(PYTHON), ip, true)
    }

    /// Starts the server in the test's own cgroup.
    pub fn start_here(ip: IpAddr) -> Self {
        Self::spawn(Command::new(PYTHON), ip, true)
    }

    /// The same server over plain HTTP/1.1, in `cgroup`.
    pub fn start_plain(ip: IpAddr, cgroup: &CgroupGuard) -> Self {
        Self::spawn(cgroup.command(PYTHON), ip, false)
    }

    /// `cmd` runs Debian's python3, whose `ssl` links the system libssl.
    fn spawn(mut cmd: Command, ip: IpAddr, tls: bool) -> Self {
        let cert = TestCert::generate();
        let mut child = cmd
            .arg("-c")
            .arg(PY_SERVER)
            .arg(ip.to_string())
            .arg(&cert.cert)
            .arg(&cert.key)
            .args((!tls).then_some("plain"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the python HTTPS server");
        let out = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .expect("read the server's port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the python HTTPS server printed {line:?}, not its port"));
        Self {
            child,
            addr: SocketAddr::new(ip, port),
            tls,
            _cert: cert,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `https://<addr><path>` (`http://` for a plain server).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        match self.addr {
            SocketAddr::V4(a) => format!("{scheme}://{a}{path}"),
            SocketAddr::V6(a) => format!("{scheme}://[{}]:{}{path}", a.ip(), a.port()),
        }
    }
}

impl Drop for PyHttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// curl in `cgroup` over one keep-alive HTTP/1.1 connection for every URL,
/// certificate checks off (the server's is self-signed); returns the HTTP
/// status codes in order.
pub fn curl_https(cgroup: &CgroupGuard, token: Option<&str>, urls: &[String]) -> Vec<u16> {
    let mut cmd: Command = cgroup.command("curl");
    cmd.args(["-sk", "--http1.1", "--max-time", "20"]);
    cmd.args(["-o", "/dev/null", "-w", "%{http_code}\\n"]);
    if let Some(t) = token {
        cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    for (i, u) in urls.iter().enumerate() {
        if i > 0 {
            // Each URL after the first needs its own -o, or its body lands
            // on stdout between the status codes.
            cmd.args(["-o", "/dev/null"]);
        }
        cmd.arg(u);
    }
    let out = cmd.stderr(Stdio::inherit()).output().expect("curl runs");
    assert!(
        out.status.success(),
        "curl {urls:?} failed: {:?}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}
