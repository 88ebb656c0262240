//! Encryption on the wire: plaintext to classes that require encryption
//! (unencrypted_flow), weak TLS, and what a TLS flow tells about its
//! client; with the TLS record builders these tests use.

use super::*;

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

/// An engine that saw only a ClientHello (version, offered suites) to payments.
fn hello_only(version: u16, suites: &[u16]) -> Engine {
    let mut e = engine();
    let ch = client_hello("payments.example.com", version, suites);
    tls_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.1.5:443",
        &ch,
        None,
        None,
    );
    e
}

#[test]
fn weak_tls_from_client_hello_when_server_hello_unseen() {
    assert_eq!(
        found(&hello_only(0x0301, &[GCM]))[0].4,
        "TLS 1.0 at best (ClientHello)"
    );
    assert_eq!(
        found(&hello_only(0x0303, &[CBC]))[0].4,
        "only forbidden ciphers offered (ClientHello)"
    );
    // One acceptable suite offered: the best offer is fine.
    assert_eq!(found(&hello_only(0x0303, &[CBC, GCM])), vec![]);
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
