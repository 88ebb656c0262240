//! HTTP/1.x, h2c and classification tests.

use sha2::{Digest, Sha256};

use super::http::{
    CredentialHeaders, H2_PREFACE, MAX_HEAD, ScanEnd, is_response_start, parse_requests,
    scan_requests, scan_requests_with, starts_with_method,
};
use crate::{
    event::Direction,
    protocol::{Protocol, classify, orientation_hint},
};

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[test]
fn method_rule_matches_the_kernel() {
    for m in [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ] {
        assert!(
            starts_with_method(format!("{m} /x HTTP/1.1").as_bytes()),
            "{m}"
        );
        assert!(!starts_with_method(m.as_bytes()), "{m} without a space");
        assert!(!starts_with_method(format!("{m}/").as_bytes()), "{m}/");
        assert!(
            !starts_with_method(m.to_lowercase().as_bytes()),
            "lowercase {m}"
        );
    }
    for other in [
        "PRI * HTTP/2.0",
        "GETX /",
        "",
        "\x16\x03\x01",
        "PROPFIND / HTTP/1.1",
    ] {
        assert!(!starts_with_method(other.as_bytes()), "{other:?}");
    }
}

#[test]
fn pipelined_requests_each_returned_with_bodies_skipped() {
    let buf = b"GET /v1/a HTTP/1.1\r\nHost: API.Example.com:8443\r\n\r\n\
POST /v1/payments?x=1 HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 11\r\n\r\n\
{\"amount\":1}\
DELETE /v1/b HTTP/1.1\r\nhost: [2001:db8::1]:80\r\n\r\n";
    // Content-Length 11 covers `{"amount":1` and leaves `}` which is not a
    // request: scanning stops there.
    let scan = scan_requests(buf);
    assert_eq!(scan.requests.len(), 2);
    assert_eq!(scan.end, ScanEnd::NotHttp);
    // With the right length all three come out.
    let buf = String::from_utf8_lossy(buf).replace("Content-Length: 11", "Content-Length: 12");
    let scan = scan_requests(buf.as_bytes());
    assert_eq!(scan.end, ScanEnd::Complete);
    assert_eq!(scan.consumed, buf.len());
    let got: Vec<(&str, &str, Option<&str>)> = scan
        .requests
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str(), r.host.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("GET", "/v1/a", Some("api.example.com")),
            ("POST", "/v1/payments?x=1", Some("api.example.com")),
            ("DELETE", "/v1/b", Some("2001:db8::1")),
        ]
    );
}

#[test]
fn stray_crlf_between_requests_is_ignored() {
    let buf = b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi\r\nGET /b HTTP/1.1\r\n\r\n";
    let scan = scan_requests(buf);
    assert_eq!(scan.requests.len(), 2);
    assert_eq!(scan.end, ScanEnd::Complete);
    assert_eq!(scan.consumed, buf.len());
}

#[test]
fn partial_heads_and_bodies() {
    let full = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
    for cut in 1..full.len() {
        let scan = scan_requests(&full[..cut]);
        assert_eq!(scan.end, ScanEnd::NeedMore, "cut at {cut}");
        assert!(scan.requests.is_empty());
        assert_eq!(scan.consumed, 0);
    }
    // One whole request, then half of the next.
    let mut two = full.to_vec();
    two.extend_from_slice(b"GET /b HTTP/1.1\r\nHo");
    let scan = scan_requests(&two);
    assert_eq!(scan.requests.len(), 1);
    assert_eq!(scan.consumed, full.len());
    assert_eq!(scan.end, ScanEnd::NeedMore);
    // A body that continues in later segments.
    let scan = scan_requests(b"PUT /u HTTP/1.1\r\nContent-Length: 1000\r\n\r\nabc");
    assert_eq!(scan.requests.len(), 1);
    assert_eq!(scan.end, ScanEnd::InBody { remaining: 997 });
    // Chunked: the request counts, what follows is not searched.
    let scan = scan_requests(
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /d HTTP/1.1\r\n\r\n",
    );
    assert_eq!(scan.requests.len(), 1);
    assert_eq!(scan.end, ScanEnd::Stopped);
    // A head that never ends is given up on at the bound.
    let mut endless = b"GET / HTTP/1.1\r\n".to_vec();
    while endless.len() < MAX_HEAD + 10 {
        endless.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    assert_eq!(scan_requests(&endless).end, ScanEnd::Stopped);
    assert_eq!(scan_requests(b"\x00\x01garbage").end, ScanEnd::NotHttp);
    assert_eq!(
        scan_requests(b"GET /x\x01 HTTP/1.1\r\n\r\n").end,
        ScanEnd::NotHttp
    );
    assert_eq!(scan_requests(b"").end, ScanEnd::Complete);
}

#[test]
fn credentials_are_hashed_by_the_contract_rule() {
    let buf = b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer tok-123\r\n\
X-Api-Key:  key-9  \r\nCookie: a=1; b=2\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n\
Api-Key: k2\r\nX-Auth-Token: t3\r\nX-Other: not-a-credential\r\n\r\n";
    let reqs = parse_requests(buf);
    let creds = &reqs[0].credentials;
    let got: Vec<(&str, [u8; 32])> = creds
        .iter()
        .map(|c| (c.header.as_ref(), *c.fingerprint.as_bytes()))
        .collect();
    let expect = vec![
        ("authorization", sha(b"tok-123")),
        ("x-api-key", sha(b"key-9")),
        ("cookie", sha(b"a=1; b=2")),
        // Only `authorization` strips the scheme; other headers hash it all.
        ("proxy-authorization", sha(b"Basic dXNlcjpwYXNz")),
        ("api-key", sha(b"k2")),
        ("x-auth-token", sha(b"t3")),
    ];
    assert_eq!(got, expect);
    // Debug shows the hash, never the token.
    let debug = format!("{:?}", reqs[0]);
    assert!(
        !debug.contains("tok-123") && !debug.contains("key-9"),
        "{debug}"
    );
    assert!(debug.contains(&format!("sha256:{}", hexs(&sha(b"tok-123")))));
}

#[test]
fn contract_named_credential_headers() {
    let headers = CredentialHeaders::with_extra(["X-Client-Secret", "cookie", " "]);
    let buf = b"GET / HTTP/1.1\r\nx-client-secret: s3cret\r\nCookie: c\r\nX-Other: o\r\n\r\n";
    let scan = scan_requests_with(buf, &headers);
    let got: Vec<(&str, [u8; 32])> = scan.requests[0]
        .credentials
        .iter()
        .map(|c| (c.header.as_ref(), *c.fingerprint.as_bytes()))
        .collect();
    assert_eq!(
        got,
        vec![("x-client-secret", sha(b"s3cret")), ("cookie", sha(b"c"))]
    );
    // Without the contract's list the extra header is not a credential.
    assert_eq!(scan_requests(buf).requests[0].credentials.len(), 1);
}

fn hexs(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn authorization_scheme_rule() {
    // The rule itself is tested in `identity::credential`; here, that the
    // parser applies it, tab after the scheme included.
    let creds = |head: &[u8]| -> Vec<[u8; 32]> {
        parse_requests(head)[0]
            .credentials
            .iter()
            .map(|c| *c.fingerprint.as_bytes())
            .collect()
    };
    assert_eq!(
        creds(b"GET / HTTP/1.1\r\nAuthorization: Bearer abc\r\n\r\n"),
        [sha(b"abc")]
    );
    assert_eq!(
        creds(b"GET / HTTP/1.1\r\nAuthorization: bEaReR   abc  \r\n\r\n"),
        [sha(b"abc")]
    );
    assert_eq!(
        creds(b"GET / HTTP/1.1\r\nAuthorization: Basic\tdXNlcg==\r\n\r\n"),
        [sha(b"dXNlcg==")]
    );
    // Other schemes and a scheme without a separator hash the whole value.
    assert_eq!(
        creds(b"GET / HTTP/1.1\r\nAuthorization: Digest x=1\r\n\r\n"),
        [sha(b"Digest x=1")]
    );
    assert_eq!(
        creds(b"GET / HTTP/1.1\r\nAuthorization: Bearerabc\r\n\r\n"),
        [sha(b"Bearerabc")]
    );
    assert_eq!(
        creds(b"GET / HTTP/1.1\r\nX-Api-Key:  Bearer abc \r\n\r\n"),
        [sha(b"Bearer abc")]
    );
}

#[test]
fn absolute_form_targets_give_host_and_path() {
    let reqs = parse_requests(b"GET http://Proxy.Example:8080/v1/x?q HTTP/1.1\r\n\r\n");
    assert_eq!(reqs[0].host.as_deref(), Some("proxy.example"));
    assert_eq!(reqs[0].path, "/v1/x?q");
    // A Host header wins over the target's authority.
    let reqs = parse_requests(b"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n");
    assert_eq!(reqs[0].host.as_deref(), Some("b.example"));
}

#[test]
fn h2c_prior_knowledge_and_upgrade() {
    let mut preface = H2_PREFACE.to_vec();
    preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    assert_eq!(classify(&preface), Protocol::H2c);
    assert_eq!(classify(&H2_PREFACE[..10]), Protocol::Unknown);
    let upgrade = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n\
Upgrade: websocket, H2C\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
    assert_eq!(classify(upgrade), Protocol::H2c);
    let scan = scan_requests(upgrade);
    assert!(scan.requests[0].upgrade_h2c);
    assert_eq!(scan.end, ScanEnd::Stopped);
    let websocket = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
    assert_eq!(classify(websocket), Protocol::Http);
}

#[test]
fn classify_everything_else() {
    assert_eq!(
        classify(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        Protocol::Http
    );
    // Method seen, head incomplete: wait (it might still upgrade to h2c).
    assert_eq!(classify(b"GET / HTTP/1.1\r\nHo"), Protocol::Unknown);
    assert_eq!(classify(b"GE"), Protocol::Unknown);
    assert_eq!(classify(b""), Protocol::Unknown);
    assert_eq!(classify(&[0x16]), Protocol::Unknown);
    assert_eq!(classify(&[0x16, 3, 1, 0, 5]), Protocol::Tls);
    assert_eq!(classify(b"SSH-2.0-OpenSSH_9.6\r\n"), Protocol::Other);
    assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Protocol::Other);
    assert_eq!(classify(&[0x16, 9, 9, 9]), Protocol::Other);
}

#[test]
fn response_side_and_orientation() {
    assert_eq!(is_response_start(b"HTTP/1.1 200 OK\r\n"), Some(true));
    assert_eq!(is_response_start(b"HTTP/1.0 404 Not Found"), Some(true));
    assert_eq!(is_response_start(b"HTTP/1."), None);
    assert_eq!(is_response_start(b"HTTP/2 200 OK\r\n"), Some(false));
    assert_eq!(is_response_start(b"GET / HTTP/1.1\r\n"), Some(false));
    assert_eq!(is_response_start(b"HTX"), Some(false));
    assert_eq!(
        orientation_hint(b"HTTP/1.1 200 OK\r\n"),
        Some(Direction::ToClient)
    );
    assert_eq!(
        orientation_hint(b"POST /x HTTP/1.1\r\n"),
        Some(Direction::ToServer)
    );
    assert_eq!(orientation_hint(H2_PREFACE), Some(Direction::ToServer));
    assert_eq!(
        orientation_hint(&[0x16, 3, 1, 0, 200, 1, 0]),
        Some(Direction::ToServer)
    );
    assert_eq!(
        orientation_hint(&[0x16, 3, 3, 0, 80, 2, 0]),
        Some(Direction::ToClient)
    );
    assert_eq!(orientation_hint(b"hello"), None);
}

#[test]
fn random_input_never_panics() {
    let mut rng = crate::pcap::tests::XorShift(0xdead_beef_cafe_f00d);
    let seeds: [&[u8]; 3] = [
        b"GET /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nAuthorization: Bearer x\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        H2_PREFACE,
    ];
    for _ in 0..5000 {
        let seed = seeds[(rng.next() % 3) as usize];
        let mut bytes = seed.to_vec();
        for _ in 0..(rng.next() % 4) {
            let at = (rng.next() as usize) % bytes.len();
            bytes[at] = rng.next() as u8;
        }
        bytes.truncate((rng.next() as usize) % (bytes.len() + 1));
        let _ = scan_requests(&bytes);
        let _ = classify(&bytes);
    }
}

#[test]
fn host_with_control_bytes_is_dropped() {
    let reqs = parse_requests(b"GET / HTTP/1.1\r\nHost: evil\x1b[2Jname\r\n\r\n");
    // httparse may refuse the head outright; either way no such host survives.
    assert!(reqs.iter().all(|r| r.host.is_none()), "{reqs:?}");
    let reqs = parse_requests("GET / HTTP/1.1\r\nHost: caf\u{e9}.example\r\n\r\n".as_bytes());
    assert!(reqs.iter().all(|r| r.host.is_none()), "{reqs:?}");
    let reqs = parse_requests(b"GET / HTTP/1.1\r\nHost: Api.Example.com:8080\r\n\r\n");
    assert_eq!(reqs[0].host.as_deref(), Some("api.example.com"));
}

/// More headers than the first parse has slots for (96): parsed again with
/// room for them all, nothing after them lost.
#[test]
fn heads_with_many_headers_are_parsed_whole() {
    let mut head = b"GET /many HTTP/1.1\r\n".to_vec();
    for i in 0..150 {
        head.extend_from_slice(format!("X-Pad-{i}: v\r\n").as_bytes());
    }
    head.extend_from_slice(
        b"Host: Many.Example:8080\r\nAuthorization: Bearer late-token\r\n\
Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n",
    );
    let scan = scan_requests(&head);
    assert_eq!(scan.requests.len(), 1, "{:?}", scan.end);
    let r = &scan.requests[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/many"));
    assert_eq!(r.host.as_deref(), Some("many.example"));
    let creds: Vec<(&str, [u8; 32])> = r
        .credentials
        .iter()
        .map(|c| (c.header.as_ref(), *c.fingerprint.as_bytes()))
        .collect();
    assert_eq!(creds, vec![("authorization", sha(b"late-token"))]);
    assert!(r.upgrade_h2c);
    assert_eq!(classify(&head), Protocol::H2c);
    // Cut before its end, it is waited for (and undecided).
    let cut = &head[..head.len() - 2];
    assert_eq!(scan_requests(cut).end, ScanEnd::NeedMore);
    assert_eq!(classify(cut), Protocol::Unknown);
}
