//! Kernel flow-map records in userspace terms: addresses, totals, the
//! observer a view belongs to, and the compact key the tracker files
//! connections under.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use agent_common::{FlowKey, FlowStats, flow_state, observer};

use crate::event::{FlowEndReason, FlowId, FlowTotals, Nanos, Side};

/// One connection (its 4-tuple) as the tracker keys it: the kernel's
/// address bytes, 36 bytes instead of a [`FlowId`]'s 64; turned into a
/// [`FlowId`] only for the events it reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Conn {
    client: [u8; 16],
    server: [u8; 16],
    client_port: u16,
    server_port: u16,
}

impl Conn {
    pub(super) fn of(key: &FlowKey) -> Self {
        Self {
            client: key.client_addr,
            server: key.server_addr,
            client_port: key.client_port,
            server_port: key.server_port,
        }
    }

    pub(super) fn id(&self) -> FlowId {
        FlowId {
            client: SocketAddr::new(ip(self.client), self.client_port),
            server: SocketAddr::new(ip(self.server), self.server_port),
        }
    }
}

/// The kernel's view of one flow-map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSnapshot {
    pub flow: FlowId,
    /// `agent_common::observer` value.
    pub observer: u8,
    /// Interface index for TC views, 0 otherwise.
    pub ifindex: u32,
    pub endpoint_id: u32,
    pub cgroup_id: u64,
    pub totals: FlowTotals,
    /// TCP flags seen, per direction (to server, to client).
    pub tcp_flags: [u8; 2],
    /// Wall clock of the first and last packet (0 when none yet).
    pub first_seen: Nanos,
    pub last_seen: Nanos,
    /// The flow ended (FIN/RST) and its counters are final; the entry is
    /// deleted at the next poll once the end was reported.
    pub ended: bool,
}

/// Converts a kernel address (IPv4 mapped into IPv6) to a std address.
pub fn ip(addr: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

pub fn flow_id(key: &FlowKey) -> FlowId {
    FlowId {
        client: SocketAddr::new(ip(key.client_addr), key.client_port),
        server: SocketAddr::new(ip(key.server_addr), key.server_port),
    }
}

pub fn totals(s: &FlowStats) -> FlowTotals {
    let [a, b] = &s.dirs;
    FlowTotals {
        packets: [a.packets, b.packets],
        bytes: [a.bytes, b.bytes],
        payload_bytes: [a.payload_bytes, b.payload_bytes],
        payload_segments: [a.payload_segments, b.payload_segments],
        request_starts: [a.request_starts, b.request_starts],
    }
}

pub fn snapshot(key: &FlowKey, s: &FlowStats, boot_to_wall: i64) -> FlowSnapshot {
    let wall = |t: u64| {
        if t == 0 {
            0
        } else {
            i64::try_from(t)
                .unwrap_or(i64::MAX)
                .saturating_add(boot_to_wall)
        }
    };
    let first = s
        .dirs
        .iter()
        .map(|d| d.first_seen_ns)
        .filter(|&t| t != 0)
        .min()
        .unwrap_or(0);
    let last = s.dirs.iter().map(|d| d.last_seen_ns).max().unwrap_or(0);
    FlowSnapshot {
        flow: flow_id(key),
        observer: key.observer,
        ifindex: key.ifindex,
        endpoint_id: s.endpoint_id,
        cgroup_id: s.cgroup_id,
        totals: totals(s),
        tcp_flags: [s.dirs[0].tcp_flags as u8, s.dirs[1].tcp_flags as u8],
        first_seen: wall(first),
        last_seen: wall(last),
        ended: s.state & flow_state::ENDED != 0,
    }
}

/// Which observer saw a connection: `FlowKey::observer` and `ifindex`.
pub(super) type ObserverId = (u8, u32);

pub(super) fn view(key: &FlowKey) -> ObserverId {
    (key.observer, key.ifindex)
}

/// Identifies one connection among those reusing a 4-tuple: the kernel's
/// first-seen stamp (0 when unknown).
pub(super) fn first_seen(s: &FlowStats) -> u64 {
    s.dirs
        .iter()
        .map(|d| d.first_seen_ns)
        .filter(|&t| t != 0)
        .min()
        .unwrap_or(0)
}

pub(super) fn totals_requests(s: &FlowStats) -> u64 {
    s.dirs[0].request_starts
}

/// The side whose socket a view sits on. TLS plaintext records say it
/// through [`tls_side`] and [`tls_socket_key`]; TC views have none.
pub(super) fn socket_side(observer: u8) -> Option<Side> {
    match observer {
        observer::CLIENT_SOCKET => Some(Side::Client),
        observer::SERVER_SOCKET => Some(Side::Server),
        _ => None,
    }
}

/// The side of the process behind a TLS plaintext record: the probes call
/// the process the client when its writes go to the server.
pub fn tls_side(call: u32, direction: u8) -> Side {
    let write = call == agent_common::tls_call::WRITE;
    if write == (direction == agent_common::direction::TO_SERVER) {
        Side::Client
    } else {
        Side::Server
    }
}

/// The key of the wire view on `side`'s socket for a TLS plaintext key, so
/// [`super::Tracker::socket`] files the process under the right end.
pub fn tls_socket_key(key: &FlowKey, side: Side) -> FlowKey {
    FlowKey {
        observer: match side {
            Side::Client => observer::CLIENT_SOCKET,
            Side::Server => observer::SERVER_SOCKET,
        },
        ifindex: 0,
        ..*key
    }
}

pub(super) fn end_reason(state: u64) -> FlowEndReason {
    if state & flow_state::END_RST != 0 {
        FlowEndReason::Rst
    } else {
        FlowEndReason::Fin
    }
}
