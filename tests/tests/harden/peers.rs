//! Hostile socket peers (garbage, huge requests, silent connections) and a
//! crowd of slow and concurrent scrapers: bounded, and the CLI and judging
//! keep going.

use super::*;

/// A peer in the socket group that opens 24 silent connections, sends 1 MiB
/// without a newline and then bytes that are not UTF-8; it reports what the
/// agent answered each, as JSON on its last stdout line. It prints
/// `HOLDING` while its silent connections are open, and waits for a line
/// on stdin before reading their answers.
const HOSTILE_PEER: &str = r#"
import json, socket, sys, time
path = sys.argv[1]
def conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s
def answer(s, timeout):
    s.settimeout(timeout)
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionError):
        pass
    return data.decode(errors="replace")
silent = [conn() for _ in range(24)]
time.sleep(0.5)
refused = []
for s in silent:
    try:
        data = s.recv(65536, socket.MSG_DONTWAIT)
        if data:
            refused.append(data.decode(errors="replace"))
    except BlockingIOError:
        pass
print("HOLDING", flush=True)
sys.stdin.readline()
timed_out = [answer(s, 30.0) for s in silent]
big = conn()
big.settimeout(10.0)
try:
    big.sendall(b"x" * (1 << 20))
except (socket.timeout, ConnectionError):
    pass
huge = answer(big, 10.0)
bad = conn()
bad.sendall(b"\xff\xfe\x00{garbage\n")
garbage = answer(bad, 10.0)
print(json.dumps({"refused": refused, "timed_out": timed_out, "huge": huge, "garbage": garbage}), flush=True)
"#;

#[test]
fn hostile_socket_peers_are_bounded_and_the_cli_keeps_answering() {
    require_tools();
    let orders = server();
    let cg = CgroupGuard::new("hostile");
    let gid = "4242";
    let mut agent = AgentProcess::start(
        &contract(orders.addr().port()),
        cg.path(),
        &["--socket-group", gid],
    );
    // The socket's directory must let the peer reach the socket itself.
    run("chmod", &["755", &agent.dir.display().to_string()]);
    let mut peer = Command::new("setpriv")
        .args(["--reuid=65534", &format!("--regid={gid}"), "--clear-groups"])
        .args(["/usr/bin/python3", "-c", HOSTILE_PEER])
        .arg(&agent.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv python3 runs");
    let mut out = BufReader::new(peer.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("the peer's first line");
    assert_eq!(line.trim(), "HOLDING", "the peer failed: {line}");

    // 16 silent connections of uid 65534 are open: root is still served,
    // at once, and so are the views.
    let s = status(&agent);
    assert_eq!(s["contract"], "harden", "{s}");
    assert!(agent.cli_ok(&["flows"]).is_some());

    peer.stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("tell the peer to go on");
    line.clear();
    out.read_line(&mut line).expect("the peer's report");
    assert!(peer.wait().expect("the peer exits").success());
    let report: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));

    let refused = report["refused"].as_array().expect("refused");
    assert_eq!(refused.len(), 8, "24 opened, 16 allowed: {report}");
    assert!(
        refused.iter().all(|r| r
            .as_str()
            .is_some_and(|r| r.contains("uid 65534 already holds 16 connections"))),
        "{report}"
    );
    let timed_out = report["timed_out"].as_array().expect("timed_out");
    let answered: Vec<_> = timed_out
        .iter()
        .filter_map(Value::as_str)
        .filter(|a| a.contains("no request line within 5 s"))
        .collect();
    assert_eq!(answered.len(), 16, "every silent slot times out: {report}");
    assert!(
        report["huge"]
            .as_str()
            .is_some_and(|h| h.contains("longer than 64 KiB")),
        "{report}"
    );
    assert!(
        report["garbage"]
            .as_str()
            .is_some_and(|g| g.contains("not UTF-8")),
        "{report}"
    );
    assert!(agent.is_running());
    assert!(agent.cli_ok(&["status"]).is_some());
    assert!(agent.stop().success(), "{}", agent.log_text());
}

/// 20 threads scraping /metrics as fast as they can, 20 connections that
/// never send a request, and one reader with a tiny window taking a byte per
/// second; prints `READY <slow reader's port>` once all run, and stops when
/// stdin closes.
const SCRAPER_CROWD: &str = r#"
import socket, sys, threading, time
host, port = sys.argv[1], int(sys.argv[2])
stop = threading.Event()
def scrape():
    while not stop.is_set():
        try:
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while s.recv(65536):
                pass
            s.close()
        except OSError:
            time.sleep(0.01)
slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
slow.connect((host, port))
slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
idle = []
for _ in range(20):
    try:
        idle.append(socket.create_connection((host, port), timeout=5))
    except OSError:
        pass
def trickle():
    slow.settimeout(1.0)
    while not stop.is_set():
        try:
            if not slow.recv(1):
                return
        except socket.timeout:
            pass
        except OSError:
            return
        time.sleep(1.0)
threads = [threading.Thread(target=scrape, daemon=True) for _ in range(20)]
threads.append(threading.Thread(target=trickle, daemon=True))
for t in threads:
    t.start()
print("READY", slow.getsockname()[1], flush=True)
sys.stdin.read()
stop.set()
"#;

/// Whether the agent's side of the connection from `client_port` to its
/// metrics port is still established.
fn established(metrics: SocketAddr, client_port: u16) -> bool {
    let out = Command::new("ss")
        .args(["-Htn", "state", "established"])
        .arg(format!(
            "( sport = :{} and dport = :{client_port} )",
            metrics.port()
        ))
        .output()
        .expect("ss runs");
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

#[test]
fn slow_and_many_scrapers_cannot_stall_judging() {
    require_tools();
    let orders = server();
    let url = format!("http://{}/v1/orders", orders.addr());
    let cg = CgroupGuard::new("scrapers");
    let mut agent = AgentProcess::start(&contract(orders.addr().port()), cg.path(), &[]);
    let mut crowd = Command::new("python3")
        .args(["-c", SCRAPER_CROWD])
        .arg(agent.metrics_addr.ip().to_string())
        .arg(agent.metrics_addr.port().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut out = BufReader::new(crowd.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("the crowd's first line");
    let slow_port: u16 = line
        .trim()
        .strip_prefix("READY ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the crowd failed: {line}"));
    assert!(established(agent.metrics_addr, slow_port));

    // Requests are judged and counted while the crowd scrapes, and the
    // socket answers.
    for round in 0..3 {
        let before = wait_until(
            "a scrape through the crowd",
            Duration::from_secs(60),
            || requests_judged(&agent),
        );
        for _ in 0..10 {
            curl_in(&cg, Some(TOKEN), &[&url]);
        }
        wait_for(
            &format!("round {round}: 10 requests judged during the crowd"),
            Duration::from_secs(60),
            || requests_judged(&agent).is_some_and(|n| n >= before + 10.0),
        );
        assert!(agent.cli_ok(&["status"]).is_some());
    }
    // The agent lets go of the slow reader although it still holds on: a
    // connection idles at most the header timeout once its answer is in
    // the socket buffers, and lives at most its lifetime while it is not.
    wait_for(
        "the agent to close the slow reader's connection",
        Duration::from_secs(120),
        || !established(agent.metrics_addr, slow_port),
    );
    assert!(crowd.try_wait().expect("poll the crowd").is_none());
    drop(crowd.stdin.take());
    assert!(crowd.wait().expect("the crowd exits").success());
    assert!(agent.is_running());
    assert!(agent.stop().success(), "{}", agent.log_text());
}
