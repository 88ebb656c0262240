//! Violation lifecycle: a (kind, endpoint, client) violation opens at its
//! first occurrence, counts and updates, escalates with its open age against
//! the contract's remediation windows, and resolves after a quiet period.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::Arc,
};

use serde::Serialize;

use crate::{event::Nanos, identity::workload::FlowWorkload};

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
    /// The client's local workload at the latest occurrence (`None` when
    /// that client was not a socket on this machine, and in replay).
    pub client_workload: Option<Arc<FlowWorkload>>,
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

/// Remediation windows and the quiet period.
#[derive(Clone, Copy, Debug, Default)]
pub struct Terms {
    pub warn_after: Option<Nanos>,
    pub breach_after: Option<Nanos>,
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
        let v = Violation {
            key: f.key.clone(),
            first_seen: at,
            last_seen: at,
            count: f.count,
            stage: stage.cloned(),
            detail: f.detail,
            severity: Severity::for_age(0, terms.warn_after, terms.breach_after),
            resolved_at: None,
            client_workload: f.client_workload,
        };
        out.push(ViolationEvent::Opened(v.clone()));
        self.open.insert(f.key, v);
    }

    /// Escalates by open age and resolves quiet violations at `now`.
    pub fn tick(&mut self, now: Nanos, terms: Terms, out: &mut Vec<ViolationEvent>) {
        let mut quiet = Vec::new();
        for (k, v) in &mut self.open {
            let sev = Severity::for_age(now - v.first_seen, terms.warn_after, terms.breach_after);
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
