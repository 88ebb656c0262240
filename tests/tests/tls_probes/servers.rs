//! Servers probed before and after the capture starts, worker processes
//! and threads, keep-alive, pipelining, fds closed and reused.

use std::net::SocketAddr;

use agent::{
    capture::TlsRole,
    event::{Direction, Event},
};
use tests::{
    https::PyHttpsServer,
    on_free_port,
    tls_servers::{Nginx, PYTHON, WaitingClient, curl, py_client, require_tls_tools},
};

use crate::{
    check_exact, check_no_call_awaiting, check_requests, flow, loopback, plaintext, tls_capture,
    wait_probed,
};

/// nginx with two workers (two processes sharing one libssl), started
/// before the capture; curl makes `n` keep-alive requests.
fn nginx_before_capture_curl(v6: bool) {
    require_tls_tools();
    let ip = loopback(v6);
    let nginx = on_free_port(ip, "Nginx", |port| {
        Some(Nginx::start(SocketAddr::new(ip, port), 2))
    });
    let workers = nginx.workers();
    assert_eq!(workers.len(), 2, "nginx workers: {workers:?}");
    let (cg, mut h) = tls_capture("tlsng", nginx.addr);
    let mut pids = workers.clone();
    pids.push(nginx.pid());
    let cov = wait_probed(&h, &pids);
    for p in &cov.processes {
        assert_eq!(p.role, TlsRole::Server);
        assert!(p.library.ends_with("libssl.so.3"), "{:?}", p.library);
        // OpenSSL 3.0 (these machines): the shared internal functions, so
        // read, its return, write, SSL_set_fd and SSL_free.
        assert_eq!((p.sites, p.probes), ("internal", 5), "probes on {}", p.pid);
    }
    let run = curl(cg.command("curl"), nginx.addr, 5, "/ng/keepalive");
    assert_eq!(run.statuses, vec!["200"; 5]);
    let f = flow(nginx.addr, run.local_port);
    check_requests(&mut h, f, 5, "/ng/keepalive", &workers);
    check_exact(&mut h, f, 5);
    check_no_call_awaiting(&h);
    // curl called a server on this node: not probed, counted as skipped.
    let cov = h.tls_coverage();
    assert!(cov.local_clients_skipped >= 1, "{cov:?}");
    assert!(
        cov.processes.iter().all(|p| pids.contains(&p.pid)),
        "{cov:?}"
    );
}

#[test]
fn tls_nginx_before_capture_curl_keepalive_v4() {
    nginx_before_capture_curl(false);
}

#[test]
fn tls_nginx_before_capture_curl_keepalive_v6() {
    nginx_before_capture_curl(true);
}

/// A server started after the capture is probed from the LISTEN trigger
/// (its workers from the fork trigger or the rescan that follows).
#[test]
fn tls_nginx_started_after_capture_is_probed() {
    require_tls_tools();
    let ip = loopback(false);
    let addr = on_free_port(ip, "a later server", |port| Some(SocketAddr::new(ip, port)));
    let (cg, mut h) = tls_capture("tlsafter", addr);
    let nginx = Nginx::start(addr, 2);
    let workers = nginx.workers();
    let mut pids = workers.clone();
    pids.push(nginx.pid());
    wait_probed(&h, &pids);
    let run = py_client(cg.command(PYTHON), addr, 7, "/after", false);
    assert_eq!(run.statuses, vec!["200"; 7]);
    let f = flow(addr, run.local_port);
    check_requests(&mut h, f, 7, "/after", &workers);
    check_exact(&mut h, f, 7);
}

/// python's `ssl` server (SSL_read_ex/SSL_write_ex, a thread per
/// connection), several connections one after the other: the server's fds
/// are closed and reused, and each connection's plaintext joins its own flow.
fn python_server_threads(v6: bool) {
    require_tls_tools();
    let ip = loopback(v6);
    let server = PyHttpsServer::start_here(ip);
    let (cg, mut h) = tls_capture("tlspy", server.addr);
    wait_probed(&h, &[server.pid()]);
    let mut flows = Vec::new();
    for round in 0..3u32 {
        let n = 2 + round;
        let run = py_client(cg.command(PYTHON), server.addr, n, "/py/thread", false);
        assert_eq!(run.statuses.len(), n as usize);
        let f = flow(server.addr, run.local_port);
        check_requests(&mut h, f, u64::from(n), "/py/thread", &[server.pid()]);
        flows.push((f, n));
    }
    for (f, n) in flows {
        check_exact(&mut h, f, u64::from(n));
    }
    let run = curl(cg.command("curl"), server.addr, 3, "/py/curl");
    let f = flow(server.addr, run.local_port);
    check_requests(&mut h, f, 3, "/py/curl", &[server.pid()]);
    check_exact(&mut h, f, 3);
    check_no_call_awaiting(&h);
}

#[test]
fn tls_python_server_threads_and_reused_fds_v4() {
    python_server_threads(false);
}

#[test]
fn tls_python_server_threads_and_reused_fds_v6() {
    python_server_threads(true);
}

/// Pipelined requests written at once reach nginx in one SSL_read: the
/// plaintext holds every head, and the kernel counts one start per call
/// that begins with a method (as the wire path does per segment).
#[test]
fn tls_pipelined_requests_in_one_read() {
    require_tls_tools();
    let ip = loopback(false);
    let nginx = on_free_port(ip, "Nginx", |port| {
        Some(Nginx::start(SocketAddr::new(ip, port), 1))
    });
    let (cg, mut h) = tls_capture("tlspipe", nginx.addr);
    let workers = nginx.workers();
    wait_probed(&h, &workers);
    let run = py_client(cg.command(PYTHON), nginx.addr, 4, "/pipe", true);
    assert_eq!(run.statuses, vec!["200"; 4]);
    let f = flow(nginx.addr, run.local_port);
    h.wait_events(
        "the plaintext of the 4 responses",
        crate::EVENT_TIMEOUT,
        |evs| {
            let down: Vec<u8> = evs
                .iter()
                .filter_map(|e| match e {
                    Event::Plaintext(p) if p.flow == f && p.direction == Direction::ToClient => {
                        Some(p.data.to_vec())
                    }
                    _ => None,
                })
                .flatten()
                .collect();
            String::from_utf8_lossy(&down)
                .matches("HTTP/1.1 200")
                .count()
                == 4
        },
    );
    let up = plaintext(&h, f, Direction::ToServer);
    assert!(
        up.iter().any(|p| String::from_utf8_lossy(&p.data)
            .matches("GET /pipe")
            .count()
            == 4),
        "no single read held the 4 pipelined heads"
    );
    let calls_with_method = up.iter().filter(|p| p.data.starts_with(b"GET ")).count() as u64;
    check_exact(&mut h, f, calls_with_method);
}

/// A keep-alive connection opened (and its handshake done, `SSL_set_fd`
/// called) before the capture started: its fd comes from the syscalls
/// the server's SSL calls make, and its later requests are counted exactly.
#[test]
fn tls_connection_older_than_the_capture_is_joined() {
    require_tls_tools();
    let ip = loopback(false);
    let nginx = on_free_port(ip, "Nginx", |port| {
        Some(Nginx::start(SocketAddr::new(ip, port), 1))
    });
    let cg = tests::cgroup::CgroupGuard::new("tlsold");
    let client = WaitingClient::connect(cg.command(PYTHON), nginx.addr, 4, "/old");
    let h = tests::harness::Harness::start(
        tests::harness::Attach::Cgroup(cg.path().into()),
        &[tests::harness::Endpoint::exact(nginx.addr)],
        crate::tls_tuning(),
    );
    let mut h = h;
    let workers = nginx.workers();
    wait_probed(&h, &workers);
    let f = flow(nginx.addr, client.local_port);
    assert_eq!(client.go(), vec!["200"; 4]);
    check_requests(&mut h, f, 4, "/old", &workers);
    check_exact(&mut h, f, 4);
    check_no_call_awaiting(&h);
}

/// A server in another network namespace of this node (a pod, say) and
/// its client: the server is probed, the client is not (its server is on
/// this node, whatever the address), so each request is seen once.
#[test]
fn tls_client_of_a_server_in_another_netns_is_not_probed() {
    require_tls_tools();
    let pair = tests::netns::NetnsPair::new();
    let addr = SocketAddr::new(pair.server_ip(false), 8443);
    let cert = tests::tls::TestCert::generate();
    let mut server = tests::netns::NetnsPair::command_in(&pair.server_ns, PYTHON)
        .args(["-c", PY_ECHO_SERVER])
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(&cert.cert)
        .arg(&cert.key)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.as_mut().expect("stdout")),
        &mut line,
    )
    .expect("read from the server");
    assert_eq!(line.trim(), "listening");
    let (cg, mut h) = tls_capture("tlsns", addr);
    wait_probed(&h, &[server.id()]);
    let mut cmd = cg.command("ip");
    cmd.args(["netns", "exec", &pair.client_ns, PYTHON]);
    let client = WaitingClient::connect(cmd, addr, 3, "/netns");
    let f = agent::event::FlowId {
        client: SocketAddr::new(pair.client_ip(false), client.local_port),
        server: addr,
    };
    let client_pid = client.pid();
    assert_eq!(client.go(), vec!["200"; 3]);
    check_requests(&mut h, f, 3, "/netns", &[server.id()]);
    check_exact(&mut h, f, 3);
    let cov = h.tls_coverage();
    assert!(cov.processes.iter().all(|p| p.pid != client_pid), "{cov:?}");
    assert!(cov.local_clients_skipped >= 1, "{cov:?}");
    let _ = server.kill();
    let _ = server.wait();
}

/// A minimal HTTPS server: one connection at a time, keep-alive, 200 for
/// every request, closes when the client asks; says "listening" when it is.
pub const PY_ECHO_SERVER: &str = r#"
import socket, ssl, sys
host, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ls = socket.create_server((host, port))
print("listening", flush=True)
while True:
    c, _ = ls.accept()
    try:
        s = ctx.wrap_socket(c, server_side=True)
        f = s.makefile("rb")
        while True:
            line = f.readline()
            if not line:
                break
            close = False
            while True:
                h = f.readline()
                if h in (b"\r\n", b""):
                    break
                close = close or h.lower().startswith(b"connection: close")
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
                      + (b"Connection: close\r\n" if close else b"") + b"\r\nok\n")
            if close:
                break
        f.close()
        s.close()
    except (ssl.SSLError, OSError):
        c.close()
"#;

/// One SSL_write of 100,000 bytes: copied in 4 KiB chunks with
/// consecutive offsets up to the 64 KiB cap; the rest is counted as cut.
#[test]
fn tls_large_write_is_chunked_and_cut_at_the_cap() {
    require_tls_tools();
    let ip = loopback(false);
    let server = PyHttpsServer::start_here(ip);
    let (cg, mut h) = tls_capture("tlsbig", server.addr);
    wait_probed(&h, &[server.pid()]);
    let run = py_client(cg.command(PYTHON), server.addr, 1, "/big/100000", false);
    assert_eq!(run.statuses, vec!["200"]);
    let f = flow(server.addr, run.local_port);
    let cap = u64::from(agent_common::TLS_COPY_CAP_MAX);
    h.wait_events("the chunks of the large write", crate::EVENT_TIMEOUT, |evs| {
        evs.iter()
            .filter(|e| matches!(e, Event::Plaintext(p) if p.flow == f && p.direction == Direction::ToClient && p.len == agent_common::TLS_CHUNK_MAX))
            .count()
            >= 16
    });
    let down = plaintext(&h, f, Direction::ToClient);
    let body: Vec<_> = down
        .iter()
        .filter(|p| p.len == agent_common::TLS_CHUNK_MAX)
        .collect();
    assert_eq!(body.len(), 16, "chunks of the body write");
    for w in body.windows(2) {
        assert_eq!(w[1].offset, w[0].offset + 4096, "chunks are consecutive");
    }
    assert!(
        body.iter()
            .all(|p| p.data.len() == 4096 && p.data.iter().all(|&b| b == b'x'))
    );
    let counters = h.named_counters();
    let get = |n: &str| {
        counters
            .iter()
            .find(|(k, _)| *k == n)
            .map_or(0, |(_, v)| *v)
    };
    assert!(get("tls_cut_calls") >= 1, "{counters:?}");
    assert!(get("tls_cut_bytes") >= 100_000 - cap, "{counters:?}");
}
