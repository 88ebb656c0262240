//! Real-kernel integration tests. Run as root, one at a time:
//! `cargo test -p tests -- --test-threads=1` (or `cargo xtask test`).
//!
//! Every test attaches to its own cgroup v2 child (or a veth in its own
//! network namespaces), drives real clients against real local servers, and
//! compares what the capture reported with tcpdump's independent view and
//! with what the client and server counted.

mod cgroup_skb;
mod fixtures;
mod flood;
mod lifecycle;
mod sampling;
mod tc;
mod tls;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Stdio},
    time::Duration,
};

use agent::event::{FlowId, FlowTotals};
use tests::{
    cgroup::CgroupGuard,
    harness::{Attach, Endpoint, Harness, Tuning},
    http::ClientReport,
    netns::NetnsPair,
    pcap::{DirTotals, TcpRecord, flow_closed},
    tcpdump::Tcpdump,
};

/// Path of the `rw-helper` binary built with this test.
pub fn rw_helper() -> &'static str {
    env!("CARGO_BIN_EXE_rw-helper")
}

/// Deadline for events that follow traffic on loopback.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

/// A fresh cgroup and a capture attached to it that monitors exactly
/// `server`. Bound as `let (cg, h) = …`, the capture is dropped first.
pub fn capture_in_cgroup(tag: &str, server: SocketAddr, tuning: Tuning) -> (CgroupGuard, Harness) {
    let cg = CgroupGuard::new(tag);
    let h = Harness::start(
        Attach::Cgroup(cg.path().into()),
        &[Endpoint::exact(server)],
        tuning,
    );
    (cg, h)
}

/// tcpdump on `lo` for `server`'s port, the ground truth for loopback tests.
pub fn dump_lo(server: SocketAddr, snaplen: u32) -> Tcpdump {
    Tcpdump::start("lo", &format!("tcp port {}", server.port()), None, snaplen)
}

/// Waits until `dump` holds the close of `flow`; returns what it captured.
pub fn wait_closed(dump: &Tcpdump, what: &str, flow: FlowId) -> Vec<TcpRecord> {
    dump.wait_for(what, EVENT_TIMEOUT, |r| {
        flow_closed(r, flow.client, flow.server)
    })
}

/// Run the Rust keep-alive client inside `cg`: `requests` GETs on one connection.
pub fn http_client_in(
    cg: &CgroupGuard,
    server: SocketAddr,
    requests: u64,
) -> (FlowId, ClientReport) {
    client_in(cg, "http-client", server, requests)
}

/// `rw-helper <mode>` inside `cg` (`http-client`, or `http-client-rst` to end with a reset).
pub fn client_in(
    cg: &CgroupGuard,
    mode: &str,
    server: SocketAddr,
    requests: u64,
) -> (FlowId, ClientReport) {
    let out = cg
        .command(rw_helper())
        .args([
            mode,
            &server.to_string(),
            &requests.to_string(),
            "/api/v1/items",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("run rw-helper http-client");
    assert!(out.status.success(), "http client failed: {:?}", out.status);
    let report = ClientReport::from_json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(report.requests, requests);
    let client = report.local.expect("client reports its address");
    (FlowId { client, server }, report)
}

/// `rw-helper serve-http` inside network namespace `ns`, stopped (stdin
/// closed) on drop.
pub struct NsServer {
    child: Child,
    pub addr: SocketAddr,
}

impl NsServer {
    pub fn start(ns: &str, bind: SocketAddr, body: usize) -> Self {
        let mut child = NetnsPair::command_in(ns, rw_helper())
            .args(["serve-http", &bind.to_string(), &body.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn rw-helper serve-http in netns");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("read listening line");
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected server output {line:?}"));
        Self { child, addr }
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// `rw-helper http-client` inside network namespace `ns`: `requests` GETs
/// on one keep-alive connection to `server`.
pub fn client_in_netns(ns: &str, server: SocketAddr, requests: u64) -> ClientReport {
    let out = NetnsPair::command_in(ns, rw_helper())
        .args(["http-client", &server.to_string(), &requests.to_string()])
        .output()
        .expect("run client in netns");
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ClientReport::from_json(&String::from_utf8_lossy(&out.stdout))
}

/// The kernel's final counters must equal tcpdump's, direction by direction.
pub fn assert_totals_match(totals: &FlowTotals, truth: &[DirTotals; 2]) {
    for d in 0..2 {
        let what = if d == 0 { "to server" } else { "to client" };
        assert_eq!(
            totals.packets[d], truth[d].packets,
            "packets {what}: kernel {totals:?} vs pcap {truth:?}"
        );
        assert_eq!(
            totals.bytes[d], truth[d].ip_bytes,
            "IP bytes {what}: kernel {totals:?} vs pcap {truth:?}"
        );
        assert_eq!(
            totals.payload_bytes[d], truth[d].payload_bytes,
            "payload bytes {what}: kernel {totals:?} vs pcap {truth:?}"
        );
        assert_eq!(
            totals.payload_segments[d], truth[d].payload_segments,
            "payload segments {what}: kernel {totals:?} vs pcap {truth:?}"
        );
        assert_eq!(
            totals.request_starts[d], truth[d].request_starts,
            "request starts {what}: kernel {totals:?} vs pcap {truth:?}"
        );
    }
}
