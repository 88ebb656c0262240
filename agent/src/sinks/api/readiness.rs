//! Readiness as the API answers it and `replay --stage` prints it: one row
//! per problem, each carrying its stage, when it starts and its figures, so
//! every JSON line stands alone.

use serde::{Deserialize, Serialize};

use crate::{
    contract::{format_duration, format_rfc3339},
    policy::readiness::{Readiness, secs, starts_in_text},
};

/// A stage's readiness.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct ReadinessView {
    pub stage: String,
    /// RFC 3339.
    pub starts_at: String,
    /// Negative once it has started.
    pub starts_in_secs: i64,
    /// `in 3d`, `started 2h ago`.
    pub starts_in: String,
    /// What the rates are averaged over.
    pub window_secs: f64,
    /// When it was measured (RFC 3339).
    pub at: String,
    pub rows: Vec<ReadinessRow>,
}

/// One problem. Figures that do not apply are `null`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct ReadinessRow {
    /// `rate_above_quota`, `no_quota`, `credential_stale` or
    /// `endpoint_changes`.
    pub problem: String,
    pub client: Option<String>,
    pub endpoint: Option<String>,
    pub stage: String,
    pub starts_at: String,
    pub starts_in_secs: i64,
    /// Requests per second over `window_secs`.
    pub rate: Option<f64>,
    pub window_secs: Option<f64>,
    /// The stage's quota (req/s); `null` when it grants none.
    pub quota: Option<f64>,
    pub burst: Option<u64>,
    /// The quota in force when the rate was measured.
    pub current_quota: Option<f64>,
    /// Short fingerprint, never the credential.
    pub credential: Option<String>,
    pub issued_at: Option<String>,
    /// Age when the stage starts, and the stage's `credentialMaxAge`.
    pub age_at_start: Option<String>,
    pub credential_max_age: Option<String>,
    pub detail: String,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl From<&Readiness> for ReadinessView {
    fn from(r: &Readiness) -> Self {
        let starts_at = format_rfc3339(r.starts_at);
        let starts_in_secs = r.starts_in() / 1_000_000_000;
        let window_secs = secs(r.window);
        let rows = r
            .items
            .iter()
            .map(|i| ReadinessRow {
                problem: i.problem.as_str().to_owned(),
                client: i.client.as_ref().map(ToString::to_string),
                endpoint: i.endpoint.as_ref().map(ToString::to_string),
                stage: r.stage.to_string(),
                starts_at: starts_at.clone(),
                starts_in_secs,
                rate: i.rate.map(round2),
                window_secs: i.rate.map(|_| window_secs),
                quota: i.quota,
                burst: i.burst.map(|b| b.max(0.0) as u64),
                current_quota: i.current_quota,
                credential: i.credential.clone(),
                issued_at: i.issued_at.map(format_rfc3339),
                age_at_start: i.age_at_start.map(format_duration),
                credential_max_age: i.max_age.map(format_duration),
                detail: i.detail.clone(),
            })
            .collect();
        Self {
            stage: r.stage.to_string(),
            starts_at,
            starts_in_secs,
            starts_in: starts_in_text(r),
            window_secs,
            at: format_rfc3339(r.at),
            rows,
        }
    }
}
