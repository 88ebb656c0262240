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
            "{}: {} runs, {:?} ns/run",
            c.name,
            c.run_count,
            c.ns_per_run()
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
    assert_eq!(stats.ring_full, 0);
    assert_eq!(stats.decode_errors, 0);
}
