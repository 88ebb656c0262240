//! The engine proper: events in, facts to the detections, outputs queued.
//! What it reports back (flows, totals, rates) is in `queries`.

mod pending;
mod queries;

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use super::{
    Ctx, UNKNOWN, UNLISTED,
    flow_state::FlowState,
    judge::{self, Judge},
    rates::{RateWindow, Rates},
    record::{FlowRecord, ResponseTotals, record, reportable},
    view::View,
    violations::{Terms, ViolationEvent, Violations},
};
use crate::{
    contract::Contract,
    event::{Event, FlowEndReason, FlowId, FlowTotals, LocalSocket, Nanos, Packet, Plaintext},
    flow::{Flow, FlowConfig, FlowTable, Request},
    identity::workload::{FlowWorkload, WorkloadResolver},
    protocol::http::CredentialHeaders,
};

const SEC: Nanos = 1_000_000_000;
/// Socket owners whose workload is kept for sharing at once (see
/// `Engine::named`).
const NAMED_WORKLOADS: usize = 1024;

/// The standard credential headers plus those the contract names.
fn credential_headers(view: &View) -> CredentialHeaders {
    CredentialHeaders::with_extra(view.contract.credential_headers())
}

/// How the engine runs.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Count quota requests from the kernel's `RequestStarts` instead of
    /// parsed heads (live agent).
    pub requests_from_kernel: bool,
    /// Judge stage, credential age and revocations at this time instead of
    /// event time (`replay --at`).
    pub fixed_time: Option<Nanos>,
    /// A violation with no occurrence for this long resolves; `None` keeps
    /// violations open (replay).
    pub quiet_period: Option<Nanos>,
    /// Queue a [`ViolationEvent::Occurred`] for every occurrence of an open
    /// violation (metrics); off for replay.
    pub emit_occurrences: bool,
    /// What readiness rates are averaged over.
    pub rate_window: RateWindow,
    /// Queue [`Output::FlowClassified`] (the live agent counts flows by
    /// it); off for replay, which reports flows when they end and would
    /// build a record per flow only to drop it.
    pub report_classified: bool,
    pub flow: FlowConfig,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            requests_from_kernel: false,
            fixed_time: None,
            quiet_period: Some(300 * SEC),
            emit_occurrences: false,
            rate_window: RateWindow::default(),
            report_classified: true,
            flow: FlowConfig::default(),
        }
    }
}

/// What the engine hands to its caller.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// A flow was classified: protocol, endpoint and TLS version are known
    /// (once per flow; for a flow reported before that, just before its
    /// `Flow`). The live agent counts `rampwatch_flows_total` here, so a
    /// long keep-alive connection counts while it lives.
    FlowClassified(FlowRecord),
    /// A flow ended (FIN, RST, idle, evicted, end of capture).
    Flow(FlowRecord),
    Violation(ViolationEvent),
    /// The active stage changed.
    StageChanged {
        from: Option<Arc<str>>,
        to: Option<Arc<str>>,
        at: Nanos,
    },
}

/// Counters beyond the flow table's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub packets: u64,
    /// Request heads parsed.
    pub requests: u64,
    pub kernel_requests: u64,
    /// Kernel request counts for flows the engine does not know.
    pub kernel_requests_unmatched: u64,
    /// Kernel request counts for flows to no watched endpoint (in no
    /// `request_totals`).
    pub kernel_requests_unwatched: u64,
    /// Of `request_totals`, the requests the engine counted itself, not the
    /// kernel (live: HTTP/2 streams and lenient heads).
    pub engine_counted_requests: u64,
    /// TLS plaintext chunks handled.
    pub plaintext_chunks: u64,
    /// Local-socket announcements whose flow never came (dropped from the
    /// bounded wait for it).
    pub sockets_unmatched: u64,
}

/// Builds a [`Judge`] from the engine's fields (a macro so the borrows of
/// the flow table and of the judge's fields stay disjoint).
macro_rules! judge {
    ($e:ident, $view:ident, $now:expr, $count:expr) => {
        Judge {
            ctx: Ctx {
                view: $view,
                stage: $e.stage,
                judge_time: $e.opts.fixed_time.unwrap_or($e.now),
                quota_gen: $e.quota_gen,
                unlisted: &$e.unlisted,
                unknown: &$e.unknown,
            },
            violations: &mut $e.violations,
            rates: &mut $e.rates,
            responses: &mut $e.responses,
            malformed: &mut $e.malformed,
            vbuf: &mut $e.vbuf,
            terms: Terms {
                window: Default::default(),
                quiet_period: $e.opts.quiet_period,
            },
            emit_occurrences: $e.opts.emit_occurrences,
            count_requests: $count,
            now: $now,
            generation: $e.generation,
            client_workload: None,
        }
    };
}

/// The contract engine shared by `replay` and the live agent.
pub struct Engine {
    view: View,
    generation: u64,
    opts: EngineOptions,
    flows: FlowTable<FlowState>,
    violations: Violations,
    rates: Rates,
    responses: ResponseTotals,
    /// Lenient request heads by (endpoint, client) label.
    malformed: HashMap<(Arc<str>, Arc<str>), u64>,
    stage: Option<usize>,
    /// Judge times within which `stage` holds.
    stage_span: (Nanos, Nanos),
    quota_gen: u64,
    now: Nanos,
    next_expiry: Nanos,
    out: Vec<Output>,
    vbuf: Vec<ViolationEvent>,
    reqs: Vec<Request>,
    unlisted: Arc<str>,
    unknown: Arc<str>,
    stats: EngineStats,
    /// Names the workloads behind local sockets (live only).
    workloads: Option<Arc<WorkloadResolver>>,
    /// Workloads named in the current second, shared by every flow of the
    /// same socket owner: a named workload is a few hundred bytes, and on a
    /// busy node thousands of flows have the same few owners. Cleared each
    /// tick, so a flow never carries a name more than a second older than
    /// the resolver's.
    named: HashMap<(u64, Option<u32>), Arc<FlowWorkload>>,
    /// Sockets announced before their flow's first packet (the capture
    /// sends the socket first), applied when the flow is created.
    pending: pending::PendingSockets,
    /// Flows still to report at the end of a capture, last first (see
    /// [`Engine::finish_some`]).
    #[expect(
        clippy::vec_box,
        reason = "the table's boxes move here and back to its removed list, never the 760-byte flows"
    )]
    ending: Vec<Box<Flow<FlowState>>>,
}

impl Engine {
    /// An engine judging traffic against `contract`.
    pub fn new(contract: Arc<Contract>, opts: EngineOptions) -> Self {
        Self::with_view(View::new(contract), opts)
    }

    /// Replaces the contract (hot reload). Flows, open violations and rate
    /// state stay; endpoint and identity of live flows are looked up again,
    /// and a stage change under the new contract is announced.
    pub fn set_contract(&mut self, contract: Arc<Contract>) {
        self.set_view(View::new(contract));
    }

    /// The contract in force.
    pub fn contract(&self) -> &Arc<Contract> {
        &self.view.contract
    }

    /// An engine over an already compiled view: compiling one matches every
    /// cipher suite id against each data class's patterns, which the fuzz
    /// targets would otherwise pay per input.
    pub fn with_view(view: View, opts: EngineOptions) -> Self {
        let mut flows = FlowTable::new(opts.flow.clone());
        flows.set_credential_headers(credential_headers(&view));
        let rates = Rates::with_window(opts.rate_window);
        let mut e = Self {
            view,
            generation: 1,
            opts,
            flows,
            violations: Violations::default(),
            rates,
            responses: ResponseTotals::default(),
            malformed: HashMap::new(),
            stage: None,
            stage_span: (Nanos::MAX, Nanos::MIN),
            quota_gen: 1,
            now: Nanos::MIN,
            next_expiry: Nanos::MIN,
            out: Vec::new(),
            vbuf: Vec::new(),
            reqs: Vec::new(),
            unlisted: Arc::from(UNLISTED),
            unknown: Arc::from(UNKNOWN),
            stats: EngineStats::default(),
            workloads: None,
            named: HashMap::new(),
            pending: pending::PendingSockets::default(),
            ending: Vec::new(),
        };
        if let Some(t) = e.opts.fixed_time {
            e.update_stage(t, false);
        }
        e
    }

    fn set_view(&mut self, view: View) {
        self.flows.set_credential_headers(credential_headers(&view));
        self.view = view;
        let view = &self.view;
        self.violations.rewindow(|k| view.window_for(k));
        self.generation += 1;
        self.quota_gen += 1;
        self.stage_span = (Nanos::MAX, Nanos::MIN);
        let t = self.judge_time();
        if t != Nanos::MIN {
            self.update_stage(t, true);
        }
    }

    pub fn view(&self) -> &View {
        &self.view
    }

    /// Names local sockets' workloads with `resolver` (the live agent);
    /// without one a local socket is reported by its cgroup id only.
    pub fn set_workloads(&mut self, resolver: Arc<WorkloadResolver>) {
        self.workloads = Some(resolver);
    }

    /// Feeds one event.
    pub fn handle(&mut self, ev: Event) {
        match ev {
            Event::Packet(p) => self.packet(&p),
            Event::Socket(s) => self.socket(s),
            Event::Plaintext(pt) => self.plaintext(&pt),
            Event::RequestStarts { ts, flow, count } => self.kernel_requests(ts, flow, count),
            Event::FlowEnd {
                ts,
                flow,
                reason,
                totals,
            } => self.flow_end(ts, flow, reason, totals),
        }
    }

    /// Advances time without an event: expires idle flows, escalates and
    /// resolves violations, changes stage.
    pub fn tick(&mut self, now: Nanos) {
        self.named.clear();
        self.advance(now);
        self.expire();
        let terms = self.terms();
        self.violations.tick(self.now, terms, &mut self.vbuf);
        self.flush_violations();
    }

    /// Ends every flow (end of a capture) and escalates violations to the
    /// last event time.
    pub fn finish(&mut self) {
        while self.finish_some(usize::MAX) {}
    }

    /// [`Engine::finish`] at most `batch` flows at a time, in the order they
    /// started: a caller that takes the outputs ([`Engine::drain`]) between
    /// steps holds `batch` flow records at once, not one per flow still
    /// open when the capture ended. True while flows remain; the last step
    /// escalates violations.
    pub fn finish_some(&mut self, batch: usize) -> bool {
        if !self.flows.is_empty() {
            self.flows.drain();
            let mut later = std::mem::take(&mut self.flows.removed);
            later.reverse();
            later.append(&mut self.ending);
            self.ending = later;
        }
        let step = self
            .ending
            .split_off(self.ending.len().saturating_sub(batch));
        self.flows.removed.extend(step.into_iter().rev());
        self.retire_removed();
        if !self.ending.is_empty() {
            return true;
        }
        self.ending = Vec::new();
        if self.now != Nanos::MIN {
            let terms = self.terms();
            self.violations.tick(self.now, terms, &mut self.vbuf);
            self.flush_violations();
        }
        false
    }

    /// Takes the queued outputs.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Output> {
        self.out.drain(..)
    }

    fn judge_time(&self) -> Nanos {
        self.opts.fixed_time.unwrap_or(self.now)
    }

    fn terms(&self) -> Terms {
        Terms {
            window: Default::default(),
            quiet_period: self.opts.quiet_period,
        }
    }

    fn advance(&mut self, ts: Nanos) {
        if ts > self.now {
            self.now = ts;
        }
        self.rates.seen(ts);
        if self.opts.fixed_time.is_none() {
            let (lo, hi) = self.stage_span;
            if self.now < lo || self.now >= hi {
                self.update_stage(self.now, lo <= hi);
            }
        }
    }

    /// Recomputes the active stage at `t`; `announce` queues a change.
    fn update_stage(&mut self, t: Nanos, announce: bool) {
        let stage = self.view.stage_at(t);
        let lo = stage
            .and_then(|i| self.view.stages.get(i))
            .map_or(Nanos::MIN, |s| s.starts_at);
        let hi = self
            .view
            .next_stage(stage)
            .and_then(|i| self.view.stages.get(i))
            .map_or(Nanos::MAX, |s| s.starts_at);
        self.stage_span = (lo, hi);
        if stage != self.stage {
            let name = |s: Option<usize>| {
                s.and_then(|i| self.view.stages.get(i))
                    .map(|s| s.name.clone())
            };
            if announce {
                self.out.push(Output::StageChanged {
                    from: name(self.stage),
                    to: name(stage),
                    at: t,
                });
            }
            self.stage = stage;
            self.quota_gen += 1;
        }
    }

    fn expire(&mut self) {
        if self.now >= self.next_expiry {
            self.next_expiry = self.now.saturating_add(SEC);
            self.flows.expire(self.now);
            self.retire_removed();
        }
    }

    fn packet(&mut self, p: &Packet) {
        self.stats.packets += 1;
        self.advance(p.ts);
        self.expire();
        let view = &self.view;
        let (flow, _dir, ch) =
            self.flows
                .packet(p, &|a: SocketAddr| view.is_server(a), &mut self.reqs);
        if ch.new_flow {
            self.pending.adopt(&mut flow.ext.workloads, &flow.id);
        }
        if !ch.any() && flow.ext.generation == self.generation {
            return;
        }
        let mut j = judge!(self, view, p.ts, !self.opts.requests_from_kernel);
        self.stats.requests += self.reqs.len() as u64;
        j.changes(flow, ch, &mut self.reqs);
        if ch.ended.is_some() {
            // Judged now; reported when it leaves the table after lingering
            // for its last ACKs, so the record counts them.
            j.finish(flow);
            flow.settle();
        }
        classified(
            view,
            flow,
            false,
            &self.unlisted,
            &self.unknown,
            &self.opts,
            &mut self.out,
        );
        if !self.flows.removed.is_empty() {
            // Evicted to make room, or replaced by a new connection.
            self.retire_removed();
        }
        self.flush_violations();
    }

    /// Clear text of a TLS connection: its requests are judged like those
    /// of a plaintext flow (the flow stays TLS, so never `unencrypted_flow`).
    fn plaintext(&mut self, pt: &Plaintext) {
        self.stats.plaintext_chunks += 1;
        self.advance(pt.ts);
        self.expire();
        let view = &self.view;
        let (flow, ch) = self.flows.plaintext(pt, &mut self.reqs);
        if ch.new_flow {
            self.pending.adopt(&mut flow.ext.workloads, &flow.id);
        }
        if !ch.any() && flow.ext.generation == self.generation {
            return;
        }
        let mut j = judge!(self, view, pt.ts, !self.opts.requests_from_kernel);
        self.stats.requests += self.reqs.len() as u64;
        j.changes(flow, ch, &mut self.reqs);
        if !self.flows.removed.is_empty() {
            self.retire_removed();
        }
        self.flush_violations();
    }

    /// One end of a flow is a local socket: name its workload once (the
    /// resolver caches by cgroup id) and keep it on the flow.
    fn socket(&mut self, s: LocalSocket) {
        self.advance(s.ts);
        if self.named.len() >= NAMED_WORKLOADS {
            self.named.clear();
        }
        let resolver = self.workloads.as_deref();
        let w =
            Arc::clone(self.named.entry((s.cgroup_id, s.pid)).or_insert_with(|| {
                Arc::new(FlowWorkload::of_socket(resolver, s.cgroup_id, s.pid))
            }));
        let Some(flow) = self.flows.get_mut(&s.flow) else {
            if self.pending.push(s.flow, s.side, w) {
                self.stats.sockets_unmatched += 1;
            }
            return;
        };
        let view = &self.view;
        let mut j = judge!(self, view, s.ts, !self.opts.requests_from_kernel);
        j.socket(flow, s.side, w);
    }

    fn kernel_requests(&mut self, ts: Nanos, id: FlowId, count: u64) {
        self.advance(ts);
        // `count` is a delta of the kernel's u64 counter, as a ring record
        // says it: a damaged record can claim anything, so these saturate
        // rather than overflow (found by fuzzing, ring_records).
        self.stats.kernel_requests = self.stats.kernel_requests.saturating_add(count);
        let Some(flow) = self.flows.get_mut(&id) else {
            self.stats.kernel_requests_unmatched =
                self.stats.kernel_requests_unmatched.saturating_add(count);
            return;
        };
        flow.ext.kernel_requests = flow.ext.kernel_requests.saturating_add(count);
        // The kernel saw the flow busy: past its first segments most are not
        // sampled, and a keep-alive connection still serving requests must
        // not idle out of the table (and lose its verdict state) for that.
        flow.last_seen = flow.last_seen.max(ts);
        let view = &self.view;
        let mut j = judge!(self, view, ts, true);
        j.kernel_requests(flow, count);
        self.flush_violations();
    }

    fn flow_end(
        &mut self,
        ts: Nanos,
        id: FlowId,
        reason: FlowEndReason,
        totals: Option<FlowTotals>,
    ) {
        self.advance(ts);
        let view = &self.view;
        let Some((flow, ch)) = self.flows.end(&id, reason, &mut self.reqs) else {
            return;
        };
        if let Some(t) = totals {
            flow.totals = t;
        }
        let mut j = judge!(self, view, ts, !self.opts.requests_from_kernel);
        self.stats.requests += self.reqs.len() as u64;
        j.changes(flow, ch, &mut self.reqs);
        j.finish(flow);
        flow.settle();
        classified(
            view,
            flow,
            false,
            &self.unlisted,
            &self.unknown,
            &self.opts,
            &mut self.out,
        );
        self.flush_violations();
    }

    /// Reports flows the table let go (ended and lingered, idle, evicted,
    /// replaced, end of capture), finishing those that had not ended.
    fn retire_removed(&mut self) {
        let removed = std::mem::take(&mut self.flows.removed);
        for mut flow in removed {
            let view = &self.view;
            if flow.ended.is_none() {
                let ch = flow.finish(
                    FlowEndReason::Idle,
                    self.flows.credential_headers(),
                    &mut self.reqs,
                );
                let mut j = judge!(self, view, flow.last_seen, !self.opts.requests_from_kernel);
                self.stats.requests += self.reqs.len() as u64;
                j.changes(&mut flow, ch, &mut self.reqs);
                j.finish(&mut flow);
            }
            if reportable(&*flow) {
                classified(
                    view,
                    &mut flow,
                    true,
                    &self.unlisted,
                    &self.unknown,
                    &self.opts,
                    &mut self.out,
                );
                let rec = record(
                    view,
                    &flow,
                    &self.unlisted,
                    &self.unknown,
                    self.opts.requests_from_kernel,
                );
                self.out.push(Output::Flow(rec));
            }
        }
        self.flush_violations();
    }

    fn flush_violations(&mut self) {
        self.out.extend(self.vbuf.drain(..).map(Output::Violation));
    }
}

/// Queues `Output::FlowClassified` the first time `flow` is classified
/// (or, with `ended`, before it is reported at all).
fn classified(
    view: &View,
    flow: &mut Flow<FlowState>,
    ended: bool,
    unlisted: &Arc<str>,
    unknown: &Arc<str>,
    opts: &EngineOptions,
    out: &mut Vec<Output>,
) {
    if opts.report_classified && judge::newly_classified(flow, ended) {
        let rec = record(view, flow, unlisted, unknown, opts.requests_from_kernel);
        out.push(Output::FlowClassified(rec));
    }
}
