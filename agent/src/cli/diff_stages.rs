//! Stages in `contract diff`: matched by name, quotas and
//! `credentialMaxAge` compared, a stage only one side has compared with the
//! one the other side has in force at its start.

use super::diff::{Change, Effect, duration_effect, show_duration};
use crate::contract::{Contract, Quota, Stage, format_duration, format_rfc3339};

fn show_quota(q: Quota) -> String {
    format!("{} req/s, burst {}", q.rps, q.burst)
}

/// `old` → `new` terms of one stage. `old` is `None` when no stage was in
/// force (nothing granted, no maximum age).
fn stage_terms(label: &str, old: Option<&Stage>, new: Option<&Stage>, out: &mut Vec<Change>) {
    let age = |s: Option<&Stage>| s.and_then(|s| s.credential_max_age);
    let (a, b) = (age(old), age(new));
    if let Some(effect) = duration_effect(a, b) {
        out.push(
            Change::new(effect, "stage", "credentialMaxAge", label)
                .stage(label)
                .values(a.map(format_duration), b.map(format_duration))
                .detail(format!(
                    "stage {label}: credentialMaxAge {} → {}",
                    show_duration(a, "unlimited"),
                    show_duration(b, "unlimited")
                )),
        );
    }
    fn quotas(s: Option<&Stage>) -> &[crate::contract::QuotaRule] {
        s.map(|s| s.quotas.as_slice()).unwrap_or_default()
    }
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for q in quotas(old).iter().chain(quotas(new)) {
        if !pairs.contains(&(&*q.client, &*q.endpoint)) {
            pairs.push((&q.client, &q.endpoint));
        }
    }
    for (client, endpoint) in pairs {
        let qa = old.and_then(|s| s.quota(client, endpoint));
        let qb = new.and_then(|s| s.quota(client, endpoint));
        let (effect, what) = match (qa, qb) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) => {
                let raised = b.rps > a.rps || b.burst > a.burst;
                let effect = if raised {
                    Effect::Loosens
                } else {
                    Effect::Tightens
                };
                (effect, format!("{} → {}", show_quota(a), show_quota(b)))
            }
            (None, Some(b)) => (Effect::Loosens, format!("newly granted, {}", show_quota(b))),
            (Some(a), None) => (
                Effect::Tightens,
                format!("{} removed (quota 0)", show_quota(a)),
            ),
            (None, None) => continue,
        };
        out.push(
            Change::new(effect, "quota", "quotas", &format!("{client} → {endpoint}"))
                .stage(label)
                .client(client)
                .endpoint(endpoint)
                .values(qa.map(show_quota), qb.map(show_quota))
                .detail(format!(
                    "stage {label}: quota {client} → {endpoint}: {what}"
                )),
        );
    }
}

/// Whether `stage` grants anything its predecessor in `c` did not.
fn raises_over_previous(c: &Contract, stage: &Stage) -> bool {
    let previous = stage.index.checked_sub(1).and_then(|i| c.stages().get(i));
    let mut probe = Vec::new();
    stage_terms(&stage.name, previous, Some(stage), &mut probe);
    probe.iter().any(|c| c.effect == Effect::Loosens)
}

pub(super) fn stages(old: &Contract, new: &Contract, out: &mut Vec<Change>) {
    for o in old.stages() {
        let name = &*o.name;
        match new.stage(name) {
            Some(n) => {
                if n.starts_at != o.starts_at {
                    // Earlier: the stage's increases come before the
                    // validation the old date allowed for.
                    let effect = if n.starts_at < o.starts_at && raises_over_previous(new, n) {
                        Effect::Loosens
                    } else {
                        Effect::Changes
                    };
                    let when = if n.starts_at < o.starts_at {
                        "earlier"
                    } else {
                        "later"
                    };
                    out.push(
                        Change::new(effect, "stage", "startsAt", name)
                            .stage(name)
                            .values(
                                Some(format_rfc3339(o.starts_at)),
                                Some(format_rfc3339(n.starts_at)),
                            )
                            .detail(format!(
                                "stage {name} starts {when}: {} → {}",
                                format_rfc3339(o.starts_at),
                                format_rfc3339(n.starts_at)
                            )),
                    );
                }
                stage_terms(name, Some(o), Some(n), out);
            }
            None => {
                let instead = new.stage_at(o.starts_at);
                out.push(
                    Change::new(Effect::Changes, "stage", "stages", name)
                        .stage(name)
                        .values(Some(format_rfc3339(o.starts_at)), None)
                        .detail(format!(
                            "stage {name} removed; from {} {} applies",
                            format_rfc3339(o.starts_at),
                            instead
                                .map_or_else(|| "no stage".to_owned(), |s| format!("`{}`", s.name))
                        )),
                );
                stage_terms(name, Some(o), instead, out);
            }
        }
    }
    for n in new.stages() {
        if old.stage(&n.name).is_some() {
            continue;
        }
        let before = old.stage_at(n.starts_at);
        out.push(
            Change::new(Effect::Changes, "stage", "stages", &n.name)
                .stage(&n.name)
                .values(None, Some(format_rfc3339(n.starts_at)))
                .detail(format!(
                    "stage {} added at {}, replacing {} there",
                    n.name,
                    format_rfc3339(n.starts_at),
                    before.map_or_else(|| "no stage".to_owned(), |s| format!("`{}`", s.name))
                )),
        );
        stage_terms(&n.name, before, Some(n), out);
    }
}
