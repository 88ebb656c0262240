//! The flow-map poller: every 500 ms, request-start deltas, idle flows
//! (deleted from the kernel map and ended) and vanished (evicted) flows,
//! reading the kernel map a chunk at a time (see [`poll_kernel`]).

use std::{
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use agent_common::{FlowKey, FlowStats};
use aya::maps::{HashMap as BpfHashMap, MapData};
use tokio::sync::mpsc::Sender;

use super::{flow_map, lock, ring, system};
use crate::event::Event;

pub(super) fn read_flows(
    flows: &Mutex<BpfHashMap<MapData, FlowKey, FlowStats>>,
) -> Vec<(FlowKey, FlowStats)> {
    lock(flows).iter().filter_map(Result::ok).collect()
}

/// Entries looked up and handed to the tracker at a time.
const POLL_CHUNK: usize = 2048;

/// One poll of the kernel flow map. Only the keys are collected (40 bytes an
/// entry, in a buffer kept from poll to poll), in the order the tracker
/// needs; the entries are then looked up and handed over a chunk at a time.
/// At 100k loopback flows (200k entries) a list of whole entries was 45 MiB.
/// Entries idle past `idle_ns` are deleted here and marked idle.
fn poll_kernel(
    flows: &Mutex<BpfHashMap<MapData, FlowKey, FlowStats>>,
    shared: &ring::Shared,
    keys: &mut Vec<FlowKey>,
    idle_ns: u64,
    now: crate::event::Nanos,
) -> flow_map::PollOutcome {
    keys.clear();
    keys.extend(lock(flows).keys().filter_map(Result::ok));
    // Within a rank the map's order is arbitrary anyway.
    keys.sort_unstable_by_key(flow_map::poll_rank);
    let mut run = lock(&shared.tracker).start_poll(now);
    let mut chunk = Vec::with_capacity(POLL_CHUNK.min(keys.len()));
    for group in keys.chunks(POLL_CHUNK) {
        chunk.clear();
        let now_mono = system::monotonic_now();
        {
            let mut map = lock(flows);
            for k in group {
                // Gone since the keys were read: missing from this poll,
                // like an entry the iteration skipped.
                let Ok(s) = map.get(k, 0) else { continue };
                let last = s.dirs.iter().map(|d| d.last_seen_ns).max().unwrap_or(0);
                let idle = last != 0 && now_mono.saturating_sub(last) > idle_ns;
                if idle {
                    let _ = map.remove(k);
                }
                chunk.push((*k, s, idle));
            }
        }
        lock(&shared.tracker).poll_chunk(&mut run, &chunk);
    }
    if keys.capacity() > 2 * keys.len().max(POLL_CHUNK) {
        // The table shrank a lot: give the buffer back.
        keys.shrink_to(keys.len());
    }
    lock(&shared.tracker).finish_poll(run)
}

/// Polls whose events wait for the ring reader; the poller waits when they
/// are full (the reader is behind, so the next poll would only pile up).
pub(super) const POLL_HANDOVER: usize = 2;

/// Every `interval`: request-start deltas, idle flows (deleted from the
/// kernel map and ended), vanished (evicted) flows, handed to the ring
/// reader, which drains the ring before passing them on (see
/// `capture`'s module comment for why not straight to the engine).
pub(super) async fn poll_flows(
    flows: Arc<Mutex<BpfHashMap<MapData, FlowKey, FlowStats>>>,
    shared: Arc<ring::Shared>,
    tx: Sender<Vec<Event>>,
    interval: Duration,
    idle_timeout: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let idle_ns = u64::try_from(idle_timeout.as_nanos()).unwrap_or(u64::MAX);
    let mut keys = Vec::new();
    loop {
        tick.tick().await;
        shared
            .boot_to_wall
            .store(system::boot_to_wall_offset(), Ordering::Relaxed);
        let f = flows.clone();
        let sh = shared.clone();
        // Map iteration is one syscall per entry: keep it off the runtime.
        let read = tokio::task::spawn_blocking(move || {
            let now = i64::try_from(system::monotonic_now())
                .unwrap_or(i64::MAX)
                .saturating_add(system::mono_to_wall_offset());
            let outcome = poll_kernel(&f, &sh, &mut keys, idle_ns, now);
            (keys, outcome)
        })
        .await;
        let Ok((k, outcome)) = read else {
            return;
        };
        keys = k;
        if !outcome.delete.is_empty() {
            let f = flows.clone();
            let delete = outcome.delete;
            let _ = tokio::task::spawn_blocking(move || {
                let mut map = lock(&f);
                for k in &delete {
                    let _ = map.remove(k);
                }
            })
            .await;
        }
        if !outcome.events.is_empty() && tx.send(outcome.events).await.is_err() {
            return;
        }
    }
}
