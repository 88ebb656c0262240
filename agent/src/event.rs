//! The types every stage of the pipeline agrees on.
//!
//! Both sources of traffic, the kernel ring buffer (`capture`) and pcap files
//! (`pcap::reader`), turn what they read into [`Event`]s, and the engine
//! (`flow` → `protocol` → `identity` → `policy`) consumes nothing else. This is
//! what lets `rampwatch replay` run exactly the pipeline the live agent runs.

use std::net::SocketAddr;

use bytes::Bytes;

/// Wall-clock time, nanoseconds since the Unix epoch.
pub type Nanos = i64;

/// Which way a segment travels within its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server: requests.
    ToServer,
    /// Server to client: responses.
    ToClient,
}

impl Direction {
    /// Index into per-direction arrays: 0 to server, 1 to client.
    pub const fn index(self) -> usize {
        match self {
            Self::ToServer => 0,
            Self::ToClient => 1,
        }
    }
}

/// A TCP connection, oriented: `server` is the side that accepted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// TCP header flags, as on the wire (the one table is `agent_common::tcp`).
pub use agent_common::tcp as tcp_flags;

/// One TCP segment as it was seen on the wire.
#[derive(Clone)]
pub struct Packet {
    pub ts: Nanos,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    /// TCP flags, see [`tcp_flags`].
    pub flags: u8,
    /// Length of the TCP payload on the wire.
    pub payload_len: u32,
    /// The captured prefix of the payload; shorter than `payload_len` when
    /// the capture truncated it (kernel snaplen, pcap snaplen).
    pub payload: Bytes,
    /// Orientation, when the capture point knows it (the kernel knows which
    /// side is the monitored endpoint); `None` for pcap input, where the flow
    /// table infers it.
    pub direction: Option<Direction>,
}

/// Payload bytes can hold credentials in clear (an Authorization header in
/// a plaintext request), so `Debug` shows their length, never the bytes.
impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packet")
            .field("ts", &self.ts)
            .field("src", &self.src)
            .field("dst", &self.dst)
            .field("seq", &self.seq)
            .field("flags", &self.flags)
            .field("payload_len", &self.payload_len)
            .field("captured", &self.payload.len())
            .field("direction", &self.direction)
            .finish()
    }
}

/// Per-direction totals, indexed by [`Direction::index`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowTotals {
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub payload_bytes: [u64; 2],
    pub payload_segments: [u64; 2],
    pub request_starts: [u64; 2],
}

/// Why a flow ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowEndReason {
    /// Both sides sent FIN.
    Fin,
    Rst,
    /// Nothing seen for the idle timeout, or evicted from the kernel's table.
    Idle,
}

/// What the sources deliver to the engine.
#[derive(Clone, Debug)]
pub enum Event {
    Packet(Packet),
    /// The kernel counted `count` more HTTP request starts on `flow` since the
    /// last report. Live only: exact even when payload samples are thinned.
    RequestStarts {
        ts: Nanos,
        flow: FlowId,
        count: u64,
    },
    /// The flow is over; `totals` are the kernel's final counters when known.
    FlowEnd {
        ts: Nanos,
        flow: FlowId,
        reason: FlowEndReason,
        totals: Option<FlowTotals>,
    },
}
