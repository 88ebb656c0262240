//! A synchronous wrapper around `Capture` for tests: start it
//! on a cgroup or an interface, collect the events it delivers, read its
//! kernel counters and flow table, shut it down. Tests stay plain `#[test]`
//! functions; the tokio runtime lives here.
//!
//! This is the only file that knows the capture's API, so an API change is
//! absorbed in one place.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use agent::{
    capture::{
        Capture, CaptureConfig, CaptureError, EndpointRule, FlowSnapshot, PortSpec, TlsCoverage,
        TlsOptions,
    },
    event::{Direction, Event, FlowEndReason, FlowId, FlowTotals, Packet},
};
use ipnet::IpNet;
use tokio::sync::mpsc;

use crate::wait::wait_until;

/// Where to attach.
#[derive(Clone, Debug)]
pub enum Attach {
    /// cgroup_skb ingress + egress on this cgroup v2 directory.
    Cgroup(PathBuf),
    /// TC ingress + egress on this interface (of the calling thread's netns).
    Tc(String),
}

/// One monitored endpoint: `addr/prefix`, TCP `port`.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub prefix: u8,
    pub port: u16,
}

impl Endpoint {
    /// Exactly this server address.
    pub fn exact(server: SocketAddr) -> Self {
        let prefix = if server.is_ipv4() { 32 } else { 128 };
        Self {
            addr: server.ip(),
            prefix,
            port: server.port(),
        }
    }
}

/// Capture knobs the tests turn.
#[derive(Clone, Debug)]
pub struct Tuning {
    pub snaplen: u32,
    pub first_segments: u32,
    /// 1 in N of the other segments; 0 = never.
    pub sample_one_in: u32,
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_bytes: Option<u32>,
    /// Capacity of the event channel between capture and consumer, in
    /// batches (of up to `agent::capture::BATCH` events).
    pub channel: usize,
    /// OpenSSL plaintext probes; off unless a test asks (they probe every
    /// server on a watched port, which other tests do not expect).
    pub tls: Option<TlsOptions>,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            snaplen: agent_common::DEFAULT_SNAPLEN,
            first_segments: agent_common::DEFAULT_FIRST_SEGMENTS,
            sample_one_in: agent_common::DEFAULT_SAMPLE_ONE_IN,
            ring_bytes: None,
            channel: 65536,
            tls: None,
        }
    }
}

/// The kernel's loss and activity counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub ring_full: u64,
    pub flow_end_ring_full: u64,
    pub flow_table_full: u64,
    pub sample_truncated: u64,
    pub samples_emitted: u64,
    pub flow_ends_emitted: u64,
    pub packets_monitored: u64,
}

/// A running capture plus everything it delivered so far.
pub struct Harness {
    rt: tokio::runtime::Runtime,
    capture: Option<Capture>,
    rx: mpsc::Receiver<Vec<Event>>,
    /// Every event received, in order.
    pub events: Vec<Event>,
}

impl Harness {
    pub fn start(attach: Attach, endpoints: &[Endpoint], tuning: Tuning) -> Self {
        Self::try_start(attach, endpoints, tuning)
            .unwrap_or_else(|e| panic!("capture did not start: {e}"))
    }

    /// Like [`Harness::start`], returning the capture's error.
    pub fn try_start(
        attach: Attach,
        endpoints: &[Endpoint],
        tuning: Tuning,
    ) -> Result<Self, CaptureError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let (tx, rx) = mpsc::channel(tuning.channel);
        let capture = rt.block_on(async { start_capture(&attach, endpoints, &tuning, tx) })?;
        Ok(Self {
            rt,
            capture: Some(capture),
            rx,
            events: Vec::new(),
        })
    }

    /// Move whatever the channel holds into `events`; returns how many.
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        while let Ok(batch) = self.rx.try_recv() {
            n += batch.len();
            self.events.extend(batch);
        }
        n
    }

    /// Drain until `done(events)` holds.
    pub fn wait_events(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&[Event]) -> bool,
    ) {
        wait_until(what, timeout, || {
            self.drain();
            done(&self.events).then_some(())
        });
    }

    /// Drain until `done(events, kernel counters)` holds.
    pub fn wait_state(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&[Event], &Counters) -> bool,
    ) {
        wait_until(what, timeout, || {
            self.drain();
            let c = self.counters();
            done(&self.events, &c).then_some(())
        });
    }

    /// Wait for the flow-end event of `flow` and return its reason and totals.
    pub fn wait_flow_end(
        &mut self,
        flow: FlowId,
        timeout: Duration,
    ) -> (FlowEndReason, Option<FlowTotals>) {
        self.wait_events(&format!("flow end of {flow:?}"), timeout, |evs| {
            evs.iter()
                .any(|e| matches!(e, Event::FlowEnd { flow: f, .. } if *f == flow))
        });
        self.events
            .iter()
            .find_map(|e| match e {
                Event::FlowEnd {
                    flow: f,
                    reason,
                    totals,
                    ..
                } if *f == flow => Some((*reason, *totals)),
                _ => None,
            })
            .expect("flow end present")
    }

    /// Packet samples of `flow`, in delivery order.
    pub fn packets_of(&self, flow: FlowId) -> Vec<&Packet> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Packet(p) if packet_flow(p) == Some(flow) => Some(p),
                _ => None,
            })
            .collect()
    }

    /// Every event that concerns `flow`.
    pub fn events_of(&self, flow: FlowId) -> Vec<&Event> {
        self.events
            .iter()
            .filter(|e| event_flow(e) == Some(flow))
            .collect()
    }

    /// Sum of `RequestStarts` counts delivered for `flow`.
    pub fn request_starts_of(&self, flow: FlowId) -> u64 {
        self.events
            .iter()
            .map(|e| match e {
                Event::RequestStarts { flow: f, count, .. } if *f == flow => *count,
                _ => 0,
            })
            .sum()
    }

    /// What the TLS probes cover right now.
    pub fn tls_coverage(&self) -> TlsCoverage {
        self.capture
            .as_ref()
            .expect("capture running")
            .tls_coverage()
    }

    /// Kernel counters by name (`agent_common::stat` table).
    pub fn named_counters(&self) -> Vec<(&'static str, u64)> {
        self.capture
            .as_ref()
            .expect("capture running")
            .stats()
            .unwrap_or_else(|e| panic!("read capture stats: {e}"))
            .kernel
            .named()
            .collect()
    }

    /// Run statistics of the attached programs.
    pub fn program_costs(&self) -> Vec<agent::capture::ProgramCost> {
        self.capture
            .as_ref()
            .expect("capture running")
            .program_costs()
    }

    pub fn counters(&self) -> Counters {
        read_counters(self.capture.as_ref().expect("capture running"))
    }

    /// The kernel's flow table right now (every view).
    pub fn flows(&self) -> Vec<FlowSnapshot> {
        self.capture.as_ref().expect("capture running").flows()
    }

    /// Flows in the kernel's flow table right now.
    pub fn flow_ids(&self) -> Vec<FlowId> {
        read_flow_ids(self.capture.as_ref().expect("capture running"))
    }

    pub fn set_endpoints(&mut self, endpoints: &[Endpoint]) {
        let cap = self.capture.as_mut().expect("capture running");
        set_capture_endpoints(cap, endpoints);
    }

    /// Detach and stop; returns the events still queued in the channel.
    pub fn shutdown(mut self) -> Vec<Event> {
        let cap = self.capture.take().expect("capture running");
        self.rt.block_on(async { shutdown_capture(cap).await });
        self.drain();
        std::mem::take(&mut self.events)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(cap) = self.capture.take() {
            self.rt.block_on(async { shutdown_capture(cap).await });
        }
    }
}

/// The flow a sample belongs to, using the direction the kernel set.
pub fn packet_flow(p: &Packet) -> Option<FlowId> {
    match p.direction? {
        Direction::ToServer => Some(FlowId {
            client: p.src,
            server: p.dst,
        }),
        Direction::ToClient => Some(FlowId {
            client: p.dst,
            server: p.src,
        }),
    }
}

pub fn event_flow(e: &Event) -> Option<FlowId> {
    match e {
        Event::Packet(p) => packet_flow(p),
        Event::Plaintext(pt) => Some(pt.flow),
        Event::Socket(s) => Some(s.flow),
        Event::RequestStarts { flow, .. } | Event::FlowEnd { flow, .. } => Some(*flow),
    }
}

// ---- the capture API, in one place ------------------------------------------------

fn rules(endpoints: &[Endpoint]) -> Vec<EndpointRule> {
    endpoints
        .iter()
        .zip(1..)
        .map(|(e, id)| EndpointRule {
            id,
            prefix: Some(
                IpNet::new(e.addr, e.prefix)
                    .expect("valid prefix length")
                    .trunc(),
            ),
            ports: PortSpec::List(vec![e.port]),
            workload: false,
        })
        .collect()
}

fn start_capture(
    attach: &Attach,
    endpoints: &[Endpoint],
    tuning: &Tuning,
    tx: mpsc::Sender<Vec<Event>>,
) -> Result<Capture, CaptureError> {
    let defaults = CaptureConfig::default();
    let (attach_cgroup, cgroup, interfaces) = match attach {
        Attach::Cgroup(p) => (true, Some(p.clone()), Vec::new()),
        Attach::Tc(i) => (false, None, vec![i.clone()]),
    };
    let config = CaptureConfig {
        attach_cgroup,
        cgroup,
        interfaces,
        endpoints: rules(endpoints),
        snaplen: tuning.snaplen,
        first_segments: tuning.first_segments,
        sample_one_in: tuning.sample_one_in,
        ring_bytes: tuning.ring_bytes.unwrap_or(defaults.ring_bytes),
        // Request-start deltas and flow-map changes show up quickly in tests.
        poll_interval: Duration::from_millis(50),
        tls: tuning.tls.clone().unwrap_or(TlsOptions {
            enabled: false,
            ..TlsOptions::default()
        }),
        ..defaults
    };
    Capture::start(config, tx)
}

async fn shutdown_capture(cap: Capture) {
    cap.shutdown().await;
}

fn read_counters(cap: &Capture) -> Counters {
    let s = cap
        .stats()
        .unwrap_or_else(|e| panic!("read capture stats: {e}"));
    Counters {
        ring_full: s.kernel.ring_full(),
        flow_end_ring_full: s.kernel.flow_end_ring_full(),
        flow_table_full: s.kernel.flow_table_full(),
        sample_truncated: s.kernel.sample_truncated(),
        samples_emitted: s.kernel.samples_emitted(),
        flow_ends_emitted: s.kernel.flow_ends_emitted(),
        packets_monitored: s.kernel.packets_monitored(),
    }
}

fn read_flow_ids(cap: &Capture) -> Vec<FlowId> {
    cap.flows().into_iter().map(|f| f.flow).collect()
}

fn set_capture_endpoints(cap: &mut Capture, endpoints: &[Endpoint]) {
    cap.set_endpoints(&rules(endpoints))
        .unwrap_or_else(|e| panic!("set endpoints: {e}"));
}
