//! Building the report of a stage from verified audit logs (`report`
//! reads and verifies them): the stage's span on each node, then usage,
//! violations, acknowledgements, contract loads, stage changes and each
//! node's life, summed over the nodes.

use std::collections::{BTreeMap, HashMap};

use super::{
    report::{NodeLog, ReportError},
    report_model::{
        Ack, Breach, ContractEvent, Lost, NodeSummary, Quota, Report, StageChange, Timed, Totals,
        UsageOther, UsageRow, ViolationRow,
    },
};
use crate::{
    contract::{format_rfc3339, parse_rfc3339},
    event::Nanos,
    sinks::audit::{self, AuditEntry, RecordKind, ViolationRecord},
};

const SEC: Nanos = 1_000_000_000;

fn time_of(e: &AuditEntry) -> Nanos {
    // Verified records were written with a formatted time; 0 only for a
    // hand-made one, which then sorts first.
    parse_rfc3339(&e.time).unwrap_or(0)
}

/// The stage's span in one node's log: (entered, left or newest record,
/// still active). An agent that starts inside the stage enters it with its
/// `agent_start` (the first `stage_changed`, `from: null`, follows the
/// start-up records), so the start and the contract it loaded belong to the
/// stage.
fn node_span(entries: &[AuditEntry], stage: &str) -> Option<(Nanos, Nanos, bool)> {
    let mut entered: Option<Nanos> = None;
    let mut left: Option<Nanos> = None;
    let mut inside = false;
    let mut run_start: Option<Nanos> = None;
    for e in entries {
        match &e.kind {
            RecordKind::AgentStart { .. } => run_start = Some(time_of(e)),
            RecordKind::StageChanged { from, to, .. } => {
                let t = time_of(e);
                let started = run_start.take();
                if to == stage {
                    if !inside {
                        let at = if from.is_none() {
                            started.unwrap_or(t)
                        } else {
                            t
                        };
                        entered.get_or_insert(at);
                        inside = true;
                    }
                } else if inside {
                    // A change away from it; an agent restart goes back in
                    // through `from: null` and continues the span.
                    left = Some(t);
                    inside = false;
                }
            }
            _ => {}
        }
    }
    let first = entered?;
    let newest = entries.last().map_or(first, time_of);
    Some(if inside {
        (first, newest, true)
    } else {
        (first, left.unwrap_or(newest), false)
    })
}

/// What the violation records of one (node, violation) say.
struct Lifecycle {
    row: ViolationRow,
}

fn lifecycle_key(dir: &str, v: &ViolationRecord) -> (String, String) {
    let id =
        v.id.clone()
            .unwrap_or_else(|| format!("{}/{}/{}", v.violation, v.endpoint, v.client));
    (dir.to_owned(), id)
}

/// Usage summed per (client, endpoint) and aligned interval.
#[derive(Default)]
struct PairUsage {
    requests: u64,
    /// Latest (time, quota).
    quota: Option<(Nanos, Option<Quota>)>,
    /// By interval start (aligned): summed requests and the longest span.
    intervals: BTreeMap<Nanos, (u64, Nanos)>,
    responses: BTreeMap<String, u64>,
    nodes: std::collections::BTreeSet<usize>,
}

fn quota_of(q: Option<&audit::UsageQuota>) -> Option<Quota> {
    let q = q?;
    Some(Quota {
        rps: q.rps.parse().ok()?,
        burst: q.burst.parse().ok()?,
    })
}

/// Builds the report of `stage` from verified logs.
pub fn build(stage: &str, nodes: &[NodeLog]) -> Result<Report, ReportError> {
    let spans: Vec<Option<(Nanos, Nanos, bool)>> =
        nodes.iter().map(|n| node_span(&n.entries, stage)).collect();
    let Some(from) = spans.iter().flatten().map(|s| s.0).min() else {
        let mut seen: Vec<String> = nodes
            .iter()
            .flat_map(|n| &n.entries)
            .filter_map(|e| match &e.kind {
                RecordKind::StageChanged { to, .. } => Some(to.clone()),
                _ => None,
            })
            .collect();
        seen.sort();
        seen.dedup();
        let seen = if seen.is_empty() {
            "they record no stage change".to_owned()
        } else {
            format!("stages entered: {}", seen.join(", "))
        };
        return Err(ReportError::NeverEntered {
            stage: stage.to_owned(),
            seen,
        });
    };
    let to = spans.iter().flatten().map(|s| s.1).max().unwrap_or(from);
    let still_active = spans.iter().flatten().any(|s| s.2);
    let within = |e: &AuditEntry| (from..=to).contains(&time_of(e));

    let mut report = Report {
        stage: stage.to_owned(),
        contract: None,
        from: format_rfc3339(from),
        to: format_rfc3339(to),
        still_active,
        nodes: Vec::new(),
        usage: Vec::new(),
        usage_other: UsageOther::default(),
        usage_complete: true,
        violations: Vec::new(),
        sla_breaches: Vec::new(),
        acknowledgements: Vec::new(),
        contracts: Vec::new(),
        stage_changes: Vec::new(),
        totals: Totals::default(),
    };
    let mut pairs: BTreeMap<(String, String), PairUsage> = BTreeMap::new();
    let mut lifecycles: Vec<Lifecycle> = Vec::new();
    let mut by_key: HashMap<(String, String), usize> = HashMap::new();
    for (ni, node) in nodes.iter().enumerate() {
        let dir = node.dir.display().to_string();
        let mut summary = NodeSummary {
            audit_dir: dir.clone(),
            records: u64::try_from(node.entries.len()).unwrap_or(u64::MAX),
            head_seq: node.head.as_ref().map_or(0, |h| h.0),
            head_hash: node.head.as_ref().map(|h| h.1.clone()).unwrap_or_default(),
            agent_starts: Vec::new(),
            agent_stops: Vec::new(),
            recoveries: Vec::new(),
            records_lost: Vec::new(),
            usage_records: 0,
            formats: Vec::new(),
        };
        for e in &node.entries {
            // Usage belongs to the stage it names; everything else to the span.
            if let RecordKind::Usage(u) = &e.kind {
                if u.stage.as_deref() != Some(stage) {
                    continue;
                }
            } else if let RecordKind::UsageOther(o) = &e.kind {
                if o.stage.as_deref() != Some(stage) {
                    continue;
                }
            } else if !within(e) {
                continue;
            }
            let format = e.v.unwrap_or(1);
            if !summary.formats.contains(&format) {
                summary.formats.push(format);
            }
            let at = e.time.clone();
            match &e.kind {
                RecordKind::AgentStart { version } => summary.agent_starts.push(Timed {
                    at,
                    value: version.clone(),
                }),
                RecordKind::AgentStop { reason } => summary.agent_stops.push(Timed {
                    at,
                    value: reason.clone(),
                }),
                RecordKind::Recovery(r) => summary.recoveries.push(Timed {
                    at,
                    value: r.found.clone(),
                }),
                RecordKind::RecordsLost(l) => summary.records_lost.push(Lost {
                    at,
                    lost: l.lost,
                    after_seq: l.after_seq,
                    reason: l.reason.clone(),
                }),
                RecordKind::ContractLoaded { contract, sha256 } => {
                    report.contract = Some(contract.clone());
                    report.contracts.push(ContractEvent {
                        at,
                        audit_dir: dir.clone(),
                        event: "loaded",
                        contract: Some(contract.clone()),
                        sha256: sha256.clone(),
                        errors: Vec::new(),
                    });
                }
                RecordKind::ContractReloadRejected { sha256, errors } => {
                    report.contracts.push(ContractEvent {
                        at,
                        audit_dir: dir.clone(),
                        event: "rejected",
                        contract: None,
                        sha256: sha256.clone(),
                        errors: errors.clone(),
                    });
                }
                RecordKind::StageChanged {
                    contract,
                    from: f,
                    to: t,
                } => {
                    report.contract.get_or_insert_with(|| contract.clone());
                    report.stage_changes.push(StageChange {
                        at,
                        audit_dir: dir.clone(),
                        from: f.clone(),
                        to: t.clone(),
                    });
                }
                RecordKind::ViolationOpened(v)
                | RecordKind::ViolationEscalated(v)
                | RecordKind::ViolationResolved(v) => {
                    let key = lifecycle_key(&dir, v);
                    let i = *by_key.entry(key).or_insert_with(|| {
                        lifecycles.push(Lifecycle {
                            row: ViolationRow {
                                id: v.id.clone(),
                                kind: v.violation.clone(),
                                endpoint: v.endpoint.clone(),
                                client: v.client.clone(),
                                audit_dir: dir.clone(),
                                opened_at: None,
                                escalations: Vec::new(),
                                resolved_at: None,
                                open_secs: None,
                                severity: v.severity.clone(),
                                count: v.count,
                                detail: v.detail.clone(),
                                acknowledged: false,
                            },
                        });
                        lifecycles.len() - 1
                    });
                    let Some(l) = lifecycles.get_mut(i) else {
                        continue;
                    };
                    l.row.severity.clone_from(&v.severity);
                    l.row.count = v.count;
                    l.row.detail.clone_from(&v.detail);
                    match &e.kind {
                        RecordKind::ViolationOpened(_) => {
                            // A violation that resolved and opened again
                            // keeps its id: the latest opening counts.
                            l.row.opened_at = Some(at);
                            l.row.resolved_at = None;
                            l.row.open_secs = None;
                            report.totals.violations_opened += 1;
                        }
                        RecordKind::ViolationEscalated(_) => {
                            if v.severity == "breach" {
                                report.sla_breaches.push(Breach {
                                    id: v.id.clone(),
                                    kind: v.violation.clone(),
                                    endpoint: v.endpoint.clone(),
                                    client: v.client.clone(),
                                    audit_dir: dir.clone(),
                                    at: at.clone(),
                                });
                            }
                            l.row.escalations.push(Timed {
                                at,
                                value: v.severity.clone(),
                            });
                            report.totals.violations_escalated += 1;
                        }
                        _ => {
                            l.row.resolved_at = Some(at);
                            l.row.open_secs = v.open_secs;
                            report.totals.violations_resolved += 1;
                        }
                    }
                }
                RecordKind::ViolationAcknowledged(a) => {
                    if let Some(l) = by_key
                        .get(&(dir.clone(), a.id.clone()))
                        .and_then(|i| lifecycles.get_mut(*i))
                    {
                        l.row.acknowledged = true;
                    }
                    report.acknowledgements.push(Ack {
                        id: a.id.clone(),
                        kind: a.violation.clone(),
                        endpoint: a.endpoint.clone(),
                        client: a.client.clone(),
                        severity: a.severity.clone(),
                        by: a.by.clone(),
                        uid: a.uid,
                        note: a.note.clone(),
                        audit_dir: dir.clone(),
                        at,
                    });
                }
                RecordKind::Usage(u) => {
                    summary.usage_records += 1;
                    let t_from = parse_rfc3339(&u.from).unwrap_or(0);
                    let t_to = parse_rfc3339(&u.to).unwrap_or(t_from);
                    let interval = i64::try_from(u.interval_secs)
                        .unwrap_or(60)
                        .max(1)
                        .saturating_mul(SEC);
                    let p = pairs
                        .entry((u.client.clone(), u.endpoint.clone()))
                        .or_default();
                    p.requests = p.requests.saturating_add(u.requests);
                    let q = quota_of(u.quota.as_ref());
                    if p.quota.as_ref().is_none_or(|(t, _)| *t <= t_to) {
                        p.quota = Some((t_to, q));
                    }
                    let slot = p
                        .intervals
                        .entry(t_from.div_euclid(interval) * interval)
                        .or_default();
                    slot.0 = slot.0.saturating_add(u.requests);
                    slot.1 = slot.1.max(t_to.saturating_sub(t_from));
                    for (class, n) in &u.responses {
                        *p.responses.entry(class.clone()).or_default() += n;
                    }
                    p.nodes.insert(ni);
                }
                RecordKind::UsageOther(o) => {
                    summary.usage_records += 1;
                    report.usage_other.pairs += o.pairs;
                    report.usage_other.requests =
                        report.usage_other.requests.saturating_add(o.requests);
                }
                RecordKind::SegmentEnd { .. } => {}
            }
        }
        summary.formats.sort_unstable();
        // A node whose records in the span predate usage records cannot
        // account for requests.
        if summary.usage_records == 0 && !summary.formats.iter().any(|f| *f >= 2) {
            report.usage_complete = false;
        }
        let t = &mut report.totals;
        t.agent_starts += summary.agent_starts.len() as u64;
        t.agent_stops += summary.agent_stops.len() as u64;
        t.recoveries += summary.recoveries.len() as u64;
        t.records_lost += summary.records_lost.iter().map(|l| l.lost).sum::<u64>();
        report.nodes.push(summary);
    }
    for ((client, endpoint), p) in pairs {
        let quota = p.quota.and_then(|(_, q)| q);
        let mut peak = (0.0f64, 0);
        let mut over = 0;
        for (start, (n, span)) in &p.intervals {
            #[expect(
                clippy::cast_precision_loss,
                reason = "request counts and spans in seconds fit f64"
            )]
            let rate = *n as f64 / (*span.max(&SEC) as f64 / SEC as f64);
            if rate > peak.0 {
                peak = (rate, *start);
            }
            if quota.as_ref().is_some_and(|q| rate > q.rps) {
                over += 1;
            }
        }
        report.totals.requests = report.totals.requests.saturating_add(p.requests);
        report.usage.push(UsageRow {
            client,
            endpoint,
            requests: p.requests,
            quota,
            peak_rps: (peak.0 * 100.0).round() / 100.0,
            peak_at: format_rfc3339(peak.1),
            intervals_over_quota: over,
            intervals: p.intervals.len() as u64,
            responses: p.responses,
            nodes: p.nodes.len() as u64,
        });
    }
    report.totals.requests = report
        .totals
        .requests
        .saturating_add(report.usage_other.requests);
    report.totals.sla_breaches = report.sla_breaches.len() as u64;
    report.totals.acknowledgements = report.acknowledgements.len() as u64;
    report.totals.contract_loads = report
        .contracts
        .iter()
        .filter(|c| c.event == "loaded")
        .count() as u64;
    report.totals.reload_rejections = report.contracts.len() as u64 - report.totals.contract_loads;
    report.violations = lifecycles.into_iter().map(|l| l.row).collect();
    // Several nodes' events in one timeline.
    let t = |at: &str| parse_rfc3339(at).unwrap_or(0);
    report
        .violations
        .sort_by_key(|v| v.opened_at.as_deref().map_or(0, t));
    report.sla_breaches.sort_by_key(|b| t(&b.at));
    report.acknowledgements.sort_by_key(|a| t(&a.at));
    report.contracts.sort_by_key(|c| t(&c.at));
    report.stage_changes.sort_by_key(|c| t(&c.at));
    Ok(report)
}
