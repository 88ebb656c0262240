//! The flow table: orients pcap packets, reassembles the first bytes of each
//! direction within a bound, and collects per-flow facts (protocol, TLS
//! handshake, HTTP request heads) for the engine in `policy`.
//!
//! Cost per packet is one hash lookup and a few counters once a flow's
//! handshake is parsed; bytes are copied only into the bounded prefixes.

pub mod dissect;
pub mod facts;
mod orient;
mod payload;
pub mod plain;
pub mod reassembly;
mod requests;
pub mod responses;
pub mod wire_h2;

use std::{collections::VecDeque, hash::BuildHasher, net::SocketAddr};

pub use facts::{Protocol, Request, TlsFacts, TlsSlot, TlsVersion};
use hashbrown::{HashTable, hash_table::Entry};
pub use orient::Orientation;
pub use plain::{Inner, Plain};

use self::{
    payload::{finish_flow, on_payload},
    reassembly::StreamPrefix,
    requests::RequestCursor,
};
use crate::{
    event::{Direction, FlowEndReason, FlowId, FlowTotals, Nanos, Packet, Plaintext, tcp_flags},
    protocol::http::CredentialHeaders,
};

/// Seconds to nanoseconds.
const SEC: Nanos = 1_000_000_000;

/// Bounds of the flow table.
#[derive(Clone, Debug)]
pub struct FlowConfig {
    /// Bytes reassembled per direction from the start of a flow.
    pub prefix_cap: usize,
    /// A flow with no packet for this long ends as idle.
    pub idle_timeout: Nanos,
    /// How long an ended flow stays to absorb its last ACKs.
    pub closed_linger: Nanos,
    /// Flows tracked at once; the least recently queued is evicted past it.
    pub max_flows: usize,
    /// Bytes all reassembly buffers may hold together; past it new bytes
    /// are not buffered (segments are still looked at one by one).
    pub max_buffered: usize,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            prefix_cap: 16 * 1024,
            idle_timeout: 120 * SEC,
            closed_linger: 10 * SEC,
            max_flows: 262_144,
            max_buffered: 128 << 20,
        }
    }
}

/// Counters of the flow table, for metrics and the replay summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowTableStats {
    pub flows: u64,
    pub expired: u64,
    /// Flows dropped because the table was full.
    pub evicted: u64,
    /// Packets for a flow that had already ended (late ACKs, retransmits).
    pub late_packets: u64,
    /// Reassembly holes that never filled and truncated captures.
    pub gaps: u64,
    /// Segments not buffered because `max_buffered` was reached.
    pub over_budget: u64,
}

/// What a packet changed, for the engine to act on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub new_flow: bool,
    pub protocol: bool,
    pub client_hello: bool,
    pub server_hello: bool,
    pub client_cert: bool,
    /// The client's handshake flight is over (first application data).
    pub client_finished: bool,
    /// Number of request heads appended to the request buffer.
    pub requests: usize,
    /// Answers waiting in [`Flow::responses`].
    pub answers: usize,
    pub ended: Option<FlowEndReason>,
}

impl Changes {
    pub fn any(&self) -> bool {
        *self != Self::default()
    }
}

/// Everything known about one flow. `T` is the engine's per-flow state.
#[derive(Debug)]
pub struct Flow<T> {
    pub id: FlowId,
    pub first_seen: Nanos,
    pub last_seen: Nanos,
    pub orientation: Orientation,
    pub totals: FlowTotals,
    pub protocol: Protocol,
    /// Allocated by the first TLS fact (see [`TlsSlot`]).
    pub tls: TlsSlot,
    /// Requests seen (parsed heads; the engine adds kernel counts).
    pub requests: u64,
    /// Set when the flow ended by FIN/RST; it lingers until expiry.
    pub ended: Option<FlowEndReason>,
    fin: [bool; 2],
    streams: [StreamPrefix; 2],
    cursor: RequestCursor,
    /// The connection's clear text, when TLS library probes deliver it.
    pub plain: Option<Box<Plain>>,
    /// The HTTP/2 decoder of an h2c flow.
    pub h2: Option<Box<wire_h2::WireH2>>,
    /// Requests paired with their responses; the engine takes the answers.
    pub responses: responses::Responses,
    pub ext: T,
}

impl<T: Default> Flow<T> {
    fn new(id: FlowId, orientation: Orientation, ts: Nanos) -> Self {
        Self {
            id,
            first_seen: ts,
            last_seen: ts,
            orientation,
            totals: FlowTotals::default(),
            protocol: Protocol::Unknown,
            tls: TlsSlot::default(),
            requests: 0,
            ended: None,
            fin: [false; 2],
            streams: Default::default(),
            cursor: RequestCursor::default(),
            plain: None,
            h2: None,
            responses: responses::Responses::default(),
            ext: T::default(),
        }
    }
}

impl<T> Flow<T> {
    /// Heap bytes held by the flow's reassembly buffers.
    pub fn buffered(&self) -> usize {
        self.streams[0].buffered()
            + self.streams[1].buffered()
            + self.plain.as_ref().map_or(0, |p| p.buffered())
            + self.h2.as_ref().map_or(0, |h| h.buffered())
    }

    /// Last look at a flow leaving the table without having ended: partial
    /// request heads count now. Marks it ended with `reason`.
    pub fn finish(
        &mut self,
        reason: FlowEndReason,
        creds: &CredentialHeaders,
        requests: &mut Vec<Request>,
    ) -> Changes {
        let mut changes = Changes {
            ended: Some(reason),
            ..Changes::default()
        };
        if self.ended.is_none() {
            finish_flow(self, creds, requests, &mut changes);
            self.ended = Some(reason);
        }
        changes
    }

    /// Drops what only parsing more of the flow needs (the HTTP/2 decoder
    /// and its HPACK tables), once the engine has judged the flow's end: an
    /// ended flow lingers for its last ACKs, which are counted, not parsed.
    pub fn settle(&mut self) {
        if self.ended.is_some() {
            self.h2 = None;
        }
    }

    /// Reassembly holes and truncations in both directions.
    pub fn gaps(&self) -> u32 {
        self.streams[0]
            .gaps
            .saturating_add(self.streams[1].gaps)
            .saturating_add(self.plain.as_ref().map_or(0, |p| p.gaps))
    }
}

/// Flows keyed by their unordered address pair, packed so that hashing and
/// comparing a key is a few integer operations (IPv4 as IPv4-mapped IPv6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    lo_ip: u128,
    hi_ip: u128,
    ports: u32,
}

fn ip128(ip: std::net::IpAddr) -> u128 {
    match ip {
        std::net::IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        std::net::IpAddr::V6(v6) => u128::from(v6),
    }
}

fn key_of(a: SocketAddr, b: SocketAddr) -> Key {
    let (a, b) = ((ip128(a.ip()), a.port()), (ip128(b.ip()), b.port()));
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    Key {
        lo_ip: lo.0,
        hi_ip: hi.0,
        ports: u32::from(lo.1) << 16 | u32::from(hi.1),
    }
}

/// A flow's key, from its id (either orientation gives the same key).
fn key_of_flow<T>(f: &Flow<T>) -> Key {
    key_of(f.id.client, f.id.server)
}

type Hasher = foldhash::fast::FixedState;

/// The flow table. Flows are boxed and a slot of the hash table is only the
/// pointer (8 bytes; the key is the flow's id): the table's spare capacity
/// (up to half of it after it doubles) costs pointers, not flows, and the
/// slots of the flows being read stay in the cache. With the key stored
/// next to the pointer (64-byte slots, 8 MiB at 84k flows) the lookup
/// missed the cache on most packets of the replay bench.
pub struct FlowTable<T> {
    cfg: FlowConfig,
    flows: HashTable<Box<Flow<T>>>,
    hasher: Hasher,
    /// Flows in the order they were last queued for an expiry check; an
    /// entry is re-queued when its flow turns out to be still active.
    expiry: VecDeque<(Nanos, Key)>,
    /// Flows that left the table (idle, evicted), for the engine to finish.
    pub removed: Vec<Box<Flow<T>>>,
    pub stats: FlowTableStats,
    /// Headers whose values are credentials (the standard ones and those
    /// the contract names).
    credential_headers: CredentialHeaders,
    /// Sum of [`Flow::buffered`] over the table.
    buffered: usize,
}

impl<T: Default> FlowTable<T> {
    pub fn new(cfg: FlowConfig) -> Self {
        Self {
            flows: HashTable::with_capacity(cfg.max_flows.min(1 << 14)),
            hasher: Hasher::default(),
            cfg,
            expiry: VecDeque::new(),
            removed: Vec::new(),
            stats: FlowTableStats::default(),
            credential_headers: CredentialHeaders::STANDARD,
            buffered: 0,
        }
    }

    /// Sets the headers whose values are credentials.
    pub fn set_credential_headers(&mut self, headers: CredentialHeaders) {
        self.credential_headers = headers;
    }

    pub fn credential_headers(&self) -> &CredentialHeaders {
        &self.credential_headers
    }

    /// Heap bytes held by reassembly buffers.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Flow<T>> {
        self.flows.iter().map(|f| &**f)
    }

    pub fn get_mut(&mut self, id: &FlowId) -> Option<&mut Flow<T>> {
        let key = key_of(id.client, id.server);
        self.flows
            .find_mut(self.hasher.hash_one(key), |f| key_of_flow(f) == key)
            .map(|f| &mut **f)
    }

    fn contains(&self, key: Key) -> bool {
        self.flows
            .find(self.hasher.hash_one(key), |f| key_of_flow(f) == key)
            .is_some()
    }

    fn remove(&mut self, key: Key) -> Option<Box<Flow<T>>> {
        let entry = self
            .flows
            .find_entry(self.hasher.hash_one(key), |f| key_of_flow(f) == key)
            .ok()?;
        Some(entry.remove().0)
    }

    /// Feeds one packet. `is_server` says whether an address is a watched
    /// server (a contract endpoint or in scope), for orienting pcap flows.
    /// Returns the flow, the packet's direction and what changed.
    pub fn packet(
        &mut self,
        p: &Packet,
        is_server: &dyn Fn(SocketAddr) -> bool,
        requests: &mut Vec<Request>,
    ) -> (&mut Flow<T>, Direction, Changes) {
        let key = key_of(p.src, p.dst);
        let mut changes = Changes::default();
        let fresh_syn = p.flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
        if self.flows.len() >= self.cfg.max_flows && !self.contains(key) {
            self.evict_one(key);
        }
        let make = || {
            let (id, orientation) = orient::orient(p, is_server);
            Box::new(Flow::new(id, orientation, p.ts))
        };
        // One hash lookup per packet.
        let hasher = &self.hasher;
        let flow: &mut Flow<T> = match self.flows.entry(
            hasher.hash_one(key),
            |f| key_of_flow(f) == key,
            |f| hasher.hash_one(key_of_flow(f)),
        ) {
            Entry::Occupied(o) => {
                let f = o.into_mut();
                if f.ended.is_some() && fresh_syn {
                    // A new connection on the same address pair; the old one
                    // is reported.
                    let old = std::mem::replace(f, make());
                    self.buffered = self.buffered.saturating_sub(old.buffered());
                    self.removed.push(old);
                    changes.new_flow = true;
                }
                f
            }
            Entry::Vacant(v) => {
                changes.new_flow = true;
                v.insert(make()).into_mut()
            }
        };
        if changes.new_flow {
            self.expiry.push_back((p.ts, key));
            self.stats.flows += 1;
        }
        let cfg = &self.cfg;
        let buffered = &mut self.buffered;
        let creds = &self.credential_headers;
        let stats = &mut self.stats;
        if !changes.new_flow {
            orient::maybe_reorient(flow, p);
        }
        let dir = p.direction.unwrap_or(if p.src == flow.id.client {
            Direction::ToServer
        } else {
            Direction::ToClient
        });
        flow.last_seen = flow.last_seen.max(p.ts);
        let i = dir.index();
        // Saturating: a flow end's kernel totals replace these, and a
        // corrupt record may carry any value (found by fuzzing).
        let t = &mut flow.totals;
        t.packets[i] = t.packets[i].saturating_add(1);
        t.bytes[i] = t.bytes[i].saturating_add(u64::from(p.payload_len));
        if p.payload_len > 0 {
            t.payload_bytes[i] = t.payload_bytes[i].saturating_add(u64::from(p.payload_len));
            t.payload_segments[i] = t.payload_segments[i].saturating_add(1);
        }
        if flow.ended.is_some() {
            // Last ACKs after FIN (counted above, not parsed).
            stats.late_packets += 1;
            return (flow, dir, changes);
        }
        if p.flags & tcp_flags::SYN != 0 {
            flow.streams[i].syn(p.seq);
        }
        if !p.payload.is_empty() {
            let gaps_before = flow.gaps();
            let held_before = flow.buffered();
            // Over budget, no new buffer starts; started ones may finish.
            let cap = if *buffered >= cfg.max_buffered && flow.streams[i].bytes().is_empty() {
                stats.over_budget += 1;
                0
            } else {
                cfg.prefix_cap
            };
            on_payload(flow, dir, p, cap, creds, requests, &mut changes);
            stats.gaps += u64::from(flow.gaps().saturating_sub(gaps_before));
            *buffered = (*buffered + flow.buffered()).saturating_sub(held_before);
        }
        if p.flags & tcp_flags::RST != 0 {
            changes.ended = Some(FlowEndReason::Rst);
        } else if p.flags & tcp_flags::FIN != 0 {
            flow.fin[i] = true;
            if flow.fin == [true; 2] {
                changes.ended = Some(FlowEndReason::Fin);
            }
        }
        if let Some(reason) = changes.ended {
            let held_before = flow.buffered();
            finish_flow(flow, creds, requests, &mut changes);
            *buffered = buffered.saturating_sub(held_before);
            flow.ended = Some(reason);
        }
        (flow, dir, changes)
    }

    /// Feeds one chunk of a TLS connection's clear text. A connection the
    /// table does not know (older than the capture, or expired while its
    /// plaintext went on) starts here, oriented by the probe.
    pub fn plaintext(
        &mut self,
        pt: &Plaintext,
        requests: &mut Vec<Request>,
    ) -> (&mut Flow<T>, Changes) {
        let key = key_of(pt.flow.client, pt.flow.server);
        let mut changes = Changes::default();
        if self.flows.len() >= self.cfg.max_flows && !self.contains(key) {
            self.evict_one(key);
        }
        let hasher = &self.hasher;
        let flow: &mut Flow<T> = match self.flows.entry(
            hasher.hash_one(key),
            |f| key_of_flow(f) == key,
            |f| hasher.hash_one(key_of_flow(f)),
        ) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                changes.new_flow = true;
                v.insert(Box::new(Flow::new(pt.flow, Orientation::Kernel, pt.ts)))
                    .into_mut()
            }
        };
        if changes.new_flow {
            self.expiry.push_back((pt.ts, key));
            self.stats.flows += 1;
        }
        flow.last_seen = flow.last_seen.max(pt.ts);
        if flow.ended.is_some() {
            self.stats.late_packets += 1;
            return (flow, changes);
        }
        let held_before = flow.buffered();
        // Over budget, no new buffer starts; started ones may finish.
        let started = flow.plain.as_ref().is_some_and(|p| p.buffered() > 0);
        let cap = if self.buffered >= self.cfg.max_buffered && !started {
            self.stats.over_budget += 1;
            0
        } else {
            self.cfg.prefix_cap
        };
        let gaps_before = flow.gaps();
        plain::on_chunk(
            flow,
            pt,
            cap,
            &self.credential_headers,
            requests,
            &mut changes,
        );
        self.stats.gaps += u64::from(flow.gaps().saturating_sub(gaps_before));
        self.buffered = (self.buffered + flow.buffered()).saturating_sub(held_before);
        (flow, changes)
    }

    /// Ends a flow on the word of the capture (kernel `FlowEnd`). Returns its
    /// final changes (requests flushed from partial heads).
    pub fn end(
        &mut self,
        id: &FlowId,
        reason: FlowEndReason,
        requests: &mut Vec<Request>,
    ) -> Option<(&mut Flow<T>, Changes)> {
        let key = key_of(id.client, id.server);
        let flow: &mut Flow<T> = self
            .flows
            .find_mut(self.hasher.hash_one(key), |f| key_of_flow(f) == key)?;
        if flow.ended.is_some() {
            return None;
        }
        let mut changes = Changes {
            ended: Some(reason),
            ..Changes::default()
        };
        let held_before = flow.buffered();
        finish_flow(flow, &self.credential_headers, requests, &mut changes);
        self.buffered = self.buffered.saturating_sub(held_before);
        flow.ended = Some(reason);
        Some((flow, changes))
    }

    /// Moves flows idle at `now` (and ended flows past their linger) to
    /// [`FlowTable::removed`]; the engine finishes those not ended yet
    /// ([`Flow::finish`]).
    pub fn expire(&mut self, now: Nanos) {
        while let Some(&(queued, key)) = self.expiry.front() {
            let Some(flow) = self
                .flows
                .find(self.hasher.hash_one(key), |f| key_of_flow(f) == key)
            else {
                self.expiry.pop_front();
                continue;
            };
            let timeout = if flow.ended.is_some() {
                self.cfg.closed_linger
            } else {
                self.cfg.idle_timeout
            };
            if queued.saturating_add(timeout) > now {
                break;
            }
            self.expiry.pop_front();
            if flow.last_seen.saturating_add(timeout) > now {
                self.expiry.push_back((flow.last_seen, key));
                continue;
            }
            if let Some(flow) = self.remove(key) {
                if flow.ended.is_none() {
                    self.stats.expired += 1;
                }
                self.retire(flow);
            }
        }
    }

    /// Moves every flow to [`FlowTable::removed`] (end of a capture), in
    /// the order they started.
    pub fn drain(&mut self) {
        self.expiry.clear();
        self.buffered = 0;
        // Sort the boxes by what orders them, (first_seen, id); no two flows
        // in the table share an id, so the order is total. The start time
        // is read once per flow next to its pointer: comparing through the
        // boxes missed the cache twice per comparison with 84k flows.
        let mut by_start: Vec<(Nanos, Box<Flow<T>>)> =
            self.flows.drain().map(|f| (f.first_seen, f)).collect();
        by_start.sort_unstable_by(|(ta, a), (tb, b)| ta.cmp(tb).then_with(|| a.id.cmp(&b.id)));
        self.removed.extend(by_start.into_iter().map(|(_, f)| f));
    }

    fn evict_one(&mut self, keep: Key) {
        while let Some((_, key)) = self.expiry.pop_front() {
            if key == keep {
                continue;
            }
            if let Some(flow) = self.remove(key) {
                if flow.ended.is_none() {
                    self.stats.evicted += 1;
                }
                self.retire(flow);
                return;
            }
        }
    }

    fn retire(&mut self, flow: Box<Flow<T>>) {
        self.buffered = self.buffered.saturating_sub(flow.buffered());
        self.removed.push(flow);
    }
}
