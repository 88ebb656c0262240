//! Unit tests per detection: crafted events through the engine.

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
    let f = Fingerprint::of_credential("authorization", format!("Bearer {token}").as_bytes());
    format!("sha256:{}", hex::encode(f.as_bytes()))
}

pub const CERT_DER: &[u8] = b"not really DER but hashed all the same";

pub fn contract_yaml() -> String {
    let partner = format!(
        "sha256:{}",
        hex::encode(Fingerprint::of_credential("x-partner-key", b"pk-123").as_bytes())
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

pub fn kinds(e: &Engine) -> Vec<Kind> {
    found(e).into_iter().map(|v| v.0).collect()
}

fn handshake_record(msg_type: u8, body: &[u8]) -> Vec<u8> {
    let mut hs = vec![msg_type];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

fn ext(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut e = kind.to_be_bytes().to_vec();
    e.extend_from_slice(&(data.len() as u16).to_be_bytes());
    e.extend_from_slice(data);
    e
}

/// A ClientHello offering `ciphers` up to `version` (supported_versions
/// when 1.3), with SNI.
pub fn client_hello(sni: &str, version: u16, ciphers: &[u16]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&version.min(0x0303).to_be_bytes());
    b.extend_from_slice(&[7; 32]);
    b.push(0);
    b.extend_from_slice(&((ciphers.len() * 2) as u16).to_be_bytes());
    for c in ciphers {
        b.extend_from_slice(&c.to_be_bytes());
    }
    b.extend_from_slice(&[1, 0]);
    let mut exts = Vec::new();
    let mut name = vec![0];
    name.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    name.extend_from_slice(sni.as_bytes());
    let mut list = ((name.len()) as u16).to_be_bytes().to_vec();
    list.extend_from_slice(&name);
    exts.extend(ext(0, &list));
    if version == 0x0304 {
        exts.extend(ext(43, &[4, 3, 4, 3, 3]));
    }
    b.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    b.extend_from_slice(&exts);
    handshake_record(1, &b)
}

/// A ServerHello choosing `version` and `cipher`.
pub fn server_hello(version: u16, cipher: u16) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&version.min(0x0303).to_be_bytes());
    b.extend_from_slice(&[9; 32]);
    b.push(0);
    b.extend_from_slice(&cipher.to_be_bytes());
    b.push(0);
    let exts = if version == 0x0304 {
        ext(43, &[3, 4])
    } else {
        Vec::new()
    };
    b.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    b.extend_from_slice(&exts);
    handshake_record(2, &b)
}

/// The client's second flight with a certificate (TLS 1.2 mTLS).
pub fn client_certificate(der: &[u8]) -> Vec<u8> {
    let mut cert = (der.len() as u32).to_be_bytes()[1..].to_vec();
    cert.extend_from_slice(der);
    let mut body = (cert.len() as u32).to_be_bytes()[1..].to_vec();
    body.extend_from_slice(&cert);
    let mut rec = handshake_record(11, &body);
    rec.extend_from_slice(&[0x14, 3, 3, 0, 1, 1]);
    rec
}

/// A TLS flow: ClientHello, ServerHello (if any), optional client flight,
/// then encrypted application data, then FIN.
pub fn tls_flow(
    e: &mut Engine,
    ts: Nanos,
    client: &str,
    server: &str,
    ch: &[u8],
    sh: Option<&[u8]>,
    flight: Option<&[u8]>,
) {
    e.handle(pkt(ts, client, server, 100, tcp_flags::SYN, b""));
    e.handle(pkt(
        ts,
        server,
        client,
        500,
        tcp_flags::SYN | tcp_flags::ACK,
        b"",
    ));
    let mut cseq = 101;
    e.handle(pkt(ts + 1, client, server, cseq, tcp_flags::ACK, ch));
    cseq += ch.len() as u32;
    let mut sseq = 501;
    if let Some(sh) = sh {
        e.handle(pkt(ts + 2, server, client, sseq, tcp_flags::ACK, sh));
        sseq += sh.len() as u32;
    }
    if let Some(f) = flight {
        e.handle(pkt(ts + 3, client, server, cseq, tcp_flags::ACK, f));
        cseq += f.len() as u32;
    }
    let app = [0x17, 3, 3, 0, 4, 1, 2, 3, 4];
    e.handle(pkt(ts + 4, client, server, cseq, tcp_flags::ACK, &app));
    cseq += app.len() as u32;
    end_flow(e, ts + 5, client, server, cseq, sseq);
}

const GCM: u16 = 0xc02f; // TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
const CBC: u16 = 0xc013; // TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA

#[test]
fn unencrypted_flow_to_encryption_required_class() {
    let mut e = engine();
    tcp_flow(
        &mut e,
        t0(),
        "10.30.0.9:5000",
        "10.20.1.5:80",
        &[&get("/v1/pay", Some("acme-token"))],
    );
    assert_eq!(
        found(&e),
        vec![(
            Kind::UnencryptedFlow,
            "payments".into(),
            "acme".into(),
            1,
            "plaintext HTTP to class pii".into()
        )]
    );
    // Plaintext to a class that does not require encryption is fine.
    let mut e = engine();
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.3.5:8080",
        &[&get("/x", None)],
    );
    assert_eq!(found(&e), vec![]);
}

#[test]
fn unencrypted_other_plaintext() {
    let mut e = engine();
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.1.5:443",
        &[b"\x00\x01\x02 hello plaintext"],
    );
    assert_eq!(kinds(&e), vec![Kind::UnencryptedFlow]);
    assert_eq!(found(&e)[0].4, "plaintext (not TLS) to class pii");
}

#[test]
fn weak_tls_from_server_hello() {
    for (ver, cipher, want) in [
        (0x0302, GCM, Some("TLS 1.1")),
        (
            0x0303,
            CBC,
            Some("TLS 1.2 with TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
        ),
        (
            0x0301,
            CBC,
            Some("TLS 1.0 with TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
        ),
        (0x0303, GCM, None),
        (0x0304, 0x1301, None),
    ] {
        let mut e = engine();
        let ch = client_hello("payments.example.com", 0x0304, &[0x1301, GCM, CBC]);
        tls_flow(
            &mut e,
            t0(),
            "10.1.0.9:5000",
            "10.20.1.5:443",
            &ch,
            Some(&server_hello(ver, cipher)),
            None,
        );
        let weak: Vec<_> = found(&e)
            .into_iter()
            .filter(|v| v.0 == Kind::WeakTls)
            .collect();
        match want {
            Some(d) => assert_eq!(
                weak,
                vec![(
                    Kind::WeakTls,
                    "payments".into(),
                    "unknown".into(),
                    1,
                    d.into()
                )]
            ),
            None => assert_eq!(weak, vec![], "{ver:x} {cipher:x}"),
        }
        // TLS flows never raise unknown_client: their requests are invisible.
        assert!(!kinds(&e).contains(&Kind::UnknownClient));
    }
}

#[test]
fn weak_tls_from_client_hello_when_server_hello_unseen() {
    let mut e = engine();
    let ch = client_hello("payments.example.com", 0x0301, &[GCM]);
    tls_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.1.5:443",
        &ch,
        None,
        None,
    );
    assert_eq!(found(&e)[0].4, "TLS 1.0 at best (ClientHello)");
    let mut e = engine();
    let ch = client_hello("payments.example.com", 0x0303, &[CBC]);
    tls_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.1.5:443",
        &ch,
        None,
        None,
    );
    assert_eq!(
        found(&e)[0].4,
        "only forbidden ciphers offered (ClientHello)"
    );
    // One acceptable suite offered: the best offer is fine.
    let mut e = engine();
    let ch = client_hello("payments.example.com", 0x0303, &[CBC, GCM]);
    tls_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.1.5:443",
        &ch,
        None,
        None,
    );
    assert_eq!(found(&e), vec![]);
}

#[test]
fn tls_client_identified_by_certificate() {
    let mut e = engine();
    let ch = client_hello("payments.example.com", 0x0303, &[GCM]);
    tls_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.1.5:443",
        &ch,
        Some(&server_hello(0x0303, GCM)),
        Some(&client_certificate(CERT_DER)),
    );
    assert_eq!(found(&e), vec![]);
    let mut flows = vec![];
    e.finish();
    for o in e.drain() {
        if let Output::Flow(f) = o {
            flows.push(f);
        }
    }
    assert_eq!(flows.len(), 1);
    assert_eq!(&*flows[0].client, "acme");
    assert_eq!(flows[0].identified_by, view::Via::Certificate);
    assert_eq!(&*flows[0].endpoint, "payments");
    assert_eq!(flows[0].requests, 0);
}

#[test]
fn quota_overshoot_token_bucket() {
    let mut e = engine();
    // 25 requests on one connection within 48 ms; quota 1/s, burst 5.
    let reqs: Vec<Vec<u8>> = (0..25)
        .map(|i| get(&format!("/v1/orders/{i}"), Some("acme-token")))
        .collect();
    let segs: Vec<&[u8]> = reqs.iter().map(Vec::as_slice).collect();
    tcp_flow(&mut e, t0(), "10.30.0.9:5000", "10.20.2.5:8080", &segs);
    assert_eq!(
        found(&e),
        vec![(
            Kind::QuotaOvershoot,
            "orders".into(),
            "acme".into(),
            20,
            "25 req/s over quota 1".into()
        )]
    );
}

#[test]
fn no_quota_in_stage_means_zero() {
    let mut e = engine();
    // oldco has no quota on docs.
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.3.5:8080",
        &[&get("/", Some("acme-token"))],
    );
    assert_eq!(
        found(&e),
        vec![(
            Kind::QuotaOvershoot,
            "docs".into(),
            "acme".into(),
            1,
            "1 req/s over quota 0".into()
        )]
    );
}

#[test]
fn revoked_after_revoked_at_only() {
    let mut e = engine();
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        &[&get("/v1/orders", Some("leaky-token"))],
    );
    assert_eq!(
        found(&e),
        vec![(
            Kind::RevokedClient,
            "orders".into(),
            "leaky".into(),
            1,
            "credential revoked since 2026-11-15T00:00:00Z: leaked".into()
        )]
    );
    let before = parse_rfc3339("2026-11-10T00:00:00Z").unwrap();
    let mut e = engine();
    tcp_flow(
        &mut e,
        before,
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        &[&get("/v1/orders", Some("leaky-token"))],
    );
    assert_eq!(found(&e), vec![]);
    // `--at` judges at a fixed time whatever the packet times.
    let opts = EngineOptions {
        fixed_time: Some(t0()),
        ..EngineOptions::default()
    };
    let mut e = Engine::new(contract(), opts);
    tcp_flow(
        &mut e,
        before,
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        &[&get("/v1/orders", Some("leaky-token"))],
    );
    assert_eq!(kinds(&e), vec![Kind::RevokedClient]);
}

#[test]
fn stale_credential_by_stage_max_age() {
    let mut e = engine();
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        &[&get("/v1/orders", Some("old-token"))],
    );
    assert_eq!(
        found(&e),
        vec![(
            Kind::StaleCredential,
            "orders".into(),
            "oldco".into(),
            1,
            "credential 323d old, max 90d".into()
        )]
    );
    // acme's credential is 19 days old: fine in pilot (90d) and ramp (30d).
    let mut e = engine();
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        &[&get("/v1/orders", Some("acme-token"))],
    );
    assert_eq!(found(&e), vec![]);
}

#[test]
fn unlisted_endpoint_scope_and_path() {
    let mut e = engine();
    tcp_flow(
        &mut e,
        t0(),
        "10.30.0.9:5000",
        "10.20.9.9:9000",
        &[&get("/v1/x", None)],
    );
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5001",
        "10.20.2.5:8080",
        &[&get("/v2/admin?token=s3cret", Some("acme-token"))],
    );
    // Outside scope and endpoints: not watched at all.
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5002",
        "192.168.1.1:8080",
        &[&get("/", None)],
    );
    assert_eq!(
        found(&e),
        vec![
            (
                Kind::UnlistedEndpoint,
                "unlisted".into(),
                "acme".into(),
                1,
                "path /v2/admin not in orders's paths".into()
            ),
            (
                Kind::UnlistedEndpoint,
                "unlisted".into(),
                "office".into(),
                1,
                "no endpoint covers 10.20.9.9:9000".into()
            ),
        ]
    );
}

#[test]
fn unknown_client_needs_authentication_class() {
    let mut e = engine();
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        &[&get("/v1/orders", None)],
    );
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5001",
        "10.20.2.5:8080",
        &[&get("/v1/orders", Some("who-knows"))],
    );
    // Public class: no authentication required.
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5002",
        "10.20.3.5:8080",
        &[&get("/", None)],
    );
    assert_eq!(
        found(&e),
        vec![(
            Kind::UnknownClient,
            "orders".into(),
            "unknown".into(),
            2,
            "credential not in contract".into()
        )]
    );
}

#[test]
fn source_address_identifies_a_client() {
    let mut e = engine();
    tcp_flow(
        &mut e,
        t0(),
        "10.30.4.4:5000",
        "10.20.2.5:8080",
        &[&get("/v1/orders", None)],
    );
    assert_eq!(found(&e), vec![]);
    e.finish();
    let recs: Vec<_> = e
        .drain()
        .filter_map(|o| {
            if let Output::Flow(f) = o {
                Some(f)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(&*recs[0].client, "office");
    assert_eq!(recs[0].identified_by, view::Via::Source);
}

#[test]
fn flows_identified_and_counted() {
    let mut e = engine();
    let flow = FlowId {
        client: addr("10.1.0.9:5000"),
        server: addr("10.20.2.5:8080"),
    };
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        &[
            &get("/v1/orders", Some("acme-token")),
            &get("/v1/orders", Some("acme-token")),
        ],
    );
    e.finish();
    let recs: Vec<_> = e
        .drain()
        .filter_map(|o| {
            if let Output::Flow(f) = o {
                Some(f)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].id, flow);
    assert_eq!(recs[0].requests, 2);
    assert_eq!(recs[0].protocol, crate::flow::Protocol::Http);
}

#[test]
fn credential_headers_named_by_the_contract_identify() {
    let mut e = engine();
    let req = b"GET / HTTP/1.1\r\nHost: docs\r\nX-Partner-Key: pk-123\r\n\r\n";
    tcp_flow(&mut e, t0(), "10.1.0.9:5000", "10.20.3.5:8080", &[req]);
    // partner has no quota on docs: quota 0, which shows who it was.
    assert_eq!(
        found(&e),
        vec![(
            Kind::QuotaOvershoot,
            "docs".into(),
            "partner".into(),
            1,
            "1 req/s over quota 0".into()
        )]
    );
}
