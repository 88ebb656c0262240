//! Userspace flow bookkeeping: which kernel view of a connection is reported
//! (one per connection), request-start deltas, and flows that ended without a
//! flow-end record (idle, or evicted from the kernel's LRU table).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use agent_common::{FlowKey, FlowStats, flow_state, observer};

use crate::event::{Event, FlowEndReason, FlowId, FlowTotals, LocalSocket, Nanos, Side};

/// How long an ended connection keeps its claim, so that the other views'
/// late records and flow ends of the same connection are dropped.
const TOMBSTONE: Duration = Duration::from_secs(5);
/// Polls a flow must be missing from the kernel map before it counts as
/// evicted: its flow-end record may still be on its way through the ring.
const MISSING_POLLS: u32 = 2;

/// The kernel's view of one flow-map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSnapshot {
    pub flow: FlowId,
    /// `agent_common::observer` value.
    pub observer: u8,
    /// Interface index for TC views, 0 otherwise.
    pub ifindex: u32,
    pub endpoint_id: u32,
    pub cgroup_id: u64,
    pub totals: FlowTotals,
    /// TCP flags seen, per direction (to server, to client).
    pub tcp_flags: [u8; 2],
    /// Wall clock of the first and last packet (0 when none yet).
    pub first_seen: Nanos,
    pub last_seen: Nanos,
    /// The flow ended (FIN/RST) and its counters are final; the entry is
    /// deleted at the next poll once the end was reported.
    pub ended: bool,
}

/// Converts a kernel address (IPv4 mapped into IPv6) to a std address.
pub fn ip(addr: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

pub fn flow_id(key: &FlowKey) -> FlowId {
    FlowId {
        client: SocketAddr::new(ip(key.client_addr), key.client_port),
        server: SocketAddr::new(ip(key.server_addr), key.server_port),
    }
}

pub fn totals(s: &FlowStats) -> FlowTotals {
    let [a, b] = &s.dirs;
    FlowTotals {
        packets: [a.packets, b.packets],
        bytes: [a.bytes, b.bytes],
        payload_bytes: [a.payload_bytes, b.payload_bytes],
        payload_segments: [a.payload_segments, b.payload_segments],
        request_starts: [a.request_starts, b.request_starts],
    }
}

pub fn snapshot(key: &FlowKey, s: &FlowStats, boot_to_wall: i64) -> FlowSnapshot {
    let wall = |t: u64| {
        if t == 0 {
            0
        } else {
            i64::try_from(t)
                .unwrap_or(i64::MAX)
                .saturating_add(boot_to_wall)
        }
    };
    let first = s
        .dirs
        .iter()
        .map(|d| d.first_seen_ns)
        .filter(|&t| t != 0)
        .min()
        .unwrap_or(0);
    let last = s.dirs.iter().map(|d| d.last_seen_ns).max().unwrap_or(0);
    FlowSnapshot {
        flow: flow_id(key),
        observer: key.observer,
        ifindex: key.ifindex,
        endpoint_id: s.endpoint_id,
        cgroup_id: s.cgroup_id,
        totals: totals(s),
        tcp_flags: [s.dirs[0].tcp_flags as u8, s.dirs[1].tcp_flags as u8],
        first_seen: wall(first),
        last_seen: wall(last),
        ended: s.state & flow_state::ENDED != 0,
    }
}

/// Which observer saw a connection: `FlowKey::observer` and `ifindex`.
type ObserverId = (u8, u32);

fn view(key: &FlowKey) -> ObserverId {
    (key.observer, key.ifindex)
}

/// Identifies one connection among those reusing a 4-tuple: the kernel's
/// first-seen stamp (0 when unknown).
fn first_seen(s: &FlowStats) -> u64 {
    s.dirs
        .iter()
        .map(|d| d.first_seen_ns)
        .filter(|&t| t != 0)
        .min()
        .unwrap_or(0)
}

fn totals_requests(s: &FlowStats) -> u64 {
    s.dirs[0].request_starts
}

/// The side whose socket a view sits on. TLS plaintext records say it
/// through [`tls_side`] and [`tls_socket_key`]; TC views have none.
fn socket_side(observer: u8) -> Option<Side> {
    match observer {
        observer::CLIENT_SOCKET => Some(Side::Client),
        observer::SERVER_SOCKET => Some(Side::Server),
        _ => None,
    }
}

/// The side of the process behind a TLS plaintext record: the probes call
/// the process the client when its writes go to the server.
pub fn tls_side(call: u32, direction: u8) -> Side {
    let write = call == agent_common::tls_call::WRITE;
    if write == (direction == agent_common::direction::TO_SERVER) {
        Side::Client
    } else {
        Side::Server
    }
}

/// The key of the wire view on `side`'s socket for a TLS plaintext key, so
/// [`Tracker::socket`] files the process under the right end.
pub fn tls_socket_key(key: &FlowKey, side: Side) -> FlowKey {
    FlowKey {
        observer: match side {
            Side::Client => observer::CLIENT_SOCKET,
            Side::Server => observer::SERVER_SOCKET,
        },
        ifindex: 0,
        ..*key
    }
}

fn end_reason(state: u64) -> FlowEndReason {
    if state & flow_state::END_RST != 0 {
        FlowEndReason::Rst
    } else {
        FlowEndReason::Fin
    }
}

#[derive(Debug)]
struct Tracked {
    view: ObserverId,
    first_seen: u64,
    /// Request starts to the server already reported.
    reported: u64,
    ended: Option<Instant>,
    missing: u32,
    last_totals: Option<FlowTotals>,
    /// Per [`Side::index`]: the cgroup id and pid last announced.
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
            last_totals: None,
            announced: [(0, 0); 2],
        }
    }

    /// Whether `fs` (a kernel first-seen stamp) may be this connection.
    fn same_connection(&self, fs: u64) -> bool {
        self.first_seen == 0 || fs == 0 || self.first_seen == fs
    }
}

/// Reporting state of one connection's TLS plaintext layer.
#[derive(Debug)]
struct TlsLayer {
    first_seen: u64,
    /// Request starts to the server already reported.
    reported: u64,
}

impl TlsLayer {
    /// The delta since the last report, for the entry `s` (a recreated
    /// entry, with another first-seen stamp or fewer starts, counts from 0).
    fn delta(&mut self, s: &FlowStats) -> u64 {
        let fs = first_seen(s);
        let total = s.dirs[0].request_starts;
        if (fs != 0 && self.first_seen != 0 && fs != self.first_seen) || total < self.reported {
            self.reported = 0;
        }
        if self.first_seen == 0 {
            self.first_seen = fs;
        }
        let d = total.saturating_sub(self.reported);
        self.reported = total;
        d
    }
}

/// What one poll of the flow map produced.
#[derive(Debug, Default)]
pub struct PollOutcome {
    pub events: Vec<Event>,
    /// Ended entries whose end has been reported: delete them from the kernel map.
    pub delete: Vec<FlowKey>,
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
    flows: HashMap<FlowId, Tracked>,
    /// TLS plaintext layers (`observer::TLS_PLAINTEXT` entries): a layer
    /// beside the wire views, never a claim on the connection; see
    /// [`Tracker::poll`].
    tls: HashMap<FlowId, TlsLayer>,
    /// Records dropped because another view of the connection is reported.
    pub duplicate_views: u64,
    /// Request starts counted by the views that are not reported, per view.
    dups: HashMap<(FlowId, ObserverId), DupView>,
    /// Request starts the kernel counted on views that are not reported (the
    /// second view of a loopback connection): part of the kernel's
    /// `request_starts` baseline that is deliberately charged to no one.
    pub duplicate_view_requests: u64,
}

/// A view of a connection that another view reports: its request starts
/// are tallied (for the baseline), never reported.
#[derive(Debug)]
struct DupView {
    first_seen: u64,
    counted: u64,
    /// Seen in the latest poll, or ended (then kept for [`TOMBSTONE`]).
    seen: bool,
    ended: Option<Instant>,
}

/// Adds the request starts of a not-reported view since it was last looked at.
fn tally_dup(
    dups: &mut HashMap<(FlowId, ObserverId), DupView>,
    total: &mut u64,
    key: &FlowKey,
    stats: &FlowStats,
) {
    let fs = first_seen(stats);
    let d = dups.entry((flow_id(key), view(key))).or_insert(DupView {
        first_seen: fs,
        counted: 0,
        seen: true,
        ended: None,
    });
    let starts = totals_requests(stats);
    if (fs != 0 && d.first_seen != 0 && fs != d.first_seen) || starts < d.counted {
        // A new connection on the 4-tuple, or a recreated entry.
        *d = DupView {
            first_seen: fs,
            counted: 0,
            seen: true,
            ended: None,
        };
    }
    *total = total.saturating_add(starts - d.counted);
    d.counted = starts;
    d.seen = true;
    if stats.state & flow_state::ENDED != 0 && d.ended.is_none() {
        d.ended = Some(Instant::now());
    }
}

impl Tracker {
    /// A sample: reported unless another view of the connection is. The
    /// first view seen claims the connection. Late samples of an ended
    /// connection are still delivered (their data is real) but do not
    /// revive it.
    pub fn admit_sample(&mut self, key: &FlowKey) -> bool {
        let v = view(key);
        let t = self
            .flows
            .entry(flow_id(key))
            .or_insert_with(|| Tracked::new(v, 0));
        if t.view == v {
            true
        } else {
            self.duplicate_views += 1;
            false
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
        let side = socket_side(key.observer)?;
        if cgroup_id == 0 {
            return None;
        }
        let id = flow_id(key);
        let t = self.flows.get_mut(&id)?;
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
            flow: id,
            side,
            cgroup_id,
            pid,
        }))
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
        let id = flow_id(key);
        let tls_delta = self.tls_delta(id, tls);
        let v = view(key);
        let fs = first_seen(stats);
        let t = self.flows.entry(id).or_insert_with(|| Tracked::new(v, fs));
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
        finish(t, id, stats, tls_delta, reason, ts)
    }

    /// Request starts of a TLS layer not reported yet.
    fn tls_delta(&mut self, id: FlowId, tls: Option<&FlowStats>) -> u64 {
        let Some(s) = tls else {
            return 0;
        };
        self.tls
            .entry(id)
            .or_insert(TlsLayer {
                first_seen: first_seen(s),
                reported: 0,
            })
            .delta(s)
    }

    /// One poll of the kernel flow map: request-start deltas for live flows,
    /// ends whose record was lost, idle ends (`idle` lists keys the caller
    /// deleted from the kernel map for idleness), and evictions. Client-socket
    /// views go first so they win new claims.
    ///
    /// TLS plaintext layers go before the wire views: their request-start
    /// deltas are reported for the connection (so they precede a wire end of
    /// the same poll); they never claim it, never end it, and their kernel
    /// entries are deleted once the wire flow has ended (or, by the caller,
    /// when idle).
    pub fn poll(
        &mut self,
        mut entries: Vec<(FlowKey, FlowStats)>,
        idle: &[FlowKey],
        now: Nanos,
    ) -> PollOutcome {
        let mut out = PollOutcome::default();
        let (tls, wire): (Vec<_>, Vec<_>) = entries
            .drain(..)
            .partition(|(k, _)| k.observer == observer::TLS_PLAINTEXT);
        let mut entries = wire;
        let mut tls_seen = std::collections::HashSet::new();
        for (key, stats) in &tls {
            let id = flow_id(key);
            if self.flows.get(&id).is_some_and(|t| t.ended.is_some()) {
                // Its last starts went out with the wire end.
                out.delete.push(*key);
                self.tls.remove(&id);
                continue;
            }
            tls_seen.insert(id);
            let delta = self.tls_delta(id, Some(stats));
            if delta > 0 {
                out.events.push(Event::RequestStarts {
                    ts: now,
                    flow: id,
                    count: delta,
                });
            }
            if idle.contains(key) {
                self.tls.remove(&id);
            }
        }
        self.tls.retain(|id, _| tls_seen.contains(id));
        entries.sort_by_key(|(k, _)| k.observer != observer::CLIENT_SOCKET);
        let mut seen = std::collections::HashSet::new();
        for (key, stats) in &entries {
            let id = flow_id(key);
            let v = view(key);
            let fs = first_seen(stats);
            let ended_in_kernel = stats.state & flow_state::ENDED != 0;
            let t = self.flows.entry(id).or_insert_with(|| Tracked::new(v, fs));
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
                continue;
            }
            if t.ended.is_some() {
                if t.same_connection(fs) {
                    // Ended here while the kernel still counted: a poll that
                    // missed the entry twice (map iteration under churn
                    // skips keys) took it for evicted. Its later starts
                    // still count.
                    out.events.extend(late_starts(t, id, stats, 0, now));
                    // Keep the claim while the entry lives, so it is never
                    // taken for a new connection that counts from zero.
                    t.ended = Some(Instant::now());
                    if ended_in_kernel {
                        out.delete.push(*key);
                    }
                    continue;
                }
                // A new connection on the same 4-tuple.
                *t = Tracked::new(v, fs);
            }
            if t.first_seen == 0 {
                t.first_seen = fs;
            }
            // The kernel entry of a live connection was recreated (LRU
            // eviction, or deleted when its endpoint rule changed): its
            // counters restarted, so count from zero again rather than
            // swallow the new requests.
            if !t.same_connection(fs) || totals_requests(stats) < t.reported {
                t.first_seen = fs;
                t.reported = 0;
            }
            seen.insert(id);
            t.missing = 0;
            let totals = totals(stats);
            t.last_totals = Some(totals);
            if ended_in_kernel {
                if stats.state & flow_state::END_RECORD_LOST != 0 {
                    out.events.extend(
                        finish(t, id, stats, 0, end_reason(stats.state), now)
                            .into_iter()
                            .flatten(),
                    );
                    out.delete.push(*key);
                }
                // Otherwise the record is on its way through the ring,
                // behind this flow's samples; it reports the end.
                continue;
            }
            let delta = totals.request_starts[0].saturating_sub(t.reported);
            if delta > 0 {
                t.reported = totals.request_starts[0];
                out.events.push(Event::RequestStarts {
                    ts: now,
                    flow: id,
                    count: delta,
                });
            }
            if idle.contains(key) {
                t.ended = Some(Instant::now());
                out.events.push(Event::FlowEnd {
                    ts: now,
                    flow: id,
                    reason: FlowEndReason::Idle,
                    totals: Some(totals),
                });
            }
        }
        let now_i = Instant::now();
        for (id, t) in &mut self.flows {
            if t.ended.is_some() || seen.contains(id) {
                continue;
            }
            t.missing += 1;
            if t.missing >= MISSING_POLLS {
                t.ended = Some(now_i);
                out.events.push(Event::FlowEnd {
                    ts: now,
                    flow: *id,
                    reason: FlowEndReason::Idle,
                    totals: t.last_totals,
                });
            }
        }
        self.flows
            .retain(|_, t| t.ended.is_none_or(|e| now_i.duration_since(e) < TOMBSTONE));
        // A view gone from the map without an end was evicted or deleted.
        self.dups.retain(|_, d| match d.ended {
            Some(e) => now_i.duration_since(e) < TOMBSTONE,
            None => std::mem::replace(&mut d.seen, false),
        });
        out
    }
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
#[path = "flow_map_tests.rs"]
mod tests;
