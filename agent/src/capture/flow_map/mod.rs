//! Userspace flow bookkeeping: which kernel view of a connection is reported
//! (one per connection), request-start deltas, and flows that ended without a
//! flow-end record (idle, or evicted from the kernel's LRU table).
//!
//! Memory: one small entry per connection (a 36-byte key and the last
//! counters the deltas and an eviction's end need), and a poll works on the
//! caller's buffer of kernel entries in place: nothing per flow is copied
//! or collected per poll.

mod convert;
mod views;

use std::time::{Duration, Instant};

use agent_common::{FlowKey, FlowStats, flow_state, observer};

pub use self::convert::{FlowSnapshot, flow_id, snapshot, tls_side, tls_socket_key, totals};
use self::{
    convert::{Conn, ObserverId, end_reason, first_seen, socket_side, totals_requests, view},
    views::{DupView, TlsLayer, tally_dup},
};
use crate::event::{Event, FlowEndReason, FlowId, FlowTotals, LocalSocket, Nanos};

/// The tracker's tables are looked up on every sample: foldhash, not
/// SipHash; seeded per process, since remote clients choose part of the
/// 4-tuples that key them.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// How long an ended connection keeps its claim, so that the other views'
/// late records and flow ends of the same connection are dropped.
const TOMBSTONE: Duration = Duration::from_secs(5);
/// Polls a flow must be missing from the kernel map before it counts as
/// evicted: its flow-end record may still be on its way through the ring.
const MISSING_POLLS: u8 = 2;

#[derive(Debug)]
struct Tracked {
    view: ObserverId,
    first_seen: u64,
    /// Request starts to the server already reported.
    reported: u64,
    ended: Option<Instant>,
    missing: u8,
    /// The poll that last saw its entry ([`Tracker::poll`]).
    polled: u32,
    last_totals: Option<FlowTotals>,
    /// Per [`crate::event::Side::index`]: the cgroup id and pid last
    /// announced.
    announced: [(u64, u32); 2],
}

impl Tracked {
    fn new(view: ObserverId, first_seen: u64) -> Self {
        Self {
            view,
            first_seen,
            reported: 0,
            ended: None,
            missing: 0,
            polled: 0,
            last_totals: None,
            announced: [(0, 0); 2],
        }
    }

    /// Whether `fs` (a kernel first-seen stamp) may be this connection.
    fn same_connection(&self, fs: u64) -> bool {
        self.first_seen == 0 || fs == 0 || self.first_seen == fs
    }

    /// Takes in the kernel entry `fs`, `total` (its first-seen stamp and
    /// request starts) before a delta is taken from it. An entry that is not
    /// the one reported so far counts from zero: a new connection on the
    /// 4-tuple, or the entry of a live connection recreated (LRU eviction,
    /// or deleted when its endpoint rule changed), whose counters restarted.
    /// Without this, the old total would swallow the new requests.
    fn rebase(&mut self, fs: u64, total: u64) {
        if self.first_seen == 0 {
            self.first_seen = fs;
        }
        if !self.same_connection(fs) || total < self.reported {
            self.first_seen = fs;
            self.reported = 0;
        }
    }
}

/// What one poll of the flow map produced.
#[derive(Debug, Default)]
pub struct PollOutcome {
    pub events: Vec<Event>,
    /// Ended entries whose end has been reported: delete them from the kernel map.
    pub delete: Vec<FlowKey>,
}

/// A poll in progress ([`Tracker::start_poll`]).
#[derive(Debug)]
pub struct PollRun {
    poll: u32,
    now: Nanos,
    /// The TLS layers (first in the order) are through.
    tls_done: bool,
    out: PollOutcome,
}

/// Where an entry goes in a poll's order ([`Tracker::poll_chunk`]).
pub fn poll_rank(key: &FlowKey) -> u8 {
    match key.observer {
        observer::TLS_PLAINTEXT => 0,
        observer::CLIENT_SOCKET => 1,
        _ => 2,
    }
}

/// Claims, request-start deltas and end detection, shared by the ring reader
/// and the flow-map poller.
///
/// Ends: FIN/RST ends come from the ring's flow-end record; the kernel
/// keeps the ended entry (frozen) until a poll sees that the end was
/// reported and deletes it, or reports the end itself from the entry when
/// the kernel could not write the record (`END_RECORD_LOST`). An entry that
/// vanishes without an end was evicted by the LRU: `Idle` end.
#[derive(Debug, Default)]
pub struct Tracker {
    flows: HashMap<Conn, Tracked>,
    /// TLS plaintext layers (`observer::TLS_PLAINTEXT` entries): a layer
    /// beside the wire views, never a claim on the connection; see
    /// [`Tracker::poll`].
    tls: HashMap<Conn, TlsLayer>,
    /// Records dropped because another view of the connection is reported.
    pub duplicate_views: u64,
    /// Request starts counted by the views that are not reported, per view.
    dups: HashMap<(Conn, ObserverId), DupView>,
    /// Request starts the kernel counted on views that are not reported (the
    /// second view of a loopback connection): part of the kernel's
    /// `request_starts` baseline that is deliberately charged to no one.
    pub duplicate_view_requests: u64,
    /// Polls so far: entries stamp the poll that saw them, so a poll needs
    /// no set of what it saw.
    polls: u32,
    /// [`TOMBSTONE`], shorter in tests that explore its expiry.
    #[cfg(test)]
    tombstone: Option<Duration>,
}

impl Tracker {
    /// A sample: reported unless another view of the connection is. The
    /// first view seen claims the connection. Late samples of an ended
    /// connection are still delivered (their data is real) but do not
    /// revive it.
    #[cfg(test)]
    pub fn admit_sample(&mut self, key: &FlowKey) -> bool {
        self.claim_sample(key).0
    }

    /// [`Tracker::admit_sample`] and then [`Tracker::socket`] (no pid) in
    /// one lookup: whether the sample is reported, and its socket if news.
    pub fn sample(&mut self, key: &FlowKey, cgroup_id: u64, ts: Nanos) -> (bool, Option<Event>) {
        let (admitted, t) = self.claim_sample(key);
        (admitted, announce(t, key, cgroup_id, None, ts))
    }

    /// [`Tracker::admit_sample`], with the connection's entry.
    fn claim_sample(&mut self, key: &FlowKey) -> (bool, &mut Tracked) {
        let v = view(key);
        let t = self
            .flows
            .entry(Conn::of(key))
            .or_insert_with(|| Tracked::new(v, 0));
        if t.view == v {
            (true, t)
        } else {
            self.duplicate_views += 1;
            (false, t)
        }
    }

    /// The local socket a record shows (`cgroup_id` from the kernel, `pid`
    /// from the TLS probes), announced when it is news for that side of a
    /// connection already claimed: once per side, again when a pid joins.
    /// Every view counts, reported or not, so a loopback flow names both
    /// ends. TC views have no socket.
    pub fn socket(
        &mut self,
        key: &FlowKey,
        cgroup_id: u64,
        pid: Option<u32>,
        ts: Nanos,
    ) -> Option<Event> {
        let t = self.flows.get_mut(&Conn::of(key))?;
        announce(t, key, cgroup_id, pid, ts)
    }

    /// A flow-end record: the last request-start delta, then the end.
    /// `tls` is the connection's TLS plaintext layer as the kernel has it
    /// now: its last request starts are reported with the wire's, before
    /// the end (its own entry is deleted at the next poll).
    pub fn flow_end(
        &mut self,
        key: &FlowKey,
        stats: &FlowStats,
        tls: Option<&FlowStats>,
        reason: FlowEndReason,
        ts: Nanos,
    ) -> [Option<Event>; 2] {
        let conn = Conn::of(key);
        let id = conn.id();
        let tls_delta = self.tls_delta(conn, tls);
        let v = view(key);
        let fs = first_seen(stats);
        let t = self
            .flows
            .entry(conn)
            .or_insert_with(|| Tracked::new(v, fs));
        if t.view != v {
            self.duplicate_views += 1;
            tally_dup(
                &mut self.dups,
                &mut self.duplicate_view_requests,
                key,
                stats,
            );
            return [None, None];
        }
        if t.ended.is_some() {
            if t.same_connection(fs) {
                // Already reported (from the map, the record being late, or
                // as vanished when a poll missed it): only starts counted
                // since then are left to report.
                return [late_starts(t, id, stats, tls_delta, ts), None];
            }
            *t = Tracked::new(v, fs);
        }
        // A claim made by a sample has no first-seen stamp yet: without
        // the record's, a later connection on the 4-tuple would pass for
        // this one and its starts vanish into this one's total.
        t.rebase(fs, totals_requests(stats));
        finish(t, id, stats, tls_delta, reason, ts)
    }

    /// Request starts of a TLS layer not reported yet.
    fn tls_delta(&mut self, conn: Conn, tls: Option<&FlowStats>) -> u64 {
        let Some(s) = tls else {
            return 0;
        };
        let polls = self.polls;
        self.tls
            .entry(conn)
            .or_insert_with(|| TlsLayer::new(s, polls))
            .delta(s)
    }

    /// One whole poll over an owned list of entries (`idle`: keys the caller
    /// deleted from the kernel map for idleness), in the order
    /// [`Tracker::poll_chunk`] needs.
    #[cfg(test)]
    pub fn poll(
        &mut self,
        entries: Vec<(FlowKey, FlowStats)>,
        idle: &[FlowKey],
        now: Nanos,
    ) -> PollOutcome {
        let idle: std::collections::HashSet<&FlowKey> = idle.iter().collect();
        let mut run = self.start_poll(now);
        let mut entries: Vec<(FlowKey, FlowStats, bool)> = entries
            .into_iter()
            .map(|(k, s)| (k, s, idle.contains(&k)))
            .collect();
        entries.sort_by_key(|(k, _, _)| poll_rank(k));
        self.poll_chunk(&mut run, &entries);
        self.finish_poll(run)
    }

    /// Starts one poll of the kernel flow map: request-start deltas for live
    /// flows, ends whose record was lost, idle ends, and evictions. The
    /// caller feeds every entry through [`Tracker::poll_chunk`], in chunks
    /// so that neither it nor the tracker holds a copy of the whole map,
    /// then calls [`Tracker::finish_poll`].
    pub fn start_poll(&mut self, now: Nanos) -> PollRun {
        self.polls = self.polls.wrapping_add(1);
        PollRun {
            poll: self.polls,
            now,
            tls_done: false,
            out: PollOutcome::default(),
        }
    }

    /// Entries of the poll `run`, sorted by [`poll_rank`] across all
    /// chunks; each with whether the caller deleted it for idleness.
    ///
    /// Order: TLS plaintext layers first: their request-start deltas are
    /// reported for the connection (so they precede a wire end of the same
    /// poll); they never claim it, never end it, and their kernel entries
    /// are deleted once the wire flow has ended (or, by the caller, when
    /// idle). Then client-socket views, so they win new claims; then the
    /// other views.
    pub fn poll_chunk(&mut self, run: &mut PollRun, entries: &[(FlowKey, FlowStats, bool)]) {
        for (key, stats, idle) in entries {
            if key.observer == observer::TLS_PLAINTEXT {
                self.poll_tls(key, stats, *idle, run);
            } else {
                self.end_tls_layers(run);
                self.poll_wire(key, stats, *idle, run);
            }
        }
    }

    /// Ends the poll `run`: flows its entries did not show are missing.
    pub fn finish_poll(&mut self, mut run: PollRun) -> PollOutcome {
        self.end_tls_layers(&mut run);
        let (poll, now, mut out) = (run.poll, run.now, run.out);
        let now_i = Instant::now();
        let tombstone = self.tombstone();
        for (conn, t) in &mut self.flows {
            if t.ended.is_some() || t.polled == poll {
                continue;
            }
            t.missing = t.missing.saturating_add(1);
            if t.missing >= MISSING_POLLS {
                t.ended = Some(now_i);
                out.events.push(Event::FlowEnd {
                    ts: now,
                    flow: conn.id(),
                    reason: FlowEndReason::Idle,
                    totals: t.last_totals,
                });
            }
        }
        self.flows
            .retain(|_, t| t.ended.is_none_or(|e| now_i.duration_since(e) < tombstone));
        // A view gone from the map without an end was evicted or deleted.
        self.dups.retain(|_, d| match d.ended {
            Some(e) => now_i.duration_since(e) < tombstone,
            None => std::mem::replace(&mut d.seen, false),
        });
        out
    }

    /// How long an ended connection keeps its claim ([`TOMBSTONE`]).
    fn tombstone(&self) -> Duration {
        #[cfg(test)]
        if let Some(t) = self.tombstone {
            return t;
        }
        TOMBSTONE
    }

    /// Once the TLS layers of a poll are through: layers whose entry is
    /// gone are forgotten.
    fn end_tls_layers(&mut self, run: &mut PollRun) {
        if !run.tls_done {
            run.tls_done = true;
            let poll = run.poll;
            self.tls.retain(|_, l| l.polled == poll);
        }
    }

    /// One TLS plaintext entry of a poll.
    fn poll_tls(&mut self, key: &FlowKey, stats: &FlowStats, idle: bool, run: &mut PollRun) {
        let (poll, now, out) = (run.poll, run.now, &mut run.out);
        let conn = Conn::of(key);
        if self.flows.get(&conn).is_some_and(|t| t.ended.is_some()) {
            // Its last starts went out with the wire end.
            out.delete.push(*key);
            self.tls.remove(&conn);
            return;
        }
        let delta = self.tls_delta(conn, Some(stats));
        if let Some(l) = self.tls.get_mut(&conn) {
            l.polled = poll;
        }
        if delta > 0 {
            out.events.push(Event::RequestStarts {
                ts: now,
                flow: conn.id(),
                count: delta,
            });
        }
        if idle {
            self.tls.remove(&conn);
        }
    }

    /// One wire-view entry of a poll.
    fn poll_wire(&mut self, key: &FlowKey, stats: &FlowStats, idle: bool, run: &mut PollRun) {
        let (poll, now, out) = (run.poll, run.now, &mut run.out);
        let conn = Conn::of(key);
        let v = view(key);
        let fs = first_seen(stats);
        let ended_in_kernel = stats.state & flow_state::ENDED != 0;
        let t = self
            .flows
            .entry(conn)
            .or_insert_with(|| Tracked::new(v, fs));
        if t.view == v && stats.state & flow_state::LOCAL_DUPLICATE != 0 {
            // The kernel stopped counting this view because the client
            // socket's view counts the same packets; it is the claim only
            // if a poll saw it before its peer (map iteration under churn
            // skips keys). Hand the claim over: both views counted the
            // starts reported so far, so the client view's delta from
            // `reported` on is exact.
            t.view = (observer::CLIENT_SOCKET, 0);
            t.first_seen = 0;
            return;
        }
        if t.view != v {
            tally_dup(
                &mut self.dups,
                &mut self.duplicate_view_requests,
                key,
                stats,
            );
            // Another view is reported; drop this one's entry once over.
            if ended_in_kernel {
                out.delete.push(*key);
            }
            return;
        }
        if t.ended.is_some() {
            if t.same_connection(fs) {
                // Ended here while the kernel still counted: a poll that
                // missed the entry twice (map iteration under churn skips
                // keys) took it for evicted. Its later starts still count.
                out.events.extend(late_starts(t, conn.id(), stats, 0, now));
                // Keep the claim while the entry lives, so it is never
                // taken for a new connection that counts from zero.
                t.ended = Some(Instant::now());
                if ended_in_kernel {
                    out.delete.push(*key);
                }
                return;
            }
            // A new connection on the same 4-tuple.
            *t = Tracked::new(v, fs);
        }
        t.rebase(fs, totals_requests(stats));
        t.polled = poll;
        t.missing = 0;
        let totals = totals(stats);
        t.last_totals = Some(totals);
        if ended_in_kernel {
            if stats.state & flow_state::END_RECORD_LOST != 0 {
                out.events.extend(
                    finish(t, conn.id(), stats, 0, end_reason(stats.state), now)
                        .into_iter()
                        .flatten(),
                );
                out.delete.push(*key);
            }
            // Otherwise the record is on its way through the ring, behind
            // this flow's samples; it reports the end.
            return;
        }
        let delta = totals.request_starts[0].saturating_sub(t.reported);
        if delta > 0 {
            t.reported = totals.request_starts[0];
            out.events.push(Event::RequestStarts {
                ts: now,
                flow: conn.id(),
                count: delta,
            });
        }
        if idle {
            t.ended = Some(Instant::now());
            out.events.push(Event::FlowEnd {
                ts: now,
                flow: conn.id(),
                reason: FlowEndReason::Idle,
                totals: Some(totals),
            });
        }
    }
}

/// [`Tracker::socket`] on the connection's entry `t`.
fn announce(
    t: &mut Tracked,
    key: &FlowKey,
    cgroup_id: u64,
    pid: Option<u32>,
    ts: Nanos,
) -> Option<Event> {
    let side = socket_side(key.observer)?;
    if cgroup_id == 0 {
        return None;
    }
    let slot = &mut t.announced[side.index()];
    let new_cgroup = slot.0 != cgroup_id;
    let new_pid = pid.is_some_and(|p| p != slot.1);
    if !new_cgroup && !new_pid {
        return None;
    }
    if new_cgroup {
        *slot = (cgroup_id, 0);
    }
    if let Some(p) = pid {
        slot.1 = p;
    }
    Some(Event::Socket(LocalSocket {
        ts,
        flow: flow_id(key),
        side,
        cgroup_id,
        pid,
    }))
}

/// Request starts of an already ended connection not reported yet (none
/// when its end came from the final counters).
fn late_starts(
    t: &mut Tracked,
    id: FlowId,
    stats: &FlowStats,
    extra: u64,
    ts: Nanos,
) -> Option<Event> {
    let total = totals_requests(stats);
    let delta = total.saturating_sub(t.reported).saturating_add(extra);
    t.reported = t.reported.max(total);
    (delta > 0).then_some(Event::RequestStarts {
        ts,
        flow: id,
        count: delta,
    })
}

/// Reports the end of `t`: the last request-start delta, then the end.
/// `extra` request starts (the TLS layer's) are added to the wire's delta.
fn finish(
    t: &mut Tracked,
    id: FlowId,
    stats: &FlowStats,
    extra: u64,
    reason: FlowEndReason,
    ts: Nanos,
) -> [Option<Event>; 2] {
    let totals = totals(stats);
    let delta = totals.request_starts[0]
        .saturating_sub(t.reported)
        .saturating_add(extra);
    t.reported = totals.request_starts[0];
    t.ended = Some(Instant::now());
    t.last_totals = Some(totals);
    let starts = (delta > 0).then_some(Event::RequestStarts {
        ts,
        flow: id,
        count: delta,
    });
    [
        starts,
        Some(Event::FlowEnd {
            ts,
            flow: id,
            reason,
            totals: Some(totals),
        }),
    ]
}

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;
