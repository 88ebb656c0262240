//! Golden tests: `rampwatch replay` on the captures in tests/fixtures/
//! against tests/fixtures/contract.yaml, asserting the exact violations
//! (see tests/fixtures/README.md for what each capture holds).

use std::path::PathBuf;

use agent::replay::{Format, ReplayArgs, replay};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// Replays `files` and returns (exit code, JSON objects).
fn run(files: &[&str], at: Option<&str>) -> (u8, Vec<Value>) {
    let dir = fixtures();
    let args = ReplayArgs {
        contract: dir.join("contract.yaml"),
        at: at.map(|t| agent::contract::parse_rfc3339(t).expect("valid --at")),
        stage: None,
        rate_window: 300_000_000_000,
        output: Format::Json,
        pcaps: files.iter().map(|f| dir.join(f)).collect(),
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = replay(&args, &mut out, &mut err, false).expect("replay writes to memory");
    let text = String::from_utf8(out).expect("JSON output is UTF-8");
    let objects = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect();
    (code, objects)
}

fn of_type<'a>(objs: &'a [Value], t: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["type"] == t).collect()
}

/// (kind, endpoint, client, count) of every violation, sorted.
fn violations(objs: &[Value]) -> Vec<(String, String, String, u64)> {
    let mut v: Vec<_> = of_type(objs, "violation")
        .into_iter()
        .map(|v| {
            (
                v["kind"].as_str().unwrap_or_default().to_owned(),
                v["endpoint"].as_str().unwrap_or_default().to_owned(),
                v["client"].as_str().unwrap_or_default().to_owned(),
                v["count"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

fn detail<'a>(objs: &'a [Value], kind: &str) -> &'a str {
    of_type(objs, "violation")
        .into_iter()
        .find(|v| v["kind"] == kind)
        .and_then(|v| v["detail"].as_str())
        .unwrap_or_default()
}

fn v(kind: &str, endpoint: &str, client: &str, count: u64) -> (String, String, String, u64) {
    (kind.into(), endpoint.into(), client.into(), count)
}

/// One file, its exit code and exact violations.
fn check(file: &str, code: u8, want: &[(&str, &str, &str, u64)]) -> Vec<Value> {
    let (got_code, objs) = run(&[file], None);
    let want: Vec<_> = want.iter().map(|(k, e, c, n)| v(k, e, c, *n)).collect();
    let mut want = want;
    want.sort();
    assert_eq!(violations(&objs), want, "{file}");
    assert_eq!(got_code, code, "{file} exit code");
    let summary = of_type(&objs, "summary");
    assert_eq!(summary.len(), 1, "{file}: one summary");
    assert_eq!(
        objs.last().map(|o| &o["type"]),
        Some(&Value::from("summary")),
        "{file}: summary last"
    );
    for viol in of_type(&objs, "violation") {
        assert_eq!(viol["stage"], "pilot", "{file}");
    }
    objs
}

fn flows(objs: &[Value]) -> Vec<&Value> {
    of_type(objs, "flow")
}

#[test]
fn http_bearer_every_link_type() {
    for (file, packets) in [
        ("http_bearer.pcap", 10),
        ("http_bearer_sll.pcap", 9),
        ("http_bearer_sll2.pcap", 9),
        ("http_bearer_vlan.pcap", 10),
        ("http_bearer_rawip.pcap", 10),
    ] {
        let objs = check(file, 1, &[("unencrypted_flow", "ledger", "acme", 1)]);
        assert_eq!(
            detail(&objs, "unencrypted_flow"),
            "plaintext HTTP to class pii"
        );
        let f = flows(&objs);
        assert_eq!(f.len(), 1, "{file}");
        assert_eq!(f[0]["protocol"], "http");
        assert_eq!(f[0]["dst"], "127.0.0.1:18080");
        assert_eq!(f[0]["requests"], 1);
        assert_eq!(f[0]["client"], "acme");
        assert_eq!(f[0]["endpoint"], "ledger");
        assert_eq!(f[0]["packets"], packets, "{file}: late ACKs count too");
        assert_eq!(f[0]["end"], "fin");
    }
}

#[test]
fn h2c_prior_knowledge_is_plaintext_and_its_request_is_read() {
    // The bearer token travels HPACK-encoded; the HTTP/2 decoder reads it,
    // so the one request is acme's and the plaintext is charged to acme.
    let objs = check("h2c.pcap", 1, &[("unencrypted_flow", "ledger", "acme", 1)]);
    let f = &flows(&objs)[0];
    assert_eq!(f["protocol"], "h2c");
    assert_eq!(f["requests"], 1);
    assert_eq!(f["client"], "acme");
}

#[test]
fn h2c_answers_pair_when_the_server_speaks_first() {
    // nghttpd's SETTINGS (sent on accept) are on the wire before nghttp's
    // preface: they must reach the HTTP/2 decoder all the same, or the
    // server's HPACK state starts broken and the 404, whose head refers to
    // entries the 200's inserted, loses its status.
    let objs = check(
        "h2c_nghttp.pcap",
        1,
        &[("revoked_client", "orders", "initech", 2)],
    );
    let v = violation(&objs, "revoked_client");
    assert_eq!(v["outcome"], outcome(1, 1, 0));
    assert_eq!(v["severity"], "critical");
    let f = &flows(&objs)[0];
    assert_eq!((&f["protocol"], &f["requests"]), (&"h2c".into(), &2.into()));
}

#[test]
fn tls12_and_tls13_are_clean() {
    for (file, version, cipher) in [
        ("tls12.pcap", "1.2", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
        ("tls13.pcap", "1.3", "TLS_AES_256_GCM_SHA384"),
    ] {
        let objs = check(file, 0, &[]);
        let f = flows(&objs);
        assert_eq!(f.len(), 2, "{file}");
        for flow in f {
            assert_eq!(flow["protocol"], "tls");
            assert_eq!(flow["tls_version"], version);
            assert_eq!(flow["cipher"], cipher);
            assert_eq!(flow["sni"], "localhost");
            assert_eq!(flow["endpoint"], "payments");
            assert_eq!(flow["client"], "unknown");
            assert_eq!(flow["requests"], 0);
        }
    }
}

#[test]
fn tls11_is_weak() {
    let objs = check(
        "tls11_weak.pcap",
        1,
        &[("weak_tls", "payments", "unknown", 1)],
    );
    assert!(detail(&objs, "weak_tls").starts_with("TLS 1.1"));
    assert_eq!(flows(&objs)[0]["tls_version"], "1.1");
}

#[test]
fn cbc_suite_is_weak_in_every_container_and_split() {
    for file in ["tls12_cbc.pcap", "tls12_cbc.pcapng", "tls12_cbc_split.pcap"] {
        let objs = check(file, 1, &[("weak_tls", "payments", "unknown", 1)]);
        assert_eq!(
            detail(&objs, "weak_tls"),
            "TLS 1.2 with TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
            "{file}"
        );
        let f = flows(&objs);
        assert_eq!(f[0]["sni"], "localhost", "{file}");
        assert_eq!(
            f[0]["cipher"], "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
            "{file}"
        );
    }
}

#[test]
fn mtls_client_identified_by_certificate() {
    let objs = check("mtls12.pcap", 0, &[]);
    let f = flows(&objs);
    assert_eq!(f[0]["client"], "umbrella");
    assert_eq!(f[0]["identified_by"], "certificate");
    assert_eq!(f[0]["tls_version"], "1.2");
}

#[test]
fn quota_burst_over_token_bucket() {
    let objs = check(
        "quota_burst.pcap",
        1,
        &[("quota_overshoot", "orders", "globex", 20)],
    );
    assert!(detail(&objs, "quota_overshoot").ends_with("req/s over quota 1"));
    assert_eq!(flows(&objs)[0]["requests"], 25);
    // The fixture server has no rate limit of its own: nothing throttled.
    assert_eq!(violation(&objs, "quota_overshoot")["throttled"], 0);
}

#[test]
fn pipelined_requests_each_count() {
    let objs = check(
        "pipelined.pcap",
        1,
        &[("quota_overshoot", "orders", "globex", 3)],
    );
    assert_eq!(flows(&objs)[0]["requests"], 8);
}

#[test]
fn no_credentials_unknown_client() {
    let objs = check(
        "no_credentials.pcap",
        1,
        &[("unknown_client", "orders", "unknown", 3)],
    );
    assert_eq!(flows(&objs).len(), 3);
    let v = violation(&objs, "unknown_client");
    assert_eq!(
        (&v["outcome"], &v["severity"]),
        (&outcome(3, 0, 0), &"critical".into())
    );
}

#[test]
fn unlisted_path_and_port() {
    let objs = check(
        "unlisted_path.pcap",
        1,
        &[
            ("unlisted_endpoint", "unlisted", "acme", 1),
            ("unlisted_endpoint", "unlisted", "globex", 1),
        ],
    );
    let details: Vec<&str> = of_type(&objs, "violation")
        .iter()
        .filter_map(|v| v["detail"].as_str())
        .collect();
    assert!(
        details.contains(&"path /v2/… not in orders's paths"),
        "{details:?}"
    );
    assert!(
        details.contains(&"no endpoint covers 127.0.0.1:18089"),
        "{details:?}"
    );
}

#[test]
fn revoked_credential() {
    let objs = check(
        "revoked.pcap",
        1,
        &[("revoked_client", "orders", "initech", 1)],
    );
    assert!(detail(&objs, "revoked_client").contains("2026-11-15"));
    // The fixture server answered 200: the revoked token was served, which
    // makes the violation critical at once.
    let v = violation(&objs, "revoked_client");
    assert_eq!(v["outcome"], outcome(1, 0, 0));
    assert_eq!(v["severity"], "critical");
}

fn violation<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    of_type(objs, "violation")
        .into_iter()
        .find(|v| v["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn outcome(served: u64, refused: u64, unknown: u64) -> Value {
    serde_json::json!({"served": served, "refused": refused, "unknown": unknown})
}

/// What the API answered, from both directions of the capture: exact
/// outcome, throttled and severity per violation.
#[test]
fn responses_say_whether_the_api_said_no() {
    let objs = check(
        "responses.pcap",
        1,
        &[
            ("revoked_client", "orders", "initech", 3),
            ("unknown_client", "orders", "unknown", 1),
            ("quota_overshoot", "orders", "globex", 3),
            ("stale_credential", "orders", "hooli", 3),
        ],
    );
    // initech: 200, 401, 403 on one connection; served once, so critical.
    let v = violation(&objs, "revoked_client");
    assert_eq!(v["outcome"], outcome(1, 2, 0));
    assert_eq!(v["severity"], "critical");
    // No credential, refused 401: stays a warning.
    let v = violation(&objs, "unknown_client");
    assert_eq!(v["outcome"], outcome(0, 1, 0));
    assert_eq!(v["severity"], "warning");
    // globex: five served within burst, the three over quota answered 429.
    let v = violation(&objs, "quota_overshoot");
    assert_eq!(v["throttled"], 3);
    assert!(v.get("outcome").is_none());
    // hooli: POST answered 100 Continue then 403; HEAD (200, a
    // Content-Length but no body) pipelined with a GET answered 401.
    let v = violation(&objs, "stale_credential");
    assert_eq!(v["outcome"], outcome(1, 2, 0));
    assert_eq!(
        v["severity"], "warning",
        "staleness served does not escalate"
    );
    let requests: Vec<_> = flows(&objs).iter().map(|f| f["requests"].clone()).collect();
    assert_eq!(requests, [3, 1, 8, 1, 2]);
}

#[test]
fn stale_credential() {
    let objs = check(
        "stale.pcap",
        1,
        &[("stale_credential", "orders", "hooli", 1)],
    );
    assert_eq!(
        detail(&objs, "stale_credential"),
        "credential 181d old, max 90d"
    );
}

#[test]
fn ipv6_addresses_in_brackets() {
    let objs = check("ipv6.pcap", 1, &[("unencrypted_flow", "ledger", "acme", 1)]);
    let dsts: Vec<&str> = flows(&objs)
        .iter()
        .filter_map(|f| f["dst"].as_str())
        .collect();
    assert!(
        dsts.contains(&"[::1]:18080") && dsts.contains(&"[::1]:18081"),
        "{dsts:?}"
    );
    assert!(
        flows(&objs)
            .iter()
            .all(|f| f["src"].as_str().is_some_and(|s| s.starts_with("[::1]:")))
    );
}

#[test]
fn at_moves_the_stage_clock_not_the_quota_clock() {
    let (code, objs) = run(&["quota_burst.pcap"], Some("2027-03-02T00:00:00Z"));
    assert_eq!(code, 1);
    assert_eq!(
        violations(&objs),
        vec![v("stale_credential", "orders", "globex", 25)]
    );
    let (code, objs) = run(&["revoked.pcap"], Some("2026-11-14T00:00:00Z"));
    assert_eq!((code, violations(&objs)), (0, vec![]));
    let (code, objs) = run(&["stale.pcap"], Some("2026-08-01T00:00:00Z"));
    assert_eq!((code, violations(&objs)), (0, vec![]));
    assert_eq!(of_type(&objs, "summary")[0]["stage"], Value::Null);
}

#[test]
fn unusable_input_exits_2() {
    let dir = fixtures();
    let mut args = ReplayArgs {
        contract: dir.join("contract.yaml"),
        at: None,
        stage: None,
        rate_window: 300_000_000_000,
        output: Format::Json,
        pcaps: vec![dir.join("README.md")],
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(replay(&args, &mut out, &mut err, false).unwrap(), 2);
    assert!(String::from_utf8_lossy(&err).contains("not a pcap"));
    args.pcaps = vec![dir.join("tls12.pcap")];
    args.contract = dir.join("README.md");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(replay(&args, &mut out, &mut err, false).unwrap(), 2);
    assert!(out.is_empty());
}

#[test]
fn table_output_fits_80_columns() {
    let dir = fixtures();
    let mut args = ReplayArgs {
        contract: dir.join("contract.yaml"),
        at: None,
        stage: None,
        rate_window: 300_000_000_000,
        output: Format::Table,
        pcaps: vec![],
    };
    for f in [
        "unlisted_path.pcap",
        "ipv6.pcap",
        "tls12_cbc.pcap",
        "quota_burst.pcap",
    ] {
        args.pcaps.push(dir.join(f));
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(replay(&args, &mut out, &mut err, false).unwrap(), 1);
    let text = String::from_utf8(out).unwrap();
    for line in text.lines() {
        assert!(line.chars().count() <= 80, "too wide: {line:?}");
    }
    assert!(text.contains("quota_overshoot"), "{text}");
    assert!(
        text.lines().all(|l| !l.ends_with(' ')),
        "no trailing blanks:\n{text}"
    );
    assert!(text.contains("stage pilot"), "{text}");
}

/// (requests, malformed requests) of the summary.
fn request_counts(objs: &[Value]) -> (u64, u64) {
    let s = of_type(objs, "summary")[0];
    (
        s["requests"].as_u64().unwrap_or_default(),
        s["malformed_requests"].as_u64().unwrap_or_default(),
    )
}

/// Requests only a lenient server takes (raw over a socket by
/// `lenient_client.py`, served by `fixture_server.py`), each counted and
/// judged: the revoked token they carry raises one `revoked_client` per
/// request.
#[test]
fn lenient_method_tokens_each_count() {
    // PURGE, lowercase get and X_SYNC: all three served, none in the
    // method table the kernel and the strict parser go by, so all three
    // are counted by the lenient parser (and as malformed).
    let objs = check(
        "lenient_method.pcap",
        1,
        &[("revoked_client", "orders", "initech", 3)],
    );
    assert_eq!(flows(&objs)[0]["requests"], 3);
    assert_eq!(request_counts(&objs), (3, 3));
}

#[test]
fn lenient_whitespace_counts_what_a_server_serves_and_no_more() {
    // Doubled spaces, tabs, bare LF: served, counted (httparse takes the
    // bare LF one, so two are malformed). `GET/v1/orders` (no space) is
    // answered 400 by every server and is no request.
    let objs = check(
        "lenient_spaces.pcap",
        1,
        &[("revoked_client", "orders", "initech", 3)],
    );
    assert_eq!(flows(&objs)[0]["requests"], 3);
    assert_eq!(request_counts(&objs), (3, 2));
}

#[test]
fn http09_request_lines_count_without_identity() {
    // `GET /v1/orders\r\n` alone, three connections: 16 bytes each, so
    // the kernel's rule would not count them live; the engine does.
    let objs = check(
        "lenient_http09.pcap",
        1,
        &[("unknown_client", "orders", "unknown", 3)],
    );
    let f = flows(&objs);
    assert_eq!(f.len(), 3);
    assert!(f.iter().all(|f| f["requests"] == 1), "{f:?}");
    assert_eq!(request_counts(&objs), (3, 3));
}

#[test]
fn connect_is_one_request_and_its_tunnel_none() {
    // CONNECT to an API whose endpoint lists paths: a request, judged
    // (revoked token, and its authority-form target is no listed path);
    // the tunnelled bytes after the 200 are not requests.
    let objs = check(
        "lenient_connect.pcap",
        1,
        &[
            ("revoked_client", "orders", "initech", 1),
            ("unlisted_endpoint", "unlisted", "initech", 1),
        ],
    );
    assert_eq!(flows(&objs)[0]["requests"], 1);
    assert_eq!(request_counts(&objs), (1, 0));
}

#[test]
fn desynchronised_requests_and_answers_each_count() {
    // A head right after a Content-Length body in the same segment, and a
    // request answered twice (100 Continue, then 200): three requests.
    let objs = check(
        "lenient_desync.pcap",
        1,
        &[("revoked_client", "orders", "initech", 3)],
    );
    assert_eq!(flows(&objs)[0]["requests"], 3);
    assert_eq!(request_counts(&objs), (3, 0));
}
