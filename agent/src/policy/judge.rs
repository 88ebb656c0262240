//! The detections' side of the engine: what each flow fact or request
//! means for the seven detections, and where their findings go.

use super::{
    Ctx, quota_overshoot,
    rates::Rates,
    revoked_client, stale_credential, unencrypted_flow, unknown_client, unlisted_endpoint,
    view::{EndpointRef, Fp, Identity, Via},
    violations::{Finding, Terms, ViolationEvent, Violations},
    weak_tls,
};
use crate::{
    event::Nanos,
    flow::{Changes, Flow, Protocol, Request, TlsVersion, facts::is_plaintext},
};

/// Per-flow verdict state, kept in the flow table.
#[derive(Debug, Default)]
pub(super) struct FlowState {
    /// Contract generation `matched` and `identity` belong to.
    pub(super) generation: u64,
    pub(super) matched: Option<EndpointRef>,
    pub(super) identity: Option<Identity>,
    /// Once-per-flow judgements already made.
    pub(super) flags: u8,
    pub(super) kernel_requests: u64,
    /// Requests the engine counted itself (all of them in replay; live,
    /// those the kernel cannot count: HTTP/2).
    pub(super) counted: u64,
    /// Host header of the first request, to look the flow up again after a
    /// contract reload.
    host: Option<Box<str>>,
}

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

/// The detections' view of one event, with where findings go.
pub(super) struct Judge<'a> {
    pub(super) ctx: Ctx<'a>,
    pub(super) violations: &'a mut Violations,
    pub(super) rates: &'a mut Rates,
    pub(super) vbuf: &'a mut Vec<ViolationEvent>,
    pub(super) terms: Terms,
    pub(super) emit_occurrences: bool,
    pub(super) count_requests: bool,
    pub(super) now: Nanos,
    pub(super) generation: u64,
}

impl Judge<'_> {
    /// Counts watched requests under bounded labels: the endpoint's name or
    /// `unlisted` (a path outside `paths` included), the client's name or
    /// `unknown`. False when the flow is not watched (nothing counted).
    fn count(&mut self, m: EndpointRef, id: &Identity, n: u64) -> bool {
        if !m.watched() {
            return false;
        }
        let view = self.ctx.view;
        let endpoint = match m {
            EndpointRef::Endpoint(e) => view.endpoint_name(Some(e)),
            _ => None,
        }
        .unwrap_or(self.ctx.unlisted);
        let client = view.client_name(id.client).unwrap_or(self.ctx.unknown);
        self.rates.count(endpoint, client, n);
        true
    }

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

    pub(super) fn changes(
        &mut self,
        flow: &mut Flow<FlowState>,
        ch: Changes,
        reqs: &mut Vec<Request>,
    ) {
        self.refresh(flow);
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
            st.matched = Some(view.match_endpoint(flow.id.server, name, None));
        }
        if let Some(old) = st.identity {
            st.identity = Some(view.directory.identify(
                old.credential.as_slice(),
                flow.tls.client_cert,
                flow.id.client.ip(),
            ));
        }
    }

    fn matched(&self, flow: &mut Flow<FlowState>) -> EndpointRef {
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
                .directory
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
            *slot = *c.fingerprint.as_bytes();
            n += 1;
        }
        let id = view.directory.identify(
            fps.get(..n).unwrap_or_default(),
            flow.tls.client_cert,
            flow.id.client.ip(),
        );
        if flow.ext.matched.is_none_or(|old| !old.watched()) {
            flow.ext.matched = Some(m);
            flow.ext.host = req.host.as_deref().map(Box::from);
        }
        // A better identity replaces a weaker one: a source-address match
        // made before the first request head arrived must not pin the flow
        // once a listed credential shows up (credential > certificate >
        // source > unknown).
        if flow
            .ext
            .identity
            .is_none_or(|old| id.client.is_some() && id.via.rank() > old.via.rank())
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
    }

    /// Kernel-counted requests on a flow: charged to the flow's identity
    /// (from its requests, else its certificate or source).
    pub(super) fn kernel_requests(&mut self, flow: &mut Flow<FlowState>, count: u64) {
        self.refresh(flow);
        let m = self.matched(flow);
        let id = self.flow_identity(flow);
        if !self.count(m, &id, count) {
            self.rates.kernel_unwatched = self.rates.kernel_unwatched.saturating_add(count);
        }
        if let (Some(c), EndpointRef::Endpoint(e)) = (id.client, m) {
            let f = quota_overshoot::check(&self.ctx, self.rates, c, e, count, self.now);
            self.report(f);
        }
    }

    /// Judgements due when a flow ends.
    pub(super) fn finish(&mut self, flow: &mut Flow<FlowState>) {
        if flow.protocol == Protocol::Tls && flow.ext.flags & SETTLED_TLS == 0 {
            self.settle_tls(flow);
        }
        if flow.protocol == Protocol::H2c {
            // An h2c flow that never opened a stream is still plaintext.
            self.plaintext_flow(flow);
        }
    }
}
