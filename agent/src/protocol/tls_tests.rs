//! TLS parser tests on real handshakes (`testdata/regen.sh`: openssl
//! s_server/s_client on loopback) and on hellos built here byte by byte.

use super::tls::{
    CipherSuite, ClientHello, MAX_HANDSHAKE, TlsParse, TlsVersion, parse_client_certificate,
    parse_client_hello, parse_server_hello,
};
use crate::protocol::{Protocol, classify};

fn vector(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/protocol/testdata")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn client(name: &str) -> ClientHello {
    match parse_client_hello(&vector(&format!("{name}.client.bin"))) {
        TlsParse::Done(hello) => hello,
        other => panic!("{name}: {other:?}"),
    }
}

fn server(name: &str) -> super::tls::ServerHello {
    match parse_server_hello(&vector(&format!("{name}.server.bin"))) {
        TlsParse::Done(hello) => hello,
        other => panic!("{name}: {other:?}"),
    }
}

fn names(suites: &[CipherSuite]) -> Vec<String> {
    suites.iter().map(ToString::to_string).collect()
}

#[test]
fn tls13_client_and_server_hello() {
    let ch = client("tls13");
    assert_eq!(ch.record_version, Some(TlsVersion::Tls10));
    assert_eq!(ch.legacy_version, Some(TlsVersion::Tls12));
    assert_eq!(
        ch.supported_versions[..2],
        [TlsVersion::Tls13, TlsVersion::Tls12]
    );
    assert_eq!(ch.max_version, Some(TlsVersion::Tls13));
    assert_eq!(ch.sni.as_deref(), Some("api.example.com"));
    assert_eq!(ch.alpn, vec!["h2".to_owned(), "http/1.1".to_owned()]);
    assert!(!ch.sslv2);
    let offered = names(&ch.cipher_suites);
    assert_eq!(offered[0], "TLS_AES_256_GCM_SHA384");
    assert!(offered.contains(&"TLS_AES_128_GCM_SHA256".to_owned()));
    assert!(!offered.iter().any(|n| n.contains("SCSV")));
    let sh = server("tls13");
    assert_eq!(sh.version, Some(TlsVersion::Tls13));
    assert_eq!(sh.legacy_version, Some(TlsVersion::Tls12));
    assert_eq!(sh.cipher.to_string(), "TLS_AES_256_GCM_SHA384");
    assert!(!sh.hello_retry);
    assert_eq!(classify(&vector("tls13.client.bin")), Protocol::Tls);
}

#[test]
fn tls12_gcm_and_cbc() {
    let ch = client("tls12_gcm");
    assert_eq!(ch.sni.as_deref(), Some("payments.example.com"));
    assert_eq!(ch.max_version, Some(TlsVersion::Tls12));
    assert_eq!(
        names(&ch.cipher_suites),
        vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]
    );
    let sh = server("tls12_gcm");
    assert_eq!(sh.version, Some(TlsVersion::Tls12));
    assert_eq!(
        sh.cipher.to_string(),
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    );
    let sh = server("tls12_cbc");
    assert_eq!(sh.version, Some(TlsVersion::Tls12));
    assert_eq!(sh.cipher.to_string(), "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA");
    assert_eq!(sh.cipher.0, 0xc013);
}

#[test]
fn tls11_with_old_ciphers() {
    let ch = client("tls11");
    assert_eq!(ch.legacy_version, Some(TlsVersion::Tls11));
    assert_eq!(ch.max_version, Some(TlsVersion::Tls11));
    assert!(ch.supported_versions.is_empty());
    assert_eq!(ch.sni.as_deref(), Some("old.example.com"));
    assert!(names(&ch.cipher_suites).iter().any(|n| n.contains("_CBC_")));
    let sh = server("tls11");
    assert_eq!(sh.version, Some(TlsVersion::Tls11));
    assert!(sh.cipher.to_string().contains("_CBC_"), "{}", sh.cipher);
}

#[test]
fn client_certificate_in_tls12_second_flight() {
    let bytes = vector("mtls.client.bin");
    let want = vector("mtls.leaf.sha256");
    let want = std::str::from_utf8(&want).unwrap().trim();
    match parse_client_certificate(&bytes) {
        TlsParse::Done(Some(hash)) => assert_eq!(hex(&hash), want),
        other => panic!("{other:?}"),
    }
    // Only the ClientHello so far: the second flight may still come.
    let hello_len = 5 + usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
    assert_eq!(
        parse_client_certificate(&bytes[..hello_len]),
        TlsParse::NeedMore
    );
    // Cut inside the certificate: still waiting.
    assert_eq!(
        parse_client_certificate(&bytes[..hello_len + 100]),
        TlsParse::NeedMore
    );
    // No certificate requested: ClientKeyExchange comes first.
    assert_eq!(
        parse_client_certificate(&vector("tls12_gcm.client.bin")),
        TlsParse::Done(None)
    );
    // TLS 1.3: ChangeCipherSpec and encrypted records after the hello.
    assert_eq!(
        parse_client_certificate(&vector("tls13.client.bin")),
        TlsParse::Done(None)
    );
    assert_eq!(
        parse_client_certificate(b"GET / HTTP/1.1\r\n\r\n"),
        TlsParse::NotTls
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Re-frames the handshake bytes of `records` into records of at most
/// `size` bytes each.
fn reframe(records: &[u8], size: usize) -> Vec<u8> {
    let mut handshake = Vec::new();
    let mut rest = records;
    while let [22, 3, _, l0, l1, ..] = *rest {
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let Some(body) = rest.get(5..5 + len) else {
            break;
        };
        handshake.extend_from_slice(body);
        rest = &rest[5 + len..];
    }
    let mut out = Vec::new();
    for chunk in handshake.chunks(size) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(rest);
    out
}

#[test]
fn hellos_split_over_records_and_segments() {
    for name in ["tls13", "tls12_cbc", "tls11"] {
        let bytes = vector(&format!("{name}.client.bin"));
        let whole = client(name);
        for size in [1, 7, 50, 100] {
            let split = reframe(&bytes, size);
            assert_eq!(
                parse_client_hello(&split),
                TlsParse::Done(ClientHello {
                    record_version: whole.record_version,
                    ..whole.clone()
                }),
                "{name} in records of {size}"
            );
        }
        // Every prefix shorter than the hello asks for more.
        let hello_len = 5 + usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
        for cut in 0..hello_len {
            assert_eq!(
                parse_client_hello(&bytes[..cut]),
                TlsParse::NeedMore,
                "{name} cut at {cut}"
            );
        }
        assert_eq!(
            parse_client_hello(&bytes[..hello_len]),
            TlsParse::Done(whole)
        );
        let server_bytes = vector(&format!("{name}.server.bin"));
        let sh = server(name);
        assert_eq!(
            parse_server_hello(&reframe(&server_bytes, 13)),
            TlsParse::Done(sh)
        );
    }
    // The mTLS certificate split into small records is still found.
    let bytes = vector("mtls.client.bin");
    assert!(matches!(
        parse_client_certificate(&reframe(&bytes, 64)),
        TlsParse::Done(Some(_))
    ));
}

/// A ClientHello record with the given suites and extensions (type, data).
fn build_client_hello(version: u16, suites: &[u16], extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    body.extend_from_slice(&[0x11; 32]);
    body.push(0);
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    let mut ext = Vec::new();
    for (kind, data) in extensions {
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(data);
    }
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut msg = vec![1, 0];
    msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
    msg.extend_from_slice(&body);
    let mut record = vec![22, 3, 1];
    record.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    record.extend_from_slice(&msg);
    record
}

fn sni_ext(name: &str) -> (u16, Vec<u8>) {
    let mut entry = vec![0];
    entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
    entry.extend_from_slice(name.as_bytes());
    let mut data = (entry.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&entry);
    (0, data)
}

#[test]
fn grease_and_scsv_are_dropped_and_odd_extensions_do_not_hide_sni() {
    let hello = build_client_hello(
        0x0303,
        &[0x1a1a, 0x1301, 0xc02f, 0x00ff, 0x5600, 0xabcd],
        &[
            (0x2a2a, vec![]),
            // Supported versions: GREASE, 1.3, 1.2, 1.1.
            (43, vec![8, 0x3a, 0x3a, 3, 4, 3, 3, 3, 2]),
            // A malformed known extension (bad ALPN framing) ...
            (16, vec![0, 9, 1]),
            // ... does not stop the SNI after it from being read.
            sni_ext("API.Example.com."),
        ],
    );
    let TlsParse::Done(ch) = parse_client_hello(&hello) else {
        panic!()
    };
    assert_eq!(
        names(&ch.cipher_suites),
        vec![
            "TLS_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "0xABCD"
        ]
    );
    assert_eq!(
        ch.supported_versions,
        vec![TlsVersion::Tls13, TlsVersion::Tls12, TlsVersion::Tls11]
    );
    assert_eq!(ch.max_version, Some(TlsVersion::Tls13));
    assert_eq!(ch.sni.as_deref(), Some("api.example.com"));
    assert!(ch.alpn.is_empty());
}

#[test]
fn hello_retry_request_is_marked() {
    let mut bytes = vector("tls13.server.bin");
    // Record header 5 + handshake header 4 + legacy version 2: the random.
    bytes[11..43].copy_from_slice(&[
        0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8,
        0x91, 0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8,
        0x33, 0x9c,
    ]);
    let TlsParse::Done(sh) = parse_server_hello(&bytes) else {
        panic!()
    };
    assert!(sh.hello_retry);
    assert_eq!(sh.version, Some(TlsVersion::Tls13));
}

#[test]
fn sslv2_style_client_hello() {
    // SSLv2 CLIENT-HELLO offering TLS 1.0: specs AES128-SHA (TLS), an SSLv2
    // RC4 kind, the renegotiation SCSV; no session id; 16-byte challenge.
    let specs = [0x00, 0x00, 0x2f, 0x01, 0x00, 0x80, 0x00, 0x00, 0xff];
    let mut body = vec![1, 0x03, 0x01];
    body.extend_from_slice(&(specs.len() as u16).to_be_bytes());
    body.extend_from_slice(&0u16.to_be_bytes());
    body.extend_from_slice(&16u16.to_be_bytes());
    body.extend_from_slice(&specs);
    body.extend_from_slice(&[0x42; 16]);
    let mut hello = vec![0x80 | (body.len() >> 8) as u8, body.len() as u8];
    hello.extend_from_slice(&body);
    let TlsParse::Done(ch) = parse_client_hello(&hello) else {
        panic!()
    };
    assert!(ch.sslv2);
    assert_eq!(ch.legacy_version, Some(TlsVersion::Tls10));
    assert_eq!(ch.max_version, Some(TlsVersion::Tls10));
    assert_eq!(ch.record_version, None);
    assert_eq!(
        names(&ch.cipher_suites),
        vec!["TLS_RSA_WITH_AES_128_CBC_SHA"]
    );
    assert_eq!(classify(&hello), Protocol::Tls);
    assert_eq!(parse_client_hello(&hello[..10]), TlsParse::NeedMore);
    // A real SSL 2.0 offer.
    let mut v2 = hello.clone();
    v2[3..5].copy_from_slice(&[0x00, 0x02]);
    let TlsParse::Done(ch) = parse_client_hello(&v2) else {
        panic!()
    };
    assert_eq!(ch.max_version, Some(TlsVersion::Ssl2));
}

#[test]
fn not_tls_inputs() {
    assert_eq!(
        parse_client_hello(b"GET / HTTP/1.1\r\n\r\n"),
        TlsParse::NotTls
    );
    assert_eq!(parse_server_hello(b"HTTP/1.1 200 OK\r\n"), TlsParse::NotTls);
    // An alert record first.
    assert_eq!(
        parse_client_hello(&[21, 3, 3, 0, 2, 2, 40]),
        TlsParse::NotTls
    );
    // A ServerHello where a ClientHello is expected and vice versa.
    assert_eq!(
        parse_client_hello(&vector("tls13.server.bin")),
        TlsParse::NotTls
    );
    assert_eq!(
        parse_server_hello(&vector("tls13.client.bin")),
        TlsParse::NotTls
    );
    assert_eq!(parse_client_hello(&[]), TlsParse::NeedMore);
    assert_eq!(parse_client_hello(&[22, 3]), TlsParse::NeedMore);
    assert_eq!(parse_client_hello(&[22, 3, 1, 0]), TlsParse::NeedMore);
    assert_eq!(parse_client_hello(&[22, 0x41]), TlsParse::NotTls);
    assert_eq!(parse_client_hello(&[22, 3, 9]), TlsParse::NotTls);
    // A handshake message larger than the bound is not waited for.
    let mut huge = vec![22, 3, 1, 0x40, 0x00, 1, 0x01, 0, 0];
    huge.extend(std::iter::repeat_n(0u8, 0x4000 - 4));
    let mut more = huge.clone();
    more.extend_from_slice(&[22, 3, 1, 0x40, 0x00]);
    more.extend(std::iter::repeat_n(0u8, 0x4000));
    assert!(more.len() > MAX_HANDSHAKE);
    assert_eq!(parse_client_hello(&more), TlsParse::NotTls);
}

#[test]
fn versions_print_parse_and_order() {
    let all = [
        TlsVersion::Ssl2,
        TlsVersion::Ssl3,
        TlsVersion::Tls10,
        TlsVersion::Tls11,
        TlsVersion::Tls12,
        TlsVersion::Tls13,
    ];
    let shown: Vec<String> = all.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["ssl2", "ssl3", "1.0", "1.1", "1.2", "1.3"]);
    for v in all {
        assert_eq!(v.to_string().parse::<TlsVersion>().unwrap(), v);
    }
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    assert!("1.4".parse::<TlsVersion>().is_err());
    assert_eq!(TlsVersion::from_wire(0x7f1c), Some(TlsVersion::Tls13));
    assert_eq!(TlsVersion::from_wire(0x0a0a), None);
}

#[test]
fn garbage_and_cut_input_never_panics() {
    let mut rng = crate::pcap::tests::XorShift(0x2545_f491_4f6c_dd1d);
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for name in ["tls13", "tls12_gcm", "tls12_cbc", "tls11", "mtls"] {
        for side in ["client", "server"] {
            let bytes = vector(&format!("{name}.{side}.bin"));
            for cut in 0..bytes.len().min(700) {
                inputs.push(bytes[..cut].to_vec());
            }
            for _ in 0..200 {
                let mut flipped = bytes.clone();
                let at = (rng.next() as usize) % flipped.len();
                flipped[at] ^= 1 << (rng.next() % 8);
                inputs.push(flipped);
            }
        }
    }
    for _ in 0..3000 {
        let len = (rng.next() % 600) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Half look like a handshake record so the deeper code runs.
        if rng.next().is_multiple_of(2) && bytes.len() > 6 {
            bytes[..6].copy_from_slice(&[22, 3, 1, (len >> 8) as u8, len as u8, 1]);
        }
        inputs.push(bytes);
    }
    for bytes in &inputs {
        let _ = parse_client_hello(bytes);
        let _ = parse_server_hello(bytes);
        let _ = parse_client_certificate(bytes);
        let _ = classify(bytes);
        let _ = crate::protocol::http::scan_requests(bytes);
        let _ = crate::protocol::orientation_hint(bytes);
    }
}
