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

/// Bytes one TLS library call moved in clear text (live only: uprobes on
/// the process's OpenSSL), joined to its connection by the socket's own
/// 4-tuple, so the flow that carries the handshake facts also carries them.
#[derive(Clone)]
pub struct Plaintext {
    pub ts: Nanos,
    pub flow: FlowId,
    pub direction: Direction,
    /// Offset of the first byte in this direction's plaintext stream (bytes
    /// the probes have seen on this connection before it). A jump past the
    /// end of the previous chunk is a gap: bytes lost or not copied.
    pub offset: u64,
    /// Bytes the call moved; `data` is shorter when the copy was cut.
    pub len: u32,
    /// The copied prefix of those bytes.
    pub data: Bytes,
    /// Thread group id of the process that made the call.
    pub pid: u32,
}

/// Plaintext holds request heads, credentials included: `Debug` shows
/// lengths only.
impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plaintext")
            .field("ts", &self.ts)
            .field("flow", &self.flow)
            .field("direction", &self.direction)
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("captured", &self.data.len())
            .field("pid", &self.pid)
            .finish()
    }
}

/// Which end of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    /// Index into per-side arrays: 0 client, 1 server.
    pub const fn index(self) -> usize {
        match self {
            Self::Client => 0,
            Self::Server => 1,
        }
    }
}

/// One end of a flow is a socket on this machine (live only): the kernel
/// saw the cgroup that owns it, the TLS probes the process that uses it.
/// Announced once per side (and again when a pid becomes known).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalSocket {
    pub ts: Nanos,
    pub flow: FlowId,
    pub side: Side,
    /// cgroup v2 id (the inode of its cgroupfs directory); never 0.
    pub cgroup_id: u64,
    /// Thread group id of the process, where the TLS probes saw it.
    pub pid: Option<u32>,
}

/// What the sources deliver to the engine.
#[derive(Clone, Debug)]
pub enum Event {
    /// An end of the flow is a local socket (live only; after the flow's
    /// first packet).
    Socket(LocalSocket),
    Packet(Packet),
    /// Decrypted application data of a TLS connection (live only).
    Plaintext(Plaintext),
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
