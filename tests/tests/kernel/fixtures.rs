//! The fixtures check themselves against each other before any capture test
//! relies on them: the pcap ground truth must agree with what the client and
//! server counted, and the cgroup/netns guards must place processes where
//! they claim.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use tests::{
    cgroup::CgroupGuard,
    http::{ClientReport, HttpServer},
    netns::NetnsPair,
    pcap::{flow_closed, flow_totals},
    tcpdump::Tcpdump,
    tools::require_tools,
};

use crate::{NsServer, client_in_netns, rw_helper};

#[test]
fn cgroup_guard_places_child_and_cleans_up() {
    require_tools();
    let path;
    {
        let cg = CgroupGuard::new("fx");
        path = cg.path().to_path_buf();
        let out = cg
            .command("cat")
            .arg("/proc/self/cgroup")
            .output()
            .expect("run cat");
        let text = String::from_utf8_lossy(&out.stdout);
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            text.lines()
                .any(|l| l.starts_with("0::") && l.ends_with(&name)),
            "child not in {name}: {text}"
        );
        assert!(cg.id() > 1);
    }
    assert!(!path.exists(), "cgroup {} not removed", path.display());
}

#[test]
fn pcap_ground_truth_matches_http_endpoints() {
    require_tools();
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let server = HttpServer::start(bind.parse().expect("addr"), 3000);
        let dump = crate::dump_lo(server.addr(), 262_144);
        let cg = CgroupGuard::new("fx");
        let out = cg
            .command(rw_helper())
            .args([
                "http-client",
                &server.addr().to_string(),
                "7",
                "/ground-truth",
            ])
            .stderr(Stdio::inherit())
            .output()
            .expect("run client");
        assert!(out.status.success());
        let report = ClientReport::from_json(&String::from_utf8_lossy(&out.stdout));
        let client: SocketAddr = report.local.expect("client address");
        let recs = dump.wait_for("flow close in pcap", Duration::from_secs(10), |r| {
            flow_closed(r, client, server.addr())
        });
        let t = flow_totals(&recs, client, server.addr());
        assert_eq!(t[0].payload_bytes, report.bytes_sent);
        assert_eq!(t[1].payload_bytes, report.bytes_received);
        assert_eq!(t[0].request_starts, 7);
        let conn = server
            .connection(client)
            .expect("server saw the connection");
        assert_eq!(conn.requests, 7);
        assert_eq!(conn.bytes_in, report.bytes_sent);
        assert_eq!(conn.bytes_out, report.bytes_received);
        let (_, stats) = dump.stop();
        assert!(stats.captured >= t[0].packets + t[1].packets);
    }
}

#[test]
fn netns_pair_carries_traffic_over_veth() {
    require_tools();
    let pair = NetnsPair::new();
    let server = NsServer::start(
        &pair.server_ns,
        SocketAddr::new(pair.server_v4.into(), 0),
        100,
    );
    let addr = server.addr;
    let dump = Tcpdump::start(&pair.client_if, "tcp", Some(&pair.client_ns), 262_144);
    let report = client_in_netns(&pair.client_ns, addr, 3);
    let client = report.local.expect("client addr");
    let recs = dump.wait_for("flow close on veth", Duration::from_secs(10), |r| {
        flow_closed(r, client, addr)
    });
    let t = flow_totals(&recs, client, addr);
    assert_eq!(t[0].request_starts, 3);
    assert_eq!(t[1].payload_bytes, report.bytes_received);
    // Ethernet framing is visible on a veth: frame = IP + 14.
    assert_eq!(t[0].frame_bytes, t[0].ip_bytes + 14 * t[0].packets);
    drop(server);
}
