//! The live agent: `rampwatch agent`.
//!
//! Start-up follows one checklist, each step failing with one sentence:
//! contract, audit log, metrics address, API socket, then the kernel
//! (privileges, BTF, cgroup v2 — `capture` checks those). After that one
//! task owns the engine and everything flows through it:
//!
//! ```text
//! kernel ring ─► capture ─► mpsc<Vec<Event>> ─► engine ─► outputs ─► metrics / audit / watch
//!                     ▲                       ▲ tick (1 s): stage changes, quiet violations,
//!   flow-map poller ──┘ (after a ring drain)  │           views for the API socket
//!   contract file / SIGHUP ─► reload ─────────┘
//! ```
//!
//! The loop's state between events (`state::LoopState`): outputs to the
//! sinks, the views each tick publishes, reloads.
//!
//! Quotas count the kernel's per-flow request starts (exact even when
//! payload samples are thinned); identity, endpoint and path come from the
//! sampled request heads, which the kernel always samples. TLS hides
//! requests: a TLS flow counts towards `rampwatch_flows_total`, not towards
//! request quotas (see `docs/architecture.md`).

mod audit_thread;
pub mod config;
pub mod paths;
mod present;
pub mod reload;
mod rules;
pub mod snapshot;
mod state;
mod usage;
mod workloads;

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

use self::{audit_thread::AuditWriter, present::Counters, snapshot::Snapshot, state::LoopState};
use crate::{
    capture::{Capture, CaptureConfig},
    cli::AgentArgs,
    contract::Contract,
    event::{Event, Nanos},
    policy::{Engine, EngineOptions},
    sinks::{
        api::ApiServer,
        audit::RecordKind,
        metrics::{self, Metrics},
    },
};

const TICK: Duration = Duration::from_secs(1);
const RESOLVE_EVERY: Duration = Duration::from_secs(300);
/// Ended flows kept for `rampwatch flows`.
const RECENT_FLOWS: usize = 256;

fn now() -> Nanos {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

/// Runs the agent until SIGINT/SIGTERM. Everything attached is detached and
/// the socket removed on the way out.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    if let Some(config) = &args.config {
        paths::check_file(config, "agent config")?;
    }
    let settings = config::Settings::resolve(&args)?;
    // Privileges first: without them nothing below can work, and the
    // operator should hear that, not about a directory it could not open.
    crate::capture::check_privileges()?;
    // Files the agent believes: nobody but root (or the agent's own uid)
    // may be able to swap them.
    paths::check_file(&settings.contract, "contract")?;
    if let Some(key) = &settings.audit_key {
        for w in paths::check_key(key)? {
            tracing::warn!("{w}");
        }
    }
    let started = now();
    let contract = Arc::new(Contract::load(&settings.contract)?);
    // The contract hashed the bytes it was parsed from; reading the file
    // again could hash a newer version than the one loaded.
    let contract_sha = hex::encode(contract.sha256().as_bytes());

    // Bind what can collide with another agent before writing anything, so
    // a failed start leaves no half-told story in the audit log.
    let cancel = CancellationToken::new();
    let metrics = Arc::new(Metrics::new()?);
    metrics.reload_success.set(1);
    // Until the audit thread says otherwise (its first publish follows).
    metrics.audit_writable.set(1);
    #[expect(
        clippy::cast_precision_loss,
        reason = "a lead time in seconds fits f64 exactly"
    )]
    metrics
        .readiness_lead
        .set((settings.readiness_lead / 1_000_000_000) as f64);
    let metrics_server =
        metrics::serve(settings.metrics_addr, Arc::clone(&metrics), cancel.clone()).await?;
    let api = ApiServer::bind(&settings.socket, settings.socket_group.as_deref())?;
    let snapshot = Snapshot::new();

    let audit = AuditWriter::open(&settings.audit_dir, settings.audit_key.as_deref())?;
    audit.record(RecordKind::AgentStart {
        version: env!("CARGO_PKG_VERSION").to_owned(),
    });
    audit.record(RecordKind::ContractLoaded {
        contract: contract.name().to_owned(),
        sha256: contract_sha.clone(),
    });

    let (capture, capture_desc, mut rx) = match start_capture(&contract, &settings).await {
        Ok(started) => started,
        Err(e) => {
            // Audited as the agent's stop: the log tells the whole story.
            audit.record(RecordKind::AgentStop {
                reason: format!("capture failed to start: {e}"),
            });
            audit.close();
            return Err(e.into());
        }
    };
    tracing::info!(
        contract = contract.name(),
        capture = %capture_desc,
        metrics = %settings.metrics_addr,
        socket = %settings.socket.display(),
        "rampwatch agent started"
    );

    let tasks = tokio::task::JoinSet::new();
    let mut tasks = tasks;
    tasks.spawn(metrics_server);

    // Signals: INT/TERM stop, HUP reloads the contract.
    let (hup_tx, hup_rx) = mpsc::channel(1);
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let (reload_tx, mut reload_rx) = mpsc::channel(4);
    tasks.spawn(reload::watch(
        settings.contract.clone(),
        contract_sha.clone(),
        Duration::from_secs(2),
        hup_rx,
        |path: &std::path::Path, bytes: &[u8]| {
            // Checked again on every reload: a directory made writable since
            // start must not become a way to swap the contract.
            paths::check_file(path, "contract").map_err(|e| e.to_string())?;
            Contract::parse_bytes(bytes, &path.display().to_string()).map_err(|e| e.to_string())
        },
        reload_tx,
        cancel.clone(),
    ));

    let mut engine = live_engine(Arc::clone(&contract), &settings);
    let resolver = workloads::resolver(&settings);
    if let Some(resolver) = &resolver {
        engine.set_workloads(Arc::clone(resolver));
    }
    engine.tick(now());
    if let Some(record) = present::first_stage(&engine) {
        audit.record(record);
    }
    let mut state = LoopState {
        contract,
        rules_generation: 0,
        contract_sha,
        reload_error: None,
        counters: Counters::default(),
        recent: std::collections::VecDeque::new(),
        capture_desc,
        started,
        acks: std::collections::HashMap::new(),
        workloads: workloads::WorkloadSync::new(resolver),
    };
    // The socket answers only once there is something true to say.
    state.publish(&engine, &capture, &metrics, &audit, &snapshot);
    tasks.spawn(api.serve(Arc::clone(&snapshot) as _, cancel.clone()));
    let mut ticker = tokio::time::interval(TICK);
    let (rules_tx, mut rules_rx) = mpsc::channel(2);
    let mut acks = snapshot
        .take_acks()
        .context("the API's acknowledgements were taken twice")?;
    let mut usage =
        usage::UsageMeter::new(settings.usage_interval, settings.usage_max_pairs, started);
    let mut flow_requests = snapshot
        .take_flow_requests()
        .context("the API's flow requests were taken twice")?;
    let mut resolve = tokio::time::interval(RESOLVE_EVERY);
    resolve.tick().await;
    // The first tick fires at once: workload endpoints are watched from
    // the start, then followed as pods come and go.
    let mut workload_sync = tokio::time::interval(workloads::SYNC_EVERY);
    workload_sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (served_tx, mut served_rx) = mpsc::channel(2);
    let reason = loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break "the capture stopped".to_owned() };
                batch.into_iter().for_each(|ev| engine.handle(ev));
                // Drain what is already queued before looking at timers.
                while let Ok(batch) = rx.try_recv() {
                    batch.into_iter().for_each(|ev| engine.handle(ev));
                }
                state.outputs(&mut engine, &metrics, &audit, &snapshot);
            }
            _ = ticker.tick() => {
                engine.tick(now());
                state.outputs(&mut engine, &metrics, &audit, &snapshot);
                state.publish(&engine, &capture, &metrics, &audit, &snapshot);
                let at = now();
                if usage.due(at) {
                    usage.write(at, &engine, &audit);
                }
            }
            _ = resolve.tick() => {
                rules::spawn_kernel_rules(Arc::clone(&state.contract), state.rules_generation, rules_tx.clone());
            }
            Some(msg) = reload_rx.recv() => {
                if state.reload(msg, &mut engine, &metrics, &audit) {
                    rules::spawn_kernel_rules(Arc::clone(&state.contract), state.rules_generation, rules_tx.clone());
                    state.workloads.spawn(Arc::clone(&state.contract), state.rules_generation, served_tx.clone());
                }
            }
            _ = workload_sync.tick() => {
                state.workloads.spawn(Arc::clone(&state.contract), state.rules_generation, served_tx.clone());
            }
            Some((generation, entries)) = served_rx.recv() => {
                if generation == state.rules_generation
                    && let Err(e) = capture.set_workload_endpoints(entries)
                {
                    tracing::warn!(error = %e, "updating the kernel's workload endpoint map failed; retried at the next sync");
                }
            }
            Some((generation, rules)) = rules_rx.recv() => {
                // Only the current contract's rules; an older lookup may
                // answer late.
                if generation == state.rules_generation
                    && let Err(e) = capture.set_endpoints(&rules)
                {
                    tracing::warn!(error = %e, "updating the kernel's endpoint map failed; the previous one stays");
                }
            }
            Some(cmd) = acks.recv() => {
                let at = now();
                let result = present::acknowledge(&engine, &cmd, at, &audit);
                if result.is_ok() {
                    state.acks.insert(cmd.id.clone(), (cmd.by.clone(), at));
                }
                let _ = cmd.reply.send(result);
            }
            Some(cmd) = flow_requests.recv() => {
                // The list is built now, so publish the other views now
                // too: a `violations` asked after `flows` is never older
                // than the flows it just listed.
                state.outputs(&mut engine, &metrics, &audit, &snapshot);
                state.publish(&engine, &capture, &metrics, &audit, &snapshot);
                // The caller may have gone; nothing to do then.
                let _ = cmd.reply.send(state.flow_rows(&engine));
            }
            _ = sighup.recv() => { let _ = hup_tx.try_send(()); }
            _ = sigint.recv() => break "SIGINT".to_owned(),
            _ = sigterm.recv() => break "SIGTERM".to_owned(),
        }
    };
    tracing::info!(reason, "rampwatch agent stopping");
    cancel.cancel();
    drain_at_shutdown(capture, &mut rx, &mut engine).await;
    engine.tick(now());
    state.outputs(&mut engine, &metrics, &audit, &snapshot);
    while tasks.join_next().await.is_some() {}
    // The tail since the last boundary, so a report covers the whole run.
    usage.write(now(), &engine, &audit);
    audit.record(RecordKind::AgentStop { reason });
    audit.close();
    Ok(())
}

/// Computes the kernel rules and starts live capture: the capture, its
/// description for `status`, and the events it delivers.
async fn start_capture(
    contract: &Contract,
    settings: &config::Settings,
) -> Result<(Capture, String, mpsc::Receiver<Vec<Event>>), crate::capture::CaptureError> {
    // Batches of up to `BATCH` events: at most the 8192 events a channel of
    // single events held (memory stays bounded when the engine is behind).
    let (tx, rx) = mpsc::channel::<Vec<Event>>(8192 / crate::capture::BATCH);
    let config = CaptureConfig {
        endpoints: rules::kernel_rules(contract).await,
        ..settings.capture.clone()
    };
    let capture_desc = describe_capture(&config);
    Ok((Capture::start(config, tx)?, capture_desc, rx))
}

/// The engine as the live agent runs it: request counts from the kernel,
/// occurrences emitted, violations resolving after the quiet period.
fn live_engine(contract: Arc<Contract>, settings: &config::Settings) -> Engine {
    let mut flow = crate::flow::FlowConfig::default();
    // The kernel's poller ends idle flows; the engine must not forget one
    // earlier, or a quiet keep-alive connection becomes two flows and the
    // request counts in between find no flow.
    flow.idle_timeout = flow
        .idle_timeout
        .max(duration_nanos(settings.capture.idle_timeout) + 30 * 1_000_000_000);
    Engine::new(
        contract,
        EngineOptions {
            requests_from_kernel: true,
            emit_occurrences: true,
            quiet_period: Some(settings.quiet_period),
            rate_window: crate::policy::RateWindow(settings.readiness_window),
            flow,
            ..EngineOptions::default()
        },
    )
}

/// Shutdown detaches, then hands over what is still in the ring; judges it
/// while it arrives (the channel would otherwise fill and stall the drain).
async fn drain_at_shutdown(
    capture: Capture,
    rx: &mut mpsc::Receiver<Vec<Event>>,
    engine: &mut Engine,
) {
    let shutdown = capture.shutdown();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(batch) = rx.recv() => batch.into_iter().for_each(|ev| engine.handle(ev)),
        }
    }
    while let Ok(batch) = rx.try_recv() {
        batch.into_iter().for_each(|ev| engine.handle(ev));
    }
}

fn duration_nanos(d: Duration) -> Nanos {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn describe_capture(config: &CaptureConfig) -> String {
    let mut parts = Vec::new();
    if config.attach_cgroup {
        parts.push(format!(
            "cgroup_skb on {}",
            config.cgroup.as_ref().map_or_else(
                || "the cgroup v2 root".to_owned(),
                |p| p.display().to_string()
            )
        ));
    }
    for iface in &config.interfaces {
        parts.push(format!("tc on {iface}"));
    }
    parts.join(", ")
}
