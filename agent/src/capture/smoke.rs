//! Smoke checks of `Capture` from inside the crate, built only with the
//! `kernel-smoke` feature. `cargo xtask test` runs the `root_` tests as root
//! (`cargo test -p agent --features kernel-smoke --lib capture::smoke::root_`)
//! and `unprivileged_start_says_why` under `setpriv` as `nobody`. The
//! thorough real-kernel tests live in the `tests/` crate; the per-packet
//! cost figures are `cargo xtask bench capture`.

use std::{collections::HashMap, process::Command, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
};

use super::*;
use crate::event::{Direction, FlowEndReason, FlowId};

async fn serve(listener: TcpListener) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let Ok(n) = s.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    buf.drain(..end + 4);
                    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
    }
}

/// A capture of the child cgroup `cg` watching `prefix` on `port` as
/// endpoint `id`, polling the flow map every `poll`.
fn watch(
    cg: &std::path::Path,
    id: u32,
    prefix: &str,
    port: u16,
    poll: Duration,
    tx: mpsc::Sender<Vec<Event>>,
) -> Capture {
    Capture::start(
        CaptureConfig {
            cgroup: Some(cg.to_path_buf()),
            endpoints: vec![EndpointRule {
                id,
                prefix: Some(prefix.parse().expect("a prefix")),
                ports: PortSpec::List(vec![port]),
                workload: false,
            }],
            poll_interval: poll,
            ..CaptureConfig::default()
        },
        tx,
    )
    .expect("capture starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_curl_in_child_cgroup_is_seen() {
    let root = system::cgroup2_root().expect("cgroup v2");
    let cg = root.join(format!("rw-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&cg).expect("child cgroup");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve(listener));

    let (tx, mut rx) = mpsc::channel(1024);
    let _stats_fd = Capture::enable_run_stats().ok();
    let cap = watch(
        &cg,
        42,
        "127.0.0.1/32",
        port,
        Duration::from_millis(100),
        tx,
    );
    let url = format!("http://127.0.0.1:{port}");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec curl -sS {url}/a {url}/b",
            cg.display()
        ))
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl failed: {out:?}");

    let mut packets = Vec::new();
    let mut ends = Vec::new();
    let mut starts = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(batch)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        for ev in batch {
            match ev {
                Event::Packet(p) => packets.push(p),
                Event::FlowEnd { reason, totals, .. } => ends.push((reason, totals)),
                Event::RequestStarts { count, .. } => starts += count,
                Event::Plaintext(_) | Event::Socket(_) => {}
            }
        }
    }
    let stats = cap.stats().unwrap();
    println!("stats: {stats:#?}");
    for c in cap.program_costs() {
        println!(
            "{}: {} runs, {:?} ns/run, {:?} instructions verified",
            c.name,
            c.run_count,
            c.ns_per_run(),
            c.verified_instructions
        );
    }
    cap.shutdown().await;
    let _ = std::fs::remove_dir(&cg);

    let requests: Vec<_> = packets
        .iter()
        .filter(|p| p.direction == Some(Direction::ToServer) && p.payload.starts_with(b"GET "))
        .collect();
    assert_eq!(requests.len(), 2, "packets: {packets:#?}");
    assert!(packets.iter().any(
        |p| p.direction == Some(Direction::ToClient) && p.payload.starts_with(b"HTTP/1.1 200")
    ));
    assert_eq!(starts, 2);
    assert_eq!(ends.len(), 1, "ends: {ends:?}");
    let (reason, totals) = ends[0];
    assert_eq!(reason, FlowEndReason::Fin);
    let t = totals.unwrap();
    assert_eq!(t.request_starts, [2, 0]);
    assert!(t.packets[0] >= 4 && t.packets[1] >= 3, "{t:?}");
    assert_eq!(stats.kernel.ring_full(), 0);
    assert_eq!(stats.decode_errors, 0);
}

/// A request count from the flow-map poller never reaches the engine
/// before the head it counts: the engine charges a count to the client the
/// head names, so a count that overtook its head would be charged to no
/// one (or to an unknown client). The poller runs every millisecond here,
/// far more often than the ring is drained without a wakeup (10 ms), so a
/// count read from the map would overtake its head on almost every request
/// if the two were not ordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_request_counts_never_overtake_their_heads() {
    let root = system::cgroup2_root().expect("cgroup v2");
    let cg = root.join(format!("rw-smoke-order-{}", std::process::id()));
    std::fs::create_dir_all(&cg).expect("child cgroup");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve(listener));

    let (tx, mut rx) = mpsc::channel(4096);
    let cap = watch(&cg, 7, "127.0.0.1/32", port, Duration::from_millis(1), tx);
    const CONNECTIONS: u64 = 30;
    let url = format!("http://127.0.0.1:{port}");
    let client = tokio::task::spawn_blocking(move || {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && for i in $(seq {CONNECTIONS}); do \
                 curl -sS -o /dev/null -o /dev/null {url}/a {url}/b || exit 1; done",
                cg.display()
            ))
            .output()
            .expect("curl runs")
    });

    // Heads delivered and counts delivered so far, per flow.
    let mut heads: HashMap<FlowId, u64> = HashMap::new();
    let mut counted: HashMap<FlowId, u64> = HashMap::new();
    let mut overtaken = Vec::new();
    let mut total = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while total < 2 * CONNECTIONS {
        let Ok(Some(batch)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            break;
        };
        for ev in batch {
            match ev {
                Event::Packet(p)
                    if p.direction == Some(Direction::ToServer)
                        && p.payload.starts_with(b"GET ") =>
                {
                    *heads
                        .entry(FlowId {
                            client: p.src,
                            server: p.dst,
                        })
                        .or_default() += 1;
                }
                Event::RequestStarts { flow, count, .. } => {
                    total += count;
                    let c = counted.entry(flow).or_default();
                    *c += count;
                    let seen = heads.get(&flow).copied().unwrap_or(0);
                    if *c > seen {
                        overtaken.push((flow, *c, seen));
                    }
                }
                _ => {}
            }
        }
    }
    let out = client.await.expect("client task");
    let stats = cap.stats().unwrap();
    cap.shutdown().await;
    let _ = std::fs::remove_dir(root.join(format!("rw-smoke-order-{}", std::process::id())));
    assert!(out.status.success(), "curl failed: {out:?}");
    assert_eq!(total, 2 * CONNECTIONS, "every request counted once");
    assert_eq!(stats.kernel.ring_full(), 0);
    assert!(
        overtaken.is_empty(),
        "{} of {} counts reached the engine before their heads (flow, counted, heads seen): {overtaken:?}",
        overtaken.len(),
        counted.len()
    );
}

fn sh(cmd: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("sh runs");
    assert!(out.status.success(), "{cmd}: {out:?}");
}

/// TC on a veth whose peer lives in a network namespace, over IPv6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_tc_on_veth_ipv6() {
    let id = std::process::id() % 10000;
    let (ns, host, peer) = (format!("rwns{id}"), format!("rwh{id}"), format!("rwp{id}"));
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    sh(&format!(
        "ip netns add {ns} && ip link add {host} type veth peer name {peer} && \
         ip link set {peer} netns {ns} && \
         ip addr add fd00:{id:x}::1/64 dev {host} nodad && ip link set {host} up && \
         ip -n {ns} addr add fd00:{id:x}::2/64 dev {peer} nodad && ip -n {ns} link set {peer} up && \
         ip -n {ns} link set lo up"
    ));
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "python3",
            "-m",
            "http.server",
            "--bind",
            "::",
            "8080",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("server");
    // Wait until the server listens (state, not a fixed sleep).
    let server_addr: std::net::SocketAddr = format!("[fd00:{id:x}::2]:8080").parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&server_addr, Duration::from_millis(200)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the python server in {ns} never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (tx, mut rx) = mpsc::channel(1024);
    let cap = Capture::start(
        CaptureConfig {
            attach_cgroup: false,
            interfaces: vec![host.clone()],
            endpoints: vec![EndpointRule {
                id: 5,
                prefix: Some(format!("fd00:{id:x}::2/128").parse().unwrap()),
                ports: PortSpec::List(vec![8080]),
                workload: false,
            }],
            ..CaptureConfig::default()
        },
        tx,
    );
    let result = async {
        let cap = cap.expect("capture starts");
        sh(&format!(
            "curl -sS -o /dev/null http://[fd00:{id:x}::2]:8080/"
        ));
        let mut got_get = false;
        let mut end = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while let Ok(Some(batch)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            for ev in batch {
                match ev {
                    Event::Packet(p) => {
                        got_get |= p.direction == Some(Direction::ToServer)
                            && p.payload.starts_with(b"GET / HTTP/1.1")
                            && p.dst.is_ipv6();
                    }
                    Event::FlowEnd { reason, totals, .. } => end = Some((reason, totals)),
                    Event::RequestStarts { .. } | Event::Plaintext(_) | Event::Socket(_) => {}
                }
            }
        }
        println!("stats: {:?}", cap.stats().unwrap());
        cap.shutdown().await;
        (got_get, end)
    }
    .await;
    let _ = server.kill();
    let _ = server.wait();
    let _ = Command::new("ip").args(["link", "del", &host]).status();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    let (got_get, end) = result;
    assert!(got_get, "no GET sample seen over TC/IPv6");
    let (reason, totals) = end.expect("a flow end");
    println!("end: {reason:?} {totals:?}");
    assert_eq!(totals.unwrap().request_starts, [1, 0]);
}

/// Runs without privileges (`cargo xtask test` starts the test binary with
/// `setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all`):
/// the error names the missing capabilities. As root it fails, on purpose.
#[tokio::test]
async fn unprivileged_start_says_why() {
    let (tx, _rx) = mpsc::channel(1);
    let err = Capture::start(
        CaptureConfig {
            endpoints: vec![EndpointRule {
                id: 1,
                prefix: None,
                ports: PortSpec::List(vec![443]),
                workload: false,
            }],
            ..CaptureConfig::default()
        },
        tx,
    )
    .expect_err("must not start without privileges");
    println!("{err}");
    assert!(matches!(err, CaptureError::NotPermitted { .. }), "{err:?}");
}

/// Server and client in the watched cgroup on loopback: both sockets are
/// local, so every packet passes the client's and the server's hooks. The
/// client-socket view is worked once in full; the server-socket view stops
/// after its first sample (which still names the server's socket), so each
/// request head reaches userspace once and every request is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_loopback_connection_is_worked_once() {
    local_connection_is_worked_once("lo", None, "127.0.0.1").await;
}

/// The same across a veth pair into another network namespace (a pod
/// calling a pod on the same node): both sockets are still on this node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_veth_local_connection_is_worked_once() {
    let id = std::process::id() % 250;
    let (ns, host, peer) = (
        format!("rwlns{id}"),
        format!("rwlh{id}"),
        format!("rwlp{id}"),
    );
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    sh(&format!(
        "ip netns add {ns} && ip link add {host} type veth peer name {peer} && \
         ip link set {peer} netns {ns} && \
         ip addr add 10.231.{id}.1/24 dev {host} && ip link set {host} up && \
         ip -n {ns} addr add 10.231.{id}.2/24 dev {peer} && ip -n {ns} link set {peer} up && \
         ip -n {ns} link set lo up"
    ));
    let addr = format!("10.231.{id}.2");
    local_connection_is_worked_once("veth", Some(&ns), &addr).await;
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
}

/// Runs a keep-alive HTTP/1.1 server on `addr` (in `netns` if given) and
/// curl against it, both in a watched child cgroup, and checks that every
/// request is counted once, each head reaches userspace once, both sockets
/// are named, and the server-socket view's packets were skipped.
async fn local_connection_is_worked_once(name: &str, netns: Option<&str>, addr: &str) {
    use std::{io::BufRead as _, os::unix::fs::MetadataExt as _};

    use crate::event::Side;

    let root = system::cgroup2_root().expect("cgroup v2");
    let cg = root.join(format!("rw-smoke-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&cg).expect("child cgroup");
    let cgroup_id = std::fs::metadata(&cg).expect("cgroup dir").ino();
    // A keep-alive HTTP/1.1 server in the cgroup; it prints its port. The
    // cgroup is joined before `ip netns exec`, which remounts /sys.
    let server_py = format!(
        "import http.server as h\n\
         class H(h.BaseHTTPRequestHandler):\n\
         \x20   protocol_version = 'HTTP/1.1'\n\
         \x20   def do_GET(self):\n\
         \x20       self.send_response(200); self.send_header('Content-Length', '2')\n\
         \x20       self.end_headers(); self.wfile.write(b'ok')\n\
         \x20   def log_message(self, *a): pass\n\
         s = h.HTTPServer(('{addr}', 0), H)\n\
         print(s.server_address[1], flush=True)\n\
         s.serve_forever()\n"
    );
    let enter = netns.map_or_else(String::new, |ns| format!("ip netns exec {ns} "));
    let mut server = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec {enter}python3 -c \"$0\"",
            cg.display()
        ))
        .arg(server_py)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python server");
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the server prints its port");
    let port: u16 = line.trim().parse().expect("a port");

    let (tx, mut rx) = mpsc::channel(4096);
    let cap = watch(
        &cg,
        9,
        &format!("{addr}/32"),
        port,
        Duration::from_millis(50),
        tx,
    );
    const CONNECTIONS: u64 = 3;
    const PER_CONNECTION: u64 = 10;
    let urls: Vec<String> = (0..PER_CONNECTION)
        .map(|i| format!("http://{addr}:{port}/r{i}"))
        .collect();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && for i in $(seq {CONNECTIONS}); do \
             curl -sS -o /dev/null {} || exit 1; done",
            cg.display(),
            urls.iter()
                .map(|u| format!("{u} -o /dev/null"))
                .collect::<Vec<_>>()
                .join(" ")
        ))
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl failed: {out:?}");

    let mut heads = 0;
    let mut starts = 0;
    let mut ends = Vec::new();
    let mut sides = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ends.len() < CONNECTIONS as usize || starts < CONNECTIONS * PER_CONNECTION {
        let Ok(Some(batch)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            break;
        };
        for ev in batch {
            match ev {
                Event::Packet(p)
                    if p.direction == Some(Direction::ToServer)
                        && p.payload.starts_with(b"GET ") =>
                {
                    heads += 1;
                }
                Event::RequestStarts { count, .. } => starts += count,
                Event::FlowEnd { totals, .. } => ends.push(totals),
                Event::Socket(s) => sides.push((s.side, s.cgroup_id)),
                Event::Packet(_) | Event::Plaintext(_) => {}
            }
        }
    }
    let stats = cap.stats().expect("capture stats");
    println!("stats: {stats:#?}");
    cap.shutdown().await;
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir(&cg);

    assert_eq!(starts, CONNECTIONS * PER_CONNECTION);
    assert_eq!(heads, CONNECTIONS * PER_CONNECTION, "each head once");
    assert_eq!(ends.len(), CONNECTIONS as usize, "{ends:?}");
    for t in &ends {
        assert_eq!(
            t.expect("final totals").request_starts,
            [PER_CONNECTION, 0],
            "{ends:?}"
        );
    }
    // Both ends named, from the one sample each view sends.
    for side in [Side::Client, Side::Server] {
        assert!(
            sides.contains(&(side, cgroup_id)),
            "{side:?} socket not announced: {sides:?}"
        );
    }
    // Per request at least the request and the response skip the second
    // run; only each connection's first server-view sample is dropped in
    // userspace.
    let skipped = stats.kernel.local_duplicates();
    assert!(
        skipped >= 2 * CONNECTIONS * (PER_CONNECTION - 1),
        "skipped {skipped}"
    );
    assert!(
        stats.duplicate_views <= 2 * CONNECTIONS,
        "dropped {}",
        stats.duplicate_views
    );
    assert_eq!(stats.kernel.ring_full(), 0);
}
