//! Which side of a pcap flow is the client.
//!
//! Kernel packets carry their direction. For pcap packets, in order of trust:
//! a SYN without ACK comes from the client, a SYN+ACK from the server; else a
//! side that is a watched server (contract endpoint or scope) is the server;
//! else the side sending a TLS ClientHello or an HTTP request is the client
//! (a ServerHello or HTTP response marks the server); else the lower port is
//! the server. A flow oriented by a weaker rule is re-oriented by a stronger
//! one as long as no payload was looked at.

use std::net::SocketAddr;

use super::{Flow, dissect};
use crate::event::{Direction, FlowId, Packet, tcp_flags};

/// How a flow's orientation was decided, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Orientation {
    Port,
    Payload,
    Contract,
    Handshake,
    /// The capture point knew (kernel).
    Kernel,
}

/// Orients a flow from its first packet.
pub fn orient(p: &Packet, is_server: &dyn Fn(SocketAddr) -> bool) -> (FlowId, Orientation) {
    let fwd = FlowId {
        client: p.src,
        server: p.dst,
    };
    let rev = FlowId {
        client: p.dst,
        server: p.src,
    };
    if let Some(dir) = p.direction {
        return match dir {
            Direction::ToServer => (fwd, Orientation::Kernel),
            Direction::ToClient => (rev, Orientation::Kernel),
        };
    }
    if let Some(sender_is_client) = handshake_says(p) {
        return (
            if sender_is_client { fwd } else { rev },
            Orientation::Handshake,
        );
    }
    match (is_server(p.dst), is_server(p.src)) {
        (true, false) => return (fwd, Orientation::Contract),
        (false, true) => return (rev, Orientation::Contract),
        _ => {}
    }
    if let Some(sender_is_client) = payload_says(p) {
        return (
            if sender_is_client { fwd } else { rev },
            Orientation::Payload,
        );
    }
    if p.src.port() < p.dst.port() {
        (rev, Orientation::Port)
    } else {
        (fwd, Orientation::Port)
    }
}

/// Re-orients a flow whose orientation came from a weak rule when a packet
/// before any payload gives a stronger one.
pub fn maybe_reorient<T>(flow: &mut Flow<T>, p: &Packet) {
    if flow.orientation >= Orientation::Contract || flow.totals.payload_segments != [0, 0] {
        return;
    }
    let (says, how) = match (handshake_says(p), payload_says(p)) {
        (Some(c), _) => (c, Orientation::Handshake),
        (None, Some(c)) if flow.orientation < Orientation::Payload => (c, Orientation::Payload),
        _ => return,
    };
    let sender_is_client_now = p.src == flow.id.client;
    if says != sender_is_client_now {
        std::mem::swap(&mut flow.id.client, &mut flow.id.server);
        flow.totals.packets.swap(0, 1);
        flow.totals.bytes.swap(0, 1);
        flow.streams.swap(0, 1);
        flow.fin.swap(0, 1);
    }
    flow.orientation = how;
}

/// `Some(true)` when the sender is the client by the TCP handshake.
fn handshake_says(p: &Packet) -> Option<bool> {
    if p.flags & tcp_flags::SYN == 0 {
        return None;
    }
    Some(p.flags & tcp_flags::ACK == 0)
}

/// `Some(true)` when the payload is a client's first words.
fn payload_says(p: &Packet) -> Option<bool> {
    dissect::sender_is_client(&p.payload)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn pkt(src: &str, dst: &str, flags: u8, payload: &'static [u8]) -> Packet {
        Packet {
            ts: 0,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            seq: 1,
            flags,
            payload_len: payload.len() as u32,
            payload: Bytes::from_static(payload),
            direction: None,
        }
    }

    const NONE: &dyn Fn(SocketAddr) -> bool = &|_| false;

    #[test]
    fn syn_and_synack() {
        let (id, how) = orient(
            &pkt("10.0.0.1:5000", "10.0.0.2:80", tcp_flags::SYN, b""),
            NONE,
        );
        assert_eq!(id.server, "10.0.0.2:80".parse().unwrap());
        assert_eq!(how, Orientation::Handshake);
        let (id, _) = orient(
            &pkt(
                "10.0.0.2:80",
                "10.0.0.1:5000",
                tcp_flags::SYN | tcp_flags::ACK,
                b"",
            ),
            NONE,
        );
        assert_eq!(id.server, "10.0.0.2:80".parse().unwrap());
    }

    #[test]
    fn contract_beats_payload_and_port() {
        let watched: &dyn Fn(SocketAddr) -> bool = &|a| a.port() == 9000;
        // A client on a low port sending to a watched server on a high one.
        let (id, how) = orient(
            &pkt("10.0.0.1:80", "10.0.0.2:9000", tcp_flags::ACK, b"xx"),
            watched,
        );
        assert_eq!(id.server.port(), 9000);
        assert_eq!(how, Orientation::Contract);
    }

    #[test]
    fn payload_then_port() {
        let (id, how) = orient(
            &pkt(
                "10.0.0.1:80",
                "10.0.0.2:9000",
                tcp_flags::ACK,
                b"GET / HTTP/1.1\r\n",
            ),
            NONE,
        );
        assert_eq!(id.server.port(), 9000);
        assert_eq!(how, Orientation::Payload);
        let (id, how) = orient(
            &pkt(
                "10.0.0.2:9000",
                "10.0.0.1:80",
                tcp_flags::ACK,
                b"HTTP/1.1 200 OK\r\n",
            ),
            NONE,
        );
        assert_eq!(id.server.port(), 9000);
        assert_eq!(how, Orientation::Payload);
        let (id, how) = orient(
            &pkt("10.0.0.2:9000", "10.0.0.1:80", tcp_flags::ACK, b""),
            NONE,
        );
        assert_eq!(id.server.port(), 80);
        assert_eq!(how, Orientation::Port);
    }
}
