//! The engine: judges flows against the active stage of a ramp contract.
//!
//! `Engine::handle` takes the pipeline's [`Event`](crate::event::Event)s (from
//! the kernel or from pcap files), runs them through the flow table and
//! hands each fact to the seven detections, one file per kind and each the
//! only place its kind is decided. Outputs (ended flows, violation
//! lifecycle, stage changes) queue in the engine for the caller to drain.
//!
//! Identity and counting policy:
//! - Identity per request: credential → client certificate → source → unknown.
//! - TLS flows: requests are invisible, so no identity is guessed: the client
//!   comes from the client certificate (TLS ≤ 1.2) or the source address,
//!   else "unknown" — and `unknown_client` is not raised for them. Their
//!   requests count towards quotas only through kernel request-start counts
//!   (which see none for encrypted payload), so quotas are enforced on
//!   plaintext requests; a TLS flow's record shows `requests: 0`.
//! - Quotas count parsed request heads, or, with
//!   `EngineOptions::requests_from_kernel`, the kernel's `RequestStarts`
//!   (heads are then still parsed for identity but not counted again).
//! - Terms (stage, credential age, revocations) are judged at
//!   `EngineOptions::fixed_time` when set, else at event time; quota windows
//!   always use event time.

mod engine;
mod flow_state;
mod judge;
pub mod quota_overshoot;
mod rates;
pub mod readiness;
mod record;
pub mod revoked_client;
pub mod stale_credential;
pub mod unencrypted_flow;
pub mod unknown_client;
pub mod unlisted_endpoint;
pub mod view;
pub mod violations;
pub mod weak_tls;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use engine::{Engine, EngineOptions, EngineStats, Output};
pub use rates::RateWindow;
pub use readiness::{Readiness, ReadinessError};
pub use record::{ClientRate, FlowRecord, RequestCount, ResponseCount, StageInfo};
pub use view::View;
pub use violations::{
    Answered, Finding, Kind, Outcome, Severity, Violation, ViolationEvent, ViolationKey,
};

use crate::event::Nanos;

/// Label for a flow or violation with no endpoint.
pub const UNLISTED: &str = "unlisted";
/// Label for a flow or violation with no identified client.
pub const UNKNOWN: &str = "unknown";

/// What the detections see besides the event itself.
pub struct Ctx<'a> {
    pub view: &'a View,
    /// Index of the active stage.
    pub stage: Option<usize>,
    /// When the contract's terms are judged: `--at` or event time.
    pub judge_time: Nanos,
    /// Changes whenever the quotas in force may have changed.
    pub quota_gen: u64,
    pub unlisted: &'a Arc<str>,
    pub unknown: &'a Arc<str>,
}

impl Ctx<'_> {
    pub fn stage_view(&self) -> Option<&view::StageTerms> {
        self.stage.and_then(|s| self.view.stages.get(s))
    }

    /// A finding keyed by endpoint and client indexes.
    pub fn finding(
        &self,
        kind: Kind,
        endpoint: Option<usize>,
        client: Option<usize>,
        detail: String,
        count: u64,
    ) -> Finding {
        let endpoint = self
            .view
            .endpoint_name(endpoint)
            .unwrap_or(self.unlisted)
            .clone();
        let client = self
            .view
            .client_name(client)
            .unwrap_or(self.unknown)
            .clone();
        self.finding_named(kind, endpoint, client, detail, count)
    }

    pub fn finding_named(
        &self,
        kind: Kind,
        endpoint: Arc<str>,
        client: Arc<str>,
        detail: String,
        count: u64,
    ) -> Finding {
        Finding {
            key: ViolationKey {
                kind,
                endpoint,
                client,
            },
            detail,
            count,
            client_workload: None,
        }
    }
}

/// RFC 3339 in UTC, whole seconds unless the time has a fraction.
pub fn fmt_time(t: Nanos) -> String {
    crate::contract::format_rfc3339(t)
}

/// The contract's duration spelling, largest whole unit: "90d", "15m".
pub fn fmt_duration(d: Nanos) -> String {
    const S: Nanos = 1_000_000_000;
    let secs = d / S;
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs >= n {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}
