//! `contract diff` on real contract text: the example contract and edits of
//! it, one term at a time, each checked for its effect and whom it names.

use super::{
    OutputFormat,
    contract::{Outcome, run_diff},
    diff::{Change, Effect, diff},
};
use crate::contract::{Contract, tests::EXAMPLE};

/// The example with `edits` applied (each `from` must occur exactly once,
/// so a test cannot silently edit nothing).
fn edited(edits: &[(&str, &str)]) -> String {
    let mut text = EXAMPLE.to_owned();
    for (from, to) in edits {
        assert_eq!(text.matches(from).count(), 1, "edit {from:?}");
        text = text.replacen(from, to, 1);
    }
    text
}

fn changes(edits: &[(&str, &str)]) -> Vec<Change> {
    let old = Contract::parse(EXAMPLE, "old.yaml").unwrap();
    let new = Contract::parse(&edited(edits), "new.yaml").unwrap();
    diff(&old, &new)
}

/// The only change of a one-term edit.
fn one(edits: &[(&str, &str)]) -> Change {
    let all = changes(edits);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.into_iter().next().unwrap()
}

#[test]
fn an_identical_contract_has_no_changes() {
    assert!(changes(&[]).is_empty());
}

#[test]
fn a_raised_quota_loosens_for_that_client() {
    let c = one(&[(
        "{ client: acme, endpoint: payments, requestsPerSecond: 10, burst: 20 }",
        "{ client: acme, endpoint: payments, requestsPerSecond: 10, burst: 30 }",
    )]);
    assert_eq!(c.effect, Effect::Loosens);
    assert_eq!(c.area, "quota");
    assert_eq!(c.stage.as_deref(), Some("ramp-2x"));
    assert_eq!(c.client.as_deref(), Some("acme"));
    assert_eq!(c.endpoint.as_deref(), Some("payments"));
    assert_eq!(c.old.as_deref(), Some("10 req/s, burst 20"));
    assert_eq!(c.new.as_deref(), Some("10 req/s, burst 30"));
    assert_eq!(
        c.detail,
        "stage ramp-2x: quota acme → payments: 10 req/s, burst 20 → 10 req/s, burst 30"
    );
}

#[test]
fn a_lowered_or_removed_quota_tightens_and_a_new_one_loosens() {
    let lowered = one(&[(
        "{ client: acme, endpoint: payments, requestsPerSecond: 50, burst: 100 }",
        "{ client: acme, endpoint: payments, requestsPerSecond: 40, burst: 100 }",
    )]);
    assert_eq!(lowered.effect, Effect::Tightens);
    let removed = one(&[(
        "        - { client: globex, endpoint: payments, requestsPerSecond: 25, burst: 50 }\n",
        "",
    )]);
    assert_eq!(removed.effect, Effect::Tightens);
    assert_eq!(removed.new, None);
    let granted = one(&[(
        "        - { client: globex, endpoint: payments, requestsPerSecond: 25, burst: 50 }\n",
        "        - { client: globex, endpoint: payments, requestsPerSecond: 25, burst: 50 }\n        - { client: acme, endpoint: status, requestsPerSecond: 1, burst: 1 }\n",
    )]);
    assert_eq!(granted.effect, Effect::Loosens);
    assert_eq!(granted.stage.as_deref(), Some("ramp-10x"));
    assert!(
        granted.detail.contains("newly granted"),
        "{}",
        granted.detail
    );
}

#[test]
fn class_terms_loosen_when_made_optional_lowered_or_removed() {
    let enc = one(&[(
        "    - name: pii\n      encryption: required",
        "    - name: pii\n      encryption: optional",
    )]);
    assert_eq!((enc.effect, enc.field), (Effect::Loosens, "encryption"));
    let auth = one(&[(
        "    - name: pii\n      encryption: required\n      authentication: required",
        "    - name: pii\n      encryption: required\n      authentication: optional",
    )]);
    assert_eq!(
        (auth.effect, auth.field),
        (Effect::Loosens, "authentication")
    );
    let tls = one(&[("minTlsVersion: \"1.2\"", "minTlsVersion: \"1.1\"")]);
    assert_eq!((tls.effect, tls.field), (Effect::Loosens, "minTlsVersion"));
    assert_eq!(tls.detail, "class pii: minTlsVersion 1.2 → 1.1");
    let raised = one(&[("minTlsVersion: \"1.2\"", "minTlsVersion: \"1.3\"")]);
    assert_eq!(raised.effect, Effect::Tightens);
    let cipher = one(&[("\"*RC4*\", ", "")]);
    assert_eq!(
        (cipher.effect, cipher.field, cipher.old.as_deref()),
        (Effect::Loosens, "forbiddenCiphers", Some("*RC4*"))
    );
    let public = one(&[(
        "    - name: public\n      encryption: optional",
        "    - name: public\n      encryption: required",
    )]);
    assert_eq!(public.effect, Effect::Tightens);
}

#[test]
fn longer_ages_and_windows_loosen() {
    let age = one(&[("credentialMaxAge: 30d", "credentialMaxAge: 45d")]);
    assert_eq!(
        (age.effect, age.field, age.stage.as_deref()),
        (Effect::Loosens, "credentialMaxAge", Some("ramp-2x"))
    );
    let unlimited = one(&[("      credentialMaxAge: 90d\n", "")]);
    assert_eq!(unlimited.effect, Effect::Loosens);
    assert_eq!(unlimited.new, None);
    let shorter = one(&[("credentialMaxAge: 30d", "credentialMaxAge: 7d")]);
    assert_eq!(shorter.effect, Effect::Tightens);
    let breach = one(&[("breachAfter: 24h", "breachAfter: 48h")]);
    assert_eq!(
        (breach.effect, breach.field),
        (Effect::Loosens, "breachAfter")
    );
    let never = one(&[("    warnAfter: 15m\n", "")]);
    assert_eq!((never.effect, never.field), (Effect::Loosens, "warnAfter"));
    assert_eq!(never.detail, "remediation warnAfter 15m → never");
}

#[test]
fn revocations_loosen_when_removed_or_later_and_name_the_client() {
    let later = one(&[(
        "revokedAt: \"2026-11-20T00:00:00Z\"",
        "revokedAt: \"2026-12-20T00:00:00Z\"",
    )]);
    assert_eq!(
        (later.effect, later.field, later.client.as_deref()),
        (Effect::Loosens, "revokedAt", Some("acme"))
    );
    let earlier = one(&[(
        "revokedAt: \"2026-11-20T00:00:00Z\"",
        "revokedAt: \"2026-11-10T00:00:00Z\"",
    )]);
    assert_eq!(earlier.effect, Effect::Tightens);
    let removed = one(&[(
        "  revocations:\n    - fingerprint: \"sha256:f12a46c62ca72e6e85e75dfc7af0b1d88874f5943a02e04cc490a5ca32540774\"\n      revokedAt: \"2026-11-20T00:00:00Z\"\n      reason: leaked in a CI log\n",
        "",
    )]);
    assert_eq!(removed.effect, Effect::Loosens);
    assert!(removed.detail.contains("removed"), "{}", removed.detail);
    let added = one(&[(
        "      reason: leaked in a CI log\n",
        "      reason: leaked in a CI log\n    - client: globex\n      revokedAt: \"2027-02-01T00:00:00Z\"\n",
    )]);
    assert_eq!(
        (added.effect, added.client.as_deref()),
        (Effect::Tightens, Some("globex"))
    );
}

#[test]
fn widened_paths_loosen_and_narrowed_paths_tighten() {
    let wider = one(&[(
        "paths: [\"/v1/payments\", \"/v1/refunds\"]",
        "paths: [\"/v1/payments\", \"/v1/refunds\", \"/v1/admin\"]",
    )]);
    assert_eq!(
        (wider.effect, wider.field, wider.endpoint.as_deref()),
        (Effect::Loosens, "paths", Some("payments"))
    );
    assert_eq!(wider.new.as_deref(), Some("/v1/admin"));
    // A prefix already covered by another is not wider.
    let sub = one(&[(
        "paths: [\"/v1/payments\", \"/v1/refunds\"]",
        "paths: [\"/v1/payments\", \"/v1/refunds/eu\"]",
    )]);
    assert_eq!(sub.effect, Effect::Tightens);
    let any = changes(&[("      paths: [\"/v1/payments\", \"/v1/refunds\"]\n", "")]);
    assert!(
        any.iter()
            .any(|c| c.effect == Effect::Loosens && c.new.as_deref() == Some("any path")),
        "{any:#?}"
    );
}

#[test]
fn a_narrower_scope_loosens_a_wider_one_does_not() {
    let narrower = changes(&[(
        "ports: [8080, 8081, 8082, 8443, 9443]",
        "ports: [8080, 8081, 8443]",
    )]);
    assert!(
        narrower
            .iter()
            .any(|c| c.area == "scope" && c.effect == Effect::Loosens),
        "{narrower:#?}"
    );
    let wider = changes(&[(
        "networks: [\"127.0.0.0/8\"]",
        "networks: [\"127.0.0.0/8\", \"10.0.0.0/8\"]",
    )]);
    assert!(
        wider.iter().all(|c| c.effect != Effect::Loosens),
        "{wider:#?}"
    );
    assert!(!wider.is_empty());
}

#[test]
fn an_endpoint_moved_to_a_weaker_class_loosens() {
    let c = one(&[(
        "    - name: legacy-payments\n      dataClass: pii",
        "    - name: legacy-payments\n      dataClass: public",
    )]);
    assert_eq!((c.effect, c.field), (Effect::Loosens, "dataClass"));
    assert!(
        c.detail.contains("encryption required → optional"),
        "{}",
        c.detail
    );
}

#[test]
fn stages_are_matched_by_name_and_a_new_stage_is_compared_with_what_it_replaces() {
    let added = changes(&[(
        "  revocations:\n",
        "    - name: ramp-20x\n      startsAt: \"2027-03-01T00:00:00Z\"\n      credentialMaxAge: 90d\n      quotas:\n        - { client: acme, endpoint: payments, requestsPerSecond: 100, burst: 200 }\n        - { client: globex, endpoint: payments, requestsPerSecond: 25, burst: 50 }\n        - { client: globex, endpoint: status, requestsPerSecond: 100, burst: 200 }\n  revocations:\n",
    )]);
    // Compared with ramp-10x, in force there in the old contract: only
    // acme's payments quota differs.
    let quota: Vec<_> = added.iter().filter(|c| c.area == "quota").collect();
    assert_eq!(quota.len(), 1, "{added:#?}");
    assert_eq!(quota[0].effect, Effect::Loosens);
    assert_eq!(quota[0].stage.as_deref(), Some("ramp-20x"));
    assert_eq!(quota[0].old.as_deref(), Some("50 req/s, burst 100"));
    let earlier = one(&[(
        "startsAt: \"2027-01-15T00:00:00Z\"",
        "startsAt: \"2027-01-01T00:00:00Z\"",
    )]);
    assert_eq!(
        (earlier.effect, earlier.field),
        (Effect::Loosens, "startsAt")
    );
    let later = one(&[(
        "startsAt: \"2027-01-15T00:00:00Z\"",
        "startsAt: \"2027-02-01T00:00:00Z\"",
    )]);
    assert_eq!(later.effect, Effect::Changes);
}

#[test]
fn clients_credentials_and_sources() {
    let later = one(&[(
        "issuedAt: \"2026-06-01T00:00:00Z\"",
        "issuedAt: \"2026-11-01T00:00:00Z\"",
    )]);
    assert_eq!(
        (later.effect, later.field, later.client.as_deref()),
        (Effect::Loosens, "issuedAt", Some("acme"))
    );
    let sources = one(&[("sources: [\"127.0.0.2/32\"]", "sources: [\"127.0.0.0/24\"]")]);
    assert_eq!(
        (sources.effect, sources.field, sources.client.as_deref()),
        (Effect::Loosens, "sources", Some("globex"))
    );
    let removed = changes(&[(
        "        - header: authorization   # acme-old-token\n          fingerprint: \"sha256:0da98e5574a54de91593da738ae3dfe4a6cca7538145318e06a9cde4b6e062a9\"\n          issuedAt: \"2026-06-01T00:00:00Z\"\n",
        "",
    )]);
    assert_eq!(removed.len(), 1, "{removed:#?}");
    assert_eq!(removed[0].effect, Effect::Tightens);
    // The diff never shows more than a fingerprint's short form.
    assert!(
        !removed[0]
            .detail
            .contains("0da98e5574a54de91593da738ae3dfe4")
    );
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run(
    old: &std::path::Path,
    new: &std::path::Path,
    format: OutputFormat,
) -> (Outcome, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = run_diff(old, new, format, &mut out, &mut err).unwrap();
    (
        outcome,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn run_diff_exit_codes_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let old = write(&dir, "old.yaml", EXAMPLE);
    let tighter = write(
        &dir,
        "tighter.yaml",
        &edited(&[("credentialMaxAge: 30d", "credentialMaxAge: 7d")]),
    );
    let looser = write(
        &dir,
        "looser.yaml",
        &edited(&[("minTlsVersion: \"1.2\"", "minTlsVersion: \"1.0\"")]),
    );
    let (outcome, out, _) = run(&old, &tighter, OutputFormat::Table);
    assert_eq!((outcome, outcome.code()), (Outcome::Success, 0));
    assert!(out.contains("1 change, 0 loosen, 1 tightens"), "{out}");
    assert!(
        out.contains("tightens  -         stage ramp-2x: credentialMaxAge 30d → 7d"),
        "{out}"
    );
    let (outcome, out, _) = run(&old, &looser, OutputFormat::Json);
    assert_eq!(outcome.code(), 1);
    let row: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(row["effect"], "loosens");
    assert_eq!(row["area"], "class");
    assert_eq!(row["field"], "minTlsVersion");
    assert_eq!(row["old"], "1.2");
    assert_eq!(row["new"], "1.0");
    assert!(row["client"].is_null());

    let bad = write(
        &dir,
        "bad.yaml",
        &edited(&[("minTlsVersion: \"1.2\"", "minTlsVersion: \"1.4\"")]),
    );
    let (outcome, out, err) = run(&old, &bad, OutputFormat::Table);
    assert_eq!(outcome.code(), 2);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("bad.yaml:"), "{err}");
    assert!(err.contains("the contract was not loaded"), "{err}");
}

/// Endpoints served by workloads: the selectors and ports are what the
/// kernel watches, so narrowing them (or removing one) loosens.
#[test]
fn a_narrower_endpoint_workload_selector_loosens() {
    use crate::contract::tests::workload_endpoints::with_endpoints;
    let pay = |sel: &str, ports: &str| {
        with_endpoints(&format!(
            "    - {{ name: pay, dataClass: pii, workloads: [{sel}], ports: [{ports}] }}\n    - {{ name: web, dataClass: pii, hosts: [127.0.0.1], ports: [80] }}"
        ))
    };
    let old = pay(r#"{namespace: payments, pod: "api-*"}"#, "8080, 8081");
    let effects = |new: &Contract| -> Vec<(Effect, String)> {
        diff(&old, new)
            .into_iter()
            .filter(|c| c.field == "endpoints.workloads")
            .map(|c| (c.effect, c.detail))
            .collect()
    };
    assert!(effects(&pay(r#"{namespace: payments, pod: "api-*"}"#, "8080, 8081")).is_empty());
    // Another glob: the old pods are no longer watched, others newly are.
    let changed = effects(&pay(
        r#"{namespace: payments, pod: "api-v2-*"}"#,
        "8080, 8081",
    ));
    assert_eq!(changed.len(), 2, "{changed:#?}");
    assert_eq!(changed[0].0, Effect::Loosens);
    assert_eq!(
        changed[0].1,
        "watched scope: endpoint pay served by workload namespace=payments,pod=api-* port 8080,8081 no longer watched"
    );
    assert_eq!(changed[1].0, Effect::Tightens);
    // A port dropped: that port of the pods is no longer watched.
    let port = effects(&pay(r#"{namespace: payments, pod: "api-*"}"#, "8080"));
    assert_eq!(
        port.iter().map(|c| c.0).collect::<Vec<_>>(),
        [Effect::Loosens],
        "{port:#?}"
    );
    // Widened to the whole namespace: newly watched, nothing loosens.
    let wider = effects(&pay("{namespace: payments}", "8080, 8081"));
    assert_eq!(
        wider.iter().map(|c| c.0).collect::<Vec<_>>(),
        [Effect::Tightens],
        "{wider:#?}"
    );
    // The endpoint gone: its pods' traffic is judged by nobody.
    let removed =
        with_endpoints("    - { name: web, dataClass: pii, hosts: [127.0.0.1], ports: [80] }");
    let all = diff(&old, &removed);
    assert!(
        all.iter().any(|c| c.field == "endpoints.workloads"
            && c.effect == Effect::Loosens
            && c.endpoint.as_deref() == Some("pay")),
        "{all:#?}"
    );
}
