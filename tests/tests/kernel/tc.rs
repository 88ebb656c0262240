//! TC classifier mode on a veth inside a network namespace: the client and
//! the capture live in one namespace, the server in the other.

use std::{net::SocketAddr, process::Command};

use agent::event::FlowEndReason;
use tests::{
    harness::{Attach, Endpoint, Harness, Tuning},
    netns::NetnsPair,
    pcap::flow_totals,
    tcpdump::Tcpdump,
    tools::require_tools,
};

use crate::{EVENT_TIMEOUT, NsServer, assert_totals_match, client_in_netns, wait_closed};

/// tcx links (`bpftool link show`; bpftool 7.1 prints tcx as type 11 and
/// cannot tell the interface) whose program is one of ours: (link id, prog id).
/// Links are global objects, so the caller diffs before/after.
fn tc_links() -> Vec<(u64, u64)> {
    let out = Command::new("bpftool")
        .args(["-j", "link", "show"])
        .output()
        .expect("run bpftool link show");
    assert!(
        out.status.success(),
        "bpftool link show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["type"] == 11 || l["type"] == "tcx")
        .filter_map(|l| Some((l["id"].as_u64()?, l["prog_id"].as_u64()?)))
        .filter(|(_, prog)| prog_name(*prog).is_some_and(|n| n.starts_with("rw_tc_")))
        .collect()
}

fn prog_name(id: u64) -> Option<String> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show", "id", &id.to_string()])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["name"].as_str().map(str::to_string)
}

fn run(pair: &NetnsPair) {
    let servers = [
        NsServer::start(
            &pair.server_ns,
            SocketAddr::new(pair.server_ip(false), 0),
            4000,
        ),
        NsServer::start(
            &pair.server_ns,
            SocketAddr::new(pair.server_ip(true), 0),
            4000,
        ),
    ];
    // The capture runs on this thread, which has entered the client namespace,
    // so the interface name resolves there.
    NetnsPair::enter_thread(&pair.client_ns);
    let endpoints: Vec<Endpoint> = servers.iter().map(|s| Endpoint::exact(s.addr)).collect();
    let before = tc_links();
    let mut h = Harness::start(
        Attach::Tc(pair.client_if.clone()),
        &endpoints,
        Tuning::default(),
    );
    let ours: Vec<(u64, u64)> = tc_links()
        .into_iter()
        .filter(|l| !before.contains(l))
        .collect();
    assert_eq!(
        ours.len(),
        2,
        "ingress and egress tcx links attached: {ours:?}"
    );
    let dump = Tcpdump::start(&pair.client_if, "tcp", Some(&pair.client_ns), 256);
    for server in &servers {
        let requests = 12;
        let report = client_in_netns(&pair.client_ns, server.addr, requests);
        let flow = agent::event::FlowId {
            client: report.local.expect("client addr"),
            server: server.addr,
        };
        let recs = wait_closed(&dump, "flow close on the veth", flow);
        let truth = flow_totals(&recs, flow.client, flow.server);
        assert_eq!(truth[1].payload_bytes, report.bytes_received);
        let (reason, totals) = h.wait_flow_end(flow, EVENT_TIMEOUT);
        assert_eq!(reason, FlowEndReason::Fin);
        let totals = totals.expect("final counters");
        assert_totals_match(&totals, &truth);
        assert_eq!(totals.request_starts[0], requests);
    }
    drop(dump);
    h.shutdown();
    let left = tc_links();
    for l in &ours {
        assert!(
            !left.contains(l),
            "tcx link {l:?} still attached after shutdown"
        );
        assert!(
            prog_name(l.1).is_none(),
            "program {} still loaded after shutdown",
            l.1
        );
    }
}

#[test]
fn tc_mode_on_veth_in_netns_ipv4_and_ipv6() {
    require_tools();
    let pair = NetnsPair::new();
    // setns changes only the calling thread: do it on a scoped thread so the
    // test thread stays in the root namespace.
    std::thread::scope(|s| {
        let r = s.spawn(|| run(&pair)).join();
        if let Err(panic) = r {
            std::panic::resume_unwind(panic);
        }
    });
}
