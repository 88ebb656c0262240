//! SLA clocks on the live agent with real Prometheus and Alertmanager
//! loaded with the shipped rules: remediation windows of a data class and
//! of a violation kind (seconds, so the test sees both steps) win, bound by
//! bound, over the global one; an anonymous curl call opens an
//! `unknown_client` violation whose row shows its window and next step,
//! which escalates to `critical` and then `breach` by that window, and each
//! step reaches Alertmanager with the violation's endpoint and client. A
//! violation on unlisted traffic (no class) keeps the global window.
//! `rampwatch ack` records who acknowledged it (name and uid) in the audit
//! log without stopping the clock, is refused to a caller who is neither
//! root nor in the socket group, and the resolution's audit record says how
//! long the violation was open.
//!
//! Needs root; run by `cargo xtask test`.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Command,
    time::Duration,
};

use serde_json::Value;
use tests::{
    TempDir,
    agent_proc::{AgentProcess, rampwatch_binary},
    cgroup::CgroupGuard,
    http::{HttpServer, curl_in},
    prom::Monitoring,
    sha256_hex,
    tools::require_tools,
    wait::wait_until,
};

const ACME: &str = "acme-sla-token";

fn contract(port: u16, docs: u16) -> String {
    format!(
        r#"apiVersion: rampwatch.io/v1
kind: RampContract
metadata:
  name: sla
spec:
  scope:
    networks: ["127.0.0.1/32"]
    ports: [{docs}]
  dataClasses:
    - name: internal
      encryption: optional
      authentication: required
  endpoints:
    - {{ name: orders, dataClass: internal, hosts: ["127.0.0.1"], ports: [{port}] }}
  clients:
    - name: acme
      credentials:
        - {{ fingerprint: "sha256:{fp}", issuedAt: "2026-11-01T00:00:00Z" }}
  stages:
    - name: pilot
      startsAt: "2026-01-01T00:00:00Z"
      quotas:
        - {{ client: acme, endpoint: orders, requestsPerSecond: 100, burst: 100 }}
  remediation:
    warnAfter: 1h
    breachAfter: 7d
    kinds:
      unknown_client: {{ breachAfter: 9s }}
    dataClasses:
      internal: {{ warnAfter: 3s, breachAfter: 1d }}
"#,
        fp = sha256_hex(ACME)
    )
}

fn violation(agent: &AgentProcess, kind: &str) -> Option<Value> {
    agent
        .cli_json(&["violations"])
        .into_iter()
        .find(|v| v["kind"] == kind)
}

/// Alertmanager's alert `name` for endpoint `orders`, client `unknown`.
fn alert(m: &Monitoring, name: &str) -> Option<Value> {
    m.alerts().into_iter().find(|a| {
        let l = &a["labels"];
        l["alertname"] == name
            && l["kind"] == "unknown_client"
            && l["endpoint"] == "orders"
            && l["client"] == "unknown"
    })
}

#[test]
fn sla_clocks_escalate_by_their_window_and_alert_at_each_step() {
    require_tools();
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let orders = HttpServer::start(SocketAddr::new(localhost, 0), 8);
    let docs = HttpServer::start(SocketAddr::new(localhost, 0), 8);
    let cgroup = CgroupGuard::new("sla");
    // Violations resolve 40 s after their last occurrence (default 5 m),
    // well after the 9 s breach.
    let settings = TempDir::new("sla-config");
    let config = settings.path().join("agent.yaml");
    std::fs::write(&config, "violations:\n  quietPeriod: 40s\n").expect("write the agent config");
    let config = config.display().to_string();
    let agent = AgentProcess::start(
        &contract(orders.addr().port(), docs.addr().port()),
        cgroup.path(),
        &["--config", &config],
    );
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/prometheus/rampwatch-rules.yaml");
    let monitoring = Monitoring::start(&rules, &[agent.metrics_addr]);

    // No credential on an endpoint that requires one; and acme calling a
    // port in scope that no endpoint lists (no class: global window).
    curl_in(
        &cgroup,
        None,
        &[format!("http://{}/v1/orders", orders.addr())],
    );
    curl_in(&cgroup, Some(ACME), &[format!("http://{}/x", docs.addr())]);

    let anon = wait_until(
        "the unknown_client violation",
        Duration::from_secs(20),
        || violation(&agent, "unknown_client"),
    );
    let id = anon["id"].as_str().unwrap_or_default().to_owned();
    assert!(id.starts_with('v') && id.len() == 11, "{anon}");
    acknowledge(&agent, &id);
    // Bound by bound: warnAfter from the class, breachAfter from the kind.
    assert_eq!(anon["critical_after_secs"], 3, "{anon}");
    assert_eq!(anon["breach_after_secs"], 9, "{anon}");
    let unlisted = wait_until(
        "the unlisted_endpoint violation",
        Duration::from_secs(20),
        || violation(&agent, "unlisted_endpoint"),
    );
    assert_eq!(unlisted["critical_after_secs"], 3600, "{unlisted}");
    assert_eq!(unlisted["breach_after_secs"], 7 * 86_400, "{unlisted}");
    assert_eq!(unlisted["next_step"], "critical", "{unlisted}");
    assert!(
        unlisted["next_step_in_secs"]
            .as_i64()
            .is_some_and(|s| s > 0 && s <= 3600),
        "{unlisted}"
    );

    // Critical after 3 s: the row says breach comes next, and the alert
    // reaches Alertmanager with endpoint and client.
    let critical = wait_until(
        "unknown_client to be critical",
        Duration::from_secs(30),
        || violation(&agent, "unknown_client").filter(|v| v["severity"] != "warning"),
    );
    if critical["severity"] == "critical" {
        assert_eq!(critical["next_step"], "breach", "{critical}");
        assert!(critical["next_step_at"].is_string(), "{critical}");
    }
    let fired = wait_until(
        "RampViolationCritical in Alertmanager",
        Duration::from_secs(60),
        || alert(&monitoring, "RampViolationCritical"),
    );
    assert_eq!(fired["labels"]["severity"], "warning", "{fired}");

    // Breach after 9 s: nothing comes next; the breach alert pages.
    let breach = wait_until("unknown_client to breach", Duration::from_secs(30), || {
        violation(&agent, "unknown_client").filter(|v| v["severity"] == "breach")
    });
    assert!(breach["next_step"].is_null(), "{breach}");
    assert_eq!(
        breach["id"],
        id.as_str(),
        "the id is stable while it escalates"
    );
    let fired = wait_until(
        "RampViolationBreach in Alertmanager",
        Duration::from_secs(60),
        || alert(&monitoring, "RampViolationBreach"),
    );
    assert_eq!(fired["labels"]["severity"], "critical", "{fired}");
    let table = agent.cli_ok(&["violations"]).unwrap_or_default();
    assert!(table.contains("NEXT") && table.contains(&id), "{table}");
    // The other violation's clock is still at warning.
    assert_eq!(
        violation(&agent, "unlisted_endpoint").map(|v| v["severity"].clone()),
        Some("warning".into())
    );

    // Quiet for the quiet period: resolved, and the audit says after how
    // long; the acknowledgement is there with who and why.
    let resolved = wait_until(
        "the resolution in the audit log",
        Duration::from_secs(90),
        || {
            agent
                .audit_records()
                .into_iter()
                .find(|r| r["kind"] == "violation_resolved" && r["id"] == id.as_str())
        },
    );
    assert_eq!(resolved["severity"], "breach", "{resolved}");
    assert!(
        resolved["open_secs"].as_u64().is_some_and(|s| s >= 9),
        "open at least until its breach: {resolved}"
    );
    let acks: Vec<Value> = agent
        .audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "violation_acknowledged")
        .collect();
    let [ack] = acks.as_slice() else {
        panic!("one acknowledgement recorded: {acks:?}");
    };
    assert_eq!(ack["id"], id.as_str(), "{ack}");
    assert_eq!(ack["by"], "alice", "{ack}");
    assert_eq!(ack["uid"], 0, "{ack}");
    assert_eq!(ack["note"], "billing team paged", "{ack}");
    assert_eq!(
        (&ack["violation"], &ack["endpoint"], &ack["client"]),
        (
            &"unknown_client".into(),
            &"orders".into(),
            &"unknown".into()
        ),
        "{ack}"
    );
    let verify = tests::agent_proc::cli(
        &["audit", "verify", &agent.audit_dir.display().to_string()],
        "info",
    );
    assert!(
        verify.ok,
        "the chain holds with the new records: {}",
        verify.stderr
    );
}

/// `rampwatch ack`: refused to nobody (not root, not in the socket
/// group), to a malformed or unknown id; recorded for root.
fn acknowledge(agent: &AgentProcess, id: &str) {
    let socket = agent.socket.display().to_string();
    let nobody = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(rampwatch_binary())
        .args(["ack", id, "--by", "mallory", "--socket", &socket])
        .output()
        .expect("run setpriv (util-linux)");
    assert!(!nobody.status.success(), "nobody may not acknowledge");
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&nobody.stderr)
    );
    let bad = agent.cli(&["ack", "12; rm -rf", "--by", "alice"]);
    assert!(
        !bad.ok && bad.stderr.contains("is not a violation id"),
        "{}",
        bad.stderr
    );
    let unknown = agent.cli(&["ack", "v0000000000", "--by", "alice"]);
    assert!(
        !unknown.ok && unknown.stderr.contains("no open violation has id"),
        "{}",
        unknown.stderr
    );
    let ok = agent.cli(&["ack", id, "--by", "alice", "--note", "billing team paged"]);
    assert!(ok.ok, "root acknowledges: {}", ok.stderr);
    assert!(
        ok.stdout.contains(&format!("acknowledged {id}")),
        "{}",
        ok.stdout
    );
}
