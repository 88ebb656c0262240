//! Engine tests over time: stage changes and hot reloads keep the state,
//! reloads look live flows up again, severities escalate by the remediation
//! windows and quiet violations resolve.

use super::*;
use crate::{
    contract::{Contract, parse_rfc3339},
    event::tcp_flags,
};

#[test]
fn stage_change_and_hot_reload_keep_state() {
    let mut e = engine();
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        &[&get("/v1/orders", None)],
    );
    assert_eq!(kinds(&e), vec![Kind::UnknownClient]);
    let dec = parse_rfc3339("2026-12-01T00:00:01Z").unwrap();
    e.tick(dec);
    let changes: Vec<_> = e
        .drain()
        .filter_map(|o| {
            if let Output::StageChanged { from, to, .. } = o {
                Some((from, to))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(changes, vec![(Some("pilot".into()), Some("ramp".into()))]);
    // Reload: the violation stays, the new contract's stage timeline rules.
    let yaml = contract_yaml().replace("2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z");
    e.set_contract(Arc::new(Contract::parse(&yaml, "reloaded.yaml").unwrap()));
    assert_eq!(kinds(&e), vec![Kind::UnknownClient]);
    let changes: Vec<_> = e
        .drain()
        .filter_map(|o| {
            if let Output::StageChanged { to, .. } = o {
                Some(to)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(changes, vec![Some("pilot".into())]);
    assert_eq!(e.stage().active.as_deref(), Some("pilot"));
}

#[test]
fn reload_looks_live_flows_up_again() {
    let mut e = engine();
    let c = "10.1.0.9:5000";
    let s = "10.20.2.5:8080";
    e.handle(pkt(t0(), c, s, 100, tcp_flags::SYN, b""));
    let req = get("/v1/orders", Some("acme-token"));
    e.handle(pkt(t0(), c, s, 101, ACK, &req));
    // Reload with the endpoints in another order: indexes change, names stay.
    let yaml = contract_yaml().replace("    - name: payments\n", "    - name: aaa\n      dataClass: public\n      hosts: [\"10.99.0.0/16\"]\n    - name: payments\n");
    e.set_contract(Arc::new(Contract::parse(&yaml, "reloaded.yaml").unwrap()));
    end_flow(&mut e, t0() + 1, c, s, 101 + req.len() as u32, 1);
    e.finish();
    let r = records(&mut e);
    assert_eq!((&*r[0].endpoint, &*r[0].client), ("orders", "acme"));
}

#[test]
fn severity_escalates_and_quiet_violations_resolve() {
    let mut e = Engine::new(
        contract(),
        EngineOptions {
            quiet_period: Some(30 * 60 * SEC),
            ..EngineOptions::default()
        },
    );
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        &[&get("/v1/orders", None)],
    );
    e.drain().for_each(drop);
    e.tick(t0() + 16 * 60 * SEC);
    let esc: Vec<Severity> = e
        .drain()
        .filter_map(|o| {
            if let Output::Violation(ViolationEvent::Escalated(v)) = o {
                Some(v.severity)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(esc, vec![Severity::Critical]);
    e.tick(t0() + 29 * 60 * SEC);
    assert_eq!(e.drain().count(), 0, "not quiet for 30 minutes yet");
    e.tick(t0() + 31 * 60 * SEC);
    let resolved = e
        .drain()
        .filter(|o| matches!(o, Output::Violation(ViolationEvent::Resolved(_))))
        .count();
    assert_eq!(resolved, 1);
    assert!(e.violations().iter().all(|v| v.resolved_at.is_some()));
}

#[test]
fn breach_after_the_breach_window() {
    let mut e = Engine::new(
        contract(),
        EngineOptions {
            quiet_period: None,
            ..EngineOptions::default()
        },
    );
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        &[&get("/v1/orders", None)],
    );
    e.tick(t0() + 25 * 3600 * SEC);
    assert_eq!(e.violations()[0].severity, Severity::Breach);
}
