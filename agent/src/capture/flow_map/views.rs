//! The views of a connection that are not its claim: its TLS plaintext
//! layer (request starts reported for the connection) and the duplicate
//! wire views (request starts tallied for the baseline, never reported).

use std::time::Instant;

use agent_common::{FlowKey, FlowStats, flow_state};

use super::{
    HashMap,
    convert::{Conn, ObserverId, first_seen, totals_requests, view},
};

/// Reporting state of one connection's TLS plaintext layer.
#[derive(Debug)]
pub(super) struct TlsLayer {
    first_seen: u64,
    /// Request starts to the server already reported.
    reported: u64,
    /// The poll that last saw its entry.
    pub(super) polled: u32,
}

impl TlsLayer {
    pub(super) fn new(s: &FlowStats, polled: u32) -> Self {
        Self {
            first_seen: first_seen(s),
            reported: 0,
            polled,
        }
    }

    /// The delta since the last report, for the entry `s` (a recreated
    /// entry, with another first-seen stamp or fewer starts, counts from 0).
    pub(super) fn delta(&mut self, s: &FlowStats) -> u64 {
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

/// A view of a connection that another view reports: its request starts
/// are tallied (for the baseline), never reported.
#[derive(Debug)]
pub(super) struct DupView {
    first_seen: u64,
    counted: u64,
    /// Seen in the latest poll, or ended (then kept for
    /// [`super::TOMBSTONE`]).
    pub(super) seen: bool,
    pub(super) ended: Option<Instant>,
}

/// Adds the request starts of a not-reported view since it was last looked at.
pub(super) fn tally_dup(
    dups: &mut HashMap<(Conn, ObserverId), DupView>,
    total: &mut u64,
    key: &FlowKey,
    stats: &FlowStats,
) {
    let fs = first_seen(stats);
    let d = dups.entry((Conn::of(key), view(key))).or_insert(DupView {
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
