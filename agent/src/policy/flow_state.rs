//! What the engine keeps per flow, inside the flow table's entry. Kept
//! compact because a node may hold 100k flows: rare facts (JWT claims) are
//! boxed, and queues give their memory back when they empty.

use std::{collections::VecDeque, sync::Arc};

use super::{view::EndpointRef, violations::ViolationKey};
use crate::{
    event::Side,
    identity::{Fp, Identity, TokenFacts, Via, workload::FlowWorkload},
};

/// A watched request waiting for its answer ([`crate::flow::responses`]).
#[derive(Debug)]
pub(super) struct Awaiting {
    /// [`crate::flow::Request::id`].
    pub(super) id: u64,
    /// Labels of `rampwatch_responses_total`.
    pub(super) endpoint: Arc<str>,
    pub(super) client: Arc<str>,
    /// The violations this request added to whose outcome its answer counts.
    pub(super) keys: Vec<ViolationKey>,
    /// The (client, endpoint) quota violation a 429 answer counts for.
    pub(super) quota: Option<ViolationKey>,
    /// Counted by the kernel (live): its quota verdict comes with the
    /// kernel's count, possibly after its answer.
    pub(super) deferred: bool,
}

/// A flow's [`Identity`] as the table keeps it: the same facts, with the
/// JWT claims (most credentials are opaque) behind a pointer. 104 bytes
/// instead of 272.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct KeptIdentity {
    pub(super) client: Option<usize>,
    pub(super) via: Via,
    credential: Option<Fp>,
    certificate: Option<Fp>,
    token: Option<Box<TokenFacts>>,
}

impl From<Identity> for KeptIdentity {
    fn from(i: Identity) -> Self {
        Self {
            client: i.client,
            via: i.via,
            credential: i.credential,
            certificate: i.certificate,
            token: i.token.map(Box::new),
        }
    }
}

impl KeptIdentity {
    pub(super) fn get(&self) -> Identity {
        Identity {
            client: self.client,
            via: self.via,
            credential: self.credential,
            token: self.token.as_deref().copied(),
            certificate: self.certificate,
        }
    }
}

/// Per-flow verdict state, kept in the flow table.
#[derive(Debug, Default)]
pub(super) struct FlowState {
    /// Contract generation `matched` and `identity` belong to.
    pub(super) generation: u64,
    pub(super) matched: Option<EndpointRef>,
    identity: Option<KeptIdentity>,
    /// Once-per-flow judgements already made.
    pub(super) flags: u8,
    pub(super) kernel_requests: u64,
    /// Requests the engine counted itself (all of them in replay; live,
    /// those the kernel cannot count: HTTP/2).
    pub(super) counted: u64,
    /// Host header of the first request, to look the flow up again after a
    /// contract reload.
    pub(super) host: Option<Box<str>>,
    /// Watched requests waiting for their answer, oldest first; holds no
    /// memory while empty (see [`FlowState::answered`]).
    awaiting: VecDeque<Awaiting>,
    /// 429 answers to kernel-counted requests not yet set against a quota
    /// violation: the kernel's count that may open it comes up to a poll
    /// later than the answer.
    pub(super) unsettled_throttled: u64,
    /// Per [`Side::index`]: the workload of that end's local socket, when
    /// it is on this machine (live only).
    pub(super) workloads: [Option<Arc<FlowWorkload>>; 2],
}

impl FlowState {
    pub(super) fn client_workload(&self) -> Option<&FlowWorkload> {
        self.workloads[Side::Client.index()].as_deref()
    }

    pub(super) fn identity(&self) -> Option<Identity> {
        self.identity.as_ref().map(KeptIdentity::get)
    }

    /// How the identity was made, without unpacking it.
    pub(super) fn identity_via(&self) -> Option<Via> {
        self.identity.as_ref().map(|i| i.via)
    }

    pub(super) fn set_identity(&mut self, id: Option<Identity>) {
        self.identity = id.map(KeptIdentity::from);
    }

    pub(super) fn await_answer(&mut self, w: Awaiting) {
        self.awaiting.push_back(w);
    }

    /// Takes the request waiting for answer `id`, if it was watched. The
    /// queue's buffer is freed once it empties: a keep-alive connection
    /// between requests then holds none (4 slots are 448 bytes a flow).
    pub(super) fn answered(&mut self, id: u64) -> Option<Awaiting> {
        let at = self.awaiting.iter().position(|w| w.id == id)?;
        let w = self.awaiting.remove(at);
        if self.awaiting.is_empty() {
            self.awaiting = VecDeque::new();
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-flow footprint the memory figures in docs/performance.md
    /// rest on; a field added here is paid 100k times.
    #[test]
    fn flow_state_stays_small() {
        assert!(
            size_of::<KeptIdentity>() <= 104,
            "{}",
            size_of::<KeptIdentity>()
        );
        assert!(size_of::<FlowState>() <= 240, "{}", size_of::<FlowState>());
        assert!(
            size_of::<crate::flow::Flow<FlowState>>() <= 768,
            "{}",
            size_of::<crate::flow::Flow<FlowState>>()
        );
    }
}
