//! Clients named by JWT claims, and the token terms of a stage (expiry,
//! `nbf`, `credentialMaxAge` from `iat`, `rotateOnStageStart`,
//! `signingKeys`): crafted HTTP/1 requests through the engine.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::json;

use super::*;
use crate::{
    identity::Fingerprint,
    policy::{FlowRecord, Output, view::Via},
};

const ISS: &str = "https://idp.example.com";

/// 2026-12-10T00:00:00Z: in stage `ramp` (began 2026-12-01).
fn now() -> Nanos {
    parse_rfc3339("2026-12-10T00:00:00Z").expect("valid time")
}

fn secs(t: Nanos) -> i64 {
    t / SEC
}

/// An HS256-shaped token (the signature is never checked).
fn token(kid: Option<&str>, claims: serde_json::Value) -> String {
    let header = match kid {
        Some(k) => json!({"alg": "RS256", "typ": "JWT", "kid": k}),
        None => json!({"alg": "RS256", "typ": "JWT"}),
    };
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode("signature bytes")
    )
}

/// A fresh token for `sub`, issued an hour ago, expiring in an hour.
fn fresh(sub: &str, kid: &str) -> String {
    token(
        Some(kid),
        json!({"iss": ISS, "sub": sub, "iat": secs(now()) - 3600, "exp": secs(now()) + 3600}),
    )
}

const LISTED: &str = "listed-opaque-token";

fn yaml(listed_jwt: &str) -> String {
    let fp = |t: &str| Fingerprint::of_bytes(t.as_bytes()).to_string();
    format!(
        r#"apiVersion: rampwatch.io/v1
kind: RampContract
metadata:
  name: jwt
spec:
  dataClasses:
    - name: internal
      encryption: optional
  endpoints:
    - name: orders
      dataClass: internal
      hosts: ["10.20.2.0/24"]
      ports: [8080]
  clients:
    - name: billing
      jwt:
        - {{ issuer: "{ISS}", subject: svc-billing }}
        - {{ issuer: "{ISS}", clientId: billing-app }}
    - name: pinned
      credentials:
        - {{ fingerprint: "{listed_jwt}", issuedAt: "2026-12-05T00:00:00Z" }}
        - {{ fingerprint: "{opaque}", issuedAt: "2026-12-05T00:00:00Z" }}
  stages:
    - name: pilot
      startsAt: "2026-11-01T00:00:00Z"
      quotas:
        - {{ client: billing, endpoint: orders, requestsPerSecond: 100, burst: 100 }}
        - {{ client: pinned, endpoint: orders, requestsPerSecond: 100, burst: 100 }}
    - name: ramp
      startsAt: "2026-12-01T00:00:00Z"
      credentialMaxAge: 7d
      rotateOnStageStart: true
      signingKeys: [key-2026-12, key-2027-01]
      quotas:
        - {{ client: billing, endpoint: orders, requestsPerSecond: 100, burst: 100 }}
        - {{ client: pinned, endpoint: orders, requestsPerSecond: 100, burst: 100 }}
"#,
        opaque = fp(LISTED),
    )
}

fn engine_with(listed_jwt: &str) -> Engine {
    let c = Contract::parse(&yaml(listed_jwt), "jwt.yaml").expect("valid contract");
    Engine::new(Arc::new(c), EngineOptions::default())
}

fn jwt_engine() -> Engine {
    engine_with(&Fingerprint::of_bytes(b"nothing").to_string())
}

/// One request with `token` at `at`; the flow's record.
fn call(e: &mut Engine, at: Nanos, token: &str) -> FlowRecord {
    tcp_flow(
        e,
        at,
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        &[&get("/v1/orders", Some(token))],
    );
    e.tick(at + 60 * SEC);
    let mut flows: Vec<FlowRecord> = e
        .drain()
        .filter_map(|o| match o {
            Output::Flow(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(flows.len(), 1);
    flows.remove(0)
}

fn stale(e: &Engine) -> Vec<(String, String)> {
    found(e)
        .into_iter()
        .filter(|v| v.0 == Kind::StaleCredential)
        .map(|v| (v.2, v.4))
        .collect()
}

#[test]
fn claims_name_the_client_whatever_the_token() {
    for tok in [
        fresh("svc-billing", "key-2026-12"),
        // client_id, and azp when there is no client_id.
        token(
            Some("key-2026-12"),
            json!({"iss": ISS, "client_id": "billing-app", "iat": secs(now())}),
        ),
        token(
            Some("key-2027-01"),
            json!({"iss": ISS, "sub": "someone", "azp": "billing-app", "iat": secs(now())}),
        ),
    ] {
        let mut e = jwt_engine();
        let r = call(&mut e, now(), &tok);
        assert_eq!(
            (&*r.client, r.identified_by),
            ("billing", Via::Jwt),
            "{tok}"
        );
        assert_eq!(found(&e), vec![], "a fresh token on a pinned key: {tok}");
    }
    // Another issuer, or an unlisted subject, names no one.
    for tok in [
        token(
            None,
            json!({"iss": "https://evil.example", "sub": "svc-billing"}),
        ),
        token(None, json!({"iss": ISS, "sub": "svc-other"})),
    ] {
        let mut e = jwt_engine();
        let r = call(&mut e, now(), &tok);
        assert_eq!((&*r.client, r.identified_by), ("unknown", Via::Unknown));
        assert_eq!(kinds(&e), vec![Kind::UnknownClient]);
    }
}

#[test]
fn a_listed_fingerprint_wins_over_claims() {
    // This token's claims say billing, but pinned lists its fingerprint.
    let tok = fresh("svc-billing", "key-2026-12");
    let mut e = engine_with(&Fingerprint::of_bytes(tok.as_bytes()).to_string());
    let r = call(&mut e, now(), &tok);
    assert_eq!((&*r.client, r.identified_by), ("pinned", Via::Credential));
    // Its age is the contract's issuedAt (5 days), not the token's iat.
    assert_eq!(found(&e), vec![]);
}

#[test]
fn an_expired_token_is_stale_beyond_the_leeway() {
    let expired_at = now() - 10 * 60 * SEC;
    let tok = token(
        Some("key-2026-12"),
        json!({"iss": ISS, "sub": "svc-billing", "iat": secs(now()) - 3600, "exp": secs(expired_at)}),
    );
    let mut e = jwt_engine();
    call(&mut e, now(), &tok);
    assert_eq!(
        stale(&e),
        vec![(
            "billing".into(),
            "expired at 2026-12-09T23:50:00Z (10m ago; leeway 1m)".into()
        )]
    );
    // Within the leeway: fine.
    let tok = token(
        Some("key-2026-12"),
        json!({"iss": ISS, "sub": "svc-billing", "iat": secs(now()) - 3600, "exp": secs(now()) - 30}),
    );
    let mut e = jwt_engine();
    call(&mut e, now(), &tok);
    assert_eq!(stale(&e), vec![]);
    // Expiry applies to a listed fingerprint too.
    let tok = token(None, json!({"exp": secs(expired_at)}));
    let mut e = engine_with(&Fingerprint::of_bytes(tok.as_bytes()).to_string());
    call(&mut e, now(), &tok);
    assert_eq!(stale(&e).len(), 1, "{:?}", found(&e));
    assert!(stale(&e)[0].1.starts_with("expired at "));
}

#[test]
fn a_token_not_yet_valid_is_stale() {
    let tok = token(
        Some("key-2026-12"),
        json!({"iss": ISS, "sub": "svc-billing", "iat": secs(now()), "nbf": secs(now()) + 7200}),
    );
    let mut e = jwt_engine();
    call(&mut e, now(), &tok);
    assert_eq!(
        stale(&e),
        vec![(
            "billing".into(),
            "not valid before 2026-12-10T02:00:00Z (in 2h; leeway 1m)".into()
        )]
    );
}

#[test]
fn age_runs_from_iat_and_a_missing_iat_is_stale() {
    let old = token(
        Some("key-2026-12"),
        json!({"iss": ISS, "sub": "svc-billing", "iat": secs(now()) - 8 * 86_400}),
    );
    let mut e = jwt_engine();
    call(&mut e, now(), &old);
    assert_eq!(
        stale(&e),
        vec![("billing".into(), "credential 8d old, max 7d".into())]
    );
    let no_iat = token(
        Some("key-2026-12"),
        json!({"iss": ISS, "sub": "svc-billing"}),
    );
    let mut e = jwt_engine();
    call(&mut e, now(), &no_iat);
    assert_eq!(stale(&e).len(), 1);
    assert!(
        stale(&e)[0].1.starts_with("token has no iat"),
        "{:?}",
        stale(&e)
    );
}

#[test]
fn rotate_on_stage_start_wants_tokens_issued_after_it_began() {
    // Issued 2026-11-30T20:00Z: within 7 days, but before ramp began.
    let at = parse_rfc3339("2026-12-02T00:00:00Z").expect("time");
    let tok = token(
        Some("key-2026-12"),
        json!({"iss": ISS, "sub": "svc-billing", "iat": secs(at) - 28 * 3600}),
    );
    let mut e = jwt_engine();
    call(&mut e, at, &tok);
    assert_eq!(
        stale(&e),
        vec![(
            "billing".into(),
            "issued at 2026-11-30T20:00:00Z, before stage `ramp` began (2026-12-01T00:00:00Z); it requires rotated credentials".into()
        )]
    );
    // The same token in pilot (no rotation term) is fine.
    let mut e = jwt_engine();
    call(&mut e, at - 2 * 86_400 * SEC, &tok);
    assert_eq!(found(&e), vec![]);
}

#[test]
fn signing_keys_pin_the_kid() {
    let mut e = jwt_engine();
    call(&mut e, now(), &fresh("svc-billing", "key-2026-11"));
    assert_eq!(
        stale(&e),
        vec![(
            "billing".into(),
            "signed with key `key-2026-11`, not one stage `ramp` accepts (key-2026-12, key-2027-01)".into()
        )]
    );
    let no_kid = token(
        None,
        json!({"iss": ISS, "sub": "svc-billing", "iat": secs(now())}),
    );
    let mut e = jwt_engine();
    call(&mut e, now(), &no_kid);
    assert_eq!(stale(&e).len(), 1);
    assert!(stale(&e)[0].1.starts_with("token names no signing key"));
    // An opaque credential has no key to pin.
    let mut e = jwt_engine();
    let r = call(&mut e, now(), LISTED);
    assert_eq!((&*r.client, r.identified_by), ("pinned", Via::Credential));
    assert_eq!(found(&e), vec![]);
}

#[test]
fn a_forged_or_malformed_token_is_only_fingerprinted() {
    for tok in [
        "eyJhbGciOiJub25lIn0.bm90IGpzb24.x".to_owned(),
        format!("{}.{}", fresh("svc-billing", "key-2026-12"), "extra"),
    ] {
        let mut e = jwt_engine();
        let r = call(&mut e, now(), &tok);
        assert_eq!(r.identified_by, Via::Unknown, "{tok}");
    }
}
