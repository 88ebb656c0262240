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

use std::{net::SocketAddr, process::Stdio, time::Duration};

use agent::event::{FlowId, FlowTotals};
use tests::{cgroup::CgroupGuard, http::ClientReport, pcap::DirTotals};

/// Path of the `rw-helper` binary built with this test.
pub fn rw_helper() -> &'static str {
    env!("CARGO_BIN_EXE_rw-helper")
}

/// Deadline for events that follow traffic on loopback.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

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
