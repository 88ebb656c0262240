//! Clients named by the claims of real JWTs (minted by PyJWT, HS256 with a
//! key the agent never sees) on the live agent, over HTTP/1 (curl to a
//! plain server), HTTPS (curl to python `ssl`, read by the TLS probes) and
//! h2c (curl with prior knowledge to nghttpd): rotated tokens of one client
//! all name it; an expired token, a token signed with a retired key and one
//! older than `credentialMaxAge` each raise `stale_credential`; no token
//! ever shows up in the CLI, metrics, audit log or agent log.
//!
//! Needs root; run by `cargo xtask test`.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};
use tests::{
    TempDir,
    agent_proc::AgentProcess,
    cgroup::CgroupGuard,
    http::{HttpServer, curl_in},
    https::{PyHttpsServer, curl_https},
    nghttpd::Nghttpd,
    tls_servers::PYTHON,
    tools::require_tools,
    wait::wait_until,
};

const ISS: &str = "https://idp.test.rampwatch";

/// A JWT signed by PyJWT (Debian package python3-jwt) with `kid` in its
/// header. The signing key is the test's; the agent verifies nothing.
fn mint(claims: &Value, kid: &str) -> String {
    let out = Command::new(PYTHON)
        .args([
            "-c",
            "import json, sys, jwt\n\
             print(jwt.encode(json.loads(sys.argv[1]), 'a key the agent never sees',\
             algorithm='HS256', headers={'kid': sys.argv[2]}))",
        ])
        .arg(claims.to_string())
        .arg(kid)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "PyJWT failed (install the Debian package python3-jwt; `cargo xtask setup` does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("a JWT is ASCII")
        .trim()
        .to_owned()
}

fn unix_now() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_secs()).expect("seconds fit")
}

/// A token for `sub` issued `age` seconds ago, valid for another hour.
fn token(sub: &str, kid: &str, age: i64, jti: &str) -> String {
    let now = unix_now();
    mint(
        &json!({"iss": ISS, "sub": sub, "iat": now - age, "exp": now + 3600, "jti": jti}),
        kid,
    )
}

fn contract(http: u16, https: u16, h2c: u16) -> String {
    let clients = ["billing", "reports", "batch", "legacy", "nightly"];
    let mut quotas = String::new();
    for c in clients {
        for e in ["plain", "secure", "h2"] {
            quotas.push_str(&format!(
                "        - {{ client: {c}, endpoint: {e}, requestsPerSecond: 1000, burst: 1000 }}\n"
            ));
        }
    }
    format!(
        r#"apiVersion: rampwatch.io/v1
kind: RampContract
metadata:
  name: jwt
spec:
  dataClasses:
    - name: internal
      encryption: optional
      authentication: required
  endpoints:
    - {{ name: plain, dataClass: internal, hosts: ["127.0.0.1"], ports: [{http}] }}
    - {{ name: secure, dataClass: internal, hosts: ["127.0.0.1"], ports: [{https}] }}
    - {{ name: h2, dataClass: internal, hosts: ["127.0.0.1"], ports: [{h2c}] }}
  clients:
    - name: billing
      jwt: [{{ issuer: "{ISS}", subject: svc-billing }}]
    - name: reports
      jwt: [{{ issuer: "{ISS}", clientId: reports-app }}]
    - name: batch
      jwt: [{{ issuer: "{ISS}", subject: svc-batch }}]
    - name: legacy
      jwt: [{{ issuer: "{ISS}", subject: svc-legacy }}]
    - name: nightly
      jwt: [{{ issuer: "{ISS}", subject: svc-nightly }}]
  stages:
    - name: ramp
      startsAt: "2026-01-01T00:00:00Z"
      credentialMaxAge: 1h
      signingKeys: [kid-current]
      quotas:
{quotas}"#
    )
}

/// One h2c request with prior knowledge (no upgrade), from `cgroup`.
fn curl_h2c(cgroup: &CgroupGuard, token: &str, url: &str) {
    let status = cgroup
        .command("curl")
        .args(["-sf", "--http2-prior-knowledge", "--max-time", "10"])
        .args(["-o", "/dev/null", "-H"])
        .arg(format!("authorization: Bearer {token}"))
        .arg(url)
        .status()
        .expect("curl runs");
    assert!(
        status.success(),
        "curl --http2-prior-knowledge {url}: {status}"
    );
}

/// (protocol, client, identified_by) of the ended or live flows to `port`.
fn flows_to(agent: &AgentProcess, port: u16) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = agent
        .flows_to(port)
        .into_iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
            (s("protocol"), s("client"), s("identified_by"))
        })
        .collect();
    v.sort();
    v
}

fn wait_flows(agent: &AgentProcess, port: u16, want: &[(&str, &str, &str)]) {
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(p, c, i)| ((*p).to_owned(), (*c).to_owned(), (*i).to_owned()))
        .collect();
    let got = wait_until(
        &format!("{} flows to port {port}", want.len()),
        Duration::from_secs(30),
        || {
            let got = flows_to(agent, port);
            (got.len() >= want.len()).then_some(got)
        },
    );
    assert_eq!(got, want, "flows to port {port}");
}

#[test]
fn jwt_clients_and_token_terms_over_http1_tls_and_h2c() {
    require_tools();
    let cgroup = CgroupGuard::new("jwt");
    let plain = HttpServer::start(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), 8);
    let tls = PyHttpsServer::start(IpAddr::V4(Ipv4Addr::LOCALHOST), &cgroup);
    let files = TempDir::new("jwt-h2c");
    std::fs::write(files.path().join("item"), b"ok").expect("write the served file");
    let h2 = Nghttpd::start(&cgroup, files.path());
    let (http_port, https_port, h2_port) = (plain.addr().port(), tls.addr.port(), h2.1.port());
    let mut agent = AgentProcess::start(
        &contract(http_port, https_port, h2_port),
        cgroup.path(),
        &[],
    );
    agent.wait_tls_probed(tls.pid());

    // Rotated tokens: two different tokens of billing, one each over
    // HTTP/1 and h2c; reports by client_id inside TLS.
    let billing_1 = token("svc-billing", "kid-current", 60, "b1");
    let billing_2 = token("svc-billing", "kid-current", 30, "b2");
    let reports = mint(
        &json!({"iss": ISS, "client_id": "reports-app", "iat": unix_now() - 10, "exp": unix_now() + 600}),
        "kid-current",
    );
    // Broken terms, one per protocol.
    let expired = {
        let iat = unix_now() - 1800;
        mint(
            &json!({"iss": ISS, "sub": "svc-batch", "iat": iat, "exp": unix_now() - 600}),
            "kid-current",
        )
    };
    let retired_key = token("svc-legacy", "kid-2025", 60, "l1");
    let too_old = token("svc-nightly", "kid-current", 2 * 3600, "n1");
    let all = [
        &billing_1,
        &billing_2,
        &reports,
        &expired,
        &retired_key,
        &too_old,
    ];

    let url = format!("http://{}/v1/items", plain.addr());
    curl_in(&cgroup, Some(&billing_1), &[&url]);
    curl_in(&cgroup, Some(&expired), &[&url]);
    assert_eq!(
        curl_https(&cgroup, Some(&reports), &[tls.url("/v1/items")]),
        vec![200]
    );
    assert_eq!(
        curl_https(&cgroup, Some(&retired_key), &[tls.url("/v1/items")]),
        vec![200]
    );
    let h2_url = format!("http://{}/item", h2.1);
    curl_h2c(&cgroup, &billing_2, &h2_url);
    curl_h2c(&cgroup, &too_old, &h2_url);

    wait_flows(
        &agent,
        http_port,
        &[("http", "batch", "jwt"), ("http", "billing", "jwt")],
    );
    wait_flows(
        &agent,
        https_port,
        &[("tls", "legacy", "jwt"), ("tls", "reports", "jwt")],
    );
    wait_flows(
        &agent,
        h2_port,
        &[("h2c", "billing", "jwt"), ("h2c", "nightly", "jwt")],
    );

    let violations = wait_until(
        "one stale_credential per broken token term",
        Duration::from_secs(20),
        || {
            let v = agent.cli_json(&["violations"]);
            (v.len() >= 3).then_some(v)
        },
    );
    let mut got: Vec<(String, String, String, String)> = violations
        .iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            (s("kind"), s("endpoint"), s("client"), s("detail"))
        })
        .collect();
    got.sort_by(|a, b| a.2.cmp(&b.2));
    let [batch, legacy, nightly] = got.as_slice() else {
        panic!("exactly three violations, got {got:#?}");
    };
    assert_eq!(
        (&*batch.0, &*batch.1, &*batch.2),
        ("stale_credential", "plain", "batch")
    );
    assert!(batch.3.starts_with("expired at "), "{batch:?}");
    assert_eq!(
        (&*legacy.0, &*legacy.1, &*legacy.2),
        ("stale_credential", "secure", "legacy")
    );
    assert!(
        legacy
            .3
            .starts_with("signed with key `kid-2025`, not one stage `ramp` accepts"),
        "{legacy:?}"
    );
    assert_eq!(
        (&*nightly.0, &*nightly.1, &*nightly.2),
        ("stale_credential", "h2", "nightly")
    );
    assert!(nightly.3.ends_with("old, max 1h"), "{nightly:?}");

    // What the agent kept of the tokens is hashes and times: no token, nor
    // its signature or payload, in any output.
    let flows = agent.cli_ok(&["flows", "-o", "json"]).unwrap_or_default();
    let clients = agent.cli_ok(&["clients", "-o", "json"]).unwrap_or_default();
    let metrics = agent.metrics();
    agent.stop();
    let audit: String = agent.audit_records().iter().map(Value::to_string).collect();
    assert!(
        audit.contains("stale_credential"),
        "the audit log records the violations"
    );
    let outputs = [
        ("flows", flows),
        ("clients", clients),
        (
            "violations",
            violations.iter().map(Value::to_string).collect(),
        ),
        ("metrics", metrics),
        ("audit", audit),
        ("log", agent.log_text()),
    ];
    for t in all {
        let parts: Vec<&str> = t.split('.').collect();
        for (what, text) in &outputs {
            assert!(!text.contains(t.as_str()), "a token in the {what}");
            assert!(!text.contains(parts[1]), "a token payload in the {what}");
            assert!(!text.contains(parts[2]), "a token signature in the {what}");
        }
    }
}
