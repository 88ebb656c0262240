//! Prometheus metrics and the /metrics endpoint (the families with a series
//! per endpoint and client are `super::family`'s, for scrape speed).
//!
//! Names and labels are an interface: the shipped alert rules
//! (`deploy/prometheus/rampwatch-rules.yaml`) and dashboards use them. Label
//! values stay bounded: contract names of clients and endpoints, `unknown`,
//! `unlisted`, the seven violation kinds, fixed severities and loss reasons.
//! No address, path or fingerprint ever becomes a label.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{
    Encoder as _, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;

use super::family::{Family, Kind};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot serve metrics on {addr}: {source}; pick a free address with --metrics-addr")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("registering metric {name}: {source}")]
    Register {
        name: &'static str,
        #[source]
        source: prometheus::Error,
    },
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family,
    pub responses: Family,
    pub malformed_requests: IntCounterVec,
    pub quota: Family,
    pub next_stage_quota: Family,
    pub readiness_lead: Gauge,
    pub violations: Family,
    pub violations_open: Family,
    pub flows: IntCounterVec,
    pub stage_info: IntGaugeVec,
    pub stage_next_change: Gauge,
    pub events_lost: IntCounterVec,
    pub kernel_request_starts: IntCounter,
    pub engine_requests: IntCounter,
    pub requests_uncharged: IntCounterVec,
    pub reload_success: IntGauge,
    pub build_info: IntGaugeVec,
    pub tls_probes_active: IntGauge,
    pub tls_probed_processes: IntGaugeVec,
    pub tls_calls_awaiting_socket: IntGauge,
    pub tls_probe_failures: IntCounterVec,
    pub tls_flows_without_plaintext: IntCounterVec,
    pub audit_writable: IntGauge,
    pub workload_cache_entries: IntGauge,
    pub workload_lookups: IntCounterVec,
    pub workload_rewalks: IntCounter,
    pub workload_endpoint_cgroups: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        macro_rules! labelled {
            ($ty:ident, $name:literal, $help:literal, [$($label:literal),*]) => {
                register(&registry, $name, $ty::new(Opts::new($name, $help), &[$($label),*]))?
            };
        }
        macro_rules! family {
            ($kind:ident, $name:literal, $help:literal, [$($label:literal),*]) => {
                Family::new($name, $help, Kind::$kind, &[$($label),*])
            };
        }
        macro_rules! single {
            ($ty:ident, $name:literal, $help:literal) => {
                register(&registry, $name, $ty::with_opts(Opts::new($name, $help)))?
            };
        }
        let m = Self {
            requests: family!(
                Counter,
                "rampwatch_requests_total",
                "Requests seen per endpoint and client.",
                ["endpoint", "client"]
            ),
            responses: family!(
                Counter,
                "rampwatch_responses_total",
                "Watched requests by what the API answered: status class 1xx..5xx, or unknown when the response was not seen.",
                ["endpoint", "client", "class"]
            ),
            malformed_requests: labelled!(
                IntCounterVec,
                "rampwatch_malformed_requests_total",
                "Request heads a strict HTTP/1 parser rejects but lenient servers serve (extension or lowercase method, runs of whitespace, bare LF, HTTP/0.9), per endpoint; each is also in rampwatch_requests_total and judged.",
                ["endpoint"]
            ),
            quota: family!(
                Gauge,
                "rampwatch_quota_requests_per_second",
                "The active stage's quota per endpoint and client.",
                ["endpoint", "client"]
            ),
            next_stage_quota: family!(
                Gauge,
                "rampwatch_next_stage_quota_requests_per_second",
                "The next stage's quota per endpoint and client (0: it grants none), for pairs with a quota now or next, or traffic.",
                ["endpoint", "client"]
            ),
            readiness_lead: single!(
                Gauge,
                "rampwatch_readiness_lead_seconds",
                "How long before a stage starts RampStageNotReady may fire (agent config readiness.lead)."
            ),
            violations: family!(
                Counter,
                "rampwatch_violations_total",
                "Contract violations seen, per occurrence.",
                ["kind", "endpoint", "client"]
            ),
            violations_open: family!(
                Gauge,
                "rampwatch_violations_open",
                "Violations currently open, by kind, severity, endpoint and client.",
                ["kind", "severity", "endpoint", "client"]
            ),
            flows: labelled!(
                IntCounterVec,
                "rampwatch_flows_total",
                "Flows classified (counted once, when protocol, endpoint and TLS version are known), by endpoint, protocol and TLS version.",
                ["endpoint", "protocol", "tls_version"]
            ),
            stage_info: labelled!(
                IntGaugeVec,
                "rampwatch_stage_info",
                "1 for the active stage of each contract.",
                ["contract", "stage"]
            ),
            stage_next_change: single!(
                Gauge,
                "rampwatch_stage_next_change_timestamp_seconds",
                "When the next stage starts (Unix time), 0 when no further stage."
            ),
            events_lost: labelled!(
                IntCounterVec,
                "rampwatch_events_lost_total",
                "Events lost or skipped anywhere between kernel and verdict, by reason.",
                ["reason"]
            ),
            kernel_request_starts: single!(
                IntCounter,
                "rampwatch_kernel_request_starts_total",
                "Request starts the kernel saw on watched traffic (HTTP/1 method at the start of a segment or TLS read to the server), counted before flow lookup: with rampwatch_engine_requests_total, the baseline that rampwatch_requests_total plus rampwatch_requests_uncharged_total add up to."
            ),
            engine_requests: single!(
                IntCounter,
                "rampwatch_engine_requests_total",
                "Requests in rampwatch_requests_total that the engine counted from parsed traffic because the kernel cannot (HTTP/2 streams, lenient HTTP/1 heads)."
            ),
            requests_uncharged: labelled!(
                IntCounterVec,
                "rampwatch_requests_uncharged_total",
                "Request starts the kernel counted that are in no rampwatch_requests_total series, by reason (flow_table_full, stray, flow_unmatched: lost; not_watched, duplicate_view: deliberately not charged).",
                ["reason"]
            ),
            reload_success: single!(
                IntGauge,
                "rampwatch_contract_reload_success",
                "1 when the last contract (re)load succeeded, 0 when it was rejected."
            ),
            build_info: labelled!(
                IntGaugeVec,
                "rampwatch_build_info",
                "Build information; always 1.",
                ["version"]
            ),
            tls_probes_active: single!(
                IntGauge,
                "rampwatch_tls_probes_active",
                "1 when the TLS library probes run, 0 when they are off or the host cannot run them."
            ),
            tls_probed_processes: labelled!(
                IntGaugeVec,
                "rampwatch_tls_probed_processes",
                "Processes whose OpenSSL is probed, by role (server, client).",
                ["role"]
            ),
            tls_calls_awaiting_socket: single!(
                IntGauge,
                "rampwatch_tls_calls_awaiting_socket",
                "SSL calls in progress that still wait for the syscall naming their socket; near 0 on a healthy node. While above 0, every read/write syscall on the node pays one more hash lookup; a value that only grows means calls were lost inside (threads killed in an SSL call)."
            ),
            tls_probe_failures: labelled!(
                IntCounterVec,
                "rampwatch_tls_probe_failures_total",
                "Processes that should have been probed and could not be, by reason.",
                ["reason"]
            ),
            tls_flows_without_plaintext: labelled!(
                IntCounterVec,
                "rampwatch_tls_flows_without_plaintext_total",
                "TLS flows to watched endpoints whose clear text was not seen (requests, credentials and paths unjudged).",
                ["endpoint"]
            ),
            audit_writable: single!(
                IntGauge,
                "rampwatch_audit_writable",
                "1 while the audit log takes records, 0 while it cannot be written (disk full, read-only); records meanwhile are counted in rampwatch_events_lost_total{reason=\"audit_write_failed\"}."
            ),
            workload_cache_entries: single!(
                IntGauge,
                "rampwatch_workload_cache_entries",
                "Workloads (cgroup id to pod, container or unit) held in the resolver's bounded cache."
            ),
            workload_lookups: labelled!(
                IntCounterVec,
                "rampwatch_workload_lookups_total",
                "Lookups of a local socket's workload by result: named (pod or systemd unit), unnamed (the cgroup exists but nothing on the node names it yet), not_found (no such cgroup, even after a re-walk).",
                ["result"]
            ),
            workload_rewalks: single!(
                IntCounter,
                "rampwatch_workload_rewalks_total",
                "Walks of the host's cgroupfs: on a lookup miss, and each second while endpoints are served by workloads."
            ),
            workload_endpoint_cgroups: single!(
                IntGauge,
                "rampwatch_workload_endpoint_cgroups",
                "Cgroups in the kernel's workload endpoint map: sockets of pods that serve an endpoint named by workloads."
            ),
            registry,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // The agent's own cost, in the standard `process_*` names
        // (`process_cpu_seconds_total`, `process_resident_memory_bytes`, open
        // fds, threads), read from /proc/self at scrape time: what an SRE
        // checks first when deciding whether a node agent may stay.
        m.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .map_err(|source| MetricsError::Register {
                name: "process_*",
                source,
            })?;
        Ok(m)
    }

    /// The families with a series per endpoint and client (see
    /// [`super::family`]), in name order.
    fn families(&self) -> [&Family; 6] {
        [
            &self.next_stage_quota,
            &self.quota,
            &self.requests,
            &self.responses,
            &self.violations,
            &self.violations_open,
        ]
    }

    /// The text exposition format, as served on /metrics: the registry's
    /// families, then the per-pair ones.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        let mut text = String::from_utf8(buf).unwrap_or_default();
        for f in self.families() {
            f.encode_into(&mut text);
        }
        text.into_bytes()
    }
}

fn register<M>(
    registry: &Registry,
    name: &'static str,
    metric: Result<M, prometheus::Error>,
) -> Result<M, MetricsError>
where
    M: prometheus::core::Collector + Clone + 'static,
{
    let metric = metric.map_err(|source| MetricsError::Register { name, source })?;
    registry
        .register(Box::new(metric.clone()))
        .map_err(|source| MetricsError::Register { name, source })?;
    Ok(metric)
}

/// Scrapers served at once; more are closed at accept (Prometheus retries at
/// its next interval). Encoding runs on the engine's runtime, so this bounds
/// what a crowd of scrapers can take from it.
pub const MAX_SCRAPERS: usize = 16;
/// Time a scraper gets to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection (keep-alive included) is closed gracefully after this long,
/// and dropped if it still has not finished 10 s later (a reader taking a
/// byte per second).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(10);

/// Binds `addr` now (so a busy port fails start-up with a clear message) and
/// returns the server future, which runs until `cancel`.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> Result<impl Future<Output = ()>, MetricsError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let permits = Arc::new(Semaphore::new(MAX_SCRAPERS));
    Ok(async move {
        loop {
            let stream = tokio::select! {
                () = cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors and the like: back off rather
                        // than spin on accept.
                        tracing::warn!(error = %e, "accepting a metrics connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                tracing::debug!("too many metrics connections; one closed at accept");
                continue;
            };
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let _permit = permit;
                let service = service_fn(move |req: Request<Incoming>| {
                    let metrics = Arc::clone(&metrics);
                    async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                let mut conn = std::pin::pin!(conn);
                let ended = tokio::select! {
                    ended = conn.as_mut() => Some(ended),
                    () = tokio::time::sleep(CONNECTION_LIFETIME) => None,
                };
                let ended = match ended {
                    Some(ended) => ended,
                    None => {
                        conn.as_mut().graceful_shutdown();
                        match tokio::time::timeout(GRACE, conn).await {
                            Ok(ended) => ended,
                            Err(_) => {
                                tracing::debug!(
                                    "a metrics connection outlived its lifetime; dropped"
                                );
                                return;
                            }
                        }
                    }
                };
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "metrics connection ended with an error");
                }
            });
        }
    })
}

fn respond(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            Bytes::from(metrics.encode()),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"see /metrics\n"),
        ),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_the_agents_own_cpu_and_memory() {
        let m = Metrics::new().expect("metrics register");
        let text = String::from_utf8(m.encode()).expect("utf-8 exposition");
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_threads",
        ] {
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} missing from /metrics"));
            if name != "process_cpu_seconds_total" {
                assert!(value > 0.0, "{name} = {value}");
            }
        }
    }

    /// Micro benchmark (not a timed test): encoding /metrics at 10k series,
    /// the size of a contract with 100 clients on 100 endpoints, next to
    /// the same 10k series in the `prometheus` crate's own vector (what
    /// `rampwatch_requests_total` was before `sinks::family`), alternating
    /// runs so that the machine's noise hits both alike.
    /// `cargo xtask bench metrics` runs it in release.
    #[cfg(feature = "bench")]
    #[test]
    fn bench_encode_10k_series() {
        let m = Metrics::new().expect("metrics register");
        let crate_registry = Registry::new();
        let crate_vec = IntCounterVec::new(
            Opts::new("rampwatch_requests_total", "Requests."),
            &["endpoint", "client"],
        )
        .expect("valid");
        crate_registry
            .register(Box::new(crate_vec.clone()))
            .expect("register");
        let endpoints: Vec<String> = (0..100).map(|i| format!("endpoint-{i:03}")).collect();
        let clients: Vec<String> = (0..100).map(|i| format!("partner-{i:03}")).collect();
        for e in &endpoints {
            for c in &clients {
                m.requests.with_label_values(&[e, c]).inc_by(12_345);
                crate_vec.with_label_values(&[e, c]).inc_by(12_345);
            }
        }
        let bytes = m.encode().len();
        let time = |f: &dyn Fn()| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        };
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..50 {
            ours.push(time(&|| {
                std::hint::black_box(m.encode());
            }));
            theirs.push(time(&|| {
                let mut buf = Vec::new();
                let _ = TextEncoder::new().encode(&crate_registry.gather(), &mut buf);
                std::hint::black_box(buf);
            }));
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[0])
        };
        let ((o, o_min), (t, t_min)) = (median(ours), median(theirs));
        println!(
            "/metrics at 10k series ({} KiB), medians over 50 alternating runs: {o:.2} ms (min {o_min:.2}); \
             the same series in the prometheus crate's vector: {t:.2} ms (min {t_min:.2}); ratio {:.2}",
            bytes / 1024,
            o / t
        );
    }
}
