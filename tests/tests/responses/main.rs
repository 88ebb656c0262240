//! Whether the API said no, on the live agent: the kernel samples response
//! heads like request heads, the engine pairs each status with its request,
//! and violations say what the API answered. Over plain HTTP/1.1 and inside
//! TLS (python servers, curl clients, keep-alive): a revoked token served
//! 200 is `critical` at once, the same token refused 401 stays a warning;
//! a burst over quota that the API answers 429 counts as throttled. The
//! outcome shows in the CLI (JSON and table), in
//! `rampwatch_responses_total` and in the audit log. On h2c (nghttpd and
//! nghttp, prior knowledge) the statuses pair by stream: a file served 200,
//! a missing one refused 404, on one connection.
//!
//! Needs root; run by `cargo xtask test`.

use std::{
    net::{IpAddr, Ipv4Addr},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use tests::{
    TempDir,
    agent_proc::AgentProcess,
    cgroup::CgroupGuard,
    https::{PyHttpsServer, curl_https},
    nghttpd::Nghttpd,
    sha256_hex,
    tools::require_tools,
    wait::wait_until,
};

const LEAKY: &str = "leaky-responses-token";
const BURSTY: &str = "bursty-responses-token";

/// Per transport (`plain`, `tls`), an endpoint `open-<t>` (paths `/v1/`,
/// `/throttle`) and `guarded-<t>` (`/deny`) on the server's port: the
/// served and the refused requests land in violations of their own.
fn contract(plain: u16, tls: u16, h2c: u16) -> String {
    format!(
        r#"apiVersion: rampwatch.io/v1
kind: RampContract
metadata:
  name: responses
spec:
  dataClasses:
    - name: internal
      encryption: optional
      authentication: required
  endpoints:
    - {{ name: open-plain, dataClass: internal, hosts: ["127.0.0.1"], ports: [{plain}], paths: ["/v1/", "/throttle"] }}
    - {{ name: guarded-plain, dataClass: internal, hosts: ["127.0.0.1"], ports: [{plain}], paths: ["/deny"] }}
    - {{ name: open-tls, dataClass: internal, hosts: ["127.0.0.1"], ports: [{tls}], paths: ["/v1/", "/throttle"] }}
    - {{ name: guarded-tls, dataClass: internal, hosts: ["127.0.0.1"], ports: [{tls}], paths: ["/deny"] }}
    - {{ name: open-h2c, dataClass: internal, hosts: ["127.0.0.1"], ports: [{h2c}], paths: ["/v1/"] }}
    - {{ name: guarded-h2c, dataClass: internal, hosts: ["127.0.0.1"], ports: [{h2c}], paths: ["/deny"] }}
  clients:
    - name: leaky
      credentials:
        - {{ header: authorization, fingerprint: "sha256:{leaky}", issuedAt: "2026-11-01T00:00:00Z" }}
    - name: bursty
      credentials:
        - {{ header: authorization, fingerprint: "sha256:{bursty}", issuedAt: "2026-11-01T00:00:00Z" }}
  stages:
    - name: pilot
      startsAt: "2026-01-01T00:00:00Z"
      quotas:
        - {{ client: leaky, endpoint: open-plain, requestsPerSecond: 1000, burst: 1000 }}
        - {{ client: leaky, endpoint: guarded-plain, requestsPerSecond: 1000, burst: 1000 }}
        - {{ client: leaky, endpoint: open-tls, requestsPerSecond: 1000, burst: 1000 }}
        - {{ client: leaky, endpoint: guarded-tls, requestsPerSecond: 1000, burst: 1000 }}
        - {{ client: leaky, endpoint: open-h2c, requestsPerSecond: 1000, burst: 1000 }}
        - {{ client: leaky, endpoint: guarded-h2c, requestsPerSecond: 1000, burst: 1000 }}
        - {{ client: bursty, endpoint: open-plain, requestsPerSecond: 1, burst: 3 }}
        - {{ client: bursty, endpoint: open-tls, requestsPerSecond: 1, burst: 3 }}
  revocations:
    - fingerprint: "sha256:{leaky}"
      revokedAt: "2026-03-01T00:00:00Z"
      reason: leaked in a test
  remediation:
    warnAfter: 15m
    breachAfter: 24h
"#,
        leaky = sha256_hex(LEAKY),
        bursty = sha256_hex(BURSTY),
    )
}

/// nghttp (nghttp2's client) with HTTP/2 prior knowledge, every URL a
/// stream of one connection (curl does not reuse an h2c connection to
/// nghttpd); the status code per path.
fn nghttp(cgroup: &CgroupGuard, token: &str, urls: &[String]) -> Vec<(String, u16)> {
    let out = cgroup
        .command("nghttp")
        .args(["-n", "-s"])
        .arg("-H")
        .arg(format!("authorization: Bearer {token}"))
        .args(urls)
        .stderr(Stdio::inherit())
        .output()
        .expect("run nghttp (Debian package nghttp2-client)");
    assert!(out.status.success(), "nghttp {urls:?}: {:?}", out.status);
    // Stats lines: "id responseEnd requestStart process code size path".
    let mut codes: Vec<(String, u16)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (code, path) = (f.get(4)?.parse().ok()?, f.get(6)?);
            Some(((*path).to_owned(), code))
        })
        .collect();
    codes.sort();
    codes
}

/// The open or resolved violation (kind, endpoint) from the CLI's JSON.
fn violation(agent: &AgentProcess, kind: &str, endpoint: &str) -> Option<Value> {
    agent
        .cli_json(&["violations"])
        .into_iter()
        .find(|v| v["kind"] == kind && v["endpoint"] == endpoint)
}

/// The value of `name{labels}` in a Prometheus text scrape (labels in any
/// order).
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (set, value) = rest.split_once("} ")?;
        let all = labels
            .iter()
            .all(|(k, v)| set.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        all.then(|| value.trim().parse().ok()).flatten()
    })
}

fn outcome(v: &Value) -> (u64, u64, u64) {
    let o = &v["outcome"];
    let n = |k: &str| o[k].as_u64().unwrap_or(u64::MAX);
    (n("served"), n("refused"), n("unknown"))
}

/// One transport: a revoked token served then refused, a burst throttled.
fn say_no(agent: &AgentProcess, cgroup: &CgroupGuard, server: &PyHttpsServer, t: &str) {
    let (open, guarded) = (format!("open-{t}"), format!("guarded-{t}"));
    assert_eq!(
        curl_https(cgroup, Some(LEAKY), &[server.url("/v1/pay")]),
        [200]
    );
    let deny = [server.url("/deny/1"), server.url("/deny/2")];
    assert_eq!(curl_https(cgroup, Some(LEAKY), &deny), [401, 401]);
    // Burst 3 at 1/s: three served, then six the API throttles.
    let mut burst: Vec<String> = (0..3).map(|i| server.url(&format!("/v1/b{i}"))).collect();
    burst.extend((0..6).map(|i| server.url(&format!("/throttle/{i}"))));
    let codes = curl_https(cgroup, Some(BURSTY), &burst);
    assert_eq!(codes, [200, 200, 200, 429, 429, 429, 429, 429, 429]);

    let served = wait_until(
        &format!("{t}: the served revoked request's outcome"),
        Duration::from_secs(20),
        || violation(agent, "revoked_client", &open).filter(|v| outcome(v) == (1, 0, 0)),
    );
    assert_eq!(served["severity"], "critical", "served at once: {served}");
    let refused = wait_until(
        &format!("{t}: the refused revoked requests' outcome"),
        Duration::from_secs(20),
        || violation(agent, "revoked_client", &guarded).filter(|v| outcome(v) == (0, 2, 0)),
    );
    assert_eq!(refused["severity"], "warning", "refused: {refused}");
    // Live, the kernel's count (every 500 ms) opens the quota violation,
    // possibly after some 429s were seen: those still count once it opens,
    // but a 429 to a request within quota never does.
    let quota = wait_until(
        &format!("{t}: the burst counted and throttled"),
        Duration::from_secs(20),
        || {
            violation(agent, "quota_overshoot", &open)
                .filter(|v| v["count"].as_u64() >= Some(5) && v["throttled"].as_u64() >= Some(1))
        },
    );
    let (count, throttled) = (quota["count"].as_u64(), quota["throttled"].as_u64());
    assert!(throttled <= Some(6) && throttled <= count, "{quota}");

    let m = wait_until(
        &format!("{t}: rampwatch_responses_total for every answer"),
        Duration::from_secs(20),
        || {
            let text = agent.metrics();
            let got = |e: &str, c: &str, class: &str| {
                let labels = [("endpoint", e), ("client", c), ("class", class)];
                metric(&text, "rampwatch_responses_total", &labels)
            };
            let all = [
                got(&open, "leaky", "2xx"),
                got(&guarded, "leaky", "4xx"),
                got(&open, "bursty", "2xx"),
                got(&open, "bursty", "4xx"),
            ];
            (all == [Some(1), Some(2), Some(3), Some(6)]).then_some(text)
        },
    );
    assert_eq!(
        metric(
            &m,
            "rampwatch_responses_total",
            &[("endpoint", &open), ("class", "unknown")]
        ),
        None,
        "no answer missed on {t}"
    );

    // The escalation that serving caused is in the audit log with its
    // outcome; the refused violation's opening record shows none yet.
    let escalated = wait_until(
        &format!("{t}: the escalation's audit record"),
        Duration::from_secs(20),
        || {
            agent.audit_records().into_iter().find(|r| {
                r["kind"] == "violation_escalated"
                    && r["violation"] == "revoked_client"
                    && r["endpoint"] == open.as_str()
            })
        },
    );
    let records = agent.audit_records();
    assert_eq!(escalated["severity"], "critical");
    assert_eq!(escalated["outcome"]["served"], 1, "{escalated}");
    let opened = records
        .iter()
        .find(|r| r["kind"] == "violation_opened" && r["endpoint"] == guarded.as_str())
        .unwrap_or_else(|| panic!("{t}: no opening record in {records:?}"));
    assert_eq!(opened["outcome"]["served"], 0, "{opened}");
    assert!(
        records
            .iter()
            .filter(|r| r["kind"] == "violation_opened" && r["violation"] == "quota_overshoot")
            .all(|r| r.get("throttled").is_some()),
        "quota records carry throttled"
    );
}

#[test]
fn the_api_saying_no_is_seen_on_http_and_inside_tls() {
    require_tools();
    let cgroup = CgroupGuard::new("responses");
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let plain = PyHttpsServer::start_plain(ip, &cgroup);
    let tls = PyHttpsServer::start(ip, &cgroup);
    let files = TempDir::new("responses-h2c");
    std::fs::create_dir_all(files.path().join("v1")).expect("create the served directory");
    std::fs::write(files.path().join("v1/ok"), b"ok").expect("write the served file");
    let h2c = Nghttpd::start(&cgroup, files.path());
    let agent = AgentProcess::start(
        &contract(plain.addr.port(), tls.addr.port(), h2c.1.port()),
        cgroup.path(),
        &[],
    );
    agent.wait_tls_probed(tls.pid());

    say_no(&agent, &cgroup, &plain, "plain");
    say_no(&agent, &cgroup, &tls, "tls");

    // h2c: two streams on one connection, paired by stream id (nghttp
    // opens priority streams first, so these are streams 13 and 15).
    let urls = [
        format!("http://{}/v1/ok", h2c.1),
        format!("http://{}/deny/missing", h2c.1),
    ];
    assert_eq!(
        nghttp(&cgroup, LEAKY, &urls),
        [
            ("/deny/missing".to_owned(), 404),
            ("/v1/ok".to_owned(), 200)
        ]
    );
    let served = wait_until(
        "h2c: the served stream's outcome",
        Duration::from_secs(20),
        || violation(&agent, "revoked_client", "open-h2c").filter(|v| outcome(v) == (1, 0, 0)),
    );
    assert_eq!(served["severity"], "critical", "{served}");
    // The refused stream, exactly: nghttpd's SETTINGS (written on accept)
    // and nghttp's preface race, and their samples reach the agent in
    // either order; read first, the SETTINGS must still reach the HTTP/2
    // decoder or the server's HPACK state starts broken and this 404 (its
    // head refers to entries the 200's inserted) is `unknown`.
    let refused = wait_until(
        "h2c: the refused stream's outcome",
        Duration::from_secs(20),
        || violation(&agent, "revoked_client", "guarded-h2c").filter(|v| outcome(v) == (0, 1, 0)),
    );
    assert_eq!(refused["severity"], "warning", "{refused}");
    wait_until(
        "h2c: rampwatch_responses_total by stream",
        Duration::from_secs(20),
        || {
            let text = agent.metrics();
            let got = |e: &str, class: &str| {
                let labels = [("endpoint", e), ("client", "leaky"), ("class", class)];
                metric(&text, "rampwatch_responses_total", &labels)
            };
            (got("open-h2c", "2xx") == Some(1) && got("guarded-h2c", "4xx") == Some(1))
                .then_some(())
        },
    );

    // The table says the same: served/refused/unknown, and the 429s, in
    // front of the detail line under each violation's row.
    let table = agent.cli_ok(&["violations"]).expect("rampwatch violations");
    let detail = |endpoint: &str, kind: &str| -> String {
        let lines: Vec<&str> = table.lines().collect();
        lines
            .iter()
            .position(|l| l.contains(&format!(" {kind} ")) && l.contains(endpoint))
            .and_then(|i| lines.get(i + 1))
            .unwrap_or_else(|| panic!("no {kind} {endpoint} row in\n{table}"))
            .to_string()
    };
    assert!(
        detail("open-tls", "revoked_client").contains("[1/0/0]"),
        "{table}"
    );
    assert!(
        detail("guarded-t", "revoked_client").contains("[0/2/0]"),
        "{table}"
    );
    assert!(
        detail("open-tls", "quota_overshoot").contains(" x429]"),
        "{table}"
    );
    let mut agent = agent;
    agent.stop();
}
