//! What the API serves: views the engine task refreshes once per tick.
//!
//! The engine is owned by one task and never locked by API callers; they read
//! the last published views instead. A slow `rampwatch flows` therefore can
//! never stall packet processing. The flow list is the exception: it is as
//! long as the flow table, so it is built only when a client asks for it
//! (a [`FlowsCommand`] to the engine task), never per tick.

use std::{
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use tokio::sync::{broadcast, mpsc};

use crate::sinks::api::{
    AckCommand, FlowsCommand, StateSource,
    views::{ClientRow, ReadinessView, StageView, StatusView, ViolationRow, WatchEvent},
};

#[derive(Clone)]
pub struct Views {
    pub status: StatusView,
    pub stage: StageView,
    pub clients: Vec<ClientRow>,
    /// With the Unix time (s) each was last seen, for `--since`.
    pub violations: Vec<(i64, ViolationRow)>,
    /// Every stage's readiness, in contract order.
    pub readiness: Vec<ReadinessView>,
    /// The stage `rampwatch readiness` checks without `--stage`, or why
    /// there is none.
    pub readiness_next: Result<String, String>,
}

impl Default for Views {
    fn default() -> Self {
        Self {
            status: StatusView::default(),
            stage: StageView::default(),
            clients: Vec::new(),
            violations: Vec::new(),
            readiness: Vec::new(),
            readiness_next: Err(
                "the agent has not judged any traffic yet; retry in a second".into(),
            ),
        }
    }
}

pub struct Snapshot {
    views: RwLock<Views>,
    watch: broadcast::Sender<WatchEvent>,
    /// Acknowledgements, to the engine task (which takes the receiver).
    acks: mpsc::Sender<AckCommand>,
    ack_rx: Mutex<Option<mpsc::Receiver<AckCommand>>>,
    /// `flows` requests, to the engine task (which takes the receiver).
    flows: mpsc::Sender<FlowsCommand>,
    flows_rx: Mutex<Option<mpsc::Receiver<FlowsCommand>>>,
}

impl Snapshot {
    pub fn new() -> Arc<Self> {
        let (watch, _) = broadcast::channel(1024);
        let (acks, ack_rx) = mpsc::channel(16);
        let (flows, flows_rx) = mpsc::channel(16);
        Arc::new(Self {
            views: RwLock::new(Views::default()),
            watch,
            acks,
            ack_rx: Mutex::new(Some(ack_rx)),
            flows,
            flows_rx: Mutex::new(Some(flows_rx)),
        })
    }

    /// The `flows` requests the API receives; once, for the engine task.
    pub fn take_flow_requests(&self) -> Option<mpsc::Receiver<FlowsCommand>> {
        self.flows_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The acknowledgements the API receives; once, for the engine task.
    pub fn take_acks(&self) -> Option<mpsc::Receiver<AckCommand>> {
        self.ack_rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub fn publish(&self, views: Views) {
        // A poisoned lock only means a reader panicked mid-clone; the data is
        // still whole, so keep serving it.
        *self.views.write().unwrap_or_else(|e| e.into_inner()) = views;
    }

    /// Streams `event` to every `rampwatch watch`; nobody listening is fine.
    pub fn announce(&self, event: WatchEvent) {
        let _ = self.watch.send(event);
    }

    fn read<T>(&self, f: impl FnOnce(&Views) -> T) -> T {
        f(&self.views.read().unwrap_or_else(|e| e.into_inner()))
    }
}

impl StateSource for Snapshot {
    fn status(&self) -> StatusView {
        self.read(|v| v.status.clone())
    }

    fn stage(&self) -> StageView {
        self.read(|v| v.stage.clone())
    }

    fn clients(&self) -> Vec<ClientRow> {
        self.read(|v| v.clients.clone())
    }

    fn violations(&self, since: Option<Duration>) -> Vec<ViolationRow> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let cutoff =
            since.map(|d| i64::try_from(now.saturating_sub(d).as_secs()).unwrap_or(i64::MAX));
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        self.read(|v| {
            v.violations
                .iter()
                .filter(|(seen, _)| cutoff.is_none_or(|c| *seen >= c))
                .map(|(_, row)| row.clone().at(now))
                .collect()
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<WatchEvent> {
        self.watch.subscribe()
    }

    fn readiness(&self, stage: Option<&str>) -> Result<ReadinessView, String> {
        self.read(|v| {
            let name = match stage {
                Some(name) => name.to_owned(),
                None => v.readiness_next.clone()?,
            };
            v.readiness
                .iter()
                .find(|r| r.stage == name)
                .cloned()
                .ok_or_else(|| {
                    let known: Vec<&str> = v.readiness.iter().map(|r| r.stage.as_str()).collect();
                    format!(
                        "the contract has no stage named `{name}`; its stages are: {}",
                        known.join(", ")
                    )
                })
        })
    }

    fn acks(&self) -> Option<mpsc::Sender<AckCommand>> {
        Some(self.acks.clone())
    }

    fn flow_requests(&self) -> Option<mpsc::Sender<FlowsCommand>> {
        Some(self.flows.clone())
    }
}
