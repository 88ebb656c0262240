//! TLS plaintext probes on a real kernel: OpenSSL uprobes in real servers
//! (Debian's nginx, python3's `ssl`), real clients (curl, python), IPv4 and
//! IPv6 on loopback. Run as root, one at a time (`cargo xtask test`).
//!
//! Each test checks what reached the consumer of `Capture`: plaintext
//! events on the same `FlowId` as the wire samples of the connection, in
//! the right directions, from the server process only, and exact kernel
//! request starts on keep-alive connections.

mod clients;
mod lifecycle;
mod servers;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use agent::{
    capture::{TlsCoverage, TlsOptions},
    event::{Direction, Event, FlowId, Plaintext},
};
use tests::{
    cgroup::CgroupGuard,
    harness::{Attach, Endpoint, Harness, Tuning},
    wait::wait_until,
};

/// Deadline for events that follow traffic on loopback.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

pub fn tls_tuning() -> Tuning {
    Tuning {
        tls: Some(TlsOptions {
            rescan_interval: Duration::from_secs(1),
            ..TlsOptions::default()
        }),
        ..Tuning::default()
    }
}

/// A cgroup for the clients and a capture with TLS probes watching `server`.
pub fn tls_capture(tag: &str, server: SocketAddr) -> (CgroupGuard, Harness) {
    let cg = CgroupGuard::new(tag);
    let h = Harness::start(
        Attach::Cgroup(cg.path().into()),
        &[Endpoint::exact(server)],
        tls_tuning(),
    );
    assert!(
        h.tls_coverage().active,
        "TLS probes did not start: {:?}",
        h.tls_coverage().unavailable
    );
    (cg, h)
}

/// Waits until every pid in `pids` is probed; returns the coverage.
pub fn wait_probed(h: &Harness, pids: &[u32]) -> TlsCoverage {
    wait_until(&format!("pids {pids:?} probed"), EVENT_TIMEOUT, || {
        let c = h.tls_coverage();
        pids.iter()
            .all(|p| c.processes.iter().any(|q| q.pid == *p))
            .then_some(c)
    })
}

pub fn flow(server: SocketAddr, client_port: u16) -> FlowId {
    FlowId {
        client: SocketAddr::new(server.ip(), client_port),
        server,
    }
}

/// Plaintext events of `flow` in one direction, in stream order.
pub fn plaintext(h: &Harness, flow: FlowId, dir: Direction) -> Vec<Plaintext> {
    let mut v: Vec<Plaintext> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Plaintext(p) if p.flow == flow && p.direction == dir => Some(p.clone()),
            _ => None,
        })
        .collect();
    v.sort_by_key(|p| p.offset);
    v
}

/// The direction's stream as one text; asserts it has no gaps.
pub fn stream(h: &Harness, flow: FlowId, dir: Direction) -> String {
    let mut next = 0;
    let mut text = Vec::new();
    for p in plaintext(h, flow, dir) {
        assert_eq!(
            p.offset, next,
            "gap or overlap in the {dir:?} stream of {flow:?}"
        );
        assert_eq!(p.data.len() as u32, p.len, "a chunk was not copied whole");
        next += u64::from(p.len);
        text.extend_from_slice(&p.data);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// Waits until the kernel's TLS request starts for `flow` reach `n`, then
/// checks plaintext of both directions arrived and came from `pids`.
pub fn check_requests(h: &mut Harness, flow: FlowId, n: u64, path: &str, pids: &[u32]) {
    h.wait_events(&format!("{n} request starts on {flow:?}"), EVENT_TIMEOUT, |evs| {
        let starts: u64 = evs
            .iter()
            .map(|e| match e {
                Event::RequestStarts { flow: f, count, .. } if *f == flow => *count,
                _ => 0,
            })
            .sum();
        let responses = evs
            .iter()
            .filter(|e| matches!(e, Event::Plaintext(p) if p.flow == flow && p.direction == Direction::ToClient))
            .count();
        starts >= n && responses > 0
    });
    let up = stream(h, flow, Direction::ToServer);
    let heads = up.matches(&format!("GET {path}")).count() as u64;
    assert_eq!(heads, n, "request heads in the to-server plaintext: {up:?}");
    let down = stream(h, flow, Direction::ToClient);
    assert!(down.starts_with("HTTP/1.1 200"), "responses: {down:?}");
    for e in &h.events {
        if let Event::Plaintext(p) = e
            && p.flow == flow
        {
            assert!(
                pids.contains(&p.pid),
                "plaintext from pid {} (servers: {pids:?})",
                p.pid
            );
        }
    }
    // The same connection on the wire: samples under the same FlowId.
    assert!(
        !h.packets_of(flow).is_empty(),
        "no wire samples for {flow:?}: the plaintext did not join the wire flow"
    );
}

/// After the client is done: the request starts delivered for `flow` are
/// exactly `n`. They are final once they equal the kernel's TLS entry (no
/// more calls can come), or once the wire flow ended (its end carries the
/// layer's last starts and the entry is deleted). Whether the wire sees the
/// end depends on who closes first (a TIME_WAIT ACK leaves from the
/// kernel's control socket, outside the test cgroup), so both are accepted.
pub fn check_exact(h: &mut Harness, flow: FlowId, n: u64) {
    let what = format!("final request starts of {flow:?}");
    wait_until(&what, EVENT_TIMEOUT, || {
        h.drain();
        let delivered = h.request_starts_of(flow);
        let kernel = h
            .flows()
            .into_iter()
            .find(|f| f.flow == flow && f.observer == agent_common::observer::TLS_PLAINTEXT)
            .map(|f| f.totals.request_starts[0]);
        let ended = h
            .events
            .iter()
            .any(|e| matches!(e, Event::FlowEnd { flow: f, .. } if *f == flow));
        let settled = match kernel {
            Some(k) => k == delivered,
            None => ended,
        };
        (delivered >= n && settled).then_some(())
    });
    assert_eq!(h.request_starts_of(flow), n, "request starts of {flow:?}");
}

/// Once the clients are done and the servers idle, no SSL call is left
/// counted as waiting for its socket's syscall: the count that lets the
/// `sys_enter` hook skip its hash lookup is back at 0 (a call counted twice,
/// or never discharged, would keep every syscall of the machine paying it;
/// one discharged twice would wrap it).
pub fn check_no_call_awaiting(h: &Harness) {
    wait_until(
        "no SSL call left waiting for its socket",
        EVENT_TIMEOUT,
        || (h.tls_coverage().calls_awaiting_socket == 0).then_some(()),
    );
}

pub fn loopback(v6: bool) -> IpAddr {
    if v6 {
        "::1".parse().expect("ip")
    } else {
        "127.0.0.1".parse().expect("ip")
    }
}
