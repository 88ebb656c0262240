//! The stage's terms per request: quotas (quota_overshoot), revocations
//! (revoked_client) and credential age (stale_credential).

use super::*;

#[test]
fn quota_overshoot_token_bucket() {
    let mut e = engine();
    // 25 requests on one connection within 48 ms; quota 1/s, burst 5.
    let reqs: Vec<Vec<u8>> = (0..25)
        .map(|i| get(&format!("/v1/orders/{i}"), Some("acme-token")))
        .collect();
    let segs: Vec<&[u8]> = reqs.iter().map(Vec::as_slice).collect();
    tcp_flow(&mut e, t0(), "10.30.0.9:5000", "10.20.2.5:8080", &segs);
    assert_eq!(
        found(&e),
        vec![(
            Kind::QuotaOvershoot,
            "orders".into(),
            "acme".into(),
            20,
            "25 req/s over quota 1".into()
        )]
    );
}

#[test]
fn no_quota_in_stage_means_zero() {
    let mut e = engine();
    // oldco has no quota on docs.
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.3.5:8080",
        &[&get("/", Some("acme-token"))],
    );
    assert_eq!(
        found(&e),
        vec![(
            Kind::QuotaOvershoot,
            "docs".into(),
            "acme".into(),
            1,
            "1 req/s over quota 0".into()
        )]
    );
}

#[test]
fn revoked_after_revoked_at_only() {
    let mut e = engine();
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        &[&get("/v1/orders", Some("leaky-token"))],
    );
    assert_eq!(
        found(&e),
        vec![(
            Kind::RevokedClient,
            "orders".into(),
            "leaky".into(),
            1,
            "credential revoked since 2026-11-15T00:00:00Z: leaked".into()
        )]
    );
    let before = parse_rfc3339("2026-11-10T00:00:00Z").unwrap();
    let mut e = engine();
    tcp_flow(
        &mut e,
        before,
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        &[&get("/v1/orders", Some("leaky-token"))],
    );
    assert_eq!(found(&e), vec![]);
    // `--at` judges at a fixed time whatever the packet times.
    let opts = EngineOptions {
        fixed_time: Some(t0()),
        ..EngineOptions::default()
    };
    let mut e = Engine::new(contract(), opts);
    tcp_flow(
        &mut e,
        before,
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        &[&get("/v1/orders", Some("leaky-token"))],
    );
    assert_eq!(kinds(&e), vec![Kind::RevokedClient]);
}

#[test]
fn stale_credential_by_stage_max_age() {
    let mut e = engine();
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        &[&get("/v1/orders", Some("old-token"))],
    );
    assert_eq!(
        found(&e),
        vec![(
            Kind::StaleCredential,
            "orders".into(),
            "oldco".into(),
            1,
            "credential 323d old, max 90d".into()
        )]
    );
    // acme's credential is 19 days old: fine in pilot (90d) and ramp (30d).
    let mut e = engine();
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        &[&get("/v1/orders", Some("acme-token"))],
    );
    assert_eq!(found(&e), vec![]);
}
