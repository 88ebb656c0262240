//! End to end, with real components: the live agent on a test cgroup, real
//! Prometheus scraping it with the shipped alert rules, real Alertmanager
//! receiving the alerts, and real clients (curl) breaking the contract.
//!
//! Benign traffic first: it must raise no alert at all, measured after
//! Prometheus has scraped that traffic and evaluated the rules on it. Then
//! plaintext to an endpoint that requires encryption, a revoked key and a
//! burst over quota: exactly the matching alerts must reach Alertmanager.
//!
//! Needs root (eBPF, cgroups); run by `cargo xtask test`.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::{Command, Stdio},
    time::Duration,
};

use tests::{
    agent_proc::AgentProcess,
    cgroup::CgroupGuard,
    contract::ContractYaml,
    http::{HttpServer, curl_in},
    prom::Monitoring,
    tools::require_tools,
    wait::{wait_for, wait_until},
};

const ACME: &str = "e2e-acme-token";
const REVOKED: &str = "e2e-revoked-token";

fn contract(ledger: u16, orders: u16) -> String {
    ContractYaml::new("e2e-ramp")
        .class("pii", "required")
        .class("internal", "optional")
        .endpoint("ledger", "pii", &["127.0.0.1"], &[ledger], &[])
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
            &[("acme", "orders", 2, 4), ("acme", "ledger", 10, 10)],
        )
        .revoked(REVOKED, "2026-02-01T00:00:00Z")
        .remediation("15m", Some("24h"))
        .render()
}

fn value(sample: &serde_json::Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until Prometheus has scraped and evaluated `n` more times.
fn wait_evaluations(m: &Monitoring, n: f64) {
    let q = "count_over_time(up{job=\"rampwatch\"}[10m])";
    let start = m.query(q).first().map_or(0.0, value);
    wait_for(
        "Prometheus to scrape and evaluate again",
        Duration::from_secs(30),
        || m.query(q).first().map_or(0.0, value) >= start + n,
    );
}

fn ramp_alerts(m: &Monitoring) -> BTreeSet<String> {
    m.alert_names()
        .into_iter()
        .filter(|n| n.starts_with("Ramp"))
        .collect()
}

#[test]
fn alerts_reach_alertmanager_for_violations_and_not_for_benign_traffic() {
    require_tools();
    for tool in ["prometheus", "prometheus-alertmanager", "sha256sum"] {
        assert!(
            which::which(tool).is_ok(),
            "{tool} is missing; `cargo xtask test` installs the Debian packages prometheus and prometheus-alertmanager"
        );
    }
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let ledger = HttpServer::start(SocketAddr::new(localhost, 0), 16);
    let orders = HttpServer::start(SocketAddr::new(localhost, 0), 16);
    let cgroup = CgroupGuard::new("e2e");
    let mut agent = AgentProcess::start(
        &contract(ledger.addr().port(), orders.addr().port()),
        cgroup.path(),
        &[],
    );
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/prometheus/rampwatch-rules.yaml");
    let monitoring = Monitoring::start(&rules, &[agent.metrics_addr]);
    let fail = |what: &str, m: &Monitoring, a: &AgentProcess| -> String {
        format!("{what}\n{}\n--- agent\n{}", m.logs(), a.log_text())
    };

    // Benign: two requests within acme's quota, with its current key.
    let orders_url = format!("http://{}/v1/orders", orders.addr());
    curl_in(&cgroup, Some(ACME), &[&orders_url]);
    curl_in(&cgroup, Some(ACME), &[&orders_url]);
    wait_until(
        "Prometheus to see acme's two requests",
        Duration::from_secs(30),
        || {
            let q = "rampwatch_requests_total{client=\"acme\",endpoint=\"orders\"}";
            (m_value(&monitoring, q) >= 2.0).then_some(())
        },
    );
    wait_evaluations(&monitoring, 3.0);
    let pending: Vec<_> = tests::prom::get_json(monitoring.prometheus_addr, "/api/v1/alerts")
        .and_then(|v| v["data"]["alerts"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|a| {
            a["labels"]["alertname"]
                .as_str()
                .is_some_and(|n| n.starts_with("Ramp"))
        })
        .collect();
    assert!(
        pending.is_empty() && ramp_alerts(&monitoring).is_empty(),
        "{}",
        fail(
            &format!("benign traffic raised alerts: {pending:?}"),
            &monitoring,
            &agent
        )
    );

    // Plaintext to the pii endpoint; a revoked key; 20 requests at once on
    // one connection against 2 req/s, burst 4.
    curl_in(
        &cgroup,
        Some(ACME),
        &[format!("http://{}/v1/entries", ledger.addr())],
    );
    curl_in(&cgroup, Some(REVOKED), &[&orders_url]);
    let burst: Vec<String> = (0..20).map(|i| format!("{orders_url}?page={i}")).collect();
    curl_in(&cgroup, Some(ACME), &burst);

    // The server answers 200 to everything, so the revoked client was
    // served: that violation is critical at once, and RampViolationCritical
    // fires with it.
    let want: BTreeSet<String> = [
        "RampUnencryptedFlow",
        "RampRevokedClient",
        "RampQuotaOvershoot",
        "RampViolationCritical",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    wait_for(
        "the four alerts at Alertmanager",
        Duration::from_secs(60),
        || want.is_subset(&ramp_alerts(&monitoring)),
    );
    // Nothing else: every request carried a known key to a listed path.
    wait_evaluations(&monitoring, 2.0);
    let got = ramp_alerts(&monitoring);
    // The sets and the labels of what fired first: CI keeps the head and
    // the tail of a long failure, and the logs below run to megabytes.
    assert_eq!(
        got,
        want,
        "unexpected alert set: got {got:?}, want {want:?}; alerts {:?}\n{}",
        monitoring.alerts(),
        fail("", &monitoring, &agent)
    );
    // And each for the right endpoint and client.
    let labelled: BTreeSet<(String, String, String)> = monitoring
        .alerts()
        .iter()
        .filter_map(|a| {
            let l = &a["labels"];
            let name = l["alertname"].as_str()?;
            name.starts_with("Ramp").then(|| {
                let s = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
                (name.to_owned(), s("endpoint"), s("client"))
            })
        })
        .collect();
    let expected: BTreeSet<(String, String, String)> = [
        ("RampUnencryptedFlow", "ledger", "acme"),
        ("RampRevokedClient", "orders", "acme"),
        ("RampQuotaOvershoot", "orders", "acme"),
        ("RampViolationCritical", "orders", "acme"),
    ]
    .into_iter()
    .map(|(a, e, c)| (a.to_owned(), e.to_owned(), c.to_owned()))
    .collect();
    assert_eq!(
        labelled,
        expected,
        "{}",
        fail("alerts with unexpected labels", &monitoring, &agent)
    );
    // A real scrape passes promtool's lint (names, help, types, units).
    let scrape = agent.metrics();
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    {
        use std::io::Write as _;
        lint.stdin
            .take()
            .expect("stdin")
            .write_all(scrape.as_bytes())
            .expect("feed promtool");
    }
    let lint = lint.wait_with_output().expect("promtool finishes");
    assert!(
        lint.status.success() && lint.stdout.is_empty() && lint.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    assert!(agent.is_running());
    assert!(agent.stop().success(), "{}", agent.log_text());
}

fn m_value(m: &Monitoring, q: &str) -> f64 {
    m.query(q).first().map_or(0.0, value)
}
