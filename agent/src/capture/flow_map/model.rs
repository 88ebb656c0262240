//! The tracker against a model of the kernel: a flow map whose entries
//! count request starts, a small lossy ring, polls read a chunk at a time
//! while records keep arriving, deletions applied late, 4-tuples reused.
//! Whatever the interleaving, every request start the kernel put in an
//! entry is reported exactly once (the balance the flood test checks on a
//! real kernel, where a failure is rare and hard to explain).

use std::collections::{BTreeMap, VecDeque};

use agent_common::{FlowKey, FlowStats, flow_state};

use super::{PollRun, Tracker};
use crate::event::{Event, FlowEndReason};

/// xorshift64*: deterministic per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

enum Record {
    Sample(FlowKey),
    End(FlowKey, FlowStats),
}

/// A poll in progress: its keys, how far it got, and the run.
struct Poll {
    keys: Vec<FlowKey>,
    at: usize,
    run: PollRun,
}

#[derive(Default)]
struct Model {
    map: BTreeMap<u16, FlowStats>,
    ring: VecDeque<Record>,
    /// Client ports with a live connection.
    live: Vec<u16>,
    /// Request starts the kernel put in entries (every incarnation).
    counted: u64,
    /// Request starts on an ended entry (the kernel's `stray`).
    stray: u64,
    reported: u64,
    pending_delete: Vec<FlowKey>,
    poll: Option<Poll>,
    now: u64,
    /// What happened, step by step: kept only when a failing seed is run
    /// again to explain itself.
    log: Option<Vec<String>>,
}

const RING: usize = 4;
const PORTS: u16 = 3;
const CHUNK: usize = 2;
/// Packets per tick of the kernel's first-seen clock: 1, every connection
/// gets its own stamp. With a coarser clock, two connections on one
/// 4-tuple within a tick look like one and the second one's starts can
/// vanish into the first one's total (a 4-tuple reused within
/// milliseconds; see `docs/architecture.md`).
const STAMP_DIV: u64 = 1;

fn key(port: u16) -> FlowKey {
    FlowKey {
        client_port: port,
        server_port: 8080,
        ..crate::capture::ring::tests::key()
    }
}

impl Model {
    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(log) = &mut self.log {
            log.push(line());
        }
    }

    fn tally(&mut self, events: impl IntoIterator<Item = Event>) {
        for e in events {
            if let Event::RequestStarts { count, flow, .. } = e {
                self.note(|| format!("  reported {count} for {}", flow.client.port()));
                self.reported += count;
            }
        }
    }

    /// One packet of the connection on `port`, as `track.rs` handles it:
    /// `request` counts a start, `syn` may create the entry, `end` ends it.
    fn packet(&mut self, port: u16, request: bool, syn: bool, end: bool) {
        self.now += 1;
        let before = self
            .map
            .get(&port)
            .map(|s| (s.dirs[0].request_starts, s.dirs[0].first_seen_ns, s.state));
        self.note(|| format!("packet {port} request={request} syn={syn} end={end} map={before:?}"));
        // The coarse clock: connections close together share a stamp.
        let stamp = 1 + self.now / STAMP_DIV;
        let entry = match self.map.get_mut(&port) {
            Some(s) if s.state & flow_state::ENDED != 0 => {
                if request {
                    self.stray += 1;
                }
                return;
            }
            Some(s) => s,
            None => {
                if end || !(syn || request) {
                    if request {
                        self.stray += 1;
                    }
                    return;
                }
                let mut s = FlowStats::default();
                s.dirs[0].first_seen_ns = stamp;
                self.map.entry(port).or_insert(s)
            }
        };
        entry.dirs[0].packets += 1;
        entry.dirs[0].last_seen_ns = stamp;
        if request {
            if self.ring.len() < RING {
                self.ring.push_back(Record::Sample(key(port)));
            }
            entry.dirs[0].request_starts += 1;
            self.counted += 1;
        }
        if end {
            entry.state |= flow_state::ENDED;
            if self.ring.len() < RING {
                self.ring.push_back(Record::End(key(port), *entry));
            } else {
                entry.state |= flow_state::END_RECORD_LOST;
            }
        }
    }

    fn read_record(&mut self, tracker: &mut Tracker) {
        self.note(|| "read record".into());
        match self.ring.pop_front() {
            Some(Record::Sample(k)) => {
                let (_, socket) = tracker.sample(&k, 0, 0);
                self.tally(socket);
            }
            Some(Record::End(k, s)) => {
                let out = tracker.flow_end(&k, &s, None, FlowEndReason::Fin, 0);
                self.tally(out.into_iter().flatten());
            }
            None => {}
        }
    }

    /// Starts a poll, or reads its next chunk, or finishes it.
    fn poll_step(&mut self, tracker: &mut Tracker) {
        let at = self.poll.as_ref().map(|p| p.at);
        self.note(|| format!("poll step (at {at:?})"));
        match self.poll.take() {
            None => {
                // The previous poll's deletions come first (`poll_flows`).
                for k in std::mem::take(&mut self.pending_delete) {
                    self.map.remove(&k.client_port);
                }
                let keys = self.map.keys().map(|p| key(*p)).collect();
                self.poll = Some(Poll {
                    keys,
                    at: 0,
                    run: tracker.start_poll(0),
                });
            }
            Some(mut p) if p.at < p.keys.len() => {
                let end = (p.at + CHUNK).min(p.keys.len());
                let chunk: Vec<(FlowKey, FlowStats, bool)> = p.keys[p.at..end]
                    .iter()
                    .filter_map(|k| self.map.get(&k.client_port).map(|s| (*k, *s, false)))
                    .collect();
                tracker.poll_chunk(&mut p.run, &chunk);
                p.at = end;
                self.poll = Some(p);
            }
            Some(p) => {
                let out = tracker.finish_poll(p.run);
                self.tally(out.events);
                self.pending_delete = out.delete;
            }
        }
    }
}

/// One random run; `Err` with the balance (and the steps, if `log`) when
/// the reported starts differ from the kernel's.
fn run(
    seed: u64,
    steps: usize,
    tombstone: Option<std::time::Duration>,
    log: bool,
) -> Result<(), String> {
    let mut rng = Rng(seed | 1);
    let mut m = Model {
        log: log.then(Vec::new),
        ..Model::default()
    };
    let mut t = Tracker {
        tombstone,
        ..Tracker::default()
    };
    for _ in 0..steps {
        match rng.below(10) {
            0 | 1 => {
                let free: Vec<u16> = (1..=PORTS).filter(|p| !m.live.contains(p)).collect();
                if !free.is_empty() {
                    let port = free[rng.below(free.len() as u64) as usize];
                    m.live.push(port);
                    m.packet(port, false, true, false);
                }
            }
            2 | 3 => {
                if !m.live.is_empty() {
                    let port = m.live[rng.below(m.live.len() as u64) as usize];
                    m.packet(port, true, false, false);
                }
            }
            4 => {
                if !m.live.is_empty() {
                    let i = rng.below(m.live.len() as u64) as usize;
                    let port = m.live.swap_remove(i);
                    m.packet(port, false, false, true);
                }
            }
            5 | 6 => m.read_record(&mut t),
            _ => m.poll_step(&mut t),
        }
    }
    // Everything ends; the agent catches up.
    for port in std::mem::take(&mut m.live) {
        m.packet(port, false, false, true);
    }
    for _ in 0..200 {
        m.read_record(&mut t);
        m.poll_step(&mut t);
    }
    assert!(m.ring.is_empty(), "seed {seed}: records left in the ring");
    if m.reported == m.counted {
        return Ok(());
    }
    Err(format!(
        "seed {seed}: reported {} of {} request starts (stray {}); map left {:?}\n{}",
        m.reported,
        m.counted,
        m.stray,
        m.map,
        m.log.unwrap_or_default().join("\n")
    ))
}

#[test]
fn every_request_start_in_the_map_is_reported_once_whatever_the_interleaving() {
    for steps in [20, 60, 300] {
        for seed in 0..2_000 {
            for tombstone in [None, Some(std::time::Duration::ZERO)] {
                if run(seed, steps, tombstone, false).is_err() {
                    // Again, step by step, for the message.
                    let failure = run(seed, steps, tombstone, true).unwrap_err();
                    panic!("{failure}");
                }
            }
        }
    }
}
