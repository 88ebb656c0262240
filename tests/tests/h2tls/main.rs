//! HTTP/2 inside TLS on the live agent: Debian's nginx with `http2` on its
//! TLS listener, curl `--http2` and h2load negotiating `h2` by ALPN. The
//! agent reads the clear text through its OpenSSL probes in nginx and
//! decodes HTTP/2 from it: every stream is a request, the bearer token in
//! HPACK names the client (curl's nghttp2 sends it Huffman-coded the first
//! time and as a dynamic-table index on every later stream of the
//! connection), a burst of multiplexed streams over quota is counted
//! exactly, and revoked, stale and missing credentials raise their
//! violation; and no piece of any of those tokens reaches any output
//! (trace log, /metrics, audit, every CLI answer): the canary property on
//! this path.
//!
//! Needs root; run by `cargo xtask test`.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Stdio,
    time::Duration,
};

use tests::{
    agent_proc::{AgentProcess, Launch},
    canary::{Canaries, Rng, assert_no_leaks},
    cgroup::CgroupGuard,
    contract::ContractYaml,
    on_free_port,
    tls_servers::{Nginx, require_tls_tools},
    wait::wait_until,
};

const ACME: &str = "acme-h2tls-token";
const LEAKY: &str = "leaky-h2tls-token";
const OLD: &str = "old-h2tls-token";
const BURSTY: &str = "bursty-h2tls-token";

fn contract(port: u16) -> String {
    ContractYaml::new("h2tls")
        .class("pii", "required")
        .endpoint("secure", "pii", &["127.0.0.1"], &[port], &["/v1/"])
        .client("acme", ACME, "2026-11-01T00:00:00Z")
        .client("leaky", LEAKY, "2026-11-01T00:00:00Z")
        .client("oldco", OLD, "2020-01-01T00:00:00Z")
        .client("bursty", BURSTY, "2026-11-01T00:00:00Z")
        .stage(
            "pilot",
            "2026-01-01T00:00:00Z",
            Some("365d"),
            &[
                ("acme", "secure", 1000, 1000),
                ("leaky", "secure", 1000, 1000),
                ("oldco", "secure", 1000, 1000),
                ("bursty", "secure", 1, 3),
            ],
        )
        .revoked(LEAKY, "2026-03-01T00:00:00Z")
        .render()
}

/// curl `--http2`: `n` requests to `path` on one connection, each stream's
/// HTTP version and status checked ("2 200").
fn curl_h2(cgroup: &CgroupGuard, server: SocketAddr, token: Option<&str>, path: &str, n: usize) {
    let url = format!("https://{server}{path}");
    let mut cmd = cgroup.command("curl");
    cmd.args(["-sk", "--http2", "--max-time", "20"])
        .args(["-w", "%{http_version} %{http_code}\\n"]);
    if let Some(t) = token {
        cmd.arg("-H").arg(format!("authorization: Bearer {t}"));
    }
    for _ in 0..n {
        cmd.args(["-o", "/dev/null"]).arg(&url);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "curl: {text}");
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        vec!["2 200"; n],
        "every request over h2"
    );
}

/// (kind, client, count) of every violation, sorted.
fn violations(agent: &AgentProcess) -> Vec<(String, String, u64)> {
    let mut v: Vec<_> = agent
        .cli_json(&["violations"])
        .iter()
        .map(|v| {
            (
                v["kind"].as_str().unwrap_or_default().to_owned(),
                v["client"].as_str().unwrap_or_default().to_owned(),
                v["count"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Requests of `client` in the flows to `port`.
fn requests_of(agent: &AgentProcess, port: u16, client: &str) -> u64 {
    agent
        .flows_to(port)
        .iter()
        .filter(|f| f["client"] == client)
        .filter_map(|f| f["requests"].as_u64())
        .sum()
}

#[test]
fn h2_inside_tls_is_counted_and_judged_per_stream() {
    require_tls_tools();
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let nginx = on_free_port(ip, "nginx", |port| {
        Some(Nginx::start_h2(SocketAddr::new(ip, port), 1))
    });
    let port = nginx.addr.port();
    let cgroup = CgroupGuard::new("h2tls");
    // Trace logging: the canary scan below reads every level.
    let contract = contract(port);
    let agent = Launch {
        log_level: "trace",
        ..Launch::new(&contract, cgroup.path())
    }
    .start();
    for pid in nginx.workers() {
        agent.wait_tls_probed(pid);
    }

    // acme: 12 streams on one connection; the token is Huffman-coded in
    // the first header block and a dynamic-table index in the other 11.
    curl_h2(&cgroup, nginx.addr, Some(ACME), "/v1/items", 12);
    let flow = wait_until(
        "acme's h2 flow with its 12 requests",
        Duration::from_secs(20),
        || {
            agent
                .flows_to(port)
                .into_iter()
                .find(|f| f["client"] == "acme" && f["requests"].as_u64() == Some(12))
        },
    );
    assert_eq!(flow["protocol"], "tls", "{flow}");
    assert_eq!(flow["alpn"], "h2", "{flow}");
    assert_eq!(flow["plaintext"], true, "{flow}");
    assert_eq!(flow["identified_by"], "credential", "{flow}");
    assert_eq!(violations(&agent), vec![], "benign h2 raises nothing");

    // Each credential term broken inside HPACK, several streams each.
    curl_h2(&cgroup, nginx.addr, Some(LEAKY), "/v1/pay", 3);
    curl_h2(&cgroup, nginx.addr, Some(OLD), "/v1/pay", 2);
    curl_h2(&cgroup, nginx.addr, None, "/v1/pay", 4);

    // bursty: 60 streams, 10 in flight at once, on one connection.
    let out = cgroup
        .command("h2load")
        .args(["-n", "60", "-c", "1", "-m", "10"])
        .args(["-H", &format!("authorization: Bearer {BURSTY}")])
        .arg(format!("https://{}/v1/burst", nginx.addr))
        .stdin(Stdio::null())
        .output()
        .expect("run h2load (Debian package nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("60 succeeded") && text.contains("h2"),
        "h2load: {text}"
    );

    let want_counts = [("leaky", 3), ("oldco", 2), ("unknown", 4), ("bursty", 60)];
    wait_until(
        "every stream of every client counted",
        Duration::from_secs(20),
        || {
            want_counts
                .iter()
                .all(|(c, n)| requests_of(&agent, port, c) >= *n)
                .then_some(())
        },
    );
    for (client, n) in want_counts {
        assert_eq!(requests_of(&agent, port, client), n, "{client}: none twice");
    }
    let got = violations(&agent);
    let without_quota: Vec<_> = got
        .iter()
        .filter(|v| v.0 != "quota_overshoot")
        .cloned()
        .collect();
    assert_eq!(
        without_quota,
        vec![
            ("revoked_client".to_owned(), "leaky".to_owned(), 3),
            ("stale_credential".to_owned(), "oldco".to_owned(), 2),
            ("unknown_client".to_owned(), "unknown".to_owned(), 4),
        ]
    );
    // 60 streams against burst 3 at 1/s: all but the burst and what
    // refilled while they arrived are over quota.
    let over = got
        .iter()
        .find(|v| v.0 == "quota_overshoot")
        .map(|v| (v.1.as_str(), v.2));
    assert!(
        over.is_some_and(|(c, n)| c == "bursty" && n > 0 && n <= 57),
        "{got:?}"
    );
    let metrics = agent.metrics();
    assert!(
        metrics.contains(r#"rampwatch_requests_total{client="bursty",endpoint="secure"} 60"#),
        "{metrics}"
    );
    no_token_in_any_output(&agent, &metrics);
}

/// The canary property on the HTTP/2-inside-TLS path: no piece of any
/// token sent in HPACK (as sent, hex, base64, percent-encoded) in the
/// agent's trace log, /metrics, audit records or any CLI answer.
fn no_token_in_any_output(agent: &AgentProcess, metrics: &str) {
    let mut c = Canaries::new(Rng::new(0));
    for token in [ACME, LEAKY, OLD, BURSTY] {
        c.plant(token, token);
    }
    let mut leaks = c.scan("agent log", agent.log_text().as_bytes());
    leaks.extend(c.scan("/metrics", metrics.as_bytes()));
    let audit = serde_json::to_string(&agent.audit_records()).expect("records serialize");
    leaks.extend(c.scan("audit records", audit.as_bytes()));
    for cmd in ["status", "flows", "clients", "violations", "stage"] {
        for format in ["table", "json"] {
            let run = agent.cli(&[cmd, "-o", format]);
            assert!(run.ok, "rampwatch {cmd} -o {format}: {}", run.stderr);
            let name = format!("rampwatch {cmd} -o {format}");
            leaks.extend(c.scan(&name, run.stdout.as_bytes()));
            leaks.extend(c.scan(&name, run.stderr.as_bytes()));
        }
    }
    assert_no_leaks(0, &leaks);
}
