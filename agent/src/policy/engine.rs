//! The engine proper: events in, facts to the detections, outputs queued.

use std::{net::SocketAddr, sync::Arc};

use super::{
    Ctx, UNKNOWN, UNLISTED, quota_overshoot,
    rates::Rates,
    record::{ClientRate, FlowRecord, StageInfo},
    revoked_client, stale_credential, unencrypted_flow, unknown_client, unlisted_endpoint,
    view::{EndpointMatch, Fp, Identity, Via, View},
    violations::{Finding, Terms, Violation, ViolationEvent, Violations},
    weak_tls,
};
use crate::{
    contract::Contract,
    event::{Event, FlowEndReason, FlowId, FlowTotals, Nanos, Packet},
    flow::{
        Changes, Flow, FlowConfig, FlowStats, FlowTable, Protocol, Request, TlsVersion,
        facts::is_plaintext,
    },
};

const SEC: Nanos = 1_000_000_000;

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
    pub flow: FlowConfig,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            requests_from_kernel: false,
            fixed_time: None,
            quiet_period: Some(300 * SEC),
            emit_occurrences: false,
            flow: FlowConfig::default(),
        }
    }
}

/// What the engine hands to its caller.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
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
}

/// Per-flow verdict state, kept in the flow table.
#[derive(Debug, Default)]
pub struct FlowState {
    /// Contract generation `matched` and `identity` belong to.
    generation: u64,
    matched: Option<EndpointMatch>,
    identity: Option<Identity>,
    /// Once-per-flow judgements already made.
    flags: u8,
    kernel_requests: u64,
}

const JUDGED_PLAINTEXT: u8 = 1;
const SETTLED_TLS: u8 = 2;

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
            vbuf: &mut $e.vbuf,
            terms: Terms {
                warn_after: $view.warn_after,
                breach_after: $view.breach_after,
                quiet_period: $e.opts.quiet_period,
            },
            emit_occurrences: $e.opts.emit_occurrences,
            count_requests: $count,
            now: $now,
            generation: $e.generation,
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

    fn with_view(view: View, opts: EngineOptions) -> Self {
        let flows = FlowTable::new(opts.flow.clone());
        let mut e = Self {
            view,
            generation: 1,
            opts,
            flows,
            violations: Violations::default(),
            rates: Rates::default(),
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
        };
        if let Some(t) = e.opts.fixed_time {
            e.update_stage(t, false);
        }
        e
    }

    fn set_view(&mut self, view: View) {
        self.view = view;
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

    /// Feeds one event.
    pub fn handle(&mut self, ev: Event) {
        match ev {
            Event::Packet(p) => self.packet(&p),
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
        self.advance(now);
        self.expire();
        let terms = self.terms();
        self.violations.tick(self.now, terms, &mut self.vbuf);
        self.flush_violations();
    }

    /// Ends every flow (end of a capture) and escalates violations to the
    /// last event time.
    pub fn finish(&mut self) {
        self.flows.drain();
        self.retire_removed();
        if self.now != Nanos::MIN {
            let terms = self.terms();
            self.violations.tick(self.now, terms, &mut self.vbuf);
            self.flush_violations();
        }
    }

    /// Takes the queued outputs.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Output> {
        self.out.drain(..)
    }

    /// Latest event time seen.
    pub fn now(&self) -> Nanos {
        self.now
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    pub fn flow_stats(&self) -> FlowStats {
        self.flows.stats
    }

    /// Live flows.
    pub fn flows(&self) -> Vec<FlowRecord> {
        self.flows
            .iter()
            .map(|f| {
                record(
                    &self.view,
                    f,
                    &self.unlisted,
                    &self.unknown,
                    self.opts.requests_from_kernel,
                )
            })
            .collect()
    }

    /// Open violations, oldest first, then recently resolved ones.
    pub fn violations(&self) -> Vec<Violation> {
        let mut v = self.violations.open();
        v.extend(self.violations.resolved().cloned());
        v
    }

    /// The stage timeline at the current judge time.
    pub fn stage(&self) -> StageInfo {
        let next = self
            .view
            .next_stage(self.stage)
            .and_then(|i| self.view.stages.get(i));
        let active = self.stage.and_then(|i| self.view.stages.get(i));
        StageInfo {
            contract: self.view.contract_name.clone(),
            active: active.map(|s| s.name.clone()),
            active_since: active.map(|s| s.starts_at),
            next: next.map(|s| s.name.clone()),
            next_starts_at: next.map(|s| s.starts_at),
        }
    }

    /// Per client × endpoint: rate now, quota, headroom, next stage's quota.
    /// Includes every pair with a quota in the active or next stage.
    pub fn client_rates(&self, now: Nanos) -> Vec<ClientRate> {
        let v = &self.view;
        let next = v.next_stage(self.stage);
        let mut pairs: Vec<(usize, usize)> = [self.stage, next]
            .iter()
            .flatten()
            .filter_map(|s| v.stages.get(*s))
            .flat_map(|s| s.quotas.keys().copied())
            .collect();
        for (c, e) in self.rates.iter().map(|(k, _)| k) {
            let ci = v.clients.iter().position(|n| n == c);
            let ei = v.endpoints.iter().position(|x| &x.name == e);
            if let (Some(ci), Some(ei)) = (ci, ei) {
                pairs.push((ci, ei));
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        let lookup: std::collections::HashMap<_, _> = self.rates.iter().collect();
        pairs
            .into_iter()
            .filter_map(|(c, e)| {
                let client = v.clients.get(c)?.clone();
                let endpoint = v.endpoints.get(e)?.name.clone();
                let q = v.quota(self.stage, c, e);
                let b = lookup.get(&(client.clone(), endpoint.clone()));
                let rate = b.map_or(0.0, |b| b.rate(now));
                let next_stage = next.and_then(|n| v.stages.get(n));
                Some(ClientRate {
                    rate,
                    quota: q.requests_per_second,
                    burst: q.burst,
                    headroom: q.requests_per_second - rate,
                    total: b.map_or(0, |b| b.total),
                    next_quota: next.map(|n| v.quota(Some(n), c, e).requests_per_second),
                    next_stage: next_stage.map(|s| s.name.clone()),
                    next_starts_at: next_stage.map(|s| s.starts_at),
                    client,
                    endpoint,
                })
            })
            .collect()
    }

    fn judge_time(&self) -> Nanos {
        self.opts.fixed_time.unwrap_or(self.now)
    }

    fn terms(&self) -> Terms {
        Terms {
            warn_after: self.view.warn_after,
            breach_after: self.view.breach_after,
            quiet_period: self.opts.quiet_period,
        }
    }

    fn advance(&mut self, ts: Nanos) {
        if ts > self.now {
            self.now = ts;
        }
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
        if !ch.any() && flow.ext.generation == self.generation {
            return;
        }
        let mut j = judge!(self, view, p.ts, !self.opts.requests_from_kernel);
        self.stats.requests += self.reqs.len() as u64;
        j.changes(flow, ch, &mut self.reqs);
        if ch.ended.is_some() {
            j.finish(flow);
            let rec = record(
                view,
                flow,
                &self.unlisted,
                &self.unknown,
                self.opts.requests_from_kernel,
            );
            if reportable(flow) {
                self.out.push(Output::Flow(rec));
            }
        }
        if !self.flows.removed.is_empty() {
            // Evicted to make room.
            self.retire_removed();
        }
        self.flush_violations();
    }

    fn kernel_requests(&mut self, ts: Nanos, id: FlowId, count: u64) {
        self.advance(ts);
        self.stats.kernel_requests += count;
        let Some(flow) = self.flows.get_mut(&id) else {
            self.stats.kernel_requests_unmatched += count;
            return;
        };
        flow.ext.kernel_requests += count;
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
        let rec = record(
            view,
            flow,
            &self.unlisted,
            &self.unknown,
            self.opts.requests_from_kernel,
        );
        if reportable(flow) {
            self.out.push(Output::Flow(rec));
        }
        self.flush_violations();
    }

    /// Finishes flows the table let go (idle, evicted, end of capture).
    fn retire_removed(&mut self) {
        let removed = std::mem::take(&mut self.flows.removed);
        for mut flow in removed {
            let was_ended = flow.ended.is_some();
            if !was_ended {
                let view = &self.view;
                let ch = flow.finish(FlowEndReason::Idle, &mut self.reqs);
                let mut j = judge!(self, view, flow.last_seen, !self.opts.requests_from_kernel);
                self.stats.requests += self.reqs.len() as u64;
                j.changes(&mut flow, ch, &mut self.reqs);
                j.finish(&mut flow);
                if reportable(&flow) {
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
        }
        self.flush_violations();
    }

    fn flush_violations(&mut self) {
        self.out.extend(self.vbuf.drain(..).map(Output::Violation));
    }
}

/// Flows worth a record: some payload, or a completed handshake.
fn reportable<T>(flow: &Flow<T>) -> bool {
    flow.totals.payload_segments != [0, 0] || flow.protocol != Protocol::Unknown
}

fn record(
    view: &View,
    flow: &Flow<FlowState>,
    unlisted: &Arc<str>,
    unknown: &Arc<str>,
    kernel: bool,
) -> FlowRecord {
    let st = &flow.ext;
    let m = st.matched.unwrap_or(EndpointMatch::Unwatched);
    let id = st.identity;
    FlowRecord {
        id: flow.id,
        first_seen: flow.first_seen,
        last_seen: flow.last_seen,
        protocol: flow.protocol,
        tls_version: if flow.protocol == Protocol::Tls {
            flow.tls.version()
        } else {
            None
        },
        cipher: flow.tls.cipher().map(|c| {
            c.name()
                .map_or_else(|| format!("0x{:04x}", c.0), str::to_owned)
        }),
        sni: flow.tls.sni().map(str::to_owned),
        alpn: flow.tls.alpn().map(str::to_owned),
        endpoint: match m {
            EndpointMatch::Endpoint(e) => view.endpoint_name(Some(e)).unwrap_or(unlisted).clone(),
            _ => unlisted.clone(),
        },
        client: view
            .client_name(id.and_then(|i| i.client))
            .unwrap_or(unknown)
            .clone(),
        identified_by: id.map_or(Via::Unknown, |i| i.via),
        watched: m.watched(),
        requests: if kernel {
            st.kernel_requests
        } else {
            flow.requests
        },
        packets: flow.totals.packets,
        bytes: flow.totals.bytes,
        gaps: flow.gaps(),
        end: flow.ended,
    }
}

/// The detections' view of one event, with where findings go.
struct Judge<'a> {
    ctx: Ctx<'a>,
    violations: &'a mut Violations,
    rates: &'a mut Rates,
    vbuf: &'a mut Vec<ViolationEvent>,
    terms: Terms,
    emit_occurrences: bool,
    count_requests: bool,
    now: Nanos,
    generation: u64,
}

impl Judge<'_> {
    fn report(&mut self, f: Option<Finding>) {
        if let Some(f) = f {
            let stage = self.ctx.stage_view().map(|s| &s.name);
            self.violations.record(
                f,
                self.now,
                stage,
                self.terms,
                self.emit_occurrences,
                self.vbuf,
            );
        }
    }

    fn changes(&mut self, flow: &mut Flow<FlowState>, ch: Changes, reqs: &mut Vec<Request>) {
        if flow.ext.generation != self.generation {
            // New flow, or the contract was reloaded: look it up again.
            flow.ext.generation = self.generation;
            flow.ext.matched = None;
            flow.ext.identity = None;
        }
        let tls13 =
            flow.tls.version() == Some(TlsVersion::Tls13) && flow.tls.server_hello.is_some();
        if flow.protocol == Protocol::Tls
            && flow.ext.flags & SETTLED_TLS == 0
            && (ch.client_cert || ch.client_finished || (ch.server_hello && tls13))
        {
            self.settle_tls(flow);
        }
        if ch.protocol
            && matches!(flow.protocol, Protocol::Other | Protocol::H2c)
            && flow.requests == 0
            && reqs.is_empty()
        {
            self.plaintext_flow(flow);
        }
        for req in reqs.drain(..) {
            self.request(flow, &req);
        }
    }

    fn matched(&self, flow: &mut Flow<FlowState>) -> EndpointMatch {
        *flow.ext.matched.get_or_insert_with(|| {
            self.ctx
                .view
                .match_endpoint(flow.id.server, flow.tls.sni(), None)
        })
    }

    /// Identity where no request is visible: client certificate → source.
    fn flow_identity(&self, flow: &mut Flow<FlowState>) -> Identity {
        *flow.ext.identity.get_or_insert_with(|| {
            self.ctx
                .view
                .identify(&[], flow.tls.client_cert, flow.id.client.ip())
        })
    }

    /// A TLS flow once the client's handshake flight is known: weak TLS,
    /// revocation by certificate or client, unlisted endpoint.
    fn settle_tls(&mut self, flow: &mut Flow<FlowState>) {
        flow.ext.flags |= SETTLED_TLS;
        if flow.tls.client_cert.is_some()
            && flow.ext.identity.is_some_and(|i| i.via != Via::Certificate)
        {
            flow.ext.identity = None;
        }
        let m = self.matched(flow);
        let id = self.flow_identity(flow);
        if !m.watched() {
            return;
        }
        let ctx = &self.ctx;
        let findings = [
            weak_tls::check(ctx, &flow.tls, m, &id),
            unlisted_endpoint::check(ctx, m, flow.id.server, None, &id),
            revoked_client::check(ctx, m.endpoint(), &id),
            unknown_client::check(ctx, m, &id, false),
        ];
        for f in findings {
            self.report(f);
        }
    }

    /// A plaintext flow that is not HTTP/1.x (h2c preface, other).
    fn plaintext_flow(&mut self, flow: &mut Flow<FlowState>) {
        if flow.ext.flags & JUDGED_PLAINTEXT != 0 {
            return;
        }
        flow.ext.flags |= JUDGED_PLAINTEXT;
        let m = self.matched(flow);
        let id = self.flow_identity(flow);
        if !m.watched() {
            return;
        }
        let ctx = &self.ctx;
        let findings = [
            unencrypted_flow::check(ctx, flow.protocol, m, &id),
            unlisted_endpoint::check(ctx, m, flow.id.server, None, &id),
            revoked_client::check(ctx, m.endpoint(), &id),
        ];
        for f in findings {
            self.report(f);
        }
    }

    fn request(&mut self, flow: &mut Flow<FlowState>, req: &Request) {
        let view = self.ctx.view;
        let name = req.host.as_deref().or_else(|| flow.tls.sni());
        let m = view.match_endpoint(flow.id.server, name, Some(&req.path));
        let mut fps: [Fp; 4] = [[0; 32]; 4];
        let mut n = 0;
        for (slot, c) in fps.iter_mut().zip(&req.credentials) {
            *slot = c.value_sha256;
            n += 1;
        }
        let id = view.identify(
            fps.get(..n).unwrap_or_default(),
            flow.tls.client_cert,
            flow.id.client.ip(),
        );
        if flow.ext.matched.is_none_or(|old| !old.watched()) {
            flow.ext.matched = Some(m);
        }
        if flow
            .ext
            .identity
            .is_none_or(|old| old.client.is_none() && id.client.is_some())
        {
            flow.ext.identity = Some(id);
        }
        if !m.watched() {
            return;
        }
        if flow.ext.flags & JUDGED_PLAINTEXT == 0 && is_plaintext(flow.protocol) {
            flow.ext.flags |= JUDGED_PLAINTEXT;
            let f = unencrypted_flow::check(&self.ctx, flow.protocol, m, &id);
            self.report(f);
        }
        let ctx = &self.ctx;
        let findings = [
            unlisted_endpoint::check(ctx, m, flow.id.server, Some(&req.path), &id),
            revoked_client::check(ctx, m.endpoint(), &id),
            stale_credential::check(ctx, m.endpoint(), &id),
            unknown_client::check(ctx, m, &id, true),
        ];
        for f in findings {
            self.report(f);
        }
        if self.count_requests
            && let (Some(c), EndpointMatch::Endpoint(e)) = (id.client, m)
        {
            let f = quota_overshoot::check(&self.ctx, self.rates, c, e, 1, self.now);
            self.report(f);
        }
    }

    /// Kernel-counted requests on a flow: charged to the flow's identity
    /// (from its requests, else its certificate or source).
    fn kernel_requests(&mut self, flow: &mut Flow<FlowState>, count: u64) {
        if flow.ext.generation != self.generation {
            flow.ext.generation = self.generation;
            flow.ext.matched = None;
            flow.ext.identity = None;
        }
        let m = self.matched(flow);
        let id = self.flow_identity(flow);
        if let (Some(c), EndpointMatch::Endpoint(e)) = (id.client, m) {
            let f = quota_overshoot::check(&self.ctx, self.rates, c, e, count, self.now);
            self.report(f);
        }
    }

    /// Judgements due when a flow ends.
    fn finish(&mut self, flow: &mut Flow<FlowState>) {
        if flow.protocol == Protocol::Tls && flow.ext.flags & SETTLED_TLS == 0 {
            self.settle_tls(flow);
        }
    }
}
