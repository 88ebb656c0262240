//! What the local API answers: plain data, serialised as JSON on the socket
//! and rendered as tables by the CLI. Nothing here can hold a raw credential:
//! clients appear by contract name (or `unknown`), keys only as fingerprints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    contract::format_rfc3339,
    event::FlowEndReason,
    identity::workload::FlowWorkload,
    policy::{FlowRecord, Violation},
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
}

/// The answer: one JSON object on one line (a stream of them for `watch`).
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Status(StatusView),
    Stage(StageView),
    Clients { clients: Vec<ClientRow> },
    Flows { flows: Vec<FlowRow> },
    Violations { violations: Vec<ViolationRow> },
    Watch(WatchEvent),
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
        Self {
            src: f.id.client.to_string(),
            dst: f.id.server.to_string(),
            protocol: f.protocol.as_str().to_owned(),
            tls_version: f.tls_version.map(|v| v.as_str().to_owned()),
            cipher: f.cipher.clone(),
            sni: f.sni.clone(),
            endpoint: f.endpoint.to_string(),
            client: f.client.to_string(),
            requests: f.requests,
            first_seen: format_rfc3339(f.first_seen),
            last_seen: format_rfc3339(f.last_seen),
            alpn: f.alpn.clone(),
            identified_by: f.identified_by.as_str().to_owned(),
            plaintext: f.plaintext,
            packets: f.packets[0] + f.packets[1],
            bytes_to_server: f.bytes[0],
            bytes_to_client: f.bytes[1],
            gaps: f.gaps,
            end: match f.end {
                Some(FlowEndReason::Fin) => "fin",
                Some(FlowEndReason::Rst) => "rst",
                Some(FlowEndReason::Idle) => "idle",
                None => "open",
            }
            .to_owned(),
            client_workload: f.client_workload.as_deref().cloned(),
            server_workload: f.server_workload.as_deref().cloned(),
        }
    }
}

impl From<&Violation> for ViolationRow {
    fn from(v: &Violation) -> Self {
        Self {
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
            client_workload: v.client_workload.as_deref().cloned(),
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct ViolationRow {
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
    /// The client's local workload at the latest occurrence (live only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_workload: Option<FlowWorkload>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WatchEvent {
    /// `opened`, `escalated` or `resolved`.
    pub event: String,
    pub violation: ViolationRow,
}
