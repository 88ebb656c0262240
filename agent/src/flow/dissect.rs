//! Adapter between the flow table and the `protocol` parsers: turns byte
//! prefixes into [`super::facts`]. HTTP request heads are cut here with
//! httparse because the flow table needs each head's length and body length
//! to find the next request in a stream.

use super::compat::Fingerprint;
use super::facts::{AppProtocol, ClientHelloFacts, RequestFacts, SeenCredential, ServerHelloFacts};

/// Result of looking for a structure at the start of a byte prefix.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    Done(T),
    /// Not enough bytes yet.
    NeedMore,
    /// Not this structure.
    Invalid,
}

/// Methods recognised at the start of a request; the kernel uses the same
/// list for its request-start counter.
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"PATCH ",
    b"OPTIONS ",
    b"CONNECT ",
    b"TRACE ",
];

/// The h2c prior-knowledge preface starts with this.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Whether `b` starts with an HTTP method token and a space.
pub fn starts_with_method(b: &[u8]) -> bool {
    METHODS.iter().any(|m| b.starts_with(m))
}

/// Whether `b` could still become a method token or the h2c preface.
pub fn could_be_method(b: &[u8]) -> bool {
    METHODS.iter().any(|m| m.starts_with(b)) || H2_PREFACE.starts_with(b)
}

/// Whether `b` starts like a TLS handshake record carrying a ClientHello,
/// or an SSLv2-style hello.
pub fn looks_like_client_hello(b: &[u8]) -> bool {
    match b {
        [0x16, 0x03, _, _, _, 0x01, ..] => true,
        [h, _, 0x01, 0x03 | 0x00, ..] if h & 0x80 != 0 => true,
        _ => false,
    }
}

/// Whether `b` starts like a server's first bytes: a ServerHello record or an
/// HTTP response.
pub fn looks_like_server_reply(b: &[u8]) -> bool {
    matches!(b, [0x16, 0x03, _, _, _, 0x02, ..]) || b.starts_with(b"HTTP/")
}

/// Classifies the first bytes a client sent.
pub fn classify(b: &[u8], complete: bool) -> Parsed<AppProtocol> {
    if b.is_empty() {
        return Parsed::NeedMore;
    }
    if b.starts_with(H2_PREFACE) {
        return Parsed::Done(AppProtocol::H2c);
    }
    if starts_with_method(b) {
        return Parsed::Done(AppProtocol::Http);
    }
    if looks_like_client_hello(b) || matches!(b, [0x14..=0x17, 0x03, ..]) {
        // Also TLS records caught mid-stream.
        return Parsed::Done(AppProtocol::Tls);
    }
    if !complete
        && b.len() < 16
        && (could_be_method(b)
            || matches!(
                b,
                [0x16]
                    | [0x16, 0x03]
                    | [0x16, 0x03, _]
                    | [0x16, 0x03, _, _]
                    | [0x16, 0x03, _, _, _]
            ))
    {
        return Parsed::NeedMore;
    }
    Parsed::Done(AppProtocol::Other)
}

/// Whether the TLS records from the start of `b` reach an application data
/// record (content type 23): the sender's handshake flight is over.
pub fn tls_reaches_app_data(b: &[u8]) -> bool {
    let mut rest = b;
    while let [ct, _, _, hi, lo, tail @ ..] = rest {
        if *ct == 0x17 {
            return true;
        }
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        match tail.get(len..) {
            Some(next) => rest = next,
            None => return false,
        }
    }
    false
}

/// ClientHello facts from the start of the client's stream.
pub fn client_hello(b: &[u8]) -> Parsed<ClientHelloFacts> {
    let _ = b;
    Parsed::NeedMore
}

/// ServerHello facts from the start of the server's stream.
pub fn server_hello(b: &[u8]) -> Parsed<ServerHelloFacts> {
    let _ = b;
    Parsed::NeedMore
}

/// The client's leaf certificate fingerprint from the client's stream (TLS ≤
/// 1.2); `Done(None)` when the client's flight carries no certificate.
pub fn client_certificate(b: &[u8]) -> Parsed<Option<Fingerprint>> {
    let _ = b;
    Parsed::NeedMore
}

/// How the bytes after a request head are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// `Content-Length: n` (0 when absent on a request).
    Length(u64),
    /// Chunked or otherwise unknown: the next request cannot be located by
    /// counting.
    Unknown,
}

/// One parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub request: RequestFacts,
    pub head_len: usize,
    pub body: Body,
}

/// A request head that was cut short: what the request line said.
pub type PartialHead = Option<RequestFacts>;

/// Headers looked at per request; heads with more are still counted.
const MAX_HEADERS: usize = 64;

/// Parses the request head at the start of `b`. `credential_headers` are the
/// lower-case header names whose values are credentials (hashed at once).
pub fn request_head(b: &[u8], credential_headers: &[String]) -> Result<Head, Parsed<PartialHead>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(b) {
        Ok(httparse::Status::Complete(head_len)) => {
            let mut facts = request_line(&req);
            let mut body = Body::Length(0);
            for h in req.headers.iter() {
                note_header(&mut facts, &mut body, h, credential_headers);
            }
            Ok(Head {
                request: facts,
                head_len,
                body,
            })
        }
        Ok(httparse::Status::Partial) => {
            if req.method.is_some() && req.path.is_some() {
                let mut facts = request_line(&req);
                let mut body = Body::Length(0);
                // Headers parsed so far are complete ones.
                for h in req.headers.iter().take_while(|h| !h.name.is_empty()) {
                    note_header(&mut facts, &mut body, h, credential_headers);
                }
                Err(Parsed::Done(Some(facts)))
            } else {
                Err(Parsed::NeedMore)
            }
        }
        Err(httparse::Error::TooManyHeaders) => {
            // Still a request: count it with what the line says.
            let mut headers = [httparse::EMPTY_HEADER; 0];
            let mut req = httparse::Request::new(&mut headers);
            let _ = req.parse(b);
            if req.method.is_some() {
                Err(Parsed::Done(Some(request_line(&req))))
            } else {
                Err(Parsed::Invalid)
            }
        }
        Err(_) => Err(Parsed::Invalid),
    }
}

fn request_line(req: &httparse::Request<'_, '_>) -> RequestFacts {
    RequestFacts {
        method: req.method.unwrap_or_default().to_owned(),
        path: req.path.unwrap_or_default().to_owned(),
        ..RequestFacts::default()
    }
}

fn note_header(
    facts: &mut RequestFacts,
    body: &mut Body,
    h: &httparse::Header<'_>,
    credential_headers: &[String],
) {
    let name = h.name;
    if name.eq_ignore_ascii_case("host") {
        if let Ok(v) = std::str::from_utf8(h.value) {
            facts.host = Some(strip_port(v.trim()).to_ascii_lowercase());
        }
    } else if name.eq_ignore_ascii_case("content-length") {
        *body = std::str::from_utf8(h.value)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map_or(Body::Unknown, Body::Length);
    } else if name.eq_ignore_ascii_case("transfer-encoding") {
        *body = Body::Unknown;
    } else if name.eq_ignore_ascii_case("upgrade") {
        facts.upgrade_h2c |= h.value.eq_ignore_ascii_case(b"h2c");
    }
    if let Some(header) = credential_headers
        .iter()
        .find(|c| name.eq_ignore_ascii_case(c))
    {
        let fingerprint = Fingerprint::of_credential(header, h.value);
        facts.credentials.push(SeenCredential {
            header: header.clone(),
            fingerprint,
        });
    }
}

/// `host:port` → `host`; `[v6]:port` → `v6`.
fn strip_port(v: &str) -> &str {
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match v.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|c| c.is_ascii_digit()) => h,
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\n", false),
            Parsed::Done(AppProtocol::Http)
        );
        assert_eq!(classify(b"GE", false), Parsed::NeedMore);
        assert_eq!(classify(b"GE", true), Parsed::Done(AppProtocol::Other));
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false),
            Parsed::Done(AppProtocol::H2c)
        );
        assert_eq!(
            classify(&[0x16, 3, 1, 0, 5, 1, 0, 0, 1, 3], false),
            Parsed::Done(AppProtocol::Tls)
        );
        assert_eq!(
            classify(b"\x00\x01garbage", false),
            Parsed::Done(AppProtocol::Other)
        );
    }

    #[test]
    fn request_heads_with_body_length() {
        let creds = vec!["authorization".to_owned()];
        let b = b"POST /v1/payments HTTP/1.1\r\nHost: Pay.example.com:8443\r\nAuthorization: Bearer abc\r\nContent-Length: 3\r\n\r\nxyzGET / HTTP/1.1\r\n";
        let head = request_head(b, &creds).expect("complete head");
        assert_eq!(head.request.method, "POST");
        assert_eq!(head.request.path, "/v1/payments");
        assert_eq!(head.request.host.as_deref(), Some("pay.example.com"));
        assert_eq!(head.request.credentials.len(), 1);
        assert_eq!(head.body, Body::Length(3));
        let rest = &b[head.head_len + 3..];
        assert!(starts_with_method(rest));
        assert!(matches!(
            request_head(rest, &creds),
            Err(Parsed::Done(Some(_)))
        ));
        assert!(matches!(
            request_head(b"GET /x", &creds),
            Err(Parsed::NeedMore)
        ));
        assert!(matches!(
            request_head(b"\x01\x02\x03", &creds),
            Err(Parsed::Invalid)
        ));
    }

    #[test]
    fn tls_record_walk() {
        assert!(!tls_reaches_app_data(&[0x16, 3, 3, 0, 1, 0]));
        assert!(tls_reaches_app_data(&[
            0x16, 3, 3, 0, 1, 0, 0x14, 3, 3, 0, 1, 1, 0x17, 3, 3, 0, 9
        ]));
        assert!(!tls_reaches_app_data(&[0x16, 3, 3, 0xff]));
    }

    #[test]
    fn host_ports_are_stripped() {
        assert_eq!(strip_port("a.example:80"), "a.example");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("a.example"), "a.example");
    }
}
