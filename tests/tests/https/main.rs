//! Every term of the contract on HTTPS: the live agent with its TLS library
//! probes, python `ssl` servers (SSL_read_ex / SSL_write_ex) and curl
//! clients over real TLS on loopback, IPv4 and IPv6. Requests inside TLS are
//! counted exactly, a bearer token names its client on the TLS flow, and a
//! revoked, stale or missing credential, an unlisted path and a burst over
//! quota each raise their violation on an endpoint whose class requires
//! encryption; benign TLS raises none.
//!
//! Needs root; run by `cargo xtask test`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use tests::{
    agent_proc::AgentProcess,
    cgroup::CgroupGuard,
    contract::ContractYaml,
    https::{PyHttpsServer, curl_https},
    tools::require_tools,
    wait::wait_until,
};

const ACME: &str = "acme-https-token";
const LEAKY: &str = "leaky-https-token";
const OLD: &str = "old-https-token";
const BURSTY: &str = "bursty-https-token";

/// `secure` (class pii: encryption and authentication required) on every
/// port of `servers`, paths under /v1/ only.
fn contract(ports: &[u16]) -> String {
    let all = |oldco: bool| {
        let mut q = vec![
            ("acme", "secure", 1000, 1000),
            ("leaky", "secure", 1000, 1000),
        ];
        if oldco {
            q.push(("oldco", "secure", 1000, 1000));
        }
        q.push(("bursty", "secure", 1, 3));
        q
    };
    ContractYaml::new("https")
        .class("pii", "required")
        .endpoint("secure", "pii", &["127.0.0.1", "::1"], ports, &["/v1/"])
        .client("acme", ACME, "2026-11-01T00:00:00Z")
        .client("leaky", LEAKY, "2026-11-01T00:00:00Z")
        .client("oldco", OLD, "2020-01-01T00:00:00Z")
        .client("bursty", BURSTY, "2026-11-01T00:00:00Z")
        .stage("pilot", "2026-01-01T00:00:00Z", Some("3650d"), &all(false))
        .stage("ramp", "2026-02-01T00:00:00Z", Some("365d"), &all(true))
        .revoked(LEAKY, "2026-03-01T00:00:00Z")
        .remediation("15m", Some("24h"))
        .render()
}

fn open_violations(agent: &AgentProcess) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = agent
        .cli_json(&["violations"])
        .iter()
        .map(|v| {
            (
                v["kind"].as_str().unwrap_or_default().to_owned(),
                v["endpoint"].as_str().unwrap_or_default().to_owned(),
                v["client"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

fn violation(kind: &str, client: &str) -> (String, String, String) {
    (kind.to_owned(), "secure".to_owned(), client.to_owned())
}

/// A server started before the agent is probed at start; one started
/// after it is probed when it begins to listen. On both, over IPv4 and
/// IPv6, requests inside TLS are counted exactly and judged.
#[test]
fn every_term_holds_on_https() {
    require_tools();
    let cgroup = CgroupGuard::new("https");
    let before = PyHttpsServer::start(IpAddr::V4(Ipv4Addr::LOCALHOST), &cgroup);
    // Ports are the kernel's choice; the contract names the one known now
    // and a range wide enough for the server started later is not
    // possible, so the later one is named by a reload below.
    let mut agent = AgentProcess::start(&contract(&[before.addr.port()]), cgroup.path(), &[]);
    agent.wait_tls_probed(before.pid());

    // Benign: acme, 25 requests on one keep-alive connection.
    let urls: Vec<String> = (0..25)
        .map(|i| before.url(&format!("/v1/items/{i}")))
        .collect();
    let codes = curl_https(&cgroup, Some(ACME), &urls);
    assert_eq!(codes, vec![200; 25]);
    let port = before.addr.port();
    let flow = wait_until(
        "the acme TLS flow with its 25 requests",
        Duration::from_secs(20),
        || {
            agent
                .flows_to(port)
                .into_iter()
                .find(|f| f["client"] == "acme" && f["requests"].as_u64() == Some(25))
        },
    );
    assert_eq!(flow["protocol"], "tls", "{flow}");
    assert_eq!(flow["endpoint"], "secure", "{flow}");
    assert_eq!(flow["plaintext"], true, "{flow}");
    assert_eq!(
        open_violations(&agent),
        vec![],
        "benign HTTPS raises nothing"
    );

    // Each term, broken once, on the same TLS endpoint.
    curl_https(&cgroup, Some(LEAKY), &[before.url("/v1/pay")]);
    curl_https(&cgroup, Some(OLD), &[before.url("/v1/pay")]);
    curl_https(&cgroup, None, &[before.url("/v1/pay")]);
    curl_https(&cgroup, Some(ACME), &[before.url("/admin/export")]);
    let burst: Vec<String> = (0..30).map(|_| before.url("/v1/pay")).collect();
    curl_https(&cgroup, Some(BURSTY), &burst);
    let want = vec![
        violation("quota_overshoot", "bursty"),
        violation("revoked_client", "leaky"),
        violation("stale_credential", "oldco"),
        violation("unknown_client", "unknown"),
        // A path outside the endpoint's `paths` is charged to `unlisted`.
        (
            "unlisted_endpoint".to_owned(),
            "unlisted".to_owned(),
            "acme".to_owned(),
        ),
    ];
    let got = wait_until(
        "one violation per broken term on the TLS endpoint",
        Duration::from_secs(20),
        || {
            let v = open_violations(&agent);
            (v.len() >= want.len()).then_some(v)
        },
    );
    assert_eq!(got, want, "and never unencrypted_flow on TLS");
    // Kernel counts reach the engine with the flow-map poll (500 ms).
    let bursty = || -> u64 {
        agent
            .flows_to(port)
            .iter()
            .filter(|f| f["client"] == "bursty")
            .filter_map(|f| f["requests"].as_u64())
            .sum()
    };
    wait_until(
        "every request of the burst counted",
        Duration::from_secs(20),
        || (bursty() >= 30).then_some(()),
    );
    assert_eq!(bursty(), 30, "and none twice");

    // A server started after the agent, on IPv6, named by a reload.
    let after = PyHttpsServer::start(IpAddr::V6(Ipv6Addr::LOCALHOST), &cgroup);
    std::fs::write(
        agent.contract_path(),
        contract(&[before.addr.port(), after.addr.port()]),
    )
    .expect("rewrite the contract");
    agent.wait_tls_probed(after.pid());
    let urls: Vec<String> = (0..7).map(|_| after.url("/v1/six")).collect();
    curl_https(&cgroup, Some(ACME), &urls);
    let port6 = after.addr.port();
    let flow = wait_until(
        "the IPv6 acme TLS flow with its 7 requests",
        Duration::from_secs(20),
        || {
            agent
                .flows_to(port6)
                .into_iter()
                .find(|f| f["client"] == "acme" && f["requests"].as_u64() == Some(7))
        },
    );
    assert!(
        flow["src"].as_str().is_some_and(|s| s.starts_with("[::1]")),
        "{flow}"
    );
    assert_eq!(open_violations(&agent).len(), want.len(), "nothing new");
    agent.stop();
}
