//! HTTP/1.x request heads (httparse) and h2c recognition.
//!
//! Credential headers are hashed while the head is parsed: a [`Request`]
//! carries only [`Credential`]s (header name + SHA-256), so a raw token never
//! leaves this module, not even through `Debug`.

use std::fmt;

use sha2::{Digest, Sha256};

/// The HTTP/2 connection preface a prior-knowledge h2c client sends first.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A request head longer than this is not waited for.
pub const MAX_HEAD: usize = 16 * 1024;
/// Headers per request head httparse accepts; more makes the head invalid.
const MAX_HEADERS: usize = 96;
/// Requests taken from one buffer at most (bounds work on garbage).
const MAX_REQUESTS: usize = 1024;

/// Methods that start a request, each followed by a space: the same rule
/// the kernel program uses to count request starts.
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// Headers whose values identify a client, lowercase.
pub const CREDENTIAL_HEADERS: [&str; 6] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "cookie",
];

/// Does `buf` start with a request method and a space?
#[inline]
pub fn starts_with_method(buf: &[u8]) -> bool {
    // Dispatch on the first byte so the common miss costs one comparison.
    match buf.first() {
        Some(b'G') => buf.starts_with(b"GET "),
        Some(b'P') => {
            buf.starts_with(b"POST ") || buf.starts_with(b"PUT ") || buf.starts_with(b"PATCH ")
        }
        Some(b'D') => buf.starts_with(b"DELETE "),
        Some(b'H') => buf.starts_with(b"HEAD "),
        Some(b'O') => buf.starts_with(b"OPTIONS "),
        Some(b'C') => buf.starts_with(b"CONNECT "),
        Some(b'T') => buf.starts_with(b"TRACE "),
        _ => false,
    }
}

/// Could `buf` (shorter than any method + space) still become a method?
pub fn could_start_with_method(buf: &[u8]) -> bool {
    METHODS
        .iter()
        .any(|m| buf.len() < m.len() && m.starts_with(buf))
}

/// Does `buf` start with an HTTP/1.x status line ("HTTP/1.1 200")?
/// `None` when too few bytes are there to tell.
pub fn is_response_start(buf: &[u8]) -> Option<bool> {
    const PREFIX: &[u8] = b"HTTP/1.";
    if buf.len() < 12 {
        let n = buf.len().min(PREFIX.len());
        return if buf.get(..n) == PREFIX.get(..n) {
            None
        } else {
            Some(false)
        };
    }
    Some(matches!(
        buf.get(..12),
        Some([b'H', b'T', b'T', b'P', b'/', b'1', b'.', v, b' ', a, b, c])
            if v.is_ascii_digit() && a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit()
    ))
}

/// A credential header, hashed: the raw value is gone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credential {
    /// Lowercase header name, one of [`CREDENTIAL_HEADERS`].
    pub header: &'static str,
    /// SHA-256 per [`credential_sha256`].
    pub value_sha256: [u8; 32],
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}, sha256:", self.header)?;
        for b in &self.value_sha256 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// The fingerprint rule of the contract: for `authorization`, a value
/// "Bearer X" or "Basic X" (scheme case-insensitive) hashes X; any other
/// value or header hashes the whole value. Surrounding whitespace is trimmed.
pub fn credential_sha256(header: &str, raw_value: &[u8]) -> [u8; 32] {
    let value = raw_value.trim_ascii();
    let hashed = if header.eq_ignore_ascii_case("authorization") {
        strip_scheme(value, b"bearer")
            .or_else(|| strip_scheme(value, b"basic"))
            .unwrap_or(value)
    } else {
        value
    };
    Sha256::digest(hashed).into()
}

fn strip_scheme<'a>(value: &'a [u8], scheme: &[u8]) -> Option<&'a [u8]> {
    let (head, rest) = value.split_at_checked(scheme.len())?;
    if !head.eq_ignore_ascii_case(scheme) || rest.first().is_none_or(|b| *b != b' ') {
        return None;
    }
    Some(rest.trim_ascii())
}

/// One request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Request path (origin form; taken out of absolute-form targets).
    pub path: String,
    /// Host header (or the authority of an absolute-form target): lowercase,
    /// port and IPv6 brackets removed.
    pub host: Option<String>,
    /// Credential headers in the order they appeared, already hashed.
    pub credentials: Vec<Credential>,
    /// The request asks to switch to HTTP/2 (`Upgrade: h2c`).
    pub upgrade_h2c: bool,
}

/// Where scanning a buffer of requests stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// All bytes were consumed.
    Complete,
    /// The buffer ends inside a request head: continue at `consumed` with
    /// more bytes.
    NeedMore,
    /// The buffer ends inside the last request's body; `remaining` body
    /// bytes follow and then, maybe, the next request.
    InBody { remaining: u64 },
    /// What follows cannot be split into requests here: a chunked body, a
    /// protocol switch (Upgrade, CONNECT), or a head larger than
    /// [`MAX_HEAD`].
    Stopped,
    /// The bytes at `consumed` are not an HTTP/1.x request.
    NotHttp,
}

/// Requests found in a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestScan {
    pub requests: Vec<Request>,
    /// Bytes of the buffer covered by `requests` (heads and bodies).
    pub consumed: usize,
    pub end: ScanEnd,
}

/// All request heads in `buf` (pipelining), skipping bodies by
/// Content-Length. See [`scan_requests`] for where parsing stopped.
pub fn parse_requests(buf: &[u8]) -> Vec<Request> {
    scan_requests(buf).requests
}

/// Splits `buf`, which starts at a request head, into requests.
pub fn scan_requests(buf: &[u8]) -> RequestScan {
    let mut scan = RequestScan {
        requests: Vec::new(),
        consumed: 0,
        end: ScanEnd::Complete,
    };
    while scan.requests.len() < MAX_REQUESTS {
        let rest = buf.get(scan.consumed..).unwrap_or_default();
        if rest.is_empty() {
            scan.end = ScanEnd::Complete;
            return scan;
        }
        if !starts_with_method(rest) {
            scan.end = if could_start_with_method(rest) {
                ScanEnd::NeedMore
            } else {
                ScanEnd::NotHttp
            };
            return scan;
        }
        let parsed = match parse_head(rest) {
            HeadResult::Complete(parsed) => parsed,
            HeadResult::Partial => {
                scan.end = if rest.len() >= MAX_HEAD {
                    ScanEnd::Stopped
                } else {
                    ScanEnd::NeedMore
                };
                return scan;
            }
            HeadResult::Invalid => {
                scan.end = ScanEnd::NotHttp;
                return scan;
            }
        };
        scan.consumed += parsed.head_len;
        let switches = parsed.request.upgrade_h2c || parsed.request.method == "CONNECT";
        scan.requests.push(parsed.request);
        match parsed.body {
            Body::None if switches => {
                scan.end = ScanEnd::Stopped;
                return scan;
            }
            Body::None => {}
            Body::Length(len) => {
                let available = (buf.len() - scan.consumed) as u64;
                if len > available {
                    scan.consumed = buf.len();
                    scan.end = ScanEnd::InBody {
                        remaining: len - available,
                    };
                    return scan;
                }
                // `len <= available`, which is a usize.
                scan.consumed += len as usize;
            }
            Body::Unknown => {
                scan.end = ScanEnd::Stopped;
                return scan;
            }
        }
    }
    scan.end = ScanEnd::Stopped;
    scan
}

/// Is the request head at the start of `buf` asking for `Upgrade: h2c`?
/// `None` while the head is incomplete.
pub fn head_upgrades_to_h2c(buf: &[u8]) -> Option<bool> {
    match parse_head(buf) {
        HeadResult::Complete(parsed) => Some(parsed.request.upgrade_h2c),
        HeadResult::Partial => None,
        HeadResult::Invalid => Some(false),
    }
}

enum Body {
    None,
    Length(u64),
    /// Chunked, or a length we cannot trust.
    Unknown,
}

struct ParsedHead {
    request: Request,
    head_len: usize,
    body: Body,
}

enum HeadResult {
    Complete(ParsedHead),
    Partial,
    Invalid,
}

fn parse_head(buf: &[u8]) -> HeadResult {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return HeadResult::Partial,
        Err(_) => return HeadResult::Invalid,
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return HeadResult::Invalid;
    };
    let (mut host, path) = split_target(target);
    let mut credentials = Vec::new();
    let mut upgrade_h2c = false;
    let mut body = Body::None;
    for header in req.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("host") {
            if let Ok(value) = std::str::from_utf8(header.value) {
                host = Some(normalize_host(value));
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            if !matches!(body, Body::Unknown) {
                body = match std::str::from_utf8(header.value).map(|v| v.trim().parse::<u64>()) {
                    Ok(Ok(0)) => Body::None,
                    Ok(Ok(len)) => Body::Length(len),
                    _ => Body::Unknown,
                };
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Any transfer coding (chunked in practice) hides where the body ends.
            body = Body::Unknown;
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_h2c |= header
                .value
                .split(|b| *b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"h2c"));
        } else if let Some(known) = CREDENTIAL_HEADERS
            .iter()
            .find(|known| name.eq_ignore_ascii_case(known))
        {
            credentials.push(Credential {
                header: known,
                value_sha256: credential_sha256(known, header.value),
            });
        }
    }
    HeadResult::Complete(ParsedHead {
        request: Request {
            method: method.to_owned(),
            path: path.to_owned(),
            host: host.filter(|h| !h.is_empty()),
            credentials,
            upgrade_h2c,
        },
        head_len,
        body,
    })
}

/// Splits an absolute-form target ("http://host:port/path") into its host
/// and path; origin-form targets have no host.
fn split_target(target: &str) -> (Option<String>, &str) {
    let lower = target.get(..8).map(str::to_ascii_lowercase);
    let scheme_len = match lower.as_deref() {
        Some(p) if p.starts_with("http://") => 7,
        Some("https://") => 8,
        _ => return (None, target),
    };
    let rest = target.get(scheme_len..).unwrap_or_default();
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    (Some(normalize_host(authority)), path)
}

/// Lowercase, without port, userinfo or IPv6 brackets.
fn normalize_host(value: &str) -> String {
    let value = value.trim();
    let value = value.rsplit_once('@').map_or(value, |(_, host)| host);
    let host = if let Some(inner) = value.strip_prefix('[') {
        inner.split_once(']').map_or(inner, |(addr, _)| addr)
    } else {
        value.split_once(':').map_or(value, |(name, _)| name)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}
