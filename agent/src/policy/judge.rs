//! The detections' side of the engine: what each flow fact or request
//! means for the seven detections, and where their findings go.

use std::{collections::HashMap, sync::Arc};

use super::{
    Ctx,
    flow_state::{Awaiting, FlowState},
    quota_overshoot,
    rates::Rates,
    record::ResponseTotals,
    revoked_client, stale_credential, unencrypted_flow, unknown_client, unlisted_endpoint,
    view::{EndpointRef, Identity, Presented, Via},
    violations::{Answered, Finding, Kind, Terms, ViolationEvent, ViolationKey, Violations},
    weak_tls,
};
use crate::{
    event::{Nanos, Side},
    flow::{Changes, Flow, Protocol, Request, TlsVersion, facts::is_plaintext},
    identity::workload::FlowWorkload,
    protocol::http_response::status_class,
};

const JUDGED_PLAINTEXT: u8 = 1;
const SETTLED_TLS: u8 = 2;
/// The flow was reported as classified (`Output::FlowClassified`).
const CLASSIFIED: u8 = 4;

/// True once per flow, when what `rampwatch_flows_total` labels it by is
/// settled: the protocol is known and, for TLS, the handshake judged (the
/// version is known); for HTTP, the first request matched an endpoint; for
/// other plaintext, it was judged. `ended` forces it for a flow that never
/// got that far but is reported.
pub(super) fn newly_classified(flow: &mut Flow<FlowState>, ended: bool) -> bool {
    if flow.ext.flags & CLASSIFIED != 0 {
        return false;
    }
    let settled = match flow.protocol {
        Protocol::Unknown => false,
        Protocol::Tls => flow.ext.flags & SETTLED_TLS != 0,
        Protocol::Http => flow.ext.matched.is_some(),
        Protocol::H2c | Protocol::Other => {
            flow.ext.flags & JUDGED_PLAINTEXT != 0 || flow.ext.matched.is_some()
        }
    };
    if settled || ended {
        flow.ext.flags |= CLASSIFIED;
    }
    settled || ended
}

/// The bounded (endpoint, client) labels of a watched request.
fn labels<'c>(
    ctx: &Ctx<'c>,
    m: EndpointRef,
    id: &Identity,
) -> Option<(&'c Arc<str>, &'c Arc<str>)> {
    if !m.watched() {
        return None;
    }
    let view = ctx.view;
    let endpoint = match m {
        EndpointRef::Endpoint(e) => view.endpoint_name(Some(e)),
        _ => None,
    }
    .unwrap_or(ctx.unlisted);
    let client = view.client_name(id.client).unwrap_or(ctx.unknown);
    Some((endpoint, client))
}

/// The detections' view of one event, with where findings go.
pub(super) struct Judge<'a> {
    pub(super) ctx: Ctx<'a>,
    pub(super) violations: &'a mut Violations,
    pub(super) rates: &'a mut Rates,
    pub(super) responses: &'a mut ResponseTotals,
    /// Lenient (malformed) request heads by (endpoint, client) label.
    pub(super) malformed: &'a mut HashMap<(Arc<str>, Arc<str>), u64>,
    pub(super) vbuf: &'a mut Vec<ViolationEvent>,
    pub(super) terms: Terms,
    pub(super) emit_occurrences: bool,
    pub(super) count_requests: bool,
    pub(super) now: Nanos,
    pub(super) generation: u64,
    /// The client workload of the flow being judged: findings carry it.
    pub(super) client_workload: Option<Arc<FlowWorkload>>,
}

impl Judge<'_> {
    /// Counts watched requests under bounded labels: the endpoint's name or
    /// `unlisted` (a path outside `paths` included), the client's name or
    /// `unknown`. False when the flow is not watched (nothing counted).
    fn count(&mut self, m: EndpointRef, id: &Identity, n: u64) -> bool {
        let Some((endpoint, client)) = self.labels(m, id) else {
            return false;
        };
        self.rates.count(&endpoint, &client, n);
        true
    }

    /// The bounded (endpoint, client) labels of a watched request.
    fn labels(&self, m: EndpointRef, id: &Identity) -> Option<(Arc<str>, Arc<str>)> {
        labels(&self.ctx, m, id).map(|(e, c)| (Arc::clone(e), Arc::clone(c)))
    }

    /// The quota violation key of an identified client on an endpoint.
    fn quota_key(&self, m: EndpointRef, id: &Identity) -> Option<ViolationKey> {
        let (Some(c), EndpointRef::Endpoint(e)) = (id.client, m) else {
            return None;
        };
        let view = self.ctx.view;
        Some(ViolationKey {
            kind: Kind::QuotaOvershoot,
            endpoint: Arc::clone(view.endpoint_name(Some(e))?),
            client: Arc::clone(view.client_name(Some(c))?),
        })
    }

    fn report(&mut self, f: Option<Finding>) {
        if let Some(mut f) = f {
            let stage = self.ctx.stage_view().map(|s| &s.name);
            f.client_workload.clone_from(&self.client_workload);
            let terms = Terms {
                window: self.ctx.view.window_for(&f.key),
                ..self.terms
            };
            self.violations
                .record(f, self.now, stage, terms, self.emit_occurrences, self.vbuf);
        }
    }

    pub(super) fn changes(
        &mut self,
        flow: &mut Flow<FlowState>,
        ch: Changes,
        reqs: &mut Vec<Request>,
    ) {
        self.refresh(flow);
        self.client_workload = flow.ext.workloads[Side::Client.index()].clone();
        let tls13 =
            flow.tls.version() == Some(TlsVersion::Tls13) && flow.tls.server_hello.is_some();
        if flow.protocol == Protocol::Tls
            && flow.ext.flags & SETTLED_TLS == 0
            && (ch.client_cert || ch.client_finished || (ch.server_hello && tls13))
        {
            self.settle_tls(flow);
        }
        // Plaintext that is not HTTP/1 is judged when it is classified,
        // unless its requests will show: h2c with its decoder is judged at
        // its first request (identity known), or when it ends without one.
        if ch.protocol
            && (flow.protocol == Protocol::Other
                || (flow.protocol == Protocol::H2c && flow.h2.is_none()))
            && flow.requests == 0
            && reqs.is_empty()
        {
            self.plaintext_flow(flow);
        }
        for req in reqs.drain(..) {
            self.request(flow, &req);
        }
        self.answers(flow);
    }

    /// What the API answered: `rampwatch_responses_total`, the outcome of
    /// the violations each request added to, 429s against quota.
    fn answers(&mut self, flow: &mut Flow<FlowState>) {
        // Taken, not drained: the buffer goes with it, so a flow between
        // requests holds none.
        for a in std::mem::take(&mut flow.responses.answers) {
            let st = &mut flow.ext;
            let Some(w) = st.answered(a.request) else {
                // Not watched.
                continue;
            };
            *self
                .responses
                .entry((w.endpoint, w.client, status_class(a.status)))
                .or_insert(0) += 1;
            let answered = Answered::of(a.status);
            for k in &w.keys {
                self.violations.answer(k, answered, self.vbuf);
            }
            if a.status == Some(429)
                && let Some(q) = &w.quota
                && !self.violations.throttled(q, 1)
                && w.deferred
            {
                st.unsettled_throttled += 1;
            }
        }
    }

    /// Sets up to `cap` of the 429s that waited for the kernel's count
    /// against the quota violation if it is open now; either way they are
    /// settled.
    fn settle_throttled(
        &mut self,
        flow: &mut Flow<FlowState>,
        m: EndpointRef,
        id: &Identity,
        cap: u64,
    ) {
        let n = std::mem::take(&mut flow.ext.unsettled_throttled).min(cap);
        if n > 0
            && let Some(q) = self.quota_key(m, id)
        {
            self.violations.throttled(&q, n);
        }
    }

    /// After a contract reload, looks up the flow's endpoint and identity
    /// again under the new contract (indexes of the old one are stale).
    fn refresh(&self, flow: &mut Flow<FlowState>) {
        let st = &mut flow.ext;
        if st.generation == self.generation {
            return;
        }
        let known_before = st.generation != 0;
        st.generation = self.generation;
        if !known_before {
            return;
        }
        let view = self.ctx.view;
        if st.matched.is_some() {
            let name = st.host.as_deref().or_else(|| flow.tls.sni());
            st.matched = Some(view.match_endpoint(
                flow.id.server,
                st.workloads[Side::Server.index()].as_deref(),
                name,
                None,
            ));
        }
        if let Some(old) = st.identity() {
            let presented = old.credential.map(|fingerprint| Presented {
                fingerprint,
                token: old.token,
            });
            st.set_identity(Some(view.directory.identify_presented(
                presented.as_slice(),
                flow.tls.client_cert,
                st.workloads[Side::Client.index()].as_deref(),
                flow.id.client.ip(),
            )));
        }
    }

    fn matched(&self, flow: &mut Flow<FlowState>) -> EndpointRef {
        *flow.ext.matched.get_or_insert_with(|| {
            self.ctx.view.match_endpoint(
                flow.id.server,
                flow.ext.workloads[Side::Server.index()].as_deref(),
                flow.tls.sni(),
                None,
            )
        })
    }

    /// Identity where no request is visible: client certificate → source.
    fn flow_identity(&self, flow: &mut Flow<FlowState>) -> Identity {
        let st = &mut flow.ext;
        if let Some(id) = st.identity() {
            return id;
        }
        let id = self.ctx.view.directory.identify(
            &[],
            flow.tls.client_cert,
            st.workloads[Side::Client.index()].as_deref(),
            flow.id.client.ip(),
        );
        st.set_identity(Some(id));
        id
    }

    /// A TLS flow once the client's handshake flight is known: weak TLS,
    /// revocation by certificate or client, unlisted endpoint.
    fn settle_tls(&mut self, flow: &mut Flow<FlowState>) {
        flow.ext.flags |= SETTLED_TLS;
        if flow.tls.client_cert.is_some()
            && flow
                .ext
                .identity_via()
                .is_some_and(|via| via != Via::Certificate)
        {
            flow.ext.set_identity(None);
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
        let m = view.match_endpoint(
            flow.id.server,
            flow.ext.workloads[Side::Server.index()].as_deref(),
            name,
            Some(&req.path),
        );
        let mut presented = [Presented::opaque([0; 32]); 4];
        let mut n = 0;
        for (slot, c) in presented.iter_mut().zip(&req.credentials) {
            *slot = Presented {
                fingerprint: *c.fingerprint.as_bytes(),
                token: c.token,
            };
            n += 1;
        }
        let id = view.directory.identify_presented(
            presented.get(..n).unwrap_or_default(),
            flow.tls.client_cert,
            flow.ext.client_workload(),
            flow.id.client.ip(),
        );
        if flow.ext.matched.is_none_or(|old| !old.watched()) {
            flow.ext.matched = Some(m);
            flow.ext.host = req.host.as_deref().map(Box::from);
        }
        // A better identity replaces a weaker one: a source-address match
        // made before the first request head arrived must not pin the flow
        // once a listed credential shows up (credential > certificate >
        // workload > source > unknown).
        if flow
            .ext
            .identity_via()
            .is_none_or(|old| id.client.is_some() && id.via.rank() > old.rank())
        {
            flow.ext.set_identity(Some(id));
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
        let mut keys = Vec::new();
        for f in findings.into_iter().flatten() {
            if f.key.kind.has_outcome() {
                keys.push(f.key.clone());
            }
            self.report(Some(f));
        }
        if req.lenient
            && let Some((endpoint, client)) = labels(&self.ctx, m, &id)
        {
            *self
                .malformed
                .entry((endpoint.clone(), client.clone()))
                .or_insert(0) += 1;
        }
        // Live, the kernel counts HTTP/1 request starts by its method
        // table; what it cannot count (HTTP/2 streams, lenient heads) is
        // counted here.
        let count = self.count_requests || !req.kernel_counts;
        if count {
            flow.ext.counted += 1;
            if self.count(m, &id, 1) {
                self.rates.engine_counted += 1;
            }
        }
        if count && let (Some(c), EndpointRef::Endpoint(e)) = (id.client, m) {
            let f = quota_overshoot::check(&self.ctx, self.rates, c, e, 1, self.now);
            self.report(f);
        }
        if let Some((endpoint, client)) = self.labels(m, &id) {
            let quota = self.quota_key(m, &id);
            flow.ext.await_answer(Awaiting {
                id: req.id,
                endpoint,
                client,
                keys,
                quota,
                deferred: !count,
            });
        }
    }

    /// Kernel-counted requests on a flow: charged to the flow's identity
    /// (from its requests, else its certificate or source).
    pub(super) fn kernel_requests(&mut self, flow: &mut Flow<FlowState>, count: u64) {
        self.refresh(flow);
        self.client_workload = flow.ext.workloads[Side::Client.index()].clone();
        let m = self.matched(flow);
        let id = self.flow_identity(flow);
        if !self.count(m, &id, count) {
            self.rates.kernel_unwatched = self.rates.kernel_unwatched.saturating_add(count);
        }
        let mut over = 0;
        if let (Some(c), EndpointRef::Endpoint(e)) = (id.client, m) {
            let f = quota_overshoot::check(&self.ctx, self.rates, c, e, count, self.now);
            over = f.as_ref().map_or(0, |f| f.count);
            self.report(f);
        }
        // The count covers the requests whose 429s arrived before it; of
        // those, at most the ones over quota now count as throttled (a
        // tighter API limit also answers 429 within the quota).
        self.settle_throttled(flow, m, &id, over);
    }

    /// An end of the flow turned out to be a local socket of `workload`.
    /// A client workload the contract names lifts an identity weaker than
    /// a workload match (source, unknown) already made for the flow.
    pub(super) fn socket(
        &mut self,
        flow: &mut Flow<FlowState>,
        side: Side,
        workload: Arc<FlowWorkload>,
    ) {
        self.refresh(flow);
        flow.ext.workloads[side.index()] = Some(workload);
        if side != Side::Client {
            // The server's workload may name the endpoint (`workloads`): a
            // match made before it was known is made again, so the kernel's
            // request counts that follow go to that endpoint.
            let st = &mut flow.ext;
            if st
                .matched
                .is_some_and(|m| matches!(m, EndpointRef::Unwatched | EndpointRef::Unlisted))
            {
                let name = st.host.as_deref().or_else(|| flow.tls.sni());
                st.matched = Some(self.ctx.view.match_endpoint(
                    flow.id.server,
                    st.workloads[Side::Server.index()].as_deref(),
                    name,
                    None,
                ));
            }
            return;
        }
        let st = &mut flow.ext;
        if let Some(old) = st.identity()
            && old.via.rank() < Via::Workload.rank()
        {
            let id = self.ctx.view.directory.identify(
                old.credential.as_slice(),
                flow.tls.client_cert,
                st.workloads[Side::Client.index()].as_deref(),
                flow.id.client.ip(),
            );
            if id.client.is_some() && id.via.rank() > old.via.rank() {
                st.set_identity(Some(id));
            }
        }
    }

    /// Judgements due when a flow ends.
    pub(super) fn finish(&mut self, flow: &mut Flow<FlowState>) {
        self.client_workload = flow.ext.workloads[Side::Client.index()].clone();
        if flow.protocol == Protocol::Tls && flow.ext.flags & SETTLED_TLS == 0 {
            self.settle_tls(flow);
        }
        if flow.protocol == Protocol::H2c {
            // An h2c flow that never opened a stream is still plaintext.
            self.plaintext_flow(flow);
        }
        // 429s still waiting: the kernel's last count came before them, so
        // it could not put their requests over quota; they do not count.
        flow.ext.unsettled_throttled = 0;
    }
}
