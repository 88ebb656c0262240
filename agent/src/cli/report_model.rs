//! The report `rampwatch report` builds (see `report`): every field is part
//! of the JSON form, documented in docs/audit.md, and stays stable.

use std::collections::BTreeMap;

use serde::Serialize;

/// The report; every field is part of the JSON form (docs/audit.md).
#[derive(Debug, Serialize)]
pub struct Report {
    pub stage: String,
    pub contract: Option<String>,
    /// RFC 3339 span the report covers.
    pub from: String,
    pub to: String,
    /// The stage was still active at the newest record of some node.
    pub still_active: bool,
    pub nodes: Vec<NodeSummary>,
    pub usage: Vec<UsageRow>,
    /// Pairs the agents summed past their per-interval cap.
    pub usage_other: UsageOther,
    /// All nodes had usage records (a log written before they existed has
    /// none: its requests are unknown, not zero).
    pub usage_complete: bool,
    pub violations: Vec<ViolationRow>,
    pub sla_breaches: Vec<Breach>,
    pub acknowledgements: Vec<Ack>,
    pub contracts: Vec<ContractEvent>,
    pub stage_changes: Vec<StageChange>,
    pub totals: Totals,
}

#[derive(Debug, Serialize)]
pub struct NodeSummary {
    pub audit_dir: String,
    /// Records in the whole log, and its head (what `audit anchor` prints).
    pub records: u64,
    pub head_seq: u64,
    pub head_hash: String,
    /// Within the span:
    pub agent_starts: Vec<Timed<String>>,
    pub agent_stops: Vec<Timed<String>>,
    pub recoveries: Vec<Timed<String>>,
    pub records_lost: Vec<Lost>,
    pub usage_records: u64,
    /// Format versions seen in the span (1: records without a `v`).
    pub formats: Vec<u32>,
}

/// `value` at `at` (RFC 3339).
#[derive(Debug, Serialize)]
pub struct Timed<T> {
    pub at: String,
    pub value: T,
}

#[derive(Debug, Serialize)]
pub struct Lost {
    pub at: String,
    pub lost: u64,
    pub after_seq: u64,
    pub reason: String,
}

#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct Quota {
    pub rps: f64,
    pub burst: f64,
}

#[derive(Debug, Serialize)]
pub struct UsageRow {
    pub client: String,
    pub endpoint: String,
    /// Requests in the span, summed over nodes.
    pub requests: u64,
    /// The quota in force at the latest interval (`null`: none granted).
    pub quota: Option<Quota>,
    /// The busiest aligned interval, summed over nodes: its requests per
    /// second (requests / the interval's longest span) and start.
    pub peak_rps: f64,
    pub peak_at: String,
    /// Intervals whose summed rate was above the quota's rps.
    pub intervals_over_quota: u64,
    pub intervals: u64,
    pub responses: BTreeMap<String, u64>,
    /// Nodes that saw the pair.
    pub nodes: u64,
}

#[derive(Debug, Serialize, Default)]
pub struct UsageOther {
    pub pairs: u64,
    pub requests: u64,
}

#[derive(Debug, Serialize)]
pub struct ViolationRow {
    /// The stable id (`null` in logs written before ids).
    pub id: Option<String>,
    pub kind: String,
    pub endpoint: String,
    pub client: String,
    pub audit_dir: String,
    /// `null` when it opened before the span.
    pub opened_at: Option<String>,
    pub escalations: Vec<Timed<String>>,
    pub resolved_at: Option<String>,
    /// Time to resolve, from the resolution record.
    pub open_secs: Option<u64>,
    /// The latest severity and occurrence count.
    pub severity: String,
    pub count: u64,
    pub detail: String,
    pub acknowledged: bool,
}

#[derive(Debug, Serialize)]
pub struct Breach {
    pub id: Option<String>,
    pub kind: String,
    pub endpoint: String,
    pub client: String,
    pub audit_dir: String,
    pub at: String,
}

#[derive(Debug, Serialize)]
pub struct Ack {
    pub id: String,
    pub kind: String,
    pub endpoint: String,
    pub client: String,
    pub severity: String,
    pub by: String,
    pub uid: u32,
    pub note: String,
    pub audit_dir: String,
    pub at: String,
}

#[derive(Debug, Serialize)]
pub struct ContractEvent {
    pub at: String,
    pub audit_dir: String,
    /// `loaded` or `rejected`.
    pub event: &'static str,
    pub contract: Option<String>,
    pub sha256: String,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct StageChange {
    pub at: String,
    pub audit_dir: String,
    pub from: Option<String>,
    pub to: String,
}

#[derive(Debug, Serialize, Default)]
pub struct Totals {
    pub requests: u64,
    pub violations_opened: u64,
    pub violations_escalated: u64,
    pub violations_resolved: u64,
    pub sla_breaches: u64,
    pub acknowledgements: u64,
    pub contract_loads: u64,
    pub reload_rejections: u64,
    pub agent_starts: u64,
    pub agent_stops: u64,
    pub recoveries: u64,
    pub records_lost: u64,
}
