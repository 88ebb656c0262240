//! What the engine reports to its callers: live flows, violations, the
//! stage, request and response totals, client rates. Built when asked; the
//! engine keeps no per-flow copy of any of it.

use super::{Engine, EngineStats};
use crate::{
    event::Nanos,
    flow::FlowTableStats,
    policy::{
        rates::Rates,
        record::{ClientRate, FlowRecord, RequestCount, ResponseCount, StageInfo, record},
        view::View,
        violations::Violation,
    },
};

impl Engine {
    /// Latest event time seen.
    pub fn now(&self) -> Nanos {
        self.now
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            kernel_requests_unwatched: self.rates.kernel_unwatched,
            engine_counted_requests: self.rates.engine_counted,
            ..self.stats
        }
    }

    pub fn flow_stats(&self) -> FlowTableStats {
        self.flows.stats
    }

    /// Live flows.
    pub fn flows(&self) -> Vec<FlowRecord> {
        self.flows
            .iter()
            .map(|f| {
                record(
                    &self.view,
                    f,
                    &self.unlisted,
                    &self.unknown,
                    self.opts.requests_from_kernel,
                )
            })
            .collect()
    }

    /// Flows in the table that have not ended (ended ones linger for their
    /// last ACKs); counted without building their records.
    pub fn open_flows(&self) -> usize {
        self.flows.iter().filter(|f| f.ended.is_none()).count()
    }

    /// Open violations, oldest first, then recently resolved ones.
    pub fn violations(&self) -> Vec<Violation> {
        let mut v = self.violations.open();
        v.extend(self.violations.resolved().cloned());
        v
    }

    /// The stage timeline at the current judge time.
    pub fn stage(&self) -> StageInfo {
        let next = self
            .view
            .next_stage(self.stage)
            .and_then(|i| self.view.stages.get(i));
        let active = self.stage.and_then(|i| self.view.stages.get(i));
        StageInfo {
            contract: self.view.contract_name.clone(),
            active: active.map(|s| s.name.clone()),
            active_since: active.map(|s| s.starts_at),
            next: next.map(|s| s.name.clone()),
            next_starts_at: next.map(|s| s.starts_at),
        }
    }

    /// Watched requests so far by (endpoint label, client label), with
    /// `unlisted` and `unknown` for what the contract does not name.
    pub fn request_totals(&self) -> Vec<RequestCount> {
        let mut out: Vec<RequestCount> = self
            .rates
            .totals()
            .map(|(key, total)| RequestCount {
                endpoint: key.0.clone(),
                client: key.1.clone(),
                total,
                malformed: self.malformed.get(key).copied().unwrap_or(0),
            })
            .collect();
        // Live, a lenient head the kernel counted may be parsed before its
        // pair's kernel count arrives.
        for ((endpoint, client), n) in &self.malformed {
            if !out
                .iter()
                .any(|r| r.endpoint == *endpoint && r.client == *client)
            {
                out.push(RequestCount {
                    endpoint: endpoint.clone(),
                    client: client.clone(),
                    total: 0,
                    malformed: *n,
                });
            }
        }
        out
    }

    /// Watched requests answered so far by (endpoint label, client label,
    /// status class), `unknown` where the response was not seen.
    pub fn response_totals(&self) -> Vec<ResponseCount> {
        let mut v: Vec<ResponseCount> = self
            .responses
            .iter()
            .map(|((endpoint, client, class), total)| ResponseCount {
                endpoint: endpoint.clone(),
                client: client.clone(),
                class,
                total: *total,
            })
            .collect();
        v.sort_by(|a, b| (&a.endpoint, &a.client, a.class).cmp(&(&b.endpoint, &b.client, b.class)));
        v
    }

    /// Per client × endpoint: rate now, quota, headroom, next stage's quota.
    /// Includes every pair with a quota in the active or next stage.
    pub fn client_rates(&self, now: Nanos) -> Vec<ClientRate> {
        let v = &self.view;
        let next = v.next_stage(self.stage);
        let mut pairs: Vec<(usize, usize)> = [self.stage, next]
            .iter()
            .flatten()
            .filter_map(|s| v.stages.get(*s))
            .flat_map(|s| s.quotas.keys().copied())
            .collect();
        for (c, e) in self.rates.iter().map(|(k, _)| k) {
            let ci = v.clients.iter().position(|n| n == c);
            let ei = v.endpoints.iter().position(|x| &x.name == e);
            if let (Some(ci), Some(ei)) = (ci, ei) {
                pairs.push((ci, ei));
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        let lookup: std::collections::HashMap<_, _> = self.rates.iter().collect();
        pairs
            .into_iter()
            .filter_map(|(c, e)| {
                let client = v.clients.get(c)?.clone();
                let endpoint = v.endpoints.get(e)?.name.clone();
                let q = v.quota(self.stage, c, e);
                let b = lookup.get(&(client.clone(), endpoint.clone()));
                let rate = b.map_or(0.0, |b| b.rate(now));
                let next_stage = next.and_then(|n| v.stages.get(n));
                Some(ClientRate {
                    rate,
                    quota: q.requests_per_second,
                    burst: q.burst,
                    headroom: q.requests_per_second - rate,
                    total: b.map_or(0, |b| b.total),
                    next_quota: next.map(|n| v.quota(Some(n), c, e).requests_per_second),
                    next_stage: next_stage.map(|s| s.name.clone()),
                    next_starts_at: next_stage.map(|s| s.starts_at),
                    client,
                    endpoint,
                })
            })
            .collect()
    }

    /// What `readiness` reads: the view, the rates, the active stage and
    /// the latest event time.
    pub(in crate::policy) fn readiness_parts(&self) -> (&View, &Rates, Option<usize>, Nanos) {
        (&self.view, &self.rates, self.stage, self.now)
    }
}
