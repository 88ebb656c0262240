//! Local-socket announcements that arrive before their flow.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use crate::{
    event::{FlowId, Side},
    identity::workload::FlowWorkload,
};

/// Announced sockets waiting for their flow, bounded: a socket whose flow
/// never comes (its packet lost) is dropped oldest first and counted. A hit
/// costs one hash removal; `order` is cleaned lazily as it turns over.
#[derive(Default)]
pub(super) struct PendingSockets {
    map: HashMap<FlowId, [Option<Arc<FlowWorkload>>; 2]>,
    order: VecDeque<FlowId>,
}

/// Flows whose sockets may wait at once; far above what a ring batch holds.
const PENDING_SOCKETS: usize = 4096;

impl PendingSockets {
    /// Queues `w`; true when an older one had to go.
    pub(super) fn push(&mut self, id: FlowId, side: Side, w: Arc<FlowWorkload>) -> bool {
        let mut dropped = false;
        if !self.map.contains_key(&id) {
            while self.order.len() >= PENDING_SOCKETS {
                if let Some(old) = self.order.pop_front() {
                    dropped |= self.map.remove(&old).is_some();
                }
            }
            self.order.push_back(id);
        }
        self.map.entry(id).or_default()[side.index()] = Some(w);
        dropped
    }

    /// Gives a flow just created the workloads announced for it before.
    pub(super) fn adopt(&mut self, workloads: &mut [Option<Arc<FlowWorkload>>; 2], id: &FlowId) {
        if let Some(ws) = self.take(id) {
            for (slot, w) in workloads.iter_mut().zip(ws) {
                if w.is_some() {
                    *slot = w;
                }
            }
        }
    }

    pub(super) fn take(&mut self, id: &FlowId) -> Option<[Option<Arc<FlowWorkload>>; 2]> {
        if self.map.is_empty() {
            return None;
        }
        // `order` keeps the id until it reaches the front: popping an id no
        // longer waiting drops nothing.
        self.map.remove(id)
    }
}
