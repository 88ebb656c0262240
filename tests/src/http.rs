//! A minimal HTTP/1.1 keep-alive server and client. They count exactly what
//! they wrote and read, which is the payload ground truth for the tests.
//! Also curl in a cgroup, for tests of the live agent that want a real
//! third-party client.

use std::{
    ffi::OsStr,
    fmt::Debug,
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// What the server saw on one connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
    pub peer: Option<SocketAddr>,
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub closed: bool,
}

/// A keep-alive HTTP/1.1 server on its own threads; answers every request
/// with `200 OK` and a body of `body_len` bytes.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<ConnStats>>>,
    accept: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Bind `bind` (port 0 for an ephemeral port) and serve.
    pub fn start(bind: SocketAddr, body_len: usize) -> Self {
        let listener =
            TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind HTTP server on {bind}: {e}"));
        let addr = listener.local_addr().expect("local_addr");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (stop2, conns2) = (Arc::clone(&stop), Arc::clone(&conns));
        let accept = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        let idx = {
                            let mut c = conns2.lock().expect("conn stats");
                            c.push(ConnStats {
                                peer: Some(peer),
                                ..ConnStats::default()
                            });
                            c.len() - 1
                        };
                        let conns3 = Arc::clone(&conns2);
                        std::thread::spawn(move || serve_conn(stream, body_len, &conns3, idx));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self {
            addr,
            stop,
            conns,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Per-connection statistics, in accept order.
    pub fn connections(&self) -> Vec<ConnStats> {
        self.conns.lock().expect("conn stats").clone()
    }

    /// The connection from `peer`, if accepted.
    pub fn connection(&self, peer: SocketAddr) -> Option<ConnStats> {
        self.connections()
            .into_iter()
            .find(|c| c.peer == Some(peer))
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve_conn(mut s: TcpStream, body_len: usize, conns: &Mutex<Vec<ConnStats>>, idx: usize) {
    let _ = s.set_nodelay(true);
    let body = vec![b'x'; body_len];
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {body_len}\r\n\r\n"
    )
    .into_bytes();
    response.extend_from_slice(&body);
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 16384];
    let update = |f: &mut dyn FnMut(&mut ConnStats)| {
        if let Some(c) = conns.lock().expect("conn stats").get_mut(idx) {
            f(c);
        }
    };
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        update(&mut |c| c.bytes_in += n as u64);
        buf.extend_from_slice(&chunk[..n]);
        let mut close = false;
        // Answer every complete request head in the buffer (GET-style, no body).
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = buf.drain(..end + 4).collect::<Vec<u8>>();
            close |= contains_ci(&head, b"connection: close");
            if s.write_all(&response).is_err() {
                close = true;
                break;
            }
            update(&mut |c| {
                c.requests += 1;
                c.bytes_out += response.len() as u64;
            });
        }
        if close {
            let _ = s.shutdown(Shutdown::Write);
            // The server closes first here: read on until the peer's FIN so
            // the connection ends with FIN/ACK, not with a reset.
            while matches!(s.read(&mut chunk), Ok(n) if n > 0) {}
            break;
        }
    }
    update(&mut |c| c.closed = true);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// What the client sent and received on its one connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientReport {
    pub local: Option<SocketAddr>,
    pub requests: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl ClientReport {
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "local": self.local.map(|a| a.to_string()),
            "requests": self.requests,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
        })
        .to_string()
    }

    pub fn from_json(s: &str) -> Self {
        let v: serde_json::Value =
            serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("client report {s:?}: {e}"));
        Self {
            local: v["local"].as_str().and_then(|a| a.parse().ok()),
            requests: v["requests"].as_u64().unwrap_or(0),
            bytes_sent: v["bytes_sent"].as_u64().unwrap_or(0),
            bytes_received: v["bytes_received"].as_u64().unwrap_or(0),
        }
    }
}

/// Send `requests` GET requests one after the other on one keep-alive
/// connection, reading each full response, then close (client FIN first).
pub fn run_client(server: SocketAddr, requests: u64, path: &str) -> std::io::Result<ClientReport> {
    run_client_with(server, requests, path, false)
}

/// Like [`run_client`]; with `abort` the client ends the connection with a
/// reset (SO_LINGER 0, then close) instead of a FIN.
pub fn run_client_with(
    server: SocketAddr,
    requests: u64,
    path: &str,
    abort: bool,
) -> std::io::Result<ClientReport> {
    let mut s = TcpStream::connect(server)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut report = ClientReport {
        local: Some(s.local_addr()?),
        ..ClientReport::default()
    };
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: rampwatch.test\r\nUser-Agent: rw-helper\r\n\r\n");
    let mut buf = Vec::with_capacity(16384);
    let mut chunk = [0u8; 16384];
    for _ in 0..requests {
        s.write_all(req.as_bytes())?;
        report.bytes_sent += req.len() as u64;
        report.requests += 1;
        // Read one response: head, then Content-Length bytes of body.
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    buf.drain(..end + 4 + len);
                    break;
                }
            }
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "server closed mid-response",
                ));
            }
            report.bytes_received += n as u64;
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    if abort {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on our own open socket with a correctly sized value.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        drop(s); // close with linger 0: RST
        return Ok(report);
    }
    s.shutdown(Shutdown::Write)?;
    // Wait for the server's FIN so the connection closes in the usual order.
    while s.read(&mut chunk)? > 0 {}
    Ok(report)
}

/// `curl -sf` from inside `cg`, every URL on one keep-alive connection, with
/// `Authorization: Bearer <token>` when given; panics unless curl succeeds.
pub fn curl_in(
    cg: &crate::cgroup::CgroupGuard,
    token: Option<&str>,
    urls: &[impl AsRef<OsStr> + Debug],
) {
    let mut cmd = cg.command("curl");
    cmd.args(["-sf", "-o", "/dev/null", "--max-time", "10"]);
    if let Some(t) = token {
        cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    // `-o` covers the first URL only; the other bodies would land on the
    // test's terminal.
    let status = cmd
        .args(urls)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("curl runs");
    assert!(status.success(), "curl {urls:?} failed: {status}");
}
