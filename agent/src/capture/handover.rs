//! The ring reader's handover: records → [`Event`]s → the bounded channel.
//!
//! Reading stops while a send waits for room: the kernel then finds the
//! ring full and counts the loss (`stat::RING_FULL`), so every sample is
//! either delivered or counted, exactly. A record is converted and released
//! before any send, so the kernel can reuse its space at once.

use aya::maps::{MapData, RingBuf};
use tokio::sync::mpsc::Sender;

use super::ring::Shared;
use crate::event::Event;

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

/// Sends a poll's events on; false when the receiver is gone.
pub(super) async fn forward(batch: Vec<Event>, tx: &Sender<Event>) -> bool {
    for ev in batch {
        if tx.send(ev).await.is_err() {
            return false;
        }
    }
    true
}

/// Delivers every available record; false when the receiver is gone.
pub(super) async fn drain(src: &mut impl Records, tx: &Sender<Event>, shared: &Shared) -> bool {
    loop {
        let mut events = [None, None];
        if !src.with_next(|rec| events = shared.convert(rec)) {
            return true;
        }
        for ev in events.into_iter().flatten() {
            if tx.send(ev).await.is_err() {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests;
