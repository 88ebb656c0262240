//! The agent loop's state: outputs to sinks, the per-tick views and
//! metrics, reloads.

use std::sync::{Arc, atomic::Ordering};

use super::{
    RECENT_FLOWS,
    audit_thread::AuditWriter,
    now, present,
    present::Counters,
    reload::Reload,
    snapshot::{Snapshot, Views},
    workloads,
};
use crate::{
    capture::Capture,
    contract::{Contract, format_rfc3339},
    event::Nanos,
    policy::{Engine, Output},
    sinks::{api::views::StatusView, audit::RecordKind, metrics::Metrics},
};

/// What the agent's loop keeps between events and ticks, and what it does
/// with the engine's outputs, each tick's views and a contract reload.
pub(super) struct LoopState {
    pub(super) contract: Arc<Contract>,
    /// Bumped per contract, so late DNS answers for an older one are dropped.
    pub(super) rules_generation: u64,
    pub(super) contract_sha: String,
    pub(super) reload_error: Option<String>,
    pub(super) counters: Counters,
    pub(super) recent: std::collections::VecDeque<crate::policy::FlowRecord>,
    pub(super) capture_desc: String,
    pub(super) started: Nanos,
    /// The last acknowledgement (name, time) by violation id, for the
    /// views; pruned to the violations the engine still holds.
    pub(super) acks: std::collections::HashMap<String, (String, Nanos)>,
    /// Which sockets serve endpoints named by workloads; resolver metrics.
    pub(super) workloads: workloads::WorkloadSync,
}

impl LoopState {
    /// Sends the engine's queued outputs to their sinks.
    pub(super) fn outputs(
        &mut self,
        engine: &mut Engine,
        metrics: &Metrics,
        audit: &AuditWriter,
        snapshot: &Snapshot,
    ) {
        for out in engine.drain() {
            match out {
                // Traffic the contract does not watch (a port shared with an
                // unresolvable host name, say) is neither counted nor listed.
                Output::FlowClassified(f) | Output::Flow(f) if !f.watched => {}
                // Counted when classified, not when the flow leaves the
                // table: a keep-alive connection counts while it lives.
                Output::FlowClassified(f) => {
                    metrics
                        .flows
                        .with_label_values(&[
                            &*f.endpoint,
                            f.protocol.as_str(),
                            f.tls_version.map_or("none", |v| v.as_str()),
                        ])
                        .inc();
                }
                Output::Flow(f) => {
                    // Only at its end is it known whether a TLS flow's clear
                    // text was ever seen.
                    if f.protocol == crate::protocol::Protocol::Tls && !f.plaintext {
                        metrics
                            .tls_flows_without_plaintext
                            .with_label_values(&[&*f.endpoint])
                            .inc();
                    }
                    if self.recent.len() == RECENT_FLOWS {
                        self.recent.pop_front();
                    }
                    self.recent.push_back(f);
                }
                Output::Violation(ev) => {
                    present::count_violation(metrics, &ev);
                    if let Some((record, watch)) = present::lifecycle(&ev) {
                        tracing::info!(
                            event = %watch.event,
                            kind = %watch.violation.kind,
                            endpoint = %watch.violation.endpoint,
                            client = %watch.violation.client,
                            severity = %watch.violation.severity,
                            detail = %watch.violation.detail,
                            "violation"
                        );
                        audit.record(record);
                        snapshot.announce(watch);
                    }
                }
                Output::StageChanged { from, to, at } => {
                    tracing::info!(from = ?from, to = ?to, at = %format_rfc3339(at), "stage changed");
                    audit.record(RecordKind::StageChanged {
                        contract: self.contract.name().to_owned(),
                        from: from.map(|s| s.to_string()),
                        to: to.map_or_else(|| "none".to_owned(), |s| s.to_string()),
                    });
                }
            }
        }
    }

    /// Refreshes metrics and the API's views (once per tick).
    pub(super) fn publish(
        &mut self,
        engine: &Engine,
        capture: &Capture,
        metrics: &Metrics,
        audit: &AuditWriter,
        snapshot: &Snapshot,
    ) {
        let now = now();
        let rates = engine.client_rates(now);
        let violations = engine.violations();
        let capture_stats = capture
            .stats()
            .map_err(|e| tracing::warn!(error = %e, "reading the kernel counters failed"))
            .ok();
        let audit_failed = audit.failed();
        let flow = engine.flow_stats();
        let stats = engine.stats();
        self.counters.refresh(
            metrics,
            &rates,
            &engine.request_totals(),
            &engine.response_totals(),
            &violations,
            capture_stats.as_ref(),
            &[
                ("audit_write_failed", audit_failed),
                // The engine's table was full: the flow's verdicts are lost.
                ("engine_flow_evicted", flow.evicted),
                // Bytes never seen: a hole in a handshake or request head.
                ("reassembly_gap", flow.gaps),
                // Segments parsed unbuffered because of the memory budget.
                ("reassembly_over_budget", flow.over_budget),
                // Kernel request counts for a flow the engine had no record of.
                ("kernel_requests_unmatched", stats.kernel_requests_unmatched),
            ],
        );
        self.counters.balance(
            metrics,
            &present::RequestBalance::new(capture_stats.as_ref(), &stats),
        );
        self.workloads.publish(metrics, capture_stats.as_ref());
        let info = engine.stage();
        present::stage_metrics(metrics, &info);
        let tls = capture.tls_coverage();
        present::tls_metrics(metrics, &tls);
        metrics
            .audit_writable
            .set(i64::from(audit.health.writable.load(Ordering::Relaxed)));

        // A closed flow lingers in the engine before its record is emitted:
        // only the open ones are active.
        let active = engine.open_flows();
        let open = violations
            .iter()
            .filter(|v| v.resolved_at.is_none())
            .count();
        let (readiness, readiness_next) = present::readiness(engine, &rates, metrics);
        snapshot.publish(Views {
            status: StatusView {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                contract: self.contract.name().to_owned(),
                contract_sha256: self.contract_sha.clone(),
                contract_reload_ok: self.reload_error.is_none(),
                last_reload_error: self.reload_error.clone(),
                stage: info.active.as_ref().map(ToString::to_string),
                next_stage: info.next.as_ref().map(ToString::to_string),
                next_change: info.next_starts_at.map(format_rfc3339),
                started_at: format_rfc3339(self.started),
                capture: self.capture_desc.clone(),
                flows_active: u64::try_from(active).unwrap_or(u64::MAX),
                violations_open: u64::try_from(open).unwrap_or(u64::MAX),
                events_lost: self.counters.lost(),
                tls: present::tls_view(&tls),
                audit: present::audit_view(&audit.health),
            },
            stage: present::stage_view(&self.contract, &info, now),
            clients: rates.iter().map(|r| present::client_row(r, now)).collect(),
            violations: violations
                .iter()
                .map(|v| {
                    let mut row = present::violation_row(v);
                    if let Some((by, at)) = self.acks.get(&row.id) {
                        row.acknowledged_by = Some(by.clone());
                        row.acknowledged_at = Some(crate::contract::format_rfc3339(*at));
                    }
                    (v.last_seen / 1_000_000_000, row)
                })
                .collect(),
            readiness,
            readiness_next,
        });
        let held: std::collections::HashSet<String> = views_ids(&violations);
        self.acks.retain(|id, _| held.contains(id));
    }

    /// `rampwatch flows`: the engine's flows, then recently ended ones, each
    /// connection once (a closed flow lingers in the engine before its
    /// record is emitted). Built when asked: as long as the flow table.
    pub(super) fn flow_rows(&self, engine: &Engine) -> Vec<crate::sinks::api::views::FlowRow> {
        let live = engine.flows();
        let mut seen = std::collections::HashSet::with_capacity(live.len());
        live.iter()
            .chain(self.recent.iter().rev())
            .filter(|f| seen.insert((f.id, f.first_seen)))
            .map(present::flow_row)
            .collect()
    }

    /// Applies a reload; true when a new contract became active (its
    /// kernel rules are then computed off this task).
    pub(super) fn reload(
        &mut self,
        msg: Reload<Contract>,
        engine: &mut Engine,
        metrics: &Metrics,
        audit: &AuditWriter,
    ) -> bool {
        match msg {
            Reload::Loaded { contract, sha256 } => {
                let contract = Arc::new(contract);
                engine.set_contract(Arc::clone(&contract));
                self.rules_generation += 1;
                tracing::info!(contract = contract.name(), sha256 = %sha256, "contract reloaded");
                audit.record(RecordKind::ContractLoaded {
                    contract: contract.name().to_owned(),
                    sha256: sha256.clone(),
                });
                metrics.reload_success.set(1);
                self.contract = contract;
                self.contract_sha = sha256;
                self.reload_error = None;
                true
            }
            Reload::Rejected { errors, sha256 } => {
                for line in errors.lines() {
                    tracing::error!("contract reload rejected: {line}");
                }
                tracing::error!(
                    "the last good contract stays active; fix the file and it is picked up again"
                );
                audit.record(RecordKind::ContractReloadRejected {
                    sha256,
                    errors: errors.lines().map(str::to_owned).collect(),
                });
                metrics.reload_success.set(0);
                self.reload_error = Some(errors.lines().next().unwrap_or_default().to_owned());
                false
            }
        }
    }
}

/// Ids of the violations the engine holds (open and recently resolved).
fn views_ids(violations: &[crate::policy::Violation]) -> std::collections::HashSet<String> {
    violations
        .iter()
        .map(crate::policy::Violation::id)
        .collect()
}
