//! The kernel's request-start count against replay's on the same traffic:
//! curl sends requests with every method of the kernel's token table that
//! has no body, each starting its own segment, on keep-alive connections,
//! while the live agent counts them (in the kernel, by method token) and
//! tcpdump records them. `rampwatch replay` of that recording (which parses
//! every head) must count what the agent counted, per flow and in
//! `rampwatch_requests_total`, and both what the server answered. Heads
//! outside the kernel's table (an extension and a lowercase method) are
//! counted by the engine instead, and in
//! `rampwatch_malformed_requests_total`: also far into a keep-alive
//! connection (200 `PURGE` with a `GET` after every tenth, from python's
//! http.client), where only the kernel's sampling of request-like segments
//! shows them to the engine.
//!
//! Needs root; run by `cargo xtask test`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use agent::replay::{Format, ReplayArgs, replay};
use serde_json::Value;
use tests::{
    TempDir, agent_proc::AgentProcess, cgroup::CgroupGuard, contract::ContractYaml,
    http::HttpServer, tcpdump::Tcpdump, tls_servers::PYTHON, tools::require_tools,
    wait::wait_until,
};

const TOKEN: &str = "parity-token";

fn contract(port: u16) -> String {
    ContractYaml::new("parity")
        .class("internal", "optional")
        .endpoint("items", "internal", &["127.0.0.1"], &[port], &[])
        .client("acme", TOKEN, "2026-11-01T00:00:00Z")
        .stage(
            "pilot",
            "2026-01-01T00:00:00Z",
            None,
            &[("acme", "items", 10000, 10000)],
        )
        .render()
}

/// `n` requests with `method` on one keep-alive curl connection.
fn curl(cgroup: &CgroupGuard, server: SocketAddr, method: &str, n: usize) {
    let url = format!("http://{server}/v1/items");
    let mut cmd = cgroup.command("curl");
    cmd.args(["-sf", "--max-time", "10", "-X", method])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")]);
    for _ in 0..n {
        cmd.args(["-o", "/dev/null"]).arg(&url);
    }
    let status = cmd.status().expect("run curl");
    assert!(status.success(), "curl -X {method}: {status}");
}

/// Requests per client address in `flows` (flow JSON objects).
fn per_source(flows: &[Value], port: u16) -> BTreeMap<String, u64> {
    flows
        .iter()
        .filter(|f| {
            f["dst"]
                .as_str()
                .is_some_and(|d| d.ends_with(&format!(":{port}")))
        })
        .map(|f| {
            (
                f["src"].as_str().unwrap_or_default().to_owned(),
                f["requests"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn kernel_request_starts_equal_replay_on_the_same_traffic() {
    require_tools();
    let cgroup = CgroupGuard::new("parity");
    let server = HttpServer::start(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), 64);
    let port = server.addr().port();
    let contract_text = contract(port);
    let agent = AgentProcess::start(&contract_text, cgroup.path(), &[]);
    let dump = Tcpdump::start("lo", &format!("tcp port {port}"), None, 0);

    let runs = [
        ("GET", 25),
        ("DELETE", 7),
        ("OPTIONS", 5),
        ("PATCH", 6),
        ("PUT", 4),
        ("TRACE", 3),
    ];
    for (method, n) in runs {
        curl(&cgroup, server.addr(), method, n);
    }
    let total: u64 = runs.iter().map(|(_, n)| *n as u64).sum();
    let served: u64 = server.connections().iter().map(|c| c.requests).sum();
    assert_eq!(served, total, "the server answered every request");

    // Live: known-method segment starts are counted in the kernel and
    // reach the engine with the flow-map poll.
    let metric = format!(r#"rampwatch_requests_total{{client="acme",endpoint="items"}} {total}"#);
    wait_until(
        "the agent to count every request",
        Duration::from_secs(20),
        || agent.metrics().contains(&metric).then_some(()),
    );
    let live = wait_until(
        "every flow ended with its requests",
        Duration::from_secs(20),
        || {
            let flows = agent.cli_json(&["flows"]);
            let per = per_source(&flows, port);
            (per.len() == runs.len() && per.values().sum::<u64>() == total).then_some(per)
        },
    );
    let dir = TempDir::new("parity");
    let pcap = dir.path().join("parity.pcap");
    let stats = dump.stop_into(&pcap);
    assert!(stats.captured > 0, "{stats:?}");

    // Replay of the recording, in process.
    let contract_path = dir.path().join("contract.yaml");
    std::fs::write(&contract_path, &contract_text).expect("write the contract");
    let args = ReplayArgs {
        contract: contract_path,
        at: None,
        stage: None,
        rate_window: 300_000_000_000,
        output: Format::Json,
        pcaps: vec![pcap],
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = replay(&args, &mut out, &mut err, false).expect("replay writes to memory");
    assert_eq!(code, 0, "clean traffic: {}", String::from_utf8_lossy(&err));
    let objs: Vec<Value> = String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let flows: Vec<Value> = objs
        .iter()
        .filter(|o| o["type"] == "flow")
        .cloned()
        .collect();
    let summary = objs
        .iter()
        .find(|o| o["type"] == "summary")
        .expect("a summary");
    assert_eq!(summary["requests"], total, "{summary}");
    assert_eq!(
        per_source(&flows, port),
        live,
        "per flow, live and replay agree"
    );
    let live_metric = agent.metrics();
    assert!(
        live_metric.contains(&metric),
        "and nothing more counted live"
    );

    // Methods the kernel's table lacks, one connection each (the first
    // segment of a flow is always sampled): the engine counts them.
    for method in ["PURGE", "get"] {
        let out = cgroup
            .command(PYTHON)
            .args(["-c", RAW_CLIENT, &port.to_string(), method, TOKEN])
            .output()
            .expect("run the raw client");
        assert!(
            out.status.success(),
            "{method}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let all = format!(
        r#"rampwatch_requests_total{{client="acme",endpoint="items"}} {}"#,
        total + 2
    );
    let malformed = r#"rampwatch_malformed_requests_total{endpoint="items"} 2"#;
    wait_until(
        "the agent to count the lenient heads",
        Duration::from_secs(20),
        || {
            let m = agent.metrics();
            (m.contains(&all) && m.contains(malformed)).then_some(())
        },
    );

    // One keep-alive connection: 200 PURGE (the engine's to count, each
    // segment sampled by the kernel as request-like) and 20 GET among
    // them (the kernel's), all charged to acme, none twice.
    let before = server.connections().len();
    let out = cgroup
        .command(PYTHON)
        .args([
            "-c",
            KEEP_ALIVE_CLIENT,
            &port.to_string(),
            TOKEN,
            "200",
            "10",
        ])
        .output()
        .expect("run the keep-alive client");
    assert!(
        out.status.success(),
        "keep-alive client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The server counts a request just after writing its answer.
    let conns = wait_until(
        "the server to have served the keep-alive connection",
        Duration::from_secs(10),
        || {
            let c = server.connections();
            c.get(before)
                .is_some_and(|c| c.requests == 220)
                .then_some(c)
        },
    );
    assert_eq!(conns.len(), before + 1, "one connection: {conns:?}");
    let all = format!(
        r#"rampwatch_requests_total{{client="acme",endpoint="items"}} {}"#,
        total + 2 + 220
    );
    let malformed = r#"rampwatch_malformed_requests_total{endpoint="items"} 202"#;
    wait_until(
        "the agent to count every request of the keep-alive connection",
        Duration::from_secs(20),
        || {
            let m = agent.metrics();
            (m.contains(&all) && m.contains(malformed)).then_some(())
        },
    );
    let peer = conns[before].peer.expect("the server saw the peer");
    let flow = wait_until(
        "the keep-alive flow to end with its requests",
        Duration::from_secs(20),
        || {
            let flows = agent.cli_json(&["flows"]);
            let per = per_source(&flows, port);
            per.get(&peer.to_string()).copied().filter(|n| *n == 220)
        },
    );
    assert_eq!(flow, 220);
    // Nothing counted beyond: the exact values still hold.
    let m = agent.metrics();
    assert!(m.contains(&all) && m.contains(malformed), "{m}");
}

/// On one keep-alive http.client connection: argv[3] requests `PURGE`, and
/// a `GET` after every argv[4]-th of them; every answer read.
const KEEP_ALIVE_CLIENT: &str = r#"
import http.client, sys
port, token, n, every = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
headers = {"Authorization": "Bearer " + token}
def one(method):
    c.request(method, "/v1/items", headers=headers)
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit("%s: %d" % (method, r.status))
for i in range(n):
    one("PURGE")
    if (i + 1) % every == 0:
        one("GET")
c.close()
"#;

/// One request with the method given, raw over a socket; waits for the
/// answer.
const RAW_CLIENT: &str = r#"
import socket, sys
port, method, token = int(sys.argv[1]), sys.argv[2], sys.argv[3]
head = "%s /v1/items HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n" % (method, token)
with socket.create_connection(("127.0.0.1", port)) as s:
    s.sendall(head.encode())
    if b" 200 " not in s.recv(65536):
        sys.exit("no 200")
"#;
