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
use bytes::{Bytes, BytesMut};
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

/// What the reader keeps between drains: the batch being gathered (empty
/// between calls; kept for its capacity) and the chunk payloads are copied
/// into.
#[derive(Debug, Default)]
pub struct Staged {
    pub(super) events: Vec<Event>,
    pub(super) payloads: Payloads,
}

impl Staged {
    pub fn new() -> Self {
        Self {
            events: Vec::with_capacity(BATCH + 1),
            payloads: Payloads::default(),
        }
    }
}

/// Payload copies out of the ring, cut from shared 64 KiB chunks: one
/// allocation (and, on the engine's thread, one free) per chunk instead of
/// one per sample. Freeing on another thread than the one that allocated
/// is glibc malloc's slow path; per sample it was a tenth of the agent's
/// CPU under load (`docs/performance.md`, round 5). A chunk is freed when
/// the last event cut from it is dropped: events are handled and dropped
/// within their batch, and what the engine keeps longer (an out-of-order
/// segment in reassembly) it copies, so a chunk never outlives its batches.
#[derive(Debug, Default)]
pub struct Payloads {
    chunk: BytesMut,
}

impl Payloads {
    const CHUNK: usize = 64 * 1024;

    /// `data` as an owned `Bytes` that shares this reader's current chunk.
    pub fn copy(&mut self, data: &[u8]) -> Bytes {
        if data.is_empty() {
            return Bytes::new();
        }
        if self.chunk.capacity() - self.chunk.len() < data.len() {
            // The old chunk lives on in the events cut from it.
            self.chunk = BytesMut::with_capacity(Self::CHUNK.max(data.len()));
        }
        self.chunk.extend_from_slice(data);
        self.chunk.split().freeze()
    }
}

/// Sends a poll's events on, as one batch; false when the receiver is gone.
pub(super) async fn forward(batch: Vec<Event>, tx: &Sender<Vec<Event>>) -> bool {
    batch.is_empty() || tx.send(batch).await.is_ok()
}

/// Delivers every available record, in batches of up to [`BATCH`] events
/// gathered in `staged`; false when the receiver is gone.
pub(super) async fn drain(
    src: &mut impl Records,
    tx: &Sender<Vec<Event>>,
    shared: &Shared,
    staged: &mut Staged,
) -> bool {
    let Staged { events, payloads } = staged;
    loop {
        let mut more = true;
        while events.len() < BATCH {
            if !src
                .with_next(|rec| events.extend(shared.convert(rec, payloads).into_iter().flatten()))
            {
                more = false;
                break;
            }
        }
        if !events.is_empty() {
            // An exact-size batch travels; `events` keeps its allocation.
            let mut batch = Vec::with_capacity(events.len());
            batch.append(events);
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
