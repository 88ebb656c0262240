//! The live agent's own behaviour, on a real kernel with real clients:
//! hot reload (file change, SIGHUP, invalid contract kept out), stage changes
//! on time, the violation lifecycle (escalation by the remediation windows,
//! resolution after a quiet period), the socket's permission check, and an
//! audit log that verifies after all of it.
//!
//! Needs root; run by `cargo xtask test`.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use agent::contract::format_rfc3339;
use serde_json::Value;
use tests::{
    TempDir,
    agent_proc::{AgentProcess, cli, rampwatch_binary},
    cgroup::CgroupGuard,
    contract::ContractYaml,
    http::{HttpServer, curl_in},
    tools::require_tools,
    wait::{wait_for, wait_until},
};

const TOKEN: &str = "agent-test-token";

fn now_plus(secs: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let ns = i64::try_from(now.as_nanos()).expect("fits") + secs * 1_000_000_000;
    // Whole seconds keep the file readable.
    format_rfc3339(ns - ns % 1_000_000_000)
}

/// A contract with one plaintext endpoint that requires authentication;
/// `second_stage_at` is when stage `ramp` starts.
fn contract(
    name: &str,
    port: u16,
    second_stage_at: &str,
    (warn_after, breach_after): (&str, Option<&str>),
) -> String {
    ContractYaml::new(name)
        .class("internal", "optional")
        .endpoint("orders", "internal", &["127.0.0.1"], &[port], &[])
        .client("acme", TOKEN, "2026-01-01T00:00:00Z")
        .stage(
            "pilot",
            "2026-01-01T00:00:00Z",
            None,
            &[("acme", "orders", 100, 100)],
        )
        .stage(
            "ramp",
            second_stage_at,
            None,
            &[("acme", "orders", 200, 200)],
        )
        .remediation(warn_after, breach_after)
        .render()
}

fn kinds(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| r["kind"].as_str().map(str::to_owned))
        .collect()
}

fn metric(agent: &AgentProcess, line_prefix: &str) -> Option<f64> {
    agent
        .metrics()
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn server() -> HttpServer {
    HttpServer::start(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), 8)
}

#[test]
fn reload_keeps_the_last_good_contract_and_stages_change_on_time() {
    require_tools();
    let orders = server();
    let port = orders.addr().port();
    let cgroup = CgroupGuard::new("reload");
    let far = "2030-01-01T00:00:00Z";
    let remediation = ("15m", Some("24h"));
    let mut agent = AgentProcess::start(
        &contract("first", port, far, remediation),
        cgroup.path(),
        &[],
    );
    let status = |a: &AgentProcess| {
        a.cli_json(&["status"])
            .into_iter()
            .next()
            .unwrap_or_default()
    };
    assert_eq!(status(&agent)["contract"], "first");
    assert_eq!(
        metric(&agent, "rampwatch_contract_reload_success"),
        Some(1.0)
    );

    // An invalid contract: rejected, counted, audited; the old one stays.
    std::fs::write(
        agent.contract_path(),
        "apiVersion: rampwatch.io/v1\nkind: RampContract\nspec: [\n",
    )
    .expect("write a broken contract");
    wait_for("the reload to be rejected", Duration::from_secs(20), || {
        metric(&agent, "rampwatch_contract_reload_success") == Some(0.0)
    });
    // The API's views refresh once a second.
    wait_for(
        "status to report the rejected reload",
        Duration::from_secs(5),
        || status(&agent)["contract_reload_ok"] == false,
    );
    let s = status(&agent);
    assert_eq!(
        s["contract"], "first",
        "the last good contract must stay active: {s}"
    );
    assert_eq!(s["contract_reload_ok"], false);
    assert!(kinds(&agent.audit_records()).contains(&"contract_reload_rejected".to_owned()));
    assert!(agent.is_running());

    // A valid one whose second stage starts in 3 s: loaded, then the stage
    // changes on time without a restart.
    let soon = now_plus(3);
    std::fs::write(
        agent.contract_path(),
        contract("second", port, &soon, remediation),
    )
    .expect("write the new contract");
    wait_for("the new contract to load", Duration::from_secs(20), || {
        status(&agent)["contract"] == "second"
    });
    assert_eq!(
        metric(&agent, "rampwatch_contract_reload_success"),
        Some(1.0)
    );
    wait_until(
        "stage `ramp` to become active",
        Duration::from_secs(20),
        || {
            let stage = agent.cli_json(&["stage"]).into_iter().next()?;
            (stage["active"] == "ramp").then_some(())
        },
    );
    assert!(
        metric(
            &agent,
            "rampwatch_stage_info{contract=\"second\",stage=\"ramp\"}"
        ) == Some(1.0),
        "{}",
        agent.metrics()
    );
    wait_for(
        "the stage change in the audit log",
        Duration::from_secs(10),
        || {
            agent
                .audit_records()
                .iter()
                .any(|r| r["kind"] == "stage_changed" && r["to"] == "ramp")
        },
    );

    // SIGHUP reloads even an unchanged file.
    let loaded = |a: &AgentProcess| {
        kinds(&a.audit_records())
            .iter()
            .filter(|k| *k == "contract_loaded")
            .count()
    };
    let before = loaded(&agent);
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(agent.pid(), libc::SIGHUP);
    }
    wait_for(
        "SIGHUP to reload the contract",
        Duration::from_secs(10),
        || loaded(&agent) > before,
    );

    let audit_dir = agent.audit_dir.clone();
    assert!(agent.stop().success(), "{}", agent.log_text());
    let verify = cli(
        &["audit", "verify", &audit_dir.display().to_string()],
        "debug",
    );
    assert!(
        verify.ok,
        "audit verify: {}{}",
        verify.stdout, verify.stderr
    );
    let records = kinds(&agent.audit_records());
    assert_eq!(records.first().map(String::as_str), Some("agent_start"));
    assert_eq!(records.last().map(String::as_str), Some("agent_stop"));
}

#[test]
fn violations_escalate_by_remediation_windows_and_resolve_when_quiet() {
    require_tools();
    let orders = server();
    let port = orders.addr().port();
    let cgroup = CgroupGuard::new("lifecycle");
    let remediation = ("2s", Some("4s"));
    let dir = TempDir::new("cfg");
    let config = dir.path().join("agent.yaml");
    std::fs::write(&config, "violations:\n  quietPeriod: 8s\n").expect("write the agent config");
    let config = config.display().to_string();
    let agent = AgentProcess::start(
        &contract("lifecycle", port, "2030-01-01T00:00:00Z", remediation),
        cgroup.path(),
        &["--config", &config],
    );
    // `rampwatch watch` streams the lifecycle as it happens.
    let watch = agent.watch("json");
    let url = format!("http://{}/v1/orders", orders.addr());
    // No credential to an endpoint that requires one: unknown_client.
    curl_in(&cgroup, None, &[&url]);
    let violation = |a: &AgentProcess| -> Option<Value> {
        a.cli_json(&["violations"])
            .into_iter()
            .find(|v| v["kind"] == "unknown_client")
    };
    let v = wait_until("unknown_client to open", Duration::from_secs(15), || {
        violation(&agent)
    });
    assert_eq!(v["endpoint"], "orders");
    assert_eq!(v["client"], "unknown");
    for field in ["severity", "first_seen", "last_seen", "count", "detail"] {
        assert!(!v[field].is_null(), "violations -o json lacks {field}: {v}");
    }
    // Open longer than breachAfter (4 s) while still inside the quiet period.
    wait_for(
        "the violation to reach `breach`",
        Duration::from_secs(15),
        || violation(&agent).is_some_and(|v| v["severity"] == "breach" && v["state"] == "open"),
    );
    wait_for(
        "the violation to resolve after 8 s without occurrence",
        Duration::from_secs(30),
        || violation(&agent).is_some_and(|v| v["state"] == "resolved"),
    );
    let records = kinds(&agent.audit_records());
    for kind in [
        "violation_opened",
        "violation_escalated",
        "violation_resolved",
    ] {
        assert!(
            records.contains(&kind.to_owned()),
            "no {kind} in the audit log: {records:?}"
        );
    }
    // What `watch` streamed up to the resolution.
    let streamed = wait_until(
        "`rampwatch watch` to stream the resolution",
        Duration::from_secs(10),
        || {
            // A line that is not JSON shows as `?:?` and fails the test.
            let events: Vec<String> = watch
                .text()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap_or_default())
                .map(|v| {
                    format!(
                        "{}:{}",
                        v["event"].as_str().unwrap_or("?"),
                        v["violation"]["kind"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            let end = events.iter().position(|e| e.starts_with("resolved:"))?;
            Some(events[..=end].to_vec())
        },
    );
    drop(watch);
    assert_eq!(
        streamed,
        [
            "opened:unknown_client",
            "escalated:unknown_client",
            "escalated:unknown_client",
            "resolved:unknown_client"
        ],
        "what `rampwatch watch` streamed"
    );
}

#[test]
fn socket_refuses_other_users_with_a_clear_message() {
    require_tools();
    let orders = server();
    let cgroup = CgroupGuard::new("sock");
    let agent = AgentProcess::start(
        &contract(
            "sock",
            orders.addr().port(),
            "2030-01-01T00:00:00Z",
            ("15m", None),
        ),
        cgroup.path(),
        &[],
    );
    // The agent's temp dir must be traversable for the refusal to come from
    // the socket itself rather than its directory.
    let _ = Command::new("chmod").arg("755").arg(&agent.dir).status();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(rampwatch_binary())
        .args(["status", "--socket"])
        .arg(&agent.socket)
        .output()
        .expect("setpriv runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        err.lines().count(),
        1,
        "one sentence, not a backtrace: {err}"
    );
    // Root is still served.
    assert!(agent.cli_ok(&["status"]).is_some());
}
