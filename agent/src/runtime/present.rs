//! Turning engine state into what operators see: metrics, API views, audit
//! records and `watch` events. Pure functions of engine outputs, so the
//! engine loop stays a loop.

use std::{
    collections::{BTreeMap, HashMap},
    sync::atomic::Ordering,
};

use super::audit_thread::AuditHealth;
use crate::{
    capture::{CaptureStats, TlsCoverage, TlsFailure, TlsRole},
    contract::{Contract, format_duration, format_rfc3339},
    event::Nanos,
    policy::{
        ClientRate, Engine, EngineStats, FlowRecord, Kind, RequestCount, ResponseCount, StageInfo,
        Violation, ViolationEvent,
    },
    sinks::{
        api::views::{
            AuditView, ClientRow, FlowRow, QuotaRow, ReadinessView, StageRow, StageView,
            TlsProcessRow, TlsView, ViolationRow, WatchEvent,
        },
        audit::{AuditOutcome, RecordKind, ViolationRecord},
        metrics::Metrics,
    },
};

const SEC: Nanos = 1_000_000_000;

pub fn violation_row(v: &Violation) -> ViolationRow {
    ViolationRow::from(v)
}

pub fn flow_row(f: &FlowRecord) -> FlowRow {
    FlowRow::from(f)
}

/// The audit log's state for `rampwatch status`.
pub fn audit_view(h: &AuditHealth) -> AuditView {
    AuditView {
        writable: h.writable.load(Ordering::Relaxed),
        problem: h.problem(),
        records_lost: h.failed.load(Ordering::Relaxed),
        last_seq: h.last_seq.load(Ordering::Relaxed),
    }
}

/// The TLS probes' coverage for `rampwatch status`.
pub fn tls_view(c: &TlsCoverage) -> TlsView {
    TlsView {
        active: c.active,
        unavailable: c.unavailable.clone(),
        processes: c
            .processes
            .iter()
            .map(|p| TlsProcessRow {
                pid: p.pid,
                comm: p.comm.clone(),
                library: p.library.display().to_string(),
                role: p.role.as_str().to_owned(),
                probes: p.probes,
                sites: p.sites.to_owned(),
            })
            .collect(),
        failures: c
            .failures
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), *v))
            .collect(),
        excluded: c.excluded,
        local_clients_skipped: c.local_clients_skipped,
        late_clients: c.late_clients,
    }
}

/// Probe state as metrics: bounded labels only (no pid, no path).
pub fn tls_metrics(metrics: &Metrics, c: &TlsCoverage) {
    metrics.tls_probes_active.set(i64::from(c.active));
    metrics
        .tls_calls_awaiting_socket
        .set(i64::try_from(c.calls_awaiting_socket).unwrap_or(i64::MAX));
    let by_role = |r: TlsRole| c.processes.iter().filter(|p| p.role == r).count();
    for role in [TlsRole::Server, TlsRole::Client] {
        metrics
            .tls_probed_processes
            .with_label_values(&[role.as_str()])
            .set(i64::try_from(by_role(role)).unwrap_or(i64::MAX));
    }
    for reason in TlsFailure::ALL {
        let total = c.failures.get(&reason).copied().unwrap_or(0);
        let counter = metrics
            .tls_probe_failures
            .with_label_values(&[reason.as_str()]);
        counter.inc_by(total.saturating_sub(counter.get()));
    }
}

pub fn client_row(c: &ClientRate, now: Nanos) -> ClientRow {
    ClientRow {
        client: c.client.to_string(),
        endpoint: c.endpoint.to_string(),
        rate: c.rate,
        quota: (c.quota > 0.0).then_some(c.quota),
        headroom: Some(c.headroom),
        next_quota: c.next_quota,
        next_stage: c.next_stage.as_ref().map(ToString::to_string),
        next_starts_in_secs: c.next_starts_at.map(|t| (t - now) / SEC),
    }
}

pub fn stage_view(contract: &Contract, info: &StageInfo, now: Nanos) -> StageView {
    StageView {
        contract: info.contract.to_string(),
        now: format_rfc3339(now),
        active: info.active.as_ref().map(ToString::to_string),
        next: info.next.as_ref().map(ToString::to_string),
        next_starts_at: info.next_starts_at.map(format_rfc3339),
        stages: contract
            .stages()
            .iter()
            .map(|s| StageRow {
                name: s.name.to_string(),
                starts_at: format_rfc3339(s.starts_at),
                credential_max_age: s
                    .credential_max_age
                    .map_or_else(|| "-".to_owned(), format_duration),
                quotas: s
                    .quotas
                    .iter()
                    .map(|q| QuotaRow {
                        client: q.client.to_string(),
                        endpoint: q.endpoint.to_string(),
                        requests_per_second: q.quota.rps,
                        burst: q.quota.burst,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Records an acknowledgement of the open violation `cmd.id` in the
/// audit log; the violation itself is unchanged (its clock keeps running).
pub fn acknowledge(
    engine: &crate::policy::Engine,
    cmd: &crate::sinks::api::AckCommand,
    at: crate::event::Nanos,
    audit: &super::audit_thread::AuditWriter,
) -> Result<crate::sinks::api::views::AckView, String> {
    let open = engine.violations();
    let Some(v) = open
        .iter()
        .find(|v| v.resolved_at.is_none() && v.id() == cmd.id)
    else {
        return Err(format!(
            "no open violation has id {}; `rampwatch violations` lists the open ones (a resolved violation needs no acknowledgement)",
            cmd.id
        ));
    };
    audit.record(RecordKind::ViolationAcknowledged(
        crate::sinks::audit::AckRecord {
            id: cmd.id.clone(),
            violation: v.key.kind.as_str().to_owned(),
            endpoint: v.key.endpoint.to_string(),
            client: v.key.client.to_string(),
            severity: v.severity.as_str().to_owned(),
            by: cmd.by.clone(),
            uid: cmd.uid,
            note: cmd.note.clone(),
        },
    ));
    tracing::info!(
        id = %cmd.id,
        kind = %v.key.kind,
        endpoint = %v.key.endpoint,
        client = %v.key.client,
        by = %cmd.by,
        uid = cmd.uid,
        "violation acknowledged"
    );
    Ok(crate::sinks::api::views::AckView {
        id: cmd.id.clone(),
        kind: v.key.kind.as_str().to_owned(),
        endpoint: v.key.endpoint.to_string(),
        client: v.key.client.to_string(),
        severity: v.severity.as_str().to_owned(),
        by: cmd.by.clone(),
        uid: cmd.uid,
        at: crate::contract::format_rfc3339(at),
        note: cmd.note.clone(),
    })
}

fn record(v: &Violation) -> ViolationRecord {
    ViolationRecord {
        violation: v.key.kind.as_str().to_owned(),
        endpoint: v.key.endpoint.to_string(),
        client: v.key.client.to_string(),
        severity: v.severity.as_str().to_owned(),
        count: v.count,
        detail: v.detail.clone(),
        outcome: v.key.kind.has_outcome().then_some(AuditOutcome {
            served: v.outcome.served,
            refused: v.outcome.refused,
            unknown: v.outcome.unknown,
        }),
        throttled: (v.key.kind == Kind::QuotaOvershoot).then_some(v.throttled),
        id: Some(v.id()),
        open_secs: v
            .resolved_at
            .and_then(|r| u64::try_from((r - v.first_seen) / 1_000_000_000).ok()),
        client_workload: v.client_workload.as_deref().cloned(),
    }
}

/// A lifecycle event's audit record and `watch` event (none for plain
/// occurrences, which only count).
/// The stage in force when the agent starts, as the run's first
/// `stage_changed` (`from: null`): the engine announces changes only, and a
/// report must know which stage a run's records belong to. `None` before
/// the first stage (its start is announced as a change).
pub fn first_stage(engine: &crate::policy::Engine) -> Option<RecordKind> {
    let info = engine.stage();
    Some(RecordKind::StageChanged {
        contract: info.contract.to_string(),
        from: None,
        to: info.active?.to_string(),
    })
}

pub fn lifecycle(ev: &ViolationEvent) -> Option<(RecordKind, WatchEvent)> {
    let (name, v, kind): (&str, &Violation, fn(ViolationRecord) -> RecordKind) = match ev {
        ViolationEvent::Opened(v) => ("opened", v, RecordKind::ViolationOpened),
        ViolationEvent::Escalated(v) => ("escalated", v, RecordKind::ViolationEscalated),
        ViolationEvent::Resolved(v) => ("resolved", v, RecordKind::ViolationResolved),
        ViolationEvent::Occurred { .. } => return None,
    };
    Some((
        kind(record(v)),
        WatchEvent {
            event: name.to_owned(),
            violation: violation_row(v),
        },
    ))
}

/// Counts one violation event in `rampwatch_violations_total`.
pub fn count_violation(metrics: &Metrics, ev: &ViolationEvent) {
    let (kind, endpoint, client, n) = match ev {
        ViolationEvent::Opened(v) => (v.key.kind, &v.key.endpoint, &v.key.client, v.count),
        // `count` is the occurrences this event adds (a burst over quota
        // can add many at once).
        ViolationEvent::Occurred { key, count, .. } => {
            (key.kind, &key.endpoint, &key.client, *count)
        }
        ViolationEvent::Escalated(_) | ViolationEvent::Resolved(_) => return,
    };
    metrics
        .violations
        .with_label_values(&[kind.as_str(), endpoint, client])
        .inc_by(n);
}

/// Where every request start the kernel counted went, as totals since
/// start: `kernel_starts + engine_counted == Σ rampwatch_requests_total +
/// Σ uncharged` once the poller has reported the kernel's per-flow counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestBalance {
    /// The kernel's baseline (`stat::REQUEST_STARTS`).
    pub kernel_starts: u64,
    /// Requests the engine counted itself (HTTP/2 streams, lenient heads).
    pub engine_counted: u64,
    /// Kernel-counted starts in no `rampwatch_requests_total` series, by reason.
    pub uncharged: [(&'static str, u64); 5],
}

impl RequestBalance {
    pub fn new(capture: Option<&CaptureStats>, engine: &EngineStats) -> Self {
        let k = capture.map(|c| c.kernel).unwrap_or_default();
        Self {
            kernel_starts: k.request_starts(),
            engine_counted: engine.engine_counted_requests,
            uncharged: [
                ("flow_table_full", k.requests_flow_table_full()),
                ("stray", k.requests_stray()),
                ("flow_unmatched", engine.kernel_requests_unmatched),
                ("not_watched", engine.kernel_requests_unwatched),
                (
                    "duplicate_view",
                    capture.map_or(0, |c| c.duplicate_view_requests),
                ),
            ],
        }
    }
}

/// Counter state the agent turns into metric increments.
#[derive(Default)]
pub struct Counters {
    requests: HashMap<(String, String), u64>,
    responses: HashMap<(String, String, &'static str), u64>,
    malformed: HashMap<(String, String), u64>,
    lost: BTreeMap<&'static str, u64>,
    balance: BTreeMap<&'static str, u64>,
}

/// Advances a Prometheus counter to `total` (counters only grow).
fn advance(last: &mut BTreeMap<&'static str, u64>, key: &'static str, total: u64) -> u64 {
    let seen = last.entry(key).or_insert(0);
    let d = total.saturating_sub(*seen);
    *seen = (*seen).max(total);
    d
}

impl Counters {
    /// Per-tick metric refresh from engine and capture state.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per engine and capture view the tick reads"
    )]
    pub fn refresh(
        &mut self,
        metrics: &Metrics,
        rates: &[ClientRate],
        requests: &[RequestCount],
        responses: &[ResponseCount],
        violations: &[Violation],
        capture: Option<&CaptureStats>,
        extra_losses: &[(&'static str, u64)],
    ) {
        // Pairs a reload removed must not keep exporting an old quota.
        metrics.quota.reset();
        for r in rates {
            metrics
                .quota
                .with_label_values(&[&*r.endpoint, &*r.client])
                .set(r.quota);
        }
        for r in requests {
            let key = (r.endpoint.to_string(), r.client.to_string());
            let last = self.requests.entry(key.clone()).or_insert(0);
            if r.total > *last {
                metrics
                    .requests
                    .with_label_values(&[&*r.endpoint, &*r.client])
                    .inc_by(r.total - *last);
                *last = r.total;
            }
            let last = self.malformed.entry(key).or_insert(0);
            if r.malformed > *last {
                // By endpoint only: which client sends them is in the
                // flows and violations.
                metrics
                    .malformed_requests
                    .with_label_values(&[&*r.endpoint])
                    .inc_by(r.malformed - *last);
                *last = r.malformed;
            }
        }
        for r in responses {
            let key = (r.endpoint.to_string(), r.client.to_string(), r.class);
            let last = self.responses.entry(key).or_insert(0);
            if r.total > *last {
                metrics
                    .responses
                    .with_label_values(&[&*r.endpoint, &*r.client, r.class])
                    .inc_by(r.total - *last);
                *last = r.total;
            }
        }
        metrics.violations_open.reset();
        for v in violations.iter().filter(|v| v.resolved_at.is_none()) {
            metrics
                .violations_open
                .with_label_values(&[
                    v.key.kind.as_str(),
                    v.severity.as_str(),
                    &v.key.endpoint,
                    &v.key.client,
                ])
                .inc();
        }
        let mut losses: Vec<(&'static str, u64)> = extra_losses.to_vec();
        if let Some(c) = capture {
            losses.extend(c.losses());
        }
        for (reason, total) in losses {
            let last = self.lost.entry(reason).or_insert(0);
            metrics
                .events_lost
                .with_label_values(&[reason])
                .inc_by(total.saturating_sub(*last));
            *last = (*last).max(total);
        }
    }

    /// Exports the request baseline and where it went.
    pub fn balance(&mut self, metrics: &Metrics, b: &RequestBalance) {
        let d = advance(&mut self.balance, "kernel_starts", b.kernel_starts);
        metrics.kernel_request_starts.inc_by(d);
        let d = advance(&mut self.balance, "engine_counted", b.engine_counted);
        metrics.engine_requests.inc_by(d);
        for (reason, total) in b.uncharged {
            let d = advance(&mut self.balance, reason, total);
            metrics
                .requests_uncharged
                .with_label_values(&[reason])
                .inc_by(d);
        }
    }

    pub fn lost(&self) -> BTreeMap<String, u64> {
        self.lost
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect()
    }
}

/// Sets `rampwatch_stage_info` and `..._next_change_timestamp_seconds`.
pub fn stage_metrics(metrics: &Metrics, info: &StageInfo) {
    metrics.stage_info.reset();
    if let Some(stage) = &info.active {
        metrics
            .stage_info
            .with_label_values(&[&*info.contract, &**stage])
            .set(1);
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "seconds since 1970 fit f64 exactly"
    )]
    let next = info.next_starts_at.map_or(0.0, |t| (t / SEC) as f64);
    metrics.stage_next_change.set(next);
}

/// Every stage's readiness and the default one (the next stage), for the
/// API; the next stage's quota per client and endpoint for Prometheus
/// (`RampStageNotReady` compares the cluster's rate with it).
pub fn readiness(
    engine: &Engine,
    rates: &[ClientRate],
    metrics: &Metrics,
) -> (Vec<ReadinessView>, Result<String, String>) {
    metrics.next_stage_quota.reset();
    for r in rates {
        if let Some(q) = r.next_quota {
            metrics
                .next_stage_quota
                .with_label_values(&[&*r.endpoint, &*r.client])
                .set(q);
        }
    }
    let views = engine
        .view()
        .stages
        .iter()
        .filter_map(|s| engine.readiness(Some(&s.name)).ok())
        .map(|r| ReadinessView::from(&r))
        .collect();
    let next = engine
        .readiness(None)
        .map(|r| r.stage.to_string())
        .map_err(|e| e.to_string());
    (views, next)
}

#[cfg(test)]
mod tests {
    use agent_common::stat;

    use super::*;
    use crate::capture::KernelCounters;

    /// The balance's parts land in their metrics, as counters that only
    /// grow by what changed since the last tick.
    #[test]
    fn request_balance_is_exported_by_reason() {
        let metrics = Metrics::new().expect("metrics");
        let mut counters = Counters::default();
        let mut sums = vec![0u64; stat::COUNT as usize];
        sums[stat::REQUEST_STARTS as usize] = 100;
        sums[stat::REQUESTS_FLOW_TABLE_FULL as usize] = 3;
        sums[stat::REQUESTS_STRAY as usize] = 1;
        let capture = CaptureStats {
            kernel: KernelCounters::from_sums(&sums),
            duplicate_view_requests: 6,
            ..CaptureStats::default()
        };
        let engine = EngineStats {
            kernel_requests_unmatched: 4,
            kernel_requests_unwatched: 2,
            engine_counted_requests: 9,
            ..EngineStats::default()
        };
        let b = RequestBalance::new(Some(&capture), &engine);
        counters.balance(&metrics, &b);
        counters.balance(&metrics, &b);
        let text = String::from_utf8(metrics.encode()).expect("utf-8");
        for line in [
            "rampwatch_kernel_request_starts_total 100",
            "rampwatch_engine_requests_total 9",
            "rampwatch_requests_uncharged_total{reason=\"flow_table_full\"} 3",
            "rampwatch_requests_uncharged_total{reason=\"stray\"} 1",
            "rampwatch_requests_uncharged_total{reason=\"flow_unmatched\"} 4",
            "rampwatch_requests_uncharged_total{reason=\"not_watched\"} 2",
            "rampwatch_requests_uncharged_total{reason=\"duplicate_view\"} 6",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }

    /// The TLS coverage's gauges follow it: up, then back down.
    #[test]
    fn tls_coverage_is_exported_as_gauges() {
        let metrics = Metrics::new().expect("metrics");
        let mut c = TlsCoverage {
            active: true,
            calls_awaiting_socket: 3,
            ..TlsCoverage::default()
        };
        tls_metrics(&metrics, &c);
        let text = String::from_utf8(metrics.encode()).expect("utf-8");
        for line in [
            "rampwatch_tls_probes_active 1",
            "rampwatch_tls_calls_awaiting_socket 3",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        c.calls_awaiting_socket = 0;
        tls_metrics(&metrics, &c);
        let text = String::from_utf8(metrics.encode()).expect("utf-8");
        assert!(
            text.contains("rampwatch_tls_calls_awaiting_socket 0"),
            "{text}"
        );
    }
}
