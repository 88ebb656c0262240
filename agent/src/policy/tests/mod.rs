//! Unit tests per detection: crafted events through the engine. Shared
//! helpers (the test contract, packets, TCP flows, open violations) live
//! here; the tests are grouped by theme in the submodules.

mod coverage;
mod encryption;
mod engine;
mod engine_time;
mod h2c;
mod identity;
mod jwt;
mod lenient;
mod plaintext;
mod responses;
mod sla;
mod terms;
mod workloads;

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;

use super::*;
use crate::{
    contract::{Contract, parse_rfc3339},
    event::{Event, FlowId, Packet, tcp_flags},
    identity::Fingerprint,
};

pub const SEC: Nanos = 1_000_000_000;

pub fn fp(token: &str) -> String {
    let f = crate::identity::credential_fingerprint(
        "authorization",
        format!("Bearer {token}").as_bytes(),
    );
    format!("sha256:{}", hex::encode(f.as_bytes()))
}

pub const CERT_DER: &[u8] = b"not really DER but hashed all the same";

pub fn contract_yaml() -> String {
    let partner = format!(
        "sha256:{}",
        hex::encode(crate::identity::credential_fingerprint("x-partner-key", b"pk-123").as_bytes())
    );
    let cert = format!(
        "sha256:{}",
        hex::encode(Fingerprint::of_der(CERT_DER).as_bytes())
    );
    format!(
        r#"apiVersion: rampwatch.io/v1
kind: RampContract
metadata:
  name: unit
spec:
  scope:
    networks: ["10.20.0.0/16"]
    ports: [80, 443, 8080, 9000]
  dataClasses:
    - name: pii
      encryption: required
      authentication: required
      minTlsVersion: "1.2"
      forbiddenCiphers: ["*_CBC_*", "*RC4*"]
    - name: internal
      encryption: optional
      authentication: required
    - name: public
      encryption: optional
      authentication: optional
  endpoints:
    - name: payments
      dataClass: pii
      hosts: ["payments.example.com", "10.20.1.0/24"]
      ports: [443, 80]
    - name: orders
      dataClass: internal
      hosts: ["10.20.2.0/24"]
      ports: [8080]
      paths: ["/v1/orders"]
    - name: docs
      dataClass: public
      hosts: ["10.20.3.0/24"]
      ports: [8080]
  clients:
    - name: acme
      credentials:
        - header: authorization
          fingerprint: "{acme}"
          issuedAt: "2026-11-01T00:00:00Z"
      certificates: ["{cert}"]
    - name: oldco
      credentials:
        - header: authorization
          fingerprint: "{old}"
          issuedAt: "2026-01-01T00:00:00Z"
    - name: leaky
      credentials:
        - header: authorization
          fingerprint: "{leaky}"
          issuedAt: "2026-11-01T00:00:00Z"
    - name: office
      sources: ["10.30.0.0/16"]
    - name: partner
      credentials:
        - header: X-Partner-Key
          fingerprint: "{partner}"
          issuedAt: "2026-11-01T00:00:00Z"
  stages:
    - name: pilot
      startsAt: "2026-11-01T00:00:00Z"
      credentialMaxAge: 90d
      quotas:
        - {{ client: acme, endpoint: orders, requestsPerSecond: 1, burst: 5 }}
        - {{ client: oldco, endpoint: orders, requestsPerSecond: 100, burst: 100 }}
        - {{ client: leaky, endpoint: orders, requestsPerSecond: 100, burst: 100 }}
        - {{ client: office, endpoint: orders, requestsPerSecond: 100, burst: 100 }}
        - {{ client: acme, endpoint: payments, requestsPerSecond: 100, burst: 100 }}
    - name: ramp
      startsAt: "2026-12-01T00:00:00Z"
      credentialMaxAge: 30d
      quotas:
        - {{ client: acme, endpoint: orders, requestsPerSecond: 100, burst: 200 }}
  revocations:
    - fingerprint: "{leaky}"
      revokedAt: "2026-11-15T00:00:00Z"
      reason: leaked
  remediation:
    warnAfter: 15m
    breachAfter: 24h
"#,
        acme = fp("acme-token"),
        old = fp("old-token"),
        leaky = fp("leaky-token"),
    )
}

/// An engine whose acme holds the bearer token of the HTTP/2 fixtures
/// (`protocol/h2/testdata/gen.py` `TOKEN`).
pub fn h2_engine(opts: EngineOptions) -> Engine {
    let yaml = contract_yaml().replace(&fp("acme-token"), &fp("tok-acme-7f3a9c1e5b2d4f60"));
    let contract = Arc::new(Contract::parse(&yaml, "unit.yaml").expect("valid contract"));
    Engine::new(contract, opts)
}

pub fn contract() -> Arc<Contract> {
    Arc::new(Contract::parse(&contract_yaml(), "unit.yaml").expect("test contract is valid"))
}

/// 2026-11-20T00:00:00Z: pilot stage, after leaky's revocation.
pub fn t0() -> Nanos {
    parse_rfc3339("2026-11-20T00:00:00Z").expect("valid time")
}

pub fn engine() -> Engine {
    Engine::new(contract(), EngineOptions::default())
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

pub fn pkt(ts: Nanos, src: &str, dst: &str, seq: u32, flags: u8, payload: &[u8]) -> Event {
    Event::Packet(Packet {
        ts,
        src: addr(src),
        dst: addr(dst),
        seq,
        flags,
        payload_len: payload.len() as u32,
        payload: Bytes::copy_from_slice(payload),
        direction: None,
    })
}

/// A handshake then one segment per payload from client to server, then FIN
/// both ways.
pub fn tcp_flow(e: &mut Engine, ts: Nanos, client: &str, server: &str, segments: &[&[u8]]) {
    e.handle(pkt(ts, client, server, 100, tcp_flags::SYN, b""));
    e.handle(pkt(
        ts,
        server,
        client,
        500,
        tcp_flags::SYN | tcp_flags::ACK,
        b"",
    ));
    let mut seq = 101;
    for (i, s) in segments.iter().enumerate() {
        e.handle(pkt(
            ts + i as Nanos * 1000,
            client,
            server,
            seq,
            tcp_flags::ACK | tcp_flags::PSH,
            s,
        ));
        seq += s.len() as u32;
    }
    end_flow(e, ts + 1_000_000, client, server, seq, 501);
}

pub fn end_flow(e: &mut Engine, ts: Nanos, client: &str, server: &str, cseq: u32, sseq: u32) {
    e.handle(pkt(
        ts,
        client,
        server,
        cseq,
        tcp_flags::FIN | tcp_flags::ACK,
        b"",
    ));
    e.handle(pkt(
        ts,
        server,
        client,
        sseq,
        tcp_flags::FIN | tcp_flags::ACK,
        b"",
    ));
}

pub fn get(path: &str, token: Option<&str>) -> Vec<u8> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: api\r\n{auth}\r\n").into_bytes()
}

/// Open violations as (kind, endpoint, client, count, detail).
pub fn found(e: &Engine) -> Vec<(Kind, String, String, u64, String)> {
    let mut v: Vec<_> = e
        .violations()
        .into_iter()
        .map(|v| {
            (
                v.key.kind,
                v.key.endpoint.to_string(),
                v.key.client.to_string(),
                v.count,
                v.detail,
            )
        })
        .collect();
    v.sort();
    v
}

/// A bare ACK (with the payload `pkt` is given).
pub const ACK: u8 = tcp_flags::ACK;

/// The flow records the engine has queued.
pub fn records(e: &mut Engine) -> Vec<FlowRecord> {
    e.drain()
        .filter_map(|o| match o {
            Output::Flow(f) => Some(f),
            _ => None,
        })
        .collect()
}

pub fn kinds(e: &Engine) -> Vec<Kind> {
    found(e).into_iter().map(|v| v.0).collect()
}
