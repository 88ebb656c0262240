//! Remediation windows per violation kind and per data class (the most
//! specific bound wins), escalation by them, the time to the next step,
//! and new windows on reload.

use super::*;
use crate::contract::Window;

const MIN: Nanos = 60 * SEC;
const HOUR: Nanos = 60 * MIN;

fn sla_yaml() -> String {
    contract_yaml().replace(
        "    warnAfter: 15m\n    breachAfter: 24h\n",
        "    warnAfter: 15m\n    breachAfter: 24h\n    kinds:\n      unencrypted_flow: { breachAfter: 4h }\n    dataClasses:\n      pii: { warnAfter: 5m, breachAfter: 7d }\n",
    )
}

/// Violations stay open (no quiet period) so escalation shows.
fn sla_engine(yaml: &str) -> Engine {
    let c = Contract::parse(yaml, "sla.yaml").expect("valid contract");
    let opts = EngineOptions {
        quiet_period: None,
        ..EngineOptions::default()
    };
    Engine::new(Arc::new(c), opts)
}

fn open(e: &Engine, kind: Kind) -> Violation {
    e.violations()
        .into_iter()
        .find(|v| v.key.kind == kind)
        .unwrap_or_else(|| panic!("no open {kind}: {:?}", found(e)))
}

/// Plaintext to payments (class pii) and an anonymous call to orders
/// (class internal), both at `t0`.
fn two_violations(e: &mut Engine) {
    tcp_flow(
        e,
        t0(),
        "10.1.0.9:5000",
        "10.20.1.5:80",
        &[&get("/pay", Some("acme-token"))],
    );
    tcp_flow(
        e,
        t0(),
        "10.1.0.9:5001",
        "10.20.2.5:8080",
        &[&get("/v1/orders", None)],
    );
}

#[test]
fn the_most_specific_window_wins_bound_by_bound() {
    let mut e = sla_engine(&sla_yaml());
    two_violations(&mut e);
    let plain = open(&e, Kind::UnencryptedFlow);
    // breachAfter from the kind, warnAfter from the class.
    assert_eq!(
        plain.window,
        Window {
            warn_after: Some(5 * MIN),
            breach_after: Some(4 * HOUR)
        }
    );
    assert_eq!(
        plain.next_step(),
        Some((Severity::Critical, t0() + 5 * MIN))
    );
    let anon = open(&e, Kind::UnknownClient);
    assert_eq!(
        anon.window,
        Window {
            warn_after: Some(15 * MIN),
            breach_after: Some(24 * HOUR)
        }
    );

    e.tick(t0() + 6 * MIN);
    let plain = open(&e, Kind::UnencryptedFlow);
    assert_eq!(plain.severity, Severity::Critical);
    assert_eq!(plain.next_step(), Some((Severity::Breach, t0() + 4 * HOUR)));
    assert_eq!(open(&e, Kind::UnknownClient).severity, Severity::Warning);
}

#[test]
fn escalation_follows_each_window() {
    let mut e = sla_engine(&sla_yaml());
    two_violations(&mut e);
    e.tick(t0() + 4 * HOUR + SEC);
    assert_eq!(open(&e, Kind::UnencryptedFlow).severity, Severity::Breach);
    assert_eq!(open(&e, Kind::UnencryptedFlow).next_step(), None);
    assert_eq!(open(&e, Kind::UnknownClient).severity, Severity::Critical);
    assert_eq!(
        open(&e, Kind::UnknownClient).next_step(),
        Some((Severity::Breach, t0() + 24 * HOUR))
    );
}

#[test]
fn a_reload_gives_open_violations_the_new_windows() {
    let mut e = sla_engine(&contract_yaml());
    two_violations(&mut e);
    assert_eq!(
        open(&e, Kind::UnencryptedFlow).window.breach_after,
        Some(24 * HOUR)
    );
    let c = Contract::parse(&sla_yaml(), "sla.yaml").expect("valid contract");
    e.set_contract(Arc::new(c));
    assert_eq!(
        open(&e, Kind::UnencryptedFlow).window.breach_after,
        Some(4 * HOUR)
    );
    e.tick(t0() + 5 * HOUR);
    assert_eq!(open(&e, Kind::UnencryptedFlow).severity, Severity::Breach);
}

#[test]
fn bad_windows_are_reported_with_their_path() {
    let bad = contract_yaml().replace(
        "    warnAfter: 15m\n    breachAfter: 24h\n",
        "    warnAfter: 15m\n    breachAfter: 24h\n    kinds:\n      plaintext: { breachAfter: 4h }\n      weak_tls: {}\n    dataClasses:\n      secret: { breachAfter: 1h }\n      pii: { warnAfter: 2h, breachAfter: 1h }\n",
    );
    let err = Contract::parse(&bad, "sla.yaml").expect_err("invalid");
    let got: Vec<String> = err.diagnostics().iter().map(|d| d.path.clone()).collect();
    assert_eq!(
        got,
        vec![
            "spec.remediation.kinds.plaintext",
            "spec.remediation.kinds.weak_tls",
            "spec.remediation.dataClasses.secret",
            "spec.remediation.dataClasses.pii.breachAfter",
        ],
        "{err}"
    );
}

#[test]
fn violations_have_stable_ids() {
    let mut e = sla_engine(&sla_yaml());
    two_violations(&mut e);
    let plain = open(&e, Kind::UnencryptedFlow);
    let id = plain.id();
    assert!(
        id.len() == 11 && id.starts_with('v') && id[1..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    // The same after more occurrences and escalation; another violation,
    // or the same key opened at another time, has another.
    tcp_flow(
        &mut e,
        t0() + SEC,
        "10.1.0.9:5002",
        "10.20.1.5:80",
        &[&get("/pay", Some("acme-token"))],
    );
    e.tick(t0() + 6 * MIN);
    assert_eq!(open(&e, Kind::UnencryptedFlow).id(), id);
    assert_ne!(open(&e, Kind::UnknownClient).id(), id);
    let reopened = Violation {
        first_seen: plain.first_seen + 1,
        ..plain
    };
    assert_ne!(reopened.id(), id);
}
