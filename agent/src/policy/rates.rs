//! Per (client, endpoint) request accounting: the token bucket that decides
//! `quota_overshoot` and the observed rate reported with it and shown by
//! `rampwatch clients`, and the rate over a longer window that readiness
//! compares with the next stage's quota. Time is event time (packet
//! timestamps).

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use super::view::StageQuota;
use crate::event::Nanos;

const SEC: Nanos = 1_000_000_000;

/// Slots of the readiness window: its resolution is the window / `SLOTS`.
const SLOTS: i64 = 60;

/// How long readiness rates are averaged over (`readinessWindow` in the
/// agent config; 5 minutes by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateWindow(pub Nanos);

impl Default for RateWindow {
    fn default() -> Self {
        Self(300 * SEC)
    }
}

impl RateWindow {
    fn slot_width(self) -> Nanos {
        (self.0 / SLOTS).max(1)
    }
}

/// Requests per slot over the last window: a bounded ring (at most
/// `SLOTS` + 1 entries per client × endpoint).
#[derive(Clone, Debug, Default)]
struct Recent {
    /// (slot index, requests), oldest first.
    slots: VecDeque<(i64, u64)>,
}

impl Recent {
    fn add(&mut self, n: u64, t: Nanos, width: Nanos) {
        let slot = t.div_euclid(width);
        // Out of order by more than a slot: counted in the first slot after
        // it, still inside the window as long as it is.
        match self.slots.iter_mut().find(|(s, _)| *s >= slot) {
            Some((_, c)) => *c = c.saturating_add(n),
            None => self.slots.push_back((slot, n)),
        }
        let newest = self.slots.back().map_or(slot, |(s, _)| *s);
        while self
            .slots
            .front()
            .is_some_and(|(s, _)| *s <= newest - SLOTS)
        {
            self.slots.pop_front();
        }
    }

    /// Requests in the `SLOTS` slots up to `t`'s.
    fn sum(&self, t: Nanos, width: Nanos) -> u64 {
        let now = t.div_euclid(width);
        self.slots
            .iter()
            .filter(|(s, _)| *s > now - SLOTS && *s <= now)
            .map(|(_, c)| *c)
            .sum()
    }
}

/// One client on one endpoint.
#[derive(Clone, Debug)]
pub struct Bucket {
    tokens: f64,
    last: Nanos,
    pub quota: StageQuota,
    /// StageQuota generation (contract load × stage) `quota` belongs to.
    quota_gen: u64,
    /// Requests in second `sec` and in the one before it.
    sec: i64,
    cur: u64,
    prev: u64,
    pub total: u64,
    pub last_seen: Nanos,
    recent: Recent,
    slot_width: Nanos,
    /// The last overshoot detail and the (rate, quota) in tenths it was
    /// written for: a burst repeats it thousands of times.
    pub detail: Option<((i64, i64), String)>,
}

impl Bucket {
    #[cfg(test)]
    fn new(quota: StageQuota, quota_gen: u64, t: Nanos) -> Self {
        Self::windowed(quota, quota_gen, t, RateWindow::default())
    }

    fn windowed(quota: StageQuota, quota_gen: u64, t: Nanos, window: RateWindow) -> Self {
        Self {
            tokens: quota.burst,
            last: t,
            quota,
            quota_gen,
            sec: t.div_euclid(SEC),
            cur: 0,
            prev: 0,
            total: 0,
            last_seen: t,
            recent: Recent::default(),
            slot_width: window.slot_width(),
            detail: None,
        }
    }

    /// Takes `n` requests at `t`; returns how many found no token.
    pub fn take(&mut self, n: u64, t: Nanos) -> u64 {
        self.observe(n, t);
        if t > self.last {
            let dt = (t - self.last) as f64 / SEC as f64;
            self.tokens = (self.tokens + dt * self.quota.requests_per_second).min(self.quota.burst);
            self.last = t;
        }
        // Tokens are whole requests; a fraction does not admit one.
        let whole = self.tokens.floor().max(0.0);
        let allowed = (n as f64).min(whole);
        self.tokens -= allowed;
        n.saturating_sub(allowed as u64)
    }

    fn observe(&mut self, n: u64, t: Nanos) {
        let s = t.div_euclid(SEC);
        if s > self.sec {
            self.prev = if s == self.sec + 1 { self.cur } else { 0 };
            self.cur = 0;
            self.sec = s;
        }
        // Counts saturate: `n` can come from a kernel counter delta that a
        // damaged ring record sets to anything.
        if s >= self.sec {
            self.cur = self.cur.saturating_add(n);
        } else if s + 1 == self.sec {
            // Slightly out-of-order event time.
            self.prev = self.prev.saturating_add(n);
        }
        self.total = self.total.saturating_add(n);
        self.last_seen = self.last_seen.max(t);
        if n > 0 {
            self.recent.add(n, t, self.slot_width);
        }
    }

    /// Requests per second over the second before `t` (sliding window over
    /// two fixed one-second windows).
    pub fn rate(&self, t: Nanos) -> f64 {
        let s = t.div_euclid(SEC);
        let frac = t.rem_euclid(SEC) as f64 / SEC as f64;
        if s == self.sec {
            self.cur as f64 + self.prev as f64 * (1.0 - frac)
        } else if s == self.sec + 1 {
            self.cur as f64 * (1.0 - frac)
        } else {
            0.0
        }
    }
}

/// All buckets, by (client name, endpoint name): names survive a contract
/// reload, indexes do not.
#[derive(Debug, Default)]
pub struct Rates {
    window: RateWindow,
    /// The first event time seen: a window longer than what was observed
    /// averages over what was.
    since: Option<Nanos>,
    buckets: HashMap<(Arc<str>, Arc<str>), Bucket, foldhash::fast::FixedState>,
    /// Every watched request by (endpoint label, client label), `unlisted`
    /// and `unknown` included: what `rampwatch_requests_total` exports.
    totals: HashMap<(Arc<str>, Arc<str>), u64, foldhash::fast::FixedState>,
    /// Of `totals`, the requests the engine counted itself (HTTP/2 streams,
    /// lenient heads; every request in replay), not the kernel.
    pub(super) engine_counted: u64,
    /// Kernel-counted requests on flows to no watched endpoint (a port-only
    /// kernel rule whose Host named another site): in no total.
    pub(super) kernel_unwatched: u64,
}

impl Rates {
    pub fn with_window(window: RateWindow) -> Self {
        Self {
            window,
            ..Self::default()
        }
    }

    /// Notes that the engine saw an event at `t`.
    pub fn seen(&mut self, t: Nanos) {
        if self.since.is_none() {
            self.since = Some(t);
        }
    }

    /// The span readiness rates are averaged over at `t`: the window, or
    /// what was observed of it (at least a second).
    pub fn window_at(&self, t: Nanos) -> Nanos {
        let observed = self.since.map_or(0, |s| t.saturating_sub(s));
        observed.clamp(SEC, self.window.0.max(SEC))
    }

    /// Requests per second of `b` over [`Self::window_at`] `t`.
    pub fn window_rate(&self, b: &Bucket, t: Nanos) -> f64 {
        b.recent.sum(t, b.slot_width) as f64 / (self.window_at(t) as f64 / SEC as f64)
    }

    /// The bucket of `client` on `endpoint`, with its quota brought up to
    /// `quota_gen` (a stage change or reload changes the quota). A larger
    /// burst adds its difference to the tokens, so the moment a ramp opens
    /// (quota 0 before the first stage, or a doubled burst) does not read as
    /// an overshoot; a smaller one caps them.
    pub fn bucket(
        &mut self,
        client: &Arc<str>,
        endpoint: &Arc<str>,
        quota: StageQuota,
        quota_gen: u64,
        t: Nanos,
    ) -> &mut Bucket {
        let b = self
            .buckets
            .entry((client.clone(), endpoint.clone()))
            .or_insert_with(|| Bucket::windowed(quota, quota_gen, t, self.window));
        if b.quota_gen != quota_gen {
            let grown = (quota.burst - b.quota.burst).max(0.0);
            b.tokens = (b.tokens + grown).min(quota.burst);
            b.quota = quota;
            b.quota_gen = quota_gen;
        }
        b
    }

    pub fn iter(&self) -> impl Iterator<Item = (&(Arc<str>, Arc<str>), &Bucket)> {
        self.buckets.iter()
    }

    /// Counts `n` requests to `endpoint` from `client` (labels).
    pub fn count(&mut self, endpoint: &Arc<str>, client: &Arc<str>, n: u64) {
        let total = self
            .totals
            .entry((endpoint.clone(), client.clone()))
            .or_default();
        *total = total.saturating_add(n);
    }

    /// Requests so far by (endpoint label, client label).
    pub fn totals(&self) -> impl Iterator<Item = (&(Arc<str>, Arc<str>), u64)> {
        self.totals.iter().map(|(k, n)| (k, *n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: StageQuota = StageQuota {
        requests_per_second: 1.0,
        burst: 5.0,
    };

    #[test]
    fn burst_then_refill() {
        let mut b = Bucket::new(Q, 0, 0);
        let over: u64 = (0..25).map(|i| b.take(1, i * 2_000_000)).sum();
        assert_eq!(over, 20);
        // Two seconds later two tokens are back.
        assert_eq!(b.take(3, 2 * SEC + 48_000_000), 1);
    }

    #[test]
    fn a_ramp_that_opens_grants_its_burst_at_once() {
        let mut r = Rates::default();
        let (c, e): (Arc<str>, Arc<str>) = ("acme".into(), "orders".into());
        let zero = StageQuota {
            requests_per_second: 0.0,
            burst: 0.0,
        };
        // Before the stage: quota 0, nothing in the bucket.
        assert_eq!(r.bucket(&c, &e, zero, 0, 0).take(1, 0), 1);
        // The stage starts: its whole burst is available at once...
        assert_eq!(r.bucket(&c, &e, Q, 1, SEC).take(5, SEC), 0);
        // ...and a smaller quota later caps what is left.
        let small = StageQuota {
            requests_per_second: 1.0,
            burst: 2.0,
        };
        let b = r.bucket(&c, &e, Q, 1, SEC);
        b.take(0, SEC);
        assert_eq!(r.bucket(&c, &e, small, 2, 3 * SEC).take(3, 3 * SEC), 1);
    }

    #[test]
    fn zero_quota_rejects_all() {
        let mut b = Bucket::new(
            StageQuota {
                requests_per_second: 0.0,
                burst: 0.0,
            },
            0,
            0,
        );
        assert_eq!(b.take(3, 10), 3);
    }

    #[test]
    fn window_rate_averages_over_the_window_or_what_was_seen_of_it() {
        let mut r = Rates::with_window(RateWindow(60 * SEC));
        let (c, e): (Arc<str>, Arc<str>) = ("acme".into(), "orders".into());
        r.seen(0);
        // 10 requests a second for 30 s: 30 s observed, so 10 req/s.
        for s in 0..30 {
            r.bucket(&c, &e, Q, 0, s * SEC).take(10, s * SEC);
        }
        let b = r.iter().next().unwrap().1.clone();
        assert!((r.window_rate(&b, 30 * SEC) - 10.0).abs() < 0.5);
        // A quiet minute later the window holds nothing.
        assert_eq!(r.window_rate(&b, 120 * SEC), 0.0);
        // 90 s in, the window is a full minute: 300 requests in it.
        assert!((r.window_rate(&b, 90 * SEC) - 0.0).abs() < 1e-9);
        assert!((r.window_rate(&b, 60 * SEC) - 300.0 / 60.0).abs() < 0.6);
    }

    #[test]
    fn sliding_rate() {
        let mut b = Bucket::new(Q, 0, 0);
        b.take(10, SEC / 2);
        assert!((b.rate(SEC / 2) - 10.0).abs() < 1e-9);
        b.take(10, SEC + SEC / 2);
        // 10 this second plus half of the previous second's 10.
        assert!((b.rate(SEC + SEC / 2) - 15.0).abs() < 1e-9);
        assert_eq!(b.rate(5 * SEC), 0.0);
    }
}
