//! The ring reader's handover: records → [`Event`]s → the bounded channel,
//! in batches.
//!
//! One send per batch of events, not per event: a channel send is a few
//! atomic operations and, when the engine's task waits, a wakeup; per
//! event, that was a quarter of the agent's CPU under load. The channel is
//! bounded in batches, and reading stops while a send waits for room: the
//! kernel then finds the ring full and counts the loss (`stat::RING_FULL`),
//! so every sample is either delivered or counted, exactly. A record is
//! converted and released before any send, so the kernel can reuse its
//! space at once; the events of records already read are always sent.

use aya::maps::{MapData, RingBuf};
use tokio::sync::mpsc::Sender;

use super::ring::Shared;
use crate::event::Event;

/// Events in a batch, at most (one more when a record's two events straddle
/// the bound); fewer when the ring has no more.
pub const BATCH: usize = 256;

/// Where the reader takes records from: the kernel ring, or records in
/// memory (tests, benchmarks).
pub(super) trait Records {
    /// Hands the next record to `f`, then releases it; false when no record
    /// is ready.
    fn with_next(&mut self, f: impl FnOnce(&[u8])) -> bool;
}

impl Records for RingBuf<MapData> {
    fn with_next(&mut self, f: impl FnOnce(&[u8])) -> bool {
        match self.next() {
            Some(item) => {
                f(&item);
                true
            }
            None => false,
        }
    }
}

/// Sends a poll's events on, as one batch; false when the receiver is gone.
pub(super) async fn forward(batch: Vec<Event>, tx: &Sender<Vec<Event>>) -> bool {
    batch.is_empty() || tx.send(batch).await.is_ok()
}

/// Delivers every available record, in batches of up to [`BATCH`] events
/// gathered in `staged` (empty between calls; kept for its capacity);
/// false when the receiver is gone.
pub(super) async fn drain(
    src: &mut impl Records,
    tx: &Sender<Vec<Event>>,
    shared: &Shared,
    staged: &mut Vec<Event>,
) -> bool {
    loop {
        let mut more = true;
        while staged.len() < BATCH {
            if !src.with_next(|rec| staged.extend(shared.convert(rec).into_iter().flatten())) {
                more = false;
                break;
            }
        }
        if !staged.is_empty() {
            // An exact-size batch travels; `staged` keeps its allocation.
            let mut batch = Vec::with_capacity(staged.len());
            batch.append(staged);
            if tx.send(batch).await.is_err() {
                return false;
            }
        }
        if !more {
            return true;
        }
    }
}

#[cfg(test)]
mod tests;
