//! `rampwatch report` on real traffic from two live agents, two "nodes":
//! each watches its own test cgroup with its own audit directory, and curl
//! in each cgroup calls the same servers. The agents write usage records
//! every 2 s; node A sees a revoked key (served, so critical at once) and a
//! burst over quota, node B an anonymous call. After a clean stop the
//! report sums both logs exactly (the kernel's request counts are exact),
//! lists every violation with its node, renders Markdown, and refuses a log
//! whose chain was edited. No raw credential reaches either log.
//!
//! Needs root; run by `cargo xtask test`.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use serde_json::Value;
use tests::{
    TempDir,
    agent_proc::{AgentProcess, cli},
    cgroup::CgroupGuard,
    contract::ContractYaml,
    http::{HttpServer, curl_in},
    tools::require_tools,
    wait::wait_until,
};

const ACME: &str = "report-acme-token";
const REVOKED: &str = "report-revoked-token";

fn contract(orders: u16) -> String {
    ContractYaml::new("report-ramp")
        .class("internal", "optional")
        .endpoint(
            "orders",
            "internal",
            &["127.0.0.1"],
            &[orders],
            &["/v1/orders"],
        )
        .client("acme", ACME, "2026-11-01T00:00:00Z")
        .credential(REVOKED, "2026-11-01T00:00:00Z")
        .stage(
            "pilot",
            "2026-01-01T00:00:00Z",
            Some("3650d"),
            &[("acme", "orders", 2, 4)],
        )
        .revoked(REVOKED, "2026-02-01T00:00:00Z")
        .render()
}

/// Requests of (client, endpoint) in the agent's usage records so far.
fn usage_requests(agent: &AgentProcess, client: &str, endpoint: &str) -> u64 {
    agent
        .audit_records()
        .iter()
        .filter(|r| r["kind"] == "usage" && r["client"] == client && r["endpoint"] == endpoint)
        .filter_map(|r| r["requests"].as_u64())
        .sum()
}

fn opened(agent: &AgentProcess, kind: &str) -> bool {
    agent
        .audit_records()
        .iter()
        .any(|r| r["kind"] == "violation_opened" && r["violation"] == kind)
}

fn report(args: &[&str]) -> tests::agent_proc::CliRun {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    cli(&all, "warn")
}

#[test]
fn report_sums_two_nodes_and_refuses_a_tampered_log() {
    require_tools();
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let orders = HttpServer::start(SocketAddr::new(localhost, 0), 8);
    let yaml = contract(orders.addr().port());
    let settings = TempDir::new("report-config");
    let config = settings.path().join("agent.yaml");
    std::fs::write(&config, "usage:\n  interval: 2s\n").expect("write the agent config");
    let config = config.display().to_string();
    let args = ["--config", config.as_str(), "--no-tls-probes"];
    let (cg_a, cg_b) = (CgroupGuard::new("report-a"), CgroupGuard::new("report-b"));
    let mut a = AgentProcess::start(&yaml, cg_a.path(), &args);
    let mut b = AgentProcess::start(&yaml, cg_b.path(), &args);

    let url = format!("http://{}/v1/orders", orders.addr());
    // Node A: 2 benign requests, 1 with the revoked key, then 20 on one
    // connection against 2 rps (burst 4). Node B: 5 benign, 1 anonymous.
    curl_in(&cg_a, Some(ACME), &[&url, &url]);
    curl_in(&cg_a, Some(REVOKED), &[&url]);
    let burst: Vec<String> = (0..20).map(|i| format!("{url}?page={i}")).collect();
    curl_in(&cg_a, Some(ACME), &burst);
    let five: Vec<String> = (0..5).map(|i| format!("{url}?n={i}")).collect();
    curl_in(&cg_b, Some(ACME), &five);
    curl_in(&cg_b, None, &[&url]);

    // Usage reaches the logs at the 2 s boundaries, while the agents run.
    for (agent, want) in [(&a, 23), (&b, 5)] {
        wait_until(
            "the usage records to hold every request",
            Duration::from_secs(30),
            || (usage_requests(agent, "acme", "orders") == want).then_some(()),
        );
    }
    wait_until(
        "A's violations in its audit log",
        Duration::from_secs(30),
        || (opened(&a, "revoked_client") && opened(&a, "quota_overshoot")).then_some(()),
    );
    wait_until(
        "B's unknown_client violation in its audit log",
        Duration::from_secs(30),
        || opened(&b, "unknown_client").then_some(()),
    );
    assert!(a.stop().success(), "{}", a.log_text());
    assert!(b.stop().success(), "{}", b.log_text());

    let (dir_a, dir_b) = (
        a.audit_dir.display().to_string(),
        b.audit_dir.display().to_string(),
    );
    for (agent, dir) in [(&a, &dir_a), (&b, &dir_b)] {
        let text: String = agent.audit_records().iter().map(Value::to_string).collect();
        assert!(
            !text.contains(ACME) && !text.contains(REVOKED),
            "a raw credential in {dir}"
        );
        let last = agent.audit_records().pop().unwrap_or_default();
        assert_eq!(last["kind"], "agent_stop", "{last}");
        assert!(
            agent.audit_records().iter().all(|r| r["v"] == 2),
            "every record carries the format version"
        );
        assert!(cli(&["audit", "verify", dir], "warn").ok);
    }

    let run = report(&[
        "--stage",
        "pilot",
        "--audit-dir",
        &dir_a,
        "--audit-dir",
        &dir_b,
        "-o",
        "json",
    ]);
    assert!(run.ok, "{}", run.stderr);
    let r: Value = serde_json::from_str(&run.stdout).expect("one JSON object");
    assert_eq!(r["stage"], "pilot");
    assert_eq!(r["contract"], "report-ramp");
    assert_eq!(r["usage_complete"], true);
    let usage = r["usage"].as_array().cloned().unwrap_or_default();
    let acme = usage
        .iter()
        .find(|u| u["client"] == "acme" && u["endpoint"] == "orders")
        .unwrap_or_else(|| panic!("acme on orders: {r}"));
    assert_eq!(acme["requests"], 28, "23 on A + 5 on B, exactly: {acme}");
    assert_eq!(acme["nodes"], 2, "{acme}");
    assert_eq!(acme["quota"]["rps"], 2.0, "{acme}");
    assert_eq!(acme["quota"]["burst"], 4.0, "{acme}");
    let unknown = usage
        .iter()
        .find(|u| u["client"] == "unknown")
        .unwrap_or_else(|| panic!("the anonymous call: {r}"));
    assert_eq!(unknown["requests"], 1, "{unknown}");
    assert_eq!(unknown["quota"], Value::Null, "{unknown}");
    assert_eq!(r["totals"]["requests"], 29, "{r}");

    let violations = r["violations"].as_array().cloned().unwrap_or_default();
    let find = |kind: &str, dir: &str| {
        violations
            .iter()
            .find(|v| v["kind"] == kind && v["audit_dir"] == dir)
            .unwrap_or_else(|| panic!("{kind} on {dir}: {violations:?}"))
    };
    let revoked = find("revoked_client", &dir_a);
    assert!(revoked["opened_at"].is_string(), "{revoked}");
    assert!(
        revoked["escalations"]
            .as_array()
            .is_some_and(|e| e.iter().any(|s| s["value"] == "critical")),
        "served, so critical at once: {revoked}"
    );
    assert!(revoked["id"].as_str().is_some_and(|id| id.starts_with('v')));
    find("quota_overshoot", &dir_a);
    find("unknown_client", &dir_b);
    let nodes = r["nodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(nodes.len(), 2, "{r}");
    for n in &nodes {
        assert_eq!(n["agent_starts"].as_array().map(Vec::len), Some(1), "{n}");
        assert_eq!(n["agent_stops"][0]["value"], "SIGINT", "{n}");
        assert!(n["usage_records"].as_u64().is_some_and(|u| u >= 1), "{n}");
    }
    assert_eq!(r["totals"]["contract_loads"], 2, "{r}");
    assert!(r["still_active"].as_bool().unwrap_or(false), "{r}");

    // Markdown, as an SRE pastes it.
    let md = report(&[
        "--stage",
        "pilot",
        "--audit-dir",
        &dir_a,
        "--audit-dir",
        &dir_b,
    ]);
    assert!(md.ok, "{}", md.stderr);
    for want in [
        "# Stage report: pilot (contract report-ramp)",
        "| acme | orders | 28 | 2 rps (burst 4) |",
        "revoked_client",
        "unknown_client",
        "## Nodes",
    ] {
        assert!(md.stdout.contains(want), "{want:?} in:\n{}", md.stdout);
    }

    // Against anchors taken now, one per node, in order: they hold.
    let anchor = |dir: &str| {
        let out = cli(&["audit", "anchor", dir], "warn");
        assert!(out.ok, "{}", out.stderr);
        out.stdout.trim().to_owned()
    };
    let (anchor_a, anchor_b) = (anchor(&dir_a), anchor(&dir_b));
    let anchored = report(&[
        "--stage",
        "pilot",
        "--audit-dir",
        &dir_a,
        "--audit-dir",
        &dir_b,
        "--anchor",
        &anchor_a,
        "--anchor",
        &anchor_b,
        "-o",
        "json",
    ]);
    assert!(anchored.ok, "{}", anchored.stderr);

    // A stage never entered is one clear sentence, exit 2.
    let none = report(&["--stage", "general", "--audit-dir", &dir_a]);
    assert!(!none.ok);
    assert!(
        none.stderr.contains(
            "stage \"general\" was never entered in these audit logs (stages entered: pilot)"
        ),
        "{}",
        none.stderr
    );

    // An edited usage record breaks B's chain: no report, B named.
    let seg = b.audit_dir.join("audit-000001.jsonl");
    let text = std::fs::read_to_string(&seg).expect("read B's log");
    let usage_line = text
        .lines()
        .find(|l| l.contains("\"kind\":\"usage\""))
        .expect("B wrote a usage record");
    let n = serde_json::from_str::<Value>(usage_line).expect("a record")["requests"]
        .as_u64()
        .expect("its requests");
    let forged = usage_line.replacen(
        &format!("\"requests\":{n},"),
        &format!("\"requests\":{},", n + 10),
        1,
    );
    let edited = text.replacen(usage_line, &forged, 1);
    assert_ne!(edited, text, "the usage record was edited");
    std::fs::write(&seg, edited).expect("edit B's log");
    let refused = report(&[
        "--stage",
        "pilot",
        "--audit-dir",
        &dir_a,
        "--audit-dir",
        &dir_b,
    ]);
    assert!(
        !refused.ok && refused.stdout.is_empty(),
        "{}",
        refused.stdout
    );
    assert!(
        refused
            .stderr
            .contains(&format!("the audit log in {dir_b} is not intact"))
            && refused.stderr.contains("hash mismatch"),
        "{}",
        refused.stderr
    );
}
