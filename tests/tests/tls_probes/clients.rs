//! Clients the agent probes: their server is off the node as far as the
//! agent can tell.

use std::{
    io::BufRead,
    net::SocketAddr,
    process::{Child, Command, Stdio},
};

use agent::{capture::TlsRole, event::FlowId};
use tests::{
    netns::NetnsPair,
    tls::TestCert,
    tls_servers::{PYTHON, require_tls_tools},
};

use crate::{
    check_exact, check_no_call_awaiting, check_requests, servers::PY_ECHO_SERVER, tls_capture,
    wait_probed,
};

/// Prepended to [`PY_ECHO_SERVER`]: its listening socket is made in network
/// namespace `argv[1]` while the process stays in the agent's. No process is
/// in that namespace, so the agent does not count its addresses as the
/// node's and probes the clients that call it, as it would for a server on
/// another node.
const PY_OFF_NODE: &str = r#"
import ctypes, os, socket, sys
_ns = sys.argv.pop(1)
_libc = ctypes.CDLL(None, use_errno=True)
_create = socket.create_server
def _create_there(*a, **k):
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    there = os.open("/run/netns/" + _ns, os.O_RDONLY)
    assert _libc.setns(there, 0x40000000) == 0, ctypes.get_errno()
    try:
        return _create(*a, **k)
    finally:
        assert _libc.setns(home, 0x40000000) == 0, ctypes.get_errno()
socket.create_server = _create_there
"#;

/// Kills the server when the test ends, passed or not (a leaked server
/// would keep the test's files and locks open).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// curl as a probed client, a new connection for every request. curl uses
/// its own BIO (no `SSL_set_fd`), so each connection's fd comes from the
/// syscall its first SSL call makes, and a new connection usually gets the
/// freed `SSL*`'s address (`SSL_free` forgets the old fd). Every request
/// made once the probes are on is seen once, on its own connection, and no
/// call is left waiting for its socket.
#[test]
fn tls_probed_curl_client_with_a_connection_per_request() {
    require_tls_tools();
    let pair = NetnsPair::new();
    let addr = SocketAddr::new(pair.server_ip(false), 8443);
    let cert = TestCert::generate();
    let mut server = Server(
        Command::new(PYTHON)
            .arg("-c")
            .arg(format!("{PY_OFF_NODE}{PY_ECHO_SERVER}"))
            .arg(&pair.server_ns)
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(&cert.cert)
            .arg(&cert.key)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the server"),
    );
    let mut line = String::new();
    std::io::BufReader::new(server.0.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("read from the server");
    assert_eq!(line.trim(), "listening");
    let (cg, mut h) = tls_capture("tlscl", addr);
    // Ten requests, two a second: the probes attach while the first
    // connections are made (curl is probed when it connects).
    let url = format!("https://{addr}/cl");
    let mut cmd = cg.command("ip");
    cmd.args(["netns", "exec", &pair.client_ns, "curl", "-sk"])
        .args(["--max-time", "20", "--rate", "2/s"])
        .args(["-H", "Connection: close"])
        .args(["-w", "%{local_port} %{http_code}\\n"]);
    for _ in 0..10 {
        cmd.args(["-o", "/dev/null"]).arg(&url);
    }
    // `ip netns exec` execs curl: the same pid.
    let client = cmd.stdout(Stdio::piped()).spawn().expect("run curl");
    let pid = client.id();
    let cov = wait_probed(&h, &[pid]);
    let p = cov.processes.iter().find(|p| p.pid == pid).expect("probed");
    assert_eq!(p.role, TlsRole::Client, "{cov:?}");
    let out = client.wait_with_output().expect("curl ends");
    assert!(out.status.success(), "curl: {:?}", out.status);
    let runs: Vec<(u16, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (port, status) = l.split_once(' ')?;
            Some((port.parse().ok()?, status.to_owned()))
        })
        .collect();
    assert_eq!(runs.len(), 10, "{runs:?}");
    assert!(runs.iter().all(|(_, s)| s == "200"), "{runs:?}");
    let ports: std::collections::HashSet<u16> = runs.iter().map(|r| r.0).collect();
    assert_eq!(ports.len(), 10, "one connection per request: {runs:?}");
    // The last four started at least three seconds after the first, long
    // after the probes were on.
    for (port, _) in &runs[6..] {
        let f = FlowId {
            client: SocketAddr::new(pair.client_ip(false), *port),
            server: addr,
        };
        check_requests(&mut h, f, 1, "/cl", &[pid]);
        check_exact(&mut h, f, 1);
    }
    assert!(h.tls_coverage().late_clients >= 1);
    check_no_call_awaiting(&h);
}
