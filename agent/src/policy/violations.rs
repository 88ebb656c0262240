//! Violation lifecycle: a (kind, endpoint, client) violation opens at its
//! first occurrence, counts and updates, escalates with its open age against
//! the contract's remediation windows, and resolves after a quiet period.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::Arc,
};

use serde::Serialize;

use crate::{contract::Window, event::Nanos, identity::workload::FlowWorkload};

/// The seven detections. Names are an interface (CLI, metrics, alerts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    UnencryptedFlow,
    WeakTls,
    QuotaOvershoot,
    RevokedClient,
    StaleCredential,
    UnlistedEndpoint,
    UnknownClient,
}

impl Kind {
    pub const ALL: [Self; 7] = [
        Self::UnencryptedFlow,
        Self::WeakTls,
        Self::QuotaOvershoot,
        Self::RevokedClient,
        Self::StaleCredential,
        Self::UnlistedEndpoint,
        Self::UnknownClient,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnencryptedFlow => "unencrypted_flow",
            Self::WeakTls => "weak_tls",
            Self::QuotaOvershoot => "quota_overshoot",
            Self::RevokedClient => "revoked_client",
            Self::StaleCredential => "stale_credential",
            Self::UnlistedEndpoint => "unlisted_endpoint",
            Self::UnknownClient => "unknown_client",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long a violation has stayed open, against the contract's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    /// Open longer than `remediation.warnAfter`.
    Critical,
    /// Open longer than `remediation.breachAfter`.
    Breach,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Critical => "critical",
            Self::Breach => "breach",
        }
    }

    /// Severity of a violation open for `age`.
    pub fn for_age(age: Nanos, warn_after: Option<Nanos>, breach_after: Option<Nanos>) -> Self {
        if breach_after.is_some_and(|b| age >= b) {
            Self::Breach
        } else if warn_after.is_some_and(|w| age >= w) {
            Self::Critical
        } else {
            Self::Warning
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What identifies a violation. `endpoint` is an endpoint name or
/// "unlisted", `client` a client name or "unknown": bounded label values.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ViolationKey {
    pub kind: Kind,
    pub endpoint: Arc<str>,
    pub client: Arc<str>,
}

/// A decision of one detection about one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub key: ViolationKey,
    /// Short, for people: "TLS 1.1", "62 req/s over quota 50". Never a
    /// credential.
    pub detail: String,
    /// Occurrences this finding stands for (requests over quota at once).
    pub count: u64,
    /// The client's local workload, when its socket is on this node (set
    /// by the engine, not by the detections).
    pub client_workload: Option<Arc<FlowWorkload>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    pub key: ViolationKey,
    pub first_seen: Nanos,
    pub last_seen: Nanos,
    pub count: u64,
    /// Active stage at the last occurrence.
    pub stage: Option<Arc<str>>,
    pub detail: String,
    pub severity: Severity,
    /// Set once resolved (quiet for the quiet period).
    pub resolved_at: Option<Nanos>,
    /// What the API answered the requests behind this violation
    /// (`revoked_client`, `unknown_client`, `stale_credential`).
    pub outcome: Outcome,
    /// `quota_overshoot`: requests of the client on the endpoint the API
    /// answered `429 Too Many Requests` while this violation was open.
    pub throttled: u64,
    /// The remediation window of its kind and endpoint (see
    /// `contract::Remediation::window`).
    pub window: Window,
    /// The client's local workload at the latest occurrence (`None` when
    /// that client was not a socket on this machine, and in replay).
    pub client_workload: Option<Arc<FlowWorkload>>,
}

impl Kind {
    /// Kinds whose violations count what the API answered
    /// ([`Violation::outcome`]).
    pub const fn has_outcome(self) -> bool {
        matches!(
            self,
            Self::RevokedClient | Self::UnknownClient | Self::StaleCredential
        )
    }

    /// Kinds a served request escalates to `critical` at once.
    const fn served_is_critical(self) -> bool {
        matches!(self, Self::RevokedClient | Self::UnknownClient)
    }
}

/// Answers to a violation's requests: `served` 2xx, 3xx (and `101`, a
/// protocol switch the server accepted); `refused` any 4xx or 5xx (401
/// and 403 are the authorization refusals; 429, 404, 5xx did not serve the
/// request either); `unknown` when the response was not seen, its status
/// could not be read, or it is none of these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub served: u64,
    pub refused: u64,
    pub unknown: u64,
}

/// The three ways a request can have been answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answered {
    Served,
    Refused,
    Unknown,
}

impl Answered {
    /// The one rule from a status (see [`Outcome`]).
    pub fn of(status: Option<u16>) -> Self {
        match status {
            Some(101 | 200..=399) => Self::Served,
            Some(400..=599) => Self::Refused,
            _ => Self::Unknown,
        }
    }
}

impl Outcome {
    fn add(&mut self, a: Answered) {
        match a {
            Answered::Served => self.served += 1,
            Answered::Refused => self.refused += 1,
            Answered::Unknown => self.unknown += 1,
        }
    }
}

impl Violation {
    /// A stable id for people and scripts (`rampwatch violations`, `ack`):
    /// `v` and 10 hex digits of SHA-256 over kind, endpoint, client and
    /// when it opened. The same violation has the same id in every answer,
    /// on every node and after an agent restart that replays its audit; a
    /// violation that resolves and opens again is a new one.
    pub fn id(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [self.key.kind.as_str(), &self.key.endpoint, &self.key.client] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(self.first_seen.to_be_bytes());
        let digest = h.finalize();
        format!("v{}", hex::encode(digest.get(..5).unwrap_or_default()))
    }

    /// The level of this violation at `now`: the one rule a violation's
    /// severity comes from (opening, escalation, time to the next step).
    pub fn level_at(&self, now: Nanos) -> Severity {
        let by_age = Severity::for_age(
            now.saturating_sub(self.first_seen),
            self.window.warn_after,
            self.window.breach_after,
        );
        // A revoked or unknown client the API served is critical at once,
        // whatever the windows say; breach still comes from the window.
        if self.key.kind.served_is_critical() && self.outcome.served > 0 {
            by_age.max(Severity::Critical)
        } else {
            by_age
        }
    }

    /// The next level it reaches if it stays open, and when; `None` once
    /// at `breach`, or when no later window applies.
    pub fn next_step(&self) -> Option<(Severity, Nanos)> {
        let at = |d: Option<Nanos>| d.map(|d| self.first_seen.saturating_add(d));
        let critical = at(self.window.warn_after);
        let breach = at(self.window.breach_after);
        match self.severity {
            Severity::Warning => match (critical, breach) {
                (Some(c), Some(b)) if b <= c => Some((Severity::Breach, b)),
                (Some(c), _) => Some((Severity::Critical, c)),
                (None, Some(b)) => Some((Severity::Breach, b)),
                (None, None) => None,
            },
            Severity::Critical => breach.map(|b| (Severity::Breach, b)),
            Severity::Breach => None,
        }
    }
}

/// A change in the violation set, for sinks (audit, metrics, watch).
#[derive(Clone, Debug, PartialEq)]
pub enum ViolationEvent {
    Opened(Violation),
    Escalated(Violation),
    Resolved(Violation),
    /// One more occurrence of an open violation (only with
    /// `EngineOptions::emit_occurrences`).
    Occurred {
        key: ViolationKey,
        at: Nanos,
        count: u64,
    },
}

/// Open violations plus a bounded history of resolved ones.
#[derive(Debug, Default)]
pub struct Violations {
    open: HashMap<ViolationKey, Violation, foldhash::fast::FixedState>,
    resolved: VecDeque<Violation>,
}

/// Resolved violations kept for queries.
const RESOLVED_KEPT: usize = 1024;

/// The remediation window of a finding and the quiet period.
#[derive(Clone, Copy, Debug, Default)]
pub struct Terms {
    /// The window a violation opened by this finding escalates by.
    pub window: Window,
    /// `None`: never resolve (replay).
    pub quiet_period: Option<Nanos>,
}

impl Violations {
    /// Records a finding at `at`.
    pub fn record(
        &mut self,
        f: Finding,
        at: Nanos,
        stage: Option<&Arc<str>>,
        terms: Terms,
        emit_occurrences: bool,
        out: &mut Vec<ViolationEvent>,
    ) {
        if let Some(v) = self.open.get_mut(&f.key) {
            v.count += f.count;
            v.last_seen = v.last_seen.max(at);
            v.first_seen = v.first_seen.min(at);
            if v.stage.as_ref() != stage {
                v.stage = stage.cloned();
            }
            if v.detail != f.detail {
                v.detail = f.detail;
            }
            if at >= v.last_seen && v.client_workload != f.client_workload {
                v.client_workload = f.client_workload;
            }
            if emit_occurrences {
                out.push(ViolationEvent::Occurred {
                    key: f.key,
                    at,
                    count: f.count,
                });
            }
            return;
        }
        let mut v = Violation {
            key: f.key.clone(),
            first_seen: at,
            last_seen: at,
            count: f.count,
            stage: stage.cloned(),
            detail: f.detail,
            severity: Severity::Warning,
            resolved_at: None,
            outcome: Outcome::default(),
            throttled: 0,
            window: terms.window,
            client_workload: f.client_workload,
        };
        v.severity = v.level_at(at);
        out.push(ViolationEvent::Opened(v.clone()));
        self.open.insert(f.key, v);
    }

    /// The API answered one request behind the open violation `key`. A
    /// revoked or unknown client that was served escalates to `critical`
    /// at once (an `Escalated` event, so the audit log records it); the
    /// breach still comes from the remediation window. A violation no
    /// longer open (resolved meanwhile) keeps its record as it was.
    pub fn answer(&mut self, key: &ViolationKey, a: Answered, out: &mut Vec<ViolationEvent>) {
        let Some(v) = self.open.get_mut(key) else {
            return;
        };
        v.outcome.add(a);
        let level = v.level_at(v.last_seen);
        if level > v.severity {
            v.severity = level;
            out.push(ViolationEvent::Escalated(v.clone()));
        }
    }

    /// `n` more requests answered 429 behind the quota violation `key`;
    /// false when it is not open.
    pub fn throttled(&mut self, key: &ViolationKey, n: u64) -> bool {
        match self.open.get_mut(key) {
            Some(v) => {
                v.throttled += n;
                true
            }
            None => false,
        }
    }

    /// Whether `key` is open.
    pub fn is_open(&self, key: &ViolationKey) -> bool {
        self.open.contains_key(key)
    }

    /// New windows for the open violations (a contract reload); the next
    /// tick escalates by them. A level reached stays.
    pub fn rewindow(&mut self, window: impl Fn(&ViolationKey) -> Window) {
        for (k, v) in &mut self.open {
            v.window = window(k);
        }
    }

    /// Escalates by open age and resolves quiet violations at `now`.
    pub fn tick(&mut self, now: Nanos, terms: Terms, out: &mut Vec<ViolationEvent>) {
        let mut quiet = Vec::new();
        for (k, v) in &mut self.open {
            let sev = v.level_at(now);
            if sev > v.severity {
                v.severity = sev;
                out.push(ViolationEvent::Escalated(v.clone()));
            }
            if terms.quiet_period.is_some_and(|q| now - v.last_seen >= q) {
                quiet.push(k.clone());
            }
        }
        quiet.sort();
        for k in quiet {
            if let Some(mut v) = self.open.remove(&k) {
                v.resolved_at = Some(now);
                out.push(ViolationEvent::Resolved(v.clone()));
                if self.resolved.len() >= RESOLVED_KEPT {
                    self.resolved.pop_front();
                }
                self.resolved.push_back(v);
            }
        }
    }

    /// Open violations, oldest first.
    pub fn open(&self) -> Vec<Violation> {
        let mut v: Vec<Violation> = self.open.values().cloned().collect();
        v.sort_by(|a, b| (a.first_seen, &a.key).cmp(&(b.first_seen, &b.key)));
        v
    }

    /// Recently resolved violations, oldest first.
    pub fn resolved(&self) -> impl Iterator<Item = &Violation> {
        self.resolved.iter()
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }
}
