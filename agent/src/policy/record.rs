//! What the engine reports about flows and client rates.

use std::sync::Arc;

use super::{
    UNKNOWN, UNLISTED,
    flow_state::FlowState,
    view::{EndpointRef, Via, View},
};
use crate::{
    event::{FlowEndReason, FlowId, Nanos},
    flow::{Flow, Protocol, TlsVersion},
    identity::workload::FlowWorkload,
};

/// One flow, as reported when it ends (and by `Engine::flows` while live).
#[derive(Clone, Debug, PartialEq)]
pub struct FlowRecord {
    pub id: FlowId,
    pub first_seen: Nanos,
    pub last_seen: Nanos,
    pub protocol: Protocol,
    pub tls_version: Option<TlsVersion>,
    /// IANA name of the negotiated suite (or `0xNNNN` when unnamed).
    pub cipher: Option<String>,
    pub sni: Option<String>,
    pub alpn: Option<String>,
    /// Endpoint name, or [`UNLISTED`].
    pub endpoint: Arc<str>,
    /// Client name, or [`UNKNOWN`].
    pub client: Arc<str>,
    pub identified_by: Via,
    /// Whether the contract watches this flow (endpoint or scope).
    pub watched: bool,
    /// Requests counted: parsed heads, or (live) kernel request starts
    /// plus the requests the kernel cannot count (HTTP/2).
    pub requests: u64,
    /// Indexed by `Direction::index`: to server, to client.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// Reassembly holes and truncated segments.
    pub gaps: u32,
    /// The TLS library probes delivered this flow's clear text (live only):
    /// a TLS flow without it had its requests hidden from every
    /// request-level term.
    pub plaintext: bool,
    /// `None` while live or when the capture ended first.
    pub end: Option<FlowEndReason>,
    /// The workloads of the ends that are sockets on this machine (live
    /// only).
    pub client_workload: Option<Arc<FlowWorkload>>,
    pub server_workload: Option<Arc<FlowWorkload>>,
}

impl FlowRecord {
    pub fn is_unlisted(&self) -> bool {
        &*self.endpoint == UNLISTED
    }

    pub fn is_unknown_client(&self) -> bool {
        &*self.client == UNKNOWN
    }
}

/// One client on one endpoint, for `rampwatch clients`.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientRate {
    pub client: Arc<str>,
    pub endpoint: Arc<str>,
    /// Requests per second over the last second.
    pub rate: f64,
    /// The active stage's quota (0 when none is granted).
    pub quota: f64,
    pub burst: f64,
    /// `quota - rate`; negative when over.
    pub headroom: f64,
    /// Requests counted since the engine started.
    pub total: u64,
    /// The quota at the next stage, and when that stage starts.
    pub next_quota: Option<f64>,
    pub next_stage: Option<Arc<str>>,
    pub next_starts_at: Option<Nanos>,
}

/// The stage timeline position at some time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageInfo {
    pub contract: Arc<str>,
    /// `None` before the first stage starts.
    pub active: Option<Arc<str>>,
    pub active_since: Option<Nanos>,
    pub next: Option<Arc<str>>,
    pub next_starts_at: Option<Nanos>,
}

/// Flows worth a record: some payload, or a completed handshake.
pub(super) fn reportable<T>(flow: &Flow<T>) -> bool {
    flow.totals.payload_segments != [0, 0] || flow.protocol != Protocol::Unknown
}

pub(super) fn record(
    view: &View,
    flow: &Flow<FlowState>,
    unlisted: &Arc<str>,
    unknown: &Arc<str>,
    kernel: bool,
) -> FlowRecord {
    let st = &flow.ext;
    let m = st.matched.unwrap_or(EndpointRef::Unwatched);
    let id = st.identity();
    FlowRecord {
        id: flow.id,
        first_seen: flow.first_seen,
        last_seen: flow.last_seen,
        protocol: flow.protocol,
        tls_version: if flow.protocol == Protocol::Tls {
            flow.tls.version()
        } else {
            None
        },
        cipher: flow.tls.cipher().map(|c| {
            c.name()
                .map_or_else(|| format!("0x{:04x}", c.0), str::to_owned)
        }),
        sni: flow.tls.sni().map(str::to_owned),
        alpn: flow.tls.alpn().map(str::to_owned),
        endpoint: match m {
            EndpointRef::Endpoint(e) => view.endpoint_name(Some(e)).unwrap_or(unlisted).clone(),
            _ => unlisted.clone(),
        },
        client: view
            .client_name(id.and_then(|i| i.client))
            .unwrap_or(unknown)
            .clone(),
        identified_by: id.map_or(Via::Unknown, |i| i.via),
        watched: m.watched(),
        requests: if kernel {
            st.kernel_requests + st.counted
        } else {
            flow.requests
        },
        packets: flow.totals.packets,
        bytes: flow.totals.bytes,
        gaps: flow.gaps(),
        plaintext: flow.plain.is_some(),
        end: flow.ended,
        client_workload: st.workloads[0].clone(),
        server_workload: st.workloads[1].clone(),
    }
}

/// Watched requests so far under bounded labels (`rampwatch_requests_total`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestCount {
    /// Endpoint name, or `unlisted`.
    pub endpoint: Arc<str>,
    /// Client name, or `unknown`.
    pub client: Arc<str>,
    pub total: u64,
    /// Of the heads parsed for this pair, those only a lenient server
    /// takes (`Request::lenient`; `rampwatch_malformed_requests_total`).
    /// Live, they are counted when their segment is sampled, so this may
    /// lag `total`'s share.
    pub malformed: u64,
}

/// Watched requests answered so far by (endpoint, client, status class).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseCount {
    /// Endpoint name, or `unlisted`.
    pub endpoint: Arc<str>,
    /// Client name, or `unknown`.
    pub client: Arc<str>,
    /// `1xx` … `5xx`, or `unknown` (response not seen or unreadable).
    pub class: &'static str,
    pub total: u64,
}

/// Totals behind [`ResponseCount`], kept by the engine.
pub(super) type ResponseTotals =
    std::collections::HashMap<(Arc<str>, Arc<str>, &'static str), u64, foldhash::fast::FixedState>;
