//! Privileged smoke check, run by hand as root with the kernel object built:
//! `cargo test -p agent capture::smoke -- --ignored --nocapture`.
//! The thorough real-kernel tests live in the `tests/` crate.

use std::{process::Command, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
};

use super::*;
use crate::event::{Direction, FlowEndReason};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, a built kernel object and curl"]
async fn curl_in_child_cgroup_is_seen() {
    let root = system::cgroup2_root().expect("cgroup v2");
    let cg = root.join(format!("rw-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&cg).expect("child cgroup");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve(listener));

    let (tx, mut rx) = mpsc::channel(1024);
    let _stats_fd = Capture::enable_run_stats().ok();
    let cap = Capture::start(
        CaptureConfig {
            cgroup: Some(cg.clone()),
            endpoints: vec![EndpointRule {
                id: 42,
                prefix: Some("127.0.0.1/32".parse().unwrap()),
                ports: PortSpec::List(vec![port]),
            }],
            poll_interval: Duration::from_millis(100),
            ..CaptureConfig::default()
        },
        tx,
    )
    .expect("capture starts");
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
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        match ev {
            Event::Packet(p) => packets.push(p),
            Event::FlowEnd { reason, totals, .. } => ends.push((reason, totals)),
            Event::RequestStarts { count, .. } => starts += count,
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

const PINGPONG: &str = r#"
import socket, sys, threading
port, n = int(sys.argv[1]), int(sys.argv[2])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port)); srv.listen()
def serve():
    c, _ = srv.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        d = c.recv(4096)
        if not d: break
        c.sendall(d)
threading.Thread(target=serve, daemon=True).start()
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
msg = b"x" * 100
for _ in range(n):
    s.sendall(msg); s.recv(4096)
s.close()
"#;

/// Per-packet cost of the programs for unmonitored, monitored and sampled
/// loopback traffic (prints; asserts nothing about speed):
/// `cargo test -p agent capture::smoke::cost -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, a built kernel object and python3"]
async fn cost_per_packet() {
    let root = system::cgroup2_root().expect("cgroup v2");
    let cg = root.join(format!("rw-cost-{}", std::process::id()));
    std::fs::create_dir_all(&cg).expect("child cgroup");
    let _stats_fd = Capture::enable_run_stats().expect("bpf stats");
    let base = 20000 + (std::process::id() % 20000) as u16;
    // (label, monitored port offset, first_segments, sample_one_in)
    for (i, (label, monitored, first, one_in)) in [
        ("unmonitored", false, 4, 64),
        ("monitored, not sampled", true, 0, 0),
        ("monitored, every segment sampled", true, 0, 1),
    ]
    .into_iter()
    .enumerate()
    {
        let port = base + i as u16 * 2;
        let (tx, mut rx) = mpsc::channel(65536);
        let drain = tokio::spawn(async move {
            let mut n = 0u64;
            while rx.recv().await.is_some() {
                n += 1;
            }
            n
        });
        let cap = Capture::start(
            CaptureConfig {
                cgroup: Some(cg.clone()),
                endpoints: vec![EndpointRule {
                    id: 1,
                    prefix: Some("127.0.0.1/32".parse().unwrap()),
                    ports: PortSpec::List(vec![if monitored { port } else { port + 1 }]),
                }],
                first_segments: first,
                sample_one_in: one_in,
                ..CaptureConfig::default()
            },
            tx,
        )
        .expect("capture starts");
        let before = cap.program_costs();
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec python3 -c '{PINGPONG}' {port} 20000",
                cg.display()
            ))
            .output()
            .expect("python runs");
        assert!(out.status.success(), "{out:?}");
        let after = cap.program_costs();
        let stats = cap.stats().unwrap();
        let (mut t, mut n) = (0u64, 0u64);
        for (a, b) in after.iter().zip(&before) {
            t += a.run_time_ns - b.run_time_ns;
            n += a.run_count - b.run_count;
        }
        cap.shutdown().await;
        let delivered = drain.await.unwrap();
        println!(
            "{label}: {n} runs, {:.1} ns/packet; monitored {}, samples {}, ring_full {}, events {delivered}",
            t as f64 / n.max(1) as f64,
            stats.kernel.packets_monitored(),
            stats.kernel.samples_emitted(),
            stats.kernel.ring_full()
        );
    }
    let _ = std::fs::remove_dir(&cg);
}

fn sh(cmd: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("sh runs");
    assert!(out.status.success(), "{cmd}: {out:?}");
}

/// TC on a veth whose peer lives in a network namespace, over IPv6:
/// `cargo test -p agent capture::smoke::tc -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, a built kernel object, iproute2, python3 and curl"]
async fn tc_on_veth_ipv6() {
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
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (tx, mut rx) = mpsc::channel(1024);
    let cap = Capture::start(
        CaptureConfig {
            attach_cgroup: false,
            interfaces: vec![host.clone()],
            endpoints: vec![EndpointRule {
                id: 5,
                prefix: Some(format!("fd00:{id:x}::2/128").parse().unwrap()),
                ports: PortSpec::List(vec![8080]),
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
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            match ev {
                Event::Packet(p) => {
                    got_get |= p.direction == Some(Direction::ToServer)
                        && p.payload.starts_with(b"GET / HTTP/1.1")
                        && p.dst.is_ipv6();
                }
                Event::FlowEnd { reason, totals, .. } => end = Some((reason, totals)),
                Event::RequestStarts { .. } => {}
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

/// Run without privileges (e.g. `setpriv --reuid=65534 --clear-groups
/// --inh-caps=-all <test binary> capture::smoke::unprivileged --ignored`):
/// the error names the missing capabilities.
#[tokio::test]
#[ignore = "meant to run without privileges, by hand"]
async fn unprivileged_start_says_why() {
    let (tx, _rx) = mpsc::channel(1);
    let err = Capture::start(
        CaptureConfig {
            endpoints: vec![EndpointRule {
                id: 1,
                prefix: None,
                ports: PortSpec::List(vec![443]),
            }],
            ..CaptureConfig::default()
        },
        tx,
    )
    .expect_err("must not start without privileges");
    println!("{err}");
    assert!(matches!(err, CaptureError::NotPermitted { .. }), "{err:?}");
}
