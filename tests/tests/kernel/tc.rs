//! TC classifier mode on a veth inside a network namespace: the client and
//! the capture live in one namespace, the server in the other.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Stdio},
};

use agent::event::FlowEndReason;
use tests::{
    harness::{Attach, Endpoint, Harness, Tuning},
    http::ClientReport,
    netns::NetnsPair,
    pcap::{flow_closed, flow_totals},
    tcpdump::Tcpdump,
    tools::require_tools,
};

use crate::{EVENT_TIMEOUT, assert_totals_match, rw_helper};

struct NsServer {
    child: Child,
    addr: SocketAddr,
}

impl NsServer {
    fn start(ns: &str, bind: SocketAddr, body: usize) -> Self {
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

/// `bpftool net show dev <ifname>` inside `ns`: the number of TC programs attached.
fn tc_programs(ns: &str, ifname: &str) -> usize {
    let out = NetnsPair::command_in(ns, "bpftool")
        .args(["-j", "net", "show", "dev", ifname])
        .output()
        .expect("run bpftool net show");
    assert!(
        out.status.success(),
        "bpftool net show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["tc"].as_array())
        .map(Vec::len)
        .sum()
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
    let mut h = Harness::start(
        Attach::Tc(pair.client_if.clone()),
        &endpoints,
        Tuning::default(),
    );
    assert_eq!(
        tc_programs(&pair.client_ns, &pair.client_if),
        2,
        "ingress and egress attached"
    );
    let dump = Tcpdump::start(&pair.client_if, "tcp", Some(&pair.client_ns), 256);
    for server in &servers {
        let requests = 12;
        let out = NetnsPair::command_in(&pair.client_ns, rw_helper())
            .args([
                "http-client",
                &server.addr.to_string(),
                &requests.to_string(),
            ])
            .output()
            .expect("run client in netns");
        assert!(
            out.status.success(),
            "client: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report = ClientReport::from_json(&String::from_utf8_lossy(&out.stdout));
        let flow = agent::event::FlowId {
            client: report.local.expect("client addr"),
            server: server.addr,
        };
        let recs = dump.wait_for("flow close on the veth", EVENT_TIMEOUT, |r| {
            flow_closed(r, flow.client, flow.server)
        });
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
    assert_eq!(
        tc_programs(&pair.client_ns, &pair.client_if),
        0,
        "TC programs left attached after shutdown"
    );
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
