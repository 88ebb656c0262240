//! What the local API answers: plain data, serialised as JSON on the socket
//! and rendered as tables by the CLI. Nothing here can hold a raw credential:
//! clients appear by contract name (or `unknown`), keys only as fingerprints.

use std::{collections::BTreeMap, net::SocketAddr};

use serde::{Deserialize, Serialize};

pub use super::readiness::{ReadinessRow, ReadinessView};
use crate::{
    contract::format_rfc3339,
    event::FlowEndReason,
    identity::workload::FlowWorkload,
    policy::{FlowRecord, Kind, Violation},
};

/// A request on the socket: one JSON object on one line.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Stage,
    Clients,
    Flows,
    Violations {
        /// Only violations last seen within this many seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_secs: Option<u64>,
    },
    /// Keep the connection open and stream [`WatchEvent`]s.
    Watch,
    /// Readiness for the next stage, or the named one.
    Readiness {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stage: Option<String>,
    },
    /// Acknowledge an open violation (the API's one write): recorded in
    /// the audit log with the caller's uid; the clock keeps running.
    Ack {
        id: String,
        by: String,
        note: String,
    },
}

/// Longest `--by` name and `--note` accepted.
pub const MAX_ACK_BY: usize = 128;
pub const MAX_ACK_NOTE: usize = 2048;

/// An acknowledgement as recorded.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct AckView {
    pub id: String,
    pub kind: String,
    pub endpoint: String,
    pub client: String,
    pub severity: String,
    pub by: String,
    pub uid: u32,
    /// RFC 3339.
    pub at: String,
    pub note: String,
}

/// The answer: one JSON object on one line (a stream of them for `watch`).
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(tag = "type", rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "built once per answer and serialized at once; never stored in bulk"
)]
pub enum Response {
    Status(StatusView),
    Stage(StageView),
    Clients { clients: Vec<ClientRow> },
    Flows { flows: Vec<FlowRow> },
    Violations { violations: Vec<ViolationRow> },
    Watch(WatchEvent),
    Readiness(ReadinessView),
    Acked(AckView),
    Error { message: String },
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct StatusView {
    pub version: String,
    pub contract: String,
    pub contract_sha256: String,
    pub contract_reload_ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reload_error: Option<String>,
    pub stage: Option<String>,
    pub next_stage: Option<String>,
    /// RFC 3339.
    pub next_change: Option<String>,
    pub started_at: String,
    pub capture: String,
    pub flows_active: u64,
    pub violations_open: u64,
    /// Every counted loss, kernel and userspace, by reason.
    pub events_lost: BTreeMap<String, u64>,
    /// What the TLS library probes see in clear text.
    #[serde(default)]
    pub tls: TlsView,
    /// Whether the audit log takes records.
    #[serde(default)]
    pub audit: AuditView,
}

/// The audit log's state: writable, or why not and what that cost.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AuditView {
    pub writable: bool,
    /// Why it cannot be written, one sentence (`None` while writable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Records that could not be written, since start.
    pub records_lost: u64,
    /// The last record written: keep it outside the host as an anchor.
    pub last_seq: u64,
}

impl Default for AuditView {
    fn default() -> Self {
        Self {
            writable: true,
            problem: None,
            records_lost: 0,
            last_seq: 0,
        }
    }
}

/// The TLS probes' coverage: which processes are probed, which could not
/// be and why, and what stays blind.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct TlsView {
    /// The probes run.
    pub active: bool,
    /// Why they do not, one sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    pub processes: Vec<TlsProcessRow>,
    /// Processes not probed, by reason (`exited`, `no_openssl`,
    /// `permission`, `attach_failed`), since start.
    pub failures: BTreeMap<String, u64>,
    /// Processes an exclusion pattern kept out, since start.
    pub excluded: u64,
    /// Clients of endpoints served on this node: not probed, their server
    /// is (each request seen once).
    pub local_clients_skipped: u64,
    /// Clients of remote endpoints probed after they connected: their
    /// first requests were not seen in clear text.
    pub late_clients: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct TlsProcessRow {
    pub pid: u32,
    pub comm: String,
    /// The libssl (or executable) probed, as the process sees it.
    pub library: String,
    /// `server` or `client`.
    pub role: String,
    /// Uprobes attached.
    pub probes: u32,
    /// Where they trap: `internal` (OpenSSL's shared read/write functions,
    /// one cheap trap a call), `exported` (`SSL_read`/`SSL_write`) or `mixed`.
    #[serde(default)]
    pub sites: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct StageView {
    pub contract: String,
    pub now: String,
    pub active: Option<String>,
    pub next: Option<String>,
    pub next_starts_at: Option<String>,
    pub stages: Vec<StageRow>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct StageRow {
    pub name: String,
    pub starts_at: String,
    pub credential_max_age: String,
    pub quotas: Vec<QuotaRow>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct QuotaRow {
    pub client: String,
    pub endpoint: String,
    pub requests_per_second: f64,
    pub burst: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct ClientRow {
    pub client: String,
    pub endpoint: String,
    /// Requests per second over the last window.
    pub rate: f64,
    /// The active stage's quota; `None` when the stage grants none (quota 0).
    pub quota: Option<f64>,
    pub headroom: Option<f64>,
    pub next_quota: Option<f64>,
    pub next_stage: Option<String>,
    pub next_starts_in_secs: Option<i64>,
}

/// One flow, as the API and `rampwatch replay -o json` both write it (the
/// one builder is `From<&FlowRecord>`). Fields after `last_seen` default,
/// so a CLI reads an older agent's answer.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct FlowRow {
    pub src: String,
    pub dst: String,
    pub protocol: String,
    pub tls_version: Option<String>,
    pub cipher: Option<String>,
    pub sni: Option<String>,
    pub endpoint: String,
    pub client: String,
    pub requests: u64,
    /// TLS flows: the probes delivered the clear text (requests, identity
    /// and paths judged); false means only the handshake was seen.
    #[serde(default)]
    pub plaintext: bool,
    pub first_seen: String,
    pub last_seen: String,
    #[serde(default)]
    pub alpn: Option<String>,
    /// `credential`, `certificate`, `source` or `unknown`.
    #[serde(default)]
    pub identified_by: String,
    /// Both directions.
    #[serde(default)]
    pub packets: u64,
    #[serde(default)]
    pub bytes_to_server: u64,
    #[serde(default)]
    pub bytes_to_client: u64,
    /// Reassembly holes and truncated segments.
    #[serde(default)]
    pub gaps: u32,
    /// `fin`, `rst`, `idle`, or `open` while live.
    #[serde(default)]
    pub end: String,
    /// The workload behind each end that is a socket on this node (live
    /// only): `{"namespace","pod","container","pid","exe"}`, fields present
    /// when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_workload: Option<FlowWorkload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_workload: Option<FlowWorkload>,
}

impl From<&FlowRecord> for FlowRow {
    fn from(f: &FlowRecord) -> Self {
        let mut row = Self::default();
        row.fill(f);
        row
    }
}

impl FlowRow {
    /// Makes this row `f`'s, reusing its strings' memory: `replay -o json`
    /// writes one row per flow, and building each from fresh strings was
    /// ten allocations (and their growth) a flow.
    pub fn fill(&mut self, f: &FlowRecord) {
        fn set(s: &mut String, v: &str) {
            s.clear();
            s.push_str(v);
        }
        fn set_opt(s: &mut Option<String>, v: Option<&str>) {
            match (s.as_mut(), v) {
                (Some(s), Some(v)) => set(s, v),
                (None, Some(v)) => *s = Some(v.to_owned()),
                (_, None) => *s = None,
            }
        }
        self.src.clear();
        write_addr(&mut self.src, f.id.client);
        self.dst.clear();
        write_addr(&mut self.dst, f.id.server);
        set(&mut self.protocol, f.protocol.as_str());
        set_opt(&mut self.tls_version, f.tls_version.map(|v| v.as_str()));
        set_opt(&mut self.cipher, f.cipher.as_deref());
        set_opt(&mut self.sni, f.sni.as_deref());
        set(&mut self.endpoint, &f.endpoint);
        set(&mut self.client, &f.client);
        self.requests = f.requests;
        self.first_seen = format_rfc3339(f.first_seen);
        self.last_seen = format_rfc3339(f.last_seen);
        set_opt(&mut self.alpn, f.alpn.as_deref());
        set(&mut self.identified_by, f.identified_by.as_str());
        self.plaintext = f.plaintext;
        self.packets = f.packets[0] + f.packets[1];
        self.bytes_to_server = f.bytes[0];
        self.bytes_to_client = f.bytes[1];
        self.gaps = f.gaps;
        set(
            &mut self.end,
            match f.end {
                Some(FlowEndReason::Fin) => "fin",
                Some(FlowEndReason::Rst) => "rst",
                Some(FlowEndReason::Idle) => "idle",
                None => "open",
            },
        );
        self.client_workload = f.client_workload.as_deref().cloned();
        self.server_workload = f.server_workload.as_deref().cloned();
    }
}

/// Appends `a` as its `Display` writes it. IPv4 is written here digit by
/// digit: through `fmt` the two addresses were a third of a flow row's cost
/// in `replay -o json`.
fn write_addr(out: &mut String, a: SocketAddr) {
    fn decimal(out: &mut String, mut n: u16) {
        let mut digits = [0u8; 5];
        let mut i = digits.len();
        loop {
            i -= 1;
            // A digit: `n % 10` is below 10.
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &d in &digits[i..] {
            out.push(char::from(d));
        }
    }
    match a {
        SocketAddr::V4(v4) => {
            let [a, b, c, d] = v4.ip().octets();
            for (i, octet) in [a, b, c, d].into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                decimal(out, u16::from(octet));
            }
            out.push(':');
            decimal(out, v4.port());
        }
        SocketAddr::V6(_) => {
            use std::fmt::Write as _;
            // Writing to a String cannot fail.
            let _ = write!(out, "{a}");
        }
    }
}

impl From<&Violation> for ViolationRow {
    fn from(v: &Violation) -> Self {
        let next = v.next_step().filter(|_| v.resolved_at.is_none());
        Self {
            id: v.id(),
            kind: v.key.kind.as_str().to_owned(),
            endpoint: v.key.endpoint.to_string(),
            client: v.key.client.to_string(),
            severity: v.severity.as_str().to_owned(),
            stage: v.stage.as_ref().map(ToString::to_string),
            first_seen: format_rfc3339(v.first_seen),
            last_seen: format_rfc3339(v.last_seen),
            count: v.count,
            detail: v.detail.clone(),
            state: if v.resolved_at.is_some() {
                "resolved"
            } else {
                "open"
            }
            .to_owned(),
            outcome: v.key.kind.has_outcome().then_some(OutcomeRow {
                served: v.outcome.served,
                refused: v.outcome.refused,
                unknown: v.outcome.unknown,
            }),
            throttled: (v.key.kind == Kind::QuotaOvershoot).then_some(v.throttled),
            critical_after_secs: v.window.warn_after.map(secs),
            breach_after_secs: v.window.breach_after.map(secs),
            next_step: next.map(|(s, _)| s.as_str().to_owned()),
            next_step_at: next.map(|(_, t)| format_rfc3339(t)),
            next_step_in_secs: None,
            acknowledged_by: None,
            acknowledged_at: None,
            client_workload: v.client_workload.as_deref().cloned(),
        }
    }
}

/// What the API answered the requests behind a violation: `served`
/// (2xx, 3xx, 101), `refused` (4xx, 5xx), `unknown` (response not seen).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeRow {
    pub served: u64,
    pub refused: u64,
    pub unknown: u64,
}

impl OutcomeRow {
    /// "served 3, refused 1, unknown 0", for replay's table.
    pub fn summary(&self) -> String {
        format!(
            "served {}, refused {}, unknown {}",
            self.served, self.refused, self.unknown
        )
    }
}

fn secs(n: crate::event::Nanos) -> i64 {
    n / 1_000_000_000
}

impl ViolationRow {
    /// Fills `next_step_in_secs` for a reader at `now` (Unix seconds).
    pub fn at(mut self, now: i64) -> Self {
        self.next_step_in_secs = self
            .next_step_at
            .as_deref()
            .and_then(|t| crate::contract::parse_rfc3339(t).ok())
            .map(|t| (secs(t) - now).max(0));
        self
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct ViolationRow {
    /// Stable id (`policy::Violation::id`).
    #[serde(default)]
    pub id: String,
    pub kind: String,
    pub endpoint: String,
    pub client: String,
    /// `warning`, `critical` or `breach`, from the open age against the
    /// contract's remediation windows.
    pub severity: String,
    pub stage: Option<String>,
    pub first_seen: String,
    pub last_seen: String,
    pub count: u64,
    pub detail: String,
    /// `open` or `resolved`.
    pub state: String,
    /// `revoked_client`, `unknown_client`, `stale_credential`: what the API
    /// answered their requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeRow>,
    /// `quota_overshoot`: the client's requests on the endpoint the API
    /// answered 429 while the violation was open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled: Option<u64>,
    /// Its remediation window (`warnAfter`, `breachAfter` of its kind,
    /// class or the contract), seconds; `None`: no such step.
    #[serde(default)]
    pub critical_after_secs: Option<i64>,
    #[serde(default)]
    pub breach_after_secs: Option<i64>,
    /// The level an open violation reaches next (`critical`, `breach`),
    /// when (RFC 3339), and in how many seconds from the answer's time.
    #[serde(default)]
    pub next_step: Option<String>,
    #[serde(default)]
    pub next_step_at: Option<String>,
    #[serde(default)]
    pub next_step_in_secs: Option<i64>,
    /// The last `rampwatch ack` of it: the name given and when (RFC 3339).
    /// The clock keeps running regardless.
    #[serde(default)]
    pub acknowledged_by: Option<String>,
    #[serde(default)]
    pub acknowledged_at: Option<String>,
    /// The client's local workload at the latest occurrence (live only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_workload: Option<FlowWorkload>,
}

impl ViolationRow {
    /// What the API answered, short, for tables: `served/refused/unknown`
    /// ("1/2/0"), or for `quota_overshoot` the 429s ("3 x429"); `-` for
    /// other kinds.
    pub fn answered(&self) -> String {
        match (&self.outcome, self.throttled) {
            (Some(o), _) => format!("{}/{}/{}", o.served, o.refused, o.unknown),
            (None, Some(t)) => format!("{t} x429"),
            (None, None) => "-".to_owned(),
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WatchEvent {
    /// `opened`, `escalated` or `resolved`.
    pub event: String,
    pub violation: ViolationRow,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut out = String::new();
        for text in [
            "0.0.0.0:0",
            "127.0.0.1:18080",
            "10.20.30.40:65535",
            "255.255.255.255:9",
            "1.2.3.4:100",
            "[::1]:443",
            "[2001:db8::1]:8080",
            "[::ffff:1.2.3.4]:80",
        ] {
            let a: SocketAddr = text.parse().unwrap();
            out.clear();
            write_addr(&mut out, a);
            assert_eq!(out, a.to_string());
            assert_eq!(out, text);
        }
        for n in [0u16, 7, 9, 10, 99, 100, 255, 999, 1000, 9999, 10000, 65535] {
            let a = SocketAddr::from(([n as u8, 1, 10, 100], n));
            out.clear();
            write_addr(&mut out, a);
            assert_eq!(out, a.to_string());
        }
    }
}
