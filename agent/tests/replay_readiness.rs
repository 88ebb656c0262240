//! `rampwatch replay --stage NAME` on the golden captures: the capture's
//! readiness for a stage, with the figures an SRE would act on.

use std::path::PathBuf;

use agent::replay::{Format, ReplayArgs, replay};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The fixture contract with `edits` applied (each must match once).
fn contract(dir: &tempfile::TempDir, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(fixtures().join("contract.yaml")).expect("contract");
    for (from, to) in edits {
        assert_eq!(text.matches(from).count(), 1, "edit {from:?}");
        text = text.replacen(from, to, 1);
    }
    let path = dir.path().join("contract.yaml");
    std::fs::write(&path, text).expect("write contract");
    path
}

fn run(contract: PathBuf, stage: &str, format: Format) -> (u8, String, String) {
    let args = ReplayArgs {
        contract,
        at: None,
        stage: Some(stage.to_owned()),
        rate_window: 300_000_000_000,
        output: format,
        // globex: 25 requests to orders; acme: one to ledger, one to orders;
        // 3.25 s of capture in all.
        pcaps: vec![
            fixtures().join("quota_burst.pcap"),
            fixtures().join("ipv6.pcap"),
        ],
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = replay(&args, &mut out, &mut err, false).expect("replay writes to memory");
    (
        code,
        String::from_utf8(out).expect("UTF-8"),
        String::from_utf8(err).expect("UTF-8"),
    )
}

fn rows(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .filter(|v| v["type"] == "readiness")
        .collect()
}

#[test]
fn a_stage_the_capture_is_not_ready_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    // ramp-2x: globex gets 5 req/s on orders, acme nothing on ledger.
    let path = contract(
        &dir,
        &[
            (
                "{ client: globex, endpoint: orders, requestsPerSecond: 50, burst: 100 }",
                "{ client: globex, endpoint: orders, requestsPerSecond: 5, burst: 10 }",
            ),
            (
                "        - { client: acme, endpoint: ledger, requestsPerSecond: 100, burst: 200 }\n",
                "",
            ),
        ],
    );
    let (code, out, err) = run(path.clone(), "ramp-2x", Format::Json);
    assert_eq!(code, 1, "{err}");
    let rows = rows(&out);
    let find = |problem: &str, client: Option<&str>, endpoint: Option<&str>| {
        rows.iter()
            .find(|r| {
                r["problem"] == problem
                    && r["client"].as_str() == client
                    && r["endpoint"].as_str() == endpoint
            })
            .unwrap_or_else(|| panic!("no {problem} row for {client:?} {endpoint:?}: {rows:#?}"))
    };
    for r in &rows {
        assert_eq!(r["stage"], "ramp-2x");
        assert_eq!(r["starts_at"], "2027-03-01T00:00:00Z");
        // Counted from the capture's end (2026-11-29T19:28:13Z).
        assert_eq!(r["starts_in_secs"], 7_878_706);
    }
    let over = find("rate_above_quota", Some("globex"), Some("orders"));
    // 25 requests over the 3.25 s the capture spans.
    let rate = over["rate"].as_f64().expect("rate");
    assert!((7.0..8.5).contains(&rate), "{over}");
    assert_eq!(over["quota"], 5.0);
    assert_eq!(over["burst"], 10);
    assert_eq!(over["current_quota"], 1.0, "pilot's quota when captured");
    assert!(over["window_secs"].as_f64().expect("window") < 4.0);
    let none = find("no_quota", Some("acme"), Some("ledger"));
    assert!(none["quota"].is_null());
    assert!(none["rate"].as_f64().expect("rate") > 0.0);
    let closes = find("endpoint_changes", None, Some("ledger"));
    assert!(
        closes["detail"]
            .as_str()
            .expect("detail")
            .contains("closes"),
        "{closes}"
    );
    // Credentials older than ramp-2x's 30 d when it starts; initech's key is
    // revoked (a stronger reason) and left out.
    for client in ["acme", "globex", "hooli"] {
        let stale = find("credential_stale", Some(client), None);
        assert_eq!(stale["credential_max_age"], "30d");
        assert!(
            stale["credential"]
                .as_str()
                .expect("fingerprint")
                .starts_with("sha256:")
        );
    }
    assert!(
        !rows
            .iter()
            .any(|r| r["problem"] == "credential_stale" && r["client"] == "initech")
    );
    // acme's orders rate is within ramp-2x's 100 req/s: no row.
    assert!(
        !rows
            .iter()
            .any(|r| r["client"] == "acme" && r["endpoint"] == "orders")
    );
    let summary: Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "summary")
        .expect("summary");
    assert_eq!(summary["readiness"]["problems"], rows.len());
    // Judged as at ramp-2x's start, like --at.
    assert_eq!(summary["at"], "2027-03-01T00:00:00Z");

    let (code, table, _) = run(path, "ramp-2x", Format::Table);
    assert_eq!(code, 1);
    assert!(
        table.contains("stage ramp-2x starts 2027-03-01T00:00:00Z (in 91d)"),
        "{table}"
    );
    assert!(table.contains("rate_above_quota globex"), "{table}");
    assert!(table.contains("not ready: "), "{table}");
    for line in table.lines() {
        assert!(line.chars().count() <= 80, "too wide: {line:?}");
    }
}

#[test]
fn a_stage_the_capture_is_ready_for_and_an_unknown_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Long-lived keys and generous quotas: nothing to fix.
    let path = contract(&dir, &[("credentialMaxAge: 30d", "credentialMaxAge: 365d")]);
    let (code, out, err) = run(path.clone(), "ramp-2x", Format::Table);
    assert_eq!(
        code, 1,
        "the plaintext ledger flow is still a violation: {err}"
    );
    assert!(out.contains("ready: no rate above its quotas"), "{out}");
    let (_, json, _) = run(path.clone(), "ramp-2x", Format::Json);
    assert!(rows(&json).is_empty(), "{json}");

    let (code, out, err) = run(path, "ramp-5x", Format::Json);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(
        err.contains("no stage named `ramp-5x`; its stages are: pilot, ramp-2x"),
        "{err}"
    );
}
