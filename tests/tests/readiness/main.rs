//! Readiness before a stage, live: real curl traffic through the kernel
//! programs, `rampwatch readiness` over the socket (table and JSON), the
//! next stage's quota gauge, and the shipped `RampStageNotReady` rule
//! matching in a real Prometheus that scrapes the agent.
//!
//! Needs root; run by `cargo xtask test`.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use agent::contract::format_rfc3339;
use serde_json::Value;
use tests::{
    TempDir,
    agent_proc::{AgentProcess, json_lines},
    cgroup::CgroupGuard,
    http::{HttpServer, curl_in},
    prom::{Monitoring, get_json},
    sha256_hex,
    tools::require_tools,
    wait::{wait_for, wait_until},
};

const ACME: &str = "readiness-acme-token";
const GLOBEX: &str = "readiness-globex-token";

fn at(offset_secs: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let ns = i64::try_from(now.as_nanos()).expect("fits") + offset_secs * 1_000_000_000;
    format_rfc3339(ns - ns % 1_000_000_000)
}

/// `pilot` now, generous; `ramp` in two hours: acme 2 req/s on orders and
/// nothing on legacy (which closes), keys at most 30 days old.
fn contract(orders: u16, legacy: u16) -> String {
    format!(
        r#"apiVersion: rampwatch.io/v1
kind: RampContract
metadata:
  name: readiness
spec:
  dataClasses:
    - name: internal
      encryption: optional
      authentication: required
  endpoints:
    - name: orders
      dataClass: internal
      hosts: ["127.0.0.1"]
      ports: [{orders}]
    - name: legacy
      dataClass: internal
      hosts: ["127.0.0.1"]
      ports: [{legacy}]
  clients:
    - name: acme
      credentials:
        - fingerprint: "sha256:{acme}"
          issuedAt: "{acme_issued}"
    - name: globex
      credentials:
        - fingerprint: "sha256:{globex}"
          issuedAt: "{globex_issued}"
  stages:
    - name: pilot
      startsAt: "{pilot}"
      quotas:
        - {{ client: acme, endpoint: orders, requestsPerSecond: 1000, burst: 1000 }}
        - {{ client: acme, endpoint: legacy, requestsPerSecond: 1000, burst: 1000 }}
        - {{ client: globex, endpoint: orders, requestsPerSecond: 1000, burst: 1000 }}
    - name: ramp
      startsAt: "{ramp}"
      credentialMaxAge: 30d
      quotas:
        - {{ client: acme, endpoint: orders, requestsPerSecond: 2, burst: 5 }}
        - {{ client: globex, endpoint: orders, requestsPerSecond: 1000, burst: 1000 }}
"#,
        acme = sha256_hex(ACME),
        globex = sha256_hex(GLOBEX),
        acme_issued = at(-90 * 86_400),
        globex_issued = at(-86_400),
        pilot = at(-86_400),
        ramp = at(7_200),
    )
}

/// `rampwatch <args> -o json` (exit 1 when not ready, so not `cli_json`).
fn readiness_json(agent: &AgentProcess, args: &[&str]) -> Vec<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    json_lines(&agent.cli(&all).stdout)
}

fn find<'a>(
    rows: &'a [Value],
    problem: &str,
    client: Option<&str>,
    endpoint: Option<&str>,
) -> Option<&'a Value> {
    rows.iter().find(|r| {
        r["problem"] == problem
            && r["client"].as_str() == client
            && r["endpoint"].as_str() == endpoint
    })
}

fn metric(agent: &AgentProcess, prefix: &str) -> Option<f64> {
    agent
        .metrics()
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn readiness_for_the_next_stage_from_live_traffic() {
    require_tools();
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let orders = HttpServer::start(SocketAddr::new(localhost, 0), 16);
    let legacy = HttpServer::start(SocketAddr::new(localhost, 0), 16);
    let cgroup = CgroupGuard::new("readiness");
    let dir = TempDir::new("readiness-cfg");
    let config = dir.path().join("agent.yaml");
    // A long window: the test's traffic stays inside it however slow the
    // machine; a short lead would keep the alert quiet, 1 day does not.
    std::fs::write(&config, "readiness:\n  window: 30m\n  lead: 1d\n").expect("agent config");
    let config = config.display().to_string();
    let agent = AgentProcess::start(
        &contract(orders.addr().port(), legacy.addr().port()),
        cgroup.path(),
        &["--config", &config],
    );
    let orders_urls: Vec<String> = (1..=40)
        .map(|i| format!("http://{}/v1/orders/{i}", orders.addr()))
        .collect();
    let legacy_url = format!("http://{}/v1/old", legacy.addr());
    let traffic = || {
        curl_in(&cgroup, Some(ACME), &orders_urls);
        curl_in(&cgroup, Some(ACME), &[&legacy_url]);
        curl_in(&cgroup, Some(GLOBEX), &orders_urls[..2]);
    };
    traffic();
    let rows = wait_until(
        "readiness to see acme over ramp's quota",
        Duration::from_secs(30),
        || {
            let rows = readiness_json(&agent, &["readiness"]);
            find(&rows, "rate_above_quota", Some("acme"), Some("orders"))
                .is_some()
                .then_some(rows)
        },
    );
    for r in &rows {
        assert_eq!(r["stage"], "ramp", "{r}");
        let starts_in = r["starts_in_secs"].as_i64().expect("starts_in_secs");
        assert!((0..=7_200).contains(&starts_in), "{r}");
    }
    let over = find(&rows, "rate_above_quota", Some("acme"), Some("orders")).expect("over");
    assert_eq!(over["quota"], 2.0);
    assert_eq!(over["burst"], 5);
    assert_eq!(over["current_quota"], 1000.0);
    assert!(over["rate"].as_f64().expect("rate") > 2.0, "{over}");
    assert!(over["window_secs"].as_f64().expect("window") <= 1_800.0);
    let none = wait_until(
        "acme's legacy traffic to count",
        Duration::from_secs(10),
        || {
            let rows = readiness_json(&agent, &["readiness"]);
            find(&rows, "no_quota", Some("acme"), Some("legacy")).cloned()
        },
    );
    assert!(none["quota"].is_null());
    assert!(
        find(&rows, "endpoint_changes", None, Some("legacy")).is_some(),
        "{rows:#?}"
    );
    let stale =
        find(&rows, "credential_stale", Some("acme"), None).expect("acme's key is 90 d old");
    assert_eq!(stale["credential_max_age"], "30d");
    assert!(
        stale["detail"]
            .as_str()
            .expect("detail")
            .contains(" is 90d old when `ramp` starts"),
        "{stale}"
    );
    // globex: within its quota, key a day old.
    assert!(!rows.iter().any(|r| r["client"] == "globex"), "{rows:#?}");
    // Never a credential, only its short fingerprint.
    let text = serde_json::to_string(&rows).expect("json");
    assert!(
        !text.contains(ACME) && !text.contains(&sha256_hex(ACME)),
        "{text}"
    );

    // The table, and a named stage: pilot, already active, grants enough.
    // Not ready: exit 1, with the table on stdout.
    let run = agent.cli(&["readiness"]);
    assert!(!run.ok, "readiness must exit 1 when not ready");
    let table = run.stdout;
    assert!(table.contains("stage ramp starts "), "{table}");
    assert!(table.contains("rate_above_quota acme"), "{table}");
    assert!(table.contains("not ready: "), "{table}");
    let pilot = readiness_json(&agent, &["readiness", "--stage", "pilot"]);
    assert!(!pilot.is_empty());
    assert!(
        pilot.iter().all(|r| r["problem"] == "endpoint_changes"),
        "{pilot:#?}"
    );
    let unknown = agent.cli(&["readiness", "--stage", "ramp-9x"]);
    assert!(!unknown.ok);
    assert!(
        unknown
            .stderr
            .contains("no stage named `ramp-9x`; its stages are: pilot, ramp")
            || unknown
                .stdout
                .contains("no stage named `ramp-9x`; its stages are: pilot, ramp"),
        "{}{}",
        unknown.stdout,
        unknown.stderr
    );

    // For Prometheus: the next stage's quota per pair, and the lead.
    assert_eq!(
        metric(
            &agent,
            "rampwatch_next_stage_quota_requests_per_second{client=\"acme\",endpoint=\"orders\"}"
        ),
        Some(2.0),
        "{}",
        agent.metrics()
    );
    assert_eq!(
        metric(
            &agent,
            "rampwatch_next_stage_quota_requests_per_second{client=\"acme\",endpoint=\"legacy\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(&agent, "rampwatch_readiness_lead_seconds"),
        Some(86_400.0)
    );

    // The shipped rule, in a real Prometheus scraping the agent: traffic
    // keeps coming until the rule matches (it is pending for its `for:`).
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/prometheus/rampwatch-rules.yaml");
    let monitoring = Monitoring::start(&rules, &[agent.metrics_addr]);
    let not_ready = || -> Vec<Value> {
        get_json(monitoring.prometheus_addr, "/api/v1/alerts")
            .and_then(|v| v["data"]["alerts"].as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == "RampStageNotReady")
            .collect()
    };
    let pending = wait_until(
        "RampStageNotReady to match in Prometheus",
        Duration::from_secs(90),
        || {
            traffic();
            let alerts = not_ready();
            let pair = |e: &str| {
                alerts
                    .iter()
                    .any(|a| a["labels"]["client"] == "acme" && a["labels"]["endpoint"] == e)
            };
            (pair("orders") && pair("legacy")).then_some(alerts)
        },
    );
    assert!(
        !pending.iter().any(|a| a["labels"]["client"] == "globex"),
        "globex is within ramp's quota: {pending:#?}"
    );
    wait_for("the agent to stay up", Duration::from_secs(1), || {
        agent.cli_ok(&["status"]).is_some()
    });
}
