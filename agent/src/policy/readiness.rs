//! Readiness: what would break if a stage started now. For the next stage
//! (or a named one): each identified client × endpoint whose rate over the
//! readiness window is above that stage's quota or that gets no quota
//! there, each listed credential that will be stale when it starts, and
//! each endpoint the stage opens (first quotas) or closes (none left). The
//! live agent (`rampwatch readiness`, socket) and `rampwatch replay --stage`
//! both ask [`Engine::readiness`]. Data classes are contract-wide, not per
//! stage: a class change comes with a contract change, which `rampwatch
//! contract diff` reports.

use std::sync::Arc;

use super::{Engine, fmt_duration, fmt_time, view::StageTerms};
use crate::{contract::RevocationTarget, event::Nanos};

const SEC: f64 = 1e9;

/// What is not ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Problem {
    RateAboveQuota,
    NoQuota,
    CredentialStale,
    EndpointChanges,
}

impl Problem {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RateAboveQuota => "rate_above_quota",
            Self::NoQuota => "no_quota",
            Self::CredentialStale => "credential_stale",
            Self::EndpointChanges => "endpoint_changes",
        }
    }
}

/// One thing to fix before the stage starts, with its figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub problem: Problem,
    pub client: Option<Arc<str>>,
    pub endpoint: Option<Arc<str>>,
    /// Requests per second over the window (rate problems).
    pub rate: Option<f64>,
    /// The stage's quota; `None`: it grants none.
    pub quota: Option<f64>,
    pub burst: Option<f64>,
    /// The quota in force when the rate was measured.
    pub current_quota: Option<f64>,
    /// Short fingerprint (`credential_stale`).
    pub credential: Option<String>,
    pub issued_at: Option<Nanos>,
    /// The credential's age when the stage starts.
    pub age_at_start: Option<Nanos>,
    pub max_age: Option<Nanos>,
    pub detail: String,
}

impl Item {
    fn new(problem: Problem, detail: String) -> Self {
        Self {
            problem,
            client: None,
            endpoint: None,
            rate: None,
            quota: None,
            burst: None,
            current_quota: None,
            credential: None,
            issued_at: None,
            age_at_start: None,
            max_age: None,
            detail,
        }
    }
}

/// The readiness of one stage at one time.
#[derive(Clone, Debug, PartialEq)]
pub struct Readiness {
    pub stage: Arc<str>,
    pub starts_at: Nanos,
    /// When it was measured (event time: packet time in replay).
    pub at: Nanos,
    /// What the rates were averaged over (the configured window, or what
    /// was observed of it).
    pub window: Nanos,
    /// Sorted by problem, client, endpoint.
    pub items: Vec<Item>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.items.is_empty()
    }

    /// Until the stage starts (negative once it has).
    pub fn starts_in(&self) -> Nanos {
        self.starts_at.saturating_sub(self.at)
    }
}

/// Why no readiness can be given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadinessError {
    #[error("the contract has no stage named `{name}`; its stages are: {known}")]
    UnknownStage { name: String, known: String },
    #[error(
        "no stage follows `{active}`: it is the contract's last; name one with --stage to check traffic against it"
    )]
    NoNextStage { active: String },
}

fn rate_text(r: f64) -> String {
    let r = (r * 100.0).round() / 100.0;
    format!("{r} req/s")
}

impl Engine {
    /// Readiness for `stage` (by name), or for the stage after the active
    /// one, measured at the latest event time.
    pub fn readiness(&self, stage: Option<&str>) -> Result<Readiness, ReadinessError> {
        let (view, rates, active, at) = self.readiness_parts();
        let target = match stage {
            Some(name) => view
                .stages
                .iter()
                .position(|s| &*s.name == name)
                .ok_or_else(|| ReadinessError::UnknownStage {
                    name: name.to_owned(),
                    known: view
                        .stages
                        .iter()
                        .map(|s| s.name.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?,
            None => view
                .next_stage(active)
                .ok_or_else(|| ReadinessError::NoNextStage {
                    active: active
                        .and_then(|i| view.stages.get(i))
                        .map_or_else(|| "none".to_owned(), |s| s.name.to_string()),
                })?,
        };
        let Some(terms) = view.stages.get(target) else {
            return Err(ReadinessError::NoNextStage {
                active: "none".to_owned(),
            });
        };
        let window = rates.window_at(at);
        let mut items = Vec::new();
        let current = view.stage_at(at);

        // Rates against the stage's quotas.
        for ((client, endpoint), bucket) in rates.iter() {
            let (Some(ci), Some(ei)) = (
                view.clients.iter().position(|c| c == client),
                view.endpoints.iter().position(|e| &e.name == endpoint),
            ) else {
                continue;
            };
            let rate = rates.window_rate(bucket, at);
            if rate <= 0.0 {
                continue;
            }
            let quota = terms.quotas.get(&(ci, ei));
            let now = current
                .and_then(|s| view.stages.get(s))
                .and_then(|s| s.quotas.get(&(ci, ei)))
                .map(|q| q.requests_per_second);
            let (problem, detail) = match quota {
                None => (
                    Problem::NoQuota,
                    format!(
                        "{client} sends {} to {endpoint}, which `{}` grants it no quota for",
                        rate_text(rate),
                        terms.name
                    ),
                ),
                Some(q) if rate > q.requests_per_second => (
                    Problem::RateAboveQuota,
                    format!(
                        "{client} sends {} to {endpoint}, above `{}`'s quota of {}",
                        rate_text(rate),
                        terms.name,
                        rate_text(q.requests_per_second)
                    ),
                ),
                Some(_) => continue,
            };
            items.push(Item {
                client: Some(client.clone()),
                endpoint: Some(endpoint.clone()),
                rate: Some(rate),
                quota: quota.map(|q| q.requests_per_second),
                burst: quota.map(|q| q.burst),
                current_quota: now,
                ..Item::new(problem, detail)
            });
        }

        stale_credentials(self, terms, &mut items);
        endpoint_changes(self, target, &mut items);

        items.sort_by(|a, b| {
            (a.problem, &a.client, &a.endpoint, &a.credential).cmp(&(
                b.problem,
                &b.client,
                &b.endpoint,
                &b.credential,
            ))
        });
        Ok(Readiness {
            stage: terms.name.clone(),
            starts_at: terms.starts_at,
            at,
            window,
            items,
        })
    }
}

/// Listed credentials older than the stage's `credentialMaxAge` when it
/// starts (revoked ones are left out: they fail for a stronger reason).
fn stale_credentials(engine: &Engine, terms: &StageTerms, items: &mut Vec<Item>) {
    let Some(max) = terms.credential_max_age else {
        return;
    };
    let contract = &engine.view().contract;
    for client in contract.clients() {
        for cred in &client.credentials {
            let age = cred.age_at(terms.starts_at);
            if age <= max {
                continue;
            }
            let revoked = contract.revocations().iter().any(|r| {
                r.revoked_at <= terms.starts_at
                    && match &r.target {
                        RevocationTarget::Credential(fp) => *fp == cred.fingerprint,
                        RevocationTarget::Client(c) => *c == client.name,
                        RevocationTarget::Certificate(_) => false,
                    }
            });
            if revoked {
                continue;
            }
            let fp = cred.fingerprint.short();
            items.push(Item {
                client: Some(client.name.clone()),
                credential: Some(fp.clone()),
                issued_at: Some(cred.issued_at),
                age_at_start: Some(age),
                max_age: Some(max),
                ..Item::new(
                    Problem::CredentialStale,
                    format!(
                        "credential {fp} of {} (issued {}) is {} old when `{}` starts, over its credentialMaxAge {}; rotate it",
                        client.name,
                        fmt_time(cred.issued_at),
                        fmt_duration(age),
                        terms.name,
                        fmt_duration(max)
                    ),
                )
            });
        }
    }
}

/// Endpoints the stage opens (quotas where the stage before granted none)
/// or closes (no quota left).
fn endpoint_changes(engine: &Engine, target: usize, items: &mut Vec<Item>) {
    let view = engine.view();
    let Some(terms) = view.stages.get(target) else {
        return;
    };
    let before = target.checked_sub(1).and_then(|i| view.stages.get(i));
    let has =
        |s: Option<&StageTerms>, e: usize| s.is_some_and(|s| s.quotas.keys().any(|(_, x)| *x == e));
    for (ei, endpoint) in view.endpoints.iter().enumerate() {
        let (was, will) = (has(before, ei), has(Some(terms), ei));
        let detail = match (was, will) {
            (false, true) => {
                let mut who: Vec<String> = terms
                    .quotas
                    .iter()
                    .filter(|((_, e), _)| *e == ei)
                    .filter_map(|((c, _), q)| {
                        Some(format!(
                            "{} {}",
                            view.clients.get(*c)?,
                            rate_text(q.requests_per_second)
                        ))
                    })
                    .collect();
                who.sort();
                format!(
                    "endpoint {} opens in `{}`: first quotas ({})",
                    endpoint.name,
                    terms.name,
                    who.join(", ")
                )
            }
            (true, false) => format!(
                "endpoint {} closes in `{}`: no client has a quota there any more, so all its traffic is over quota",
                endpoint.name, terms.name
            ),
            _ => continue,
        };
        items.push(Item {
            endpoint: Some(endpoint.name.clone()),
            ..Item::new(Problem::EndpointChanges, detail)
        });
    }
}

/// How long until `r` starts, for people: `in 3d 4h`, `started 2h ago`.
pub fn starts_in_text(r: &Readiness) -> String {
    let d = r.starts_in();
    if d >= 0 {
        format!("in {}", fmt_duration(d))
    } else {
        format!("started {} ago", fmt_duration(d.saturating_neg()))
    }
}

/// The window as seconds, for JSON figures.
pub fn secs(d: Nanos) -> f64 {
    d as f64 / SEC
}
