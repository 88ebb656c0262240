//! Usage records: requests per (client, endpoint) written to the audit log
//! once per interval, so `rampwatch report` can account for a stage from the
//! log alone.
//!
//! The meter diffs the engine's running totals (the kernel's exact request
//! counts and the response classes) at each interval boundary. Boundaries are
//! multiples of the interval since the Unix epoch, so the intervals of
//! several nodes line up; the first interval after start and the last one at
//! a clean stop are shorter (each record names its span). Only pairs with
//! requests in the interval get a record; past `max_pairs` the smallest are
//! summed in one `usage_other` record, so an interval costs a bounded number
//! of records (each one an fdatasync) however many clients appear.

use std::{collections::HashMap, sync::Arc};

use super::audit_thread::AuditWriter;
use crate::{
    contract::format_rfc3339,
    event::Nanos,
    policy::{ClientRate, Engine, RequestCount, ResponseCount},
    sinks::audit::{RecordKind, UsageOtherRecord, UsageQuota, UsageRecord},
};

type Pair = (Arc<str>, Arc<str>);

/// What the engine knows at one moment, as the meter reads it.
pub struct Totals<'a> {
    pub requests: &'a [RequestCount],
    pub responses: &'a [ResponseCount],
    /// Quotas of the named pairs (`Engine::client_rates`).
    pub rates: &'a [ClientRate],
    pub stage: Option<Arc<str>>,
}

pub struct UsageMeter {
    interval: Nanos,
    max_pairs: usize,
    /// Start of the interval being counted.
    from: Nanos,
    /// Totals at `from`, by (endpoint, client).
    requests: HashMap<Pair, u64>,
    responses: HashMap<(Arc<str>, Arc<str>, &'static str), u64>,
}

impl UsageMeter {
    /// A meter counting from `start` (the agent's start: everything the
    /// engine counts belongs to this run).
    pub fn new(interval: Nanos, max_pairs: u32, start: Nanos) -> Self {
        Self {
            interval: interval.max(1_000_000_000),
            max_pairs: usize::try_from(max_pairs).unwrap_or(usize::MAX).max(1),
            from: start,
            requests: HashMap::new(),
            responses: HashMap::new(),
        }
    }

    /// Whether `now` has crossed the end of the interval being counted.
    pub fn due(&self, now: Nanos) -> bool {
        now >= self.boundary()
    }

    fn boundary(&self) -> Nanos {
        (self.from.div_euclid(self.interval) + 1).saturating_mul(self.interval)
    }

    /// Ends the interval at `at` and audits its records.
    pub fn write(&mut self, at: Nanos, engine: &Engine, audit: &AuditWriter) {
        let (requests, responses) = (engine.request_totals(), engine.response_totals());
        let rates = engine.client_rates(at);
        let totals = Totals {
            requests: &requests,
            responses: &responses,
            rates: &rates,
            stage: engine.stage().active,
        };
        for record in self.take(at, &totals) {
            audit.record(record);
        }
    }

    /// Ends the interval at `to` and returns its records (none when no pair
    /// had requests); the next interval starts at `to`.
    pub fn take(&mut self, to: Nanos, now: &Totals<'_>) -> Vec<RecordKind> {
        let interval_secs = u64::try_from(self.interval / 1_000_000_000).unwrap_or(0);
        let (from, to_s) = (format_rfc3339(self.from), format_rfc3339(to));
        let stage = now.stage.as_ref().map(ToString::to_string);
        let mut classes: HashMap<Pair, std::collections::BTreeMap<String, u64>> = HashMap::new();
        for r in now.responses {
            let key = (r.endpoint.clone(), r.client.clone(), r.class);
            let before = self.responses.insert(key, r.total).unwrap_or(0);
            let n = r.total.saturating_sub(before);
            if n > 0 {
                classes
                    .entry((r.endpoint.clone(), r.client.clone()))
                    .or_default()
                    .insert(r.class.to_owned(), n);
            }
        }
        let mut active: Vec<(&RequestCount, u64)> = Vec::new();
        for r in now.requests {
            let key = (r.endpoint.clone(), r.client.clone());
            let before = self.requests.insert(key, r.total).unwrap_or(0);
            let n = r.total.saturating_sub(before);
            if n > 0 {
                active.push((r, n));
            }
        }
        self.from = to;
        // The busiest pairs one by one; a stable order for equal counts.
        active.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then_with(|| (&a.0.client, &a.0.endpoint).cmp(&(&b.0.client, &b.0.endpoint)))
        });
        let quotas: HashMap<(&str, &str), UsageQuota> = now
            .rates
            .iter()
            .filter(|r| r.quota > 0.0 || r.burst > 0.0)
            .map(|r| {
                (
                    (&*r.client, &*r.endpoint),
                    UsageQuota {
                        rps: r.quota.to_string(),
                        burst: r.burst.to_string(),
                    },
                )
            })
            .collect();
        let mut out = Vec::new();
        let mut other = UsageOtherRecord {
            stage: stage.clone(),
            from: from.clone(),
            to: to_s.clone(),
            interval_secs,
            pairs: 0,
            requests: 0,
        };
        for (i, (r, n)) in active.into_iter().enumerate() {
            if i >= self.max_pairs {
                other.pairs += 1;
                other.requests = other.requests.saturating_add(n);
                continue;
            }
            out.push(RecordKind::Usage(UsageRecord {
                client: r.client.to_string(),
                endpoint: r.endpoint.to_string(),
                stage: stage.clone(),
                from: from.clone(),
                to: to_s.clone(),
                interval_secs,
                requests: n,
                total: r.total,
                quota: quotas.get(&(&*r.client, &*r.endpoint)).cloned(),
                responses: classes
                    .remove(&(r.endpoint.clone(), r.client.clone()))
                    .unwrap_or_default(),
            }));
        }
        if other.pairs > 0 {
            out.push(RecordKind::UsageOther(other));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Nanos = 1_000_000_000;

    fn req(endpoint: &str, client: &str, total: u64) -> RequestCount {
        RequestCount {
            endpoint: endpoint.into(),
            client: client.into(),
            total,
            malformed: 0,
        }
    }

    fn rate(client: &str, endpoint: &str, quota: f64, burst: f64) -> ClientRate {
        ClientRate {
            client: client.into(),
            endpoint: endpoint.into(),
            rate: 0.0,
            quota,
            burst,
            headroom: 0.0,
            total: 0,
            next_quota: None,
            next_stage: None,
            next_starts_at: None,
        }
    }

    fn usage(records: &[RecordKind]) -> Vec<&UsageRecord> {
        records
            .iter()
            .filter_map(|r| match r {
                RecordKind::Usage(u) => Some(u),
                _ => None,
            })
            .collect()
    }

    /// Boundaries are aligned to the epoch: a start at 125 s with a 60 s
    /// interval first ends at 180 s; each interval holds only its own
    /// requests, with the quota then in force, and idle pairs get nothing.
    #[test]
    fn intervals_are_aligned_and_hold_only_their_requests() {
        let mut m = UsageMeter::new(60 * S, 10, 125 * S);
        assert!(!m.due(179 * S));
        assert!(m.due(180 * S));
        let rates = [rate("acme", "orders", 0.5, 2.0)];
        let resp = [ResponseCount {
            endpoint: "orders".into(),
            client: "acme".into(),
            class: "2xx",
            total: 3,
        }];
        let t1 = [req("orders", "acme", 3), req("unlisted", "unknown", 1)];
        let first = m.take(
            180 * S,
            &Totals {
                requests: &t1,
                responses: &resp,
                rates: &rates,
                stage: Some("pilot".into()),
            },
        );
        let u = usage(&first);
        assert_eq!(u.len(), 2);
        assert_eq!(
            (u[0].client.as_str(), u[0].requests, u[0].total),
            ("acme", 3, 3)
        );
        assert_eq!(u[0].from, format_rfc3339(125 * S));
        assert_eq!(u[0].to, format_rfc3339(180 * S));
        assert_eq!(u[0].interval_secs, 60);
        assert_eq!(u[0].stage.as_deref(), Some("pilot"));
        let q = u[0].quota.as_ref().expect("acme has a quota");
        assert_eq!((q.rps.as_str(), q.burst.as_str()), ("0.5", "2"));
        assert_eq!(u[0].responses.get("2xx"), Some(&3));
        assert_eq!(u[1].quota, None, "unknown clients get no quota");
        assert!(!m.due(239 * S) && m.due(240 * S));

        // The next interval: only acme's 2 new requests; the idle pair has no record.
        let t2 = [req("orders", "acme", 5), req("unlisted", "unknown", 1)];
        let second = m.take(
            240 * S,
            &Totals {
                requests: &t2,
                responses: &resp,
                rates: &rates,
                stage: Some("pilot".into()),
            },
        );
        let u = usage(&second);
        assert_eq!(u.len(), 1);
        assert_eq!((u[0].requests, u[0].total), (2, 5));
        assert!(u[0].responses.is_empty(), "no new responses");
        // Nothing new: no records at all.
        assert!(
            m.take(
                300 * S,
                &Totals {
                    requests: &t2,
                    responses: &resp,
                    rates: &rates,
                    stage: None,
                }
            )
            .is_empty()
        );
    }

    /// Past the cap, the quietest pairs are summed in one usage_other
    /// record: the interval's requests still add up.
    #[test]
    fn pairs_past_the_cap_are_summed() {
        let mut m = UsageMeter::new(60 * S, 2, 0);
        let t = [
            req("orders", "a", 5),
            req("orders", "b", 1),
            req("orders", "c", 9),
            req("orders", "d", 2),
        ];
        let out = m.take(
            60 * S,
            &Totals {
                requests: &t,
                responses: &[],
                rates: &[],
                stage: None,
            },
        );
        let u = usage(&out);
        assert_eq!(
            u.iter().map(|u| u.client.as_str()).collect::<Vec<_>>(),
            ["c", "a"]
        );
        let Some(RecordKind::UsageOther(o)) = out.last() else {
            panic!("a usage_other record: {out:?}");
        };
        assert_eq!((o.pairs, o.requests), (2, 3));
    }
}
