//! HTTP/1.x request heads (httparse) and h2c recognition.
//!
//! Credential headers are hashed while the head is parsed: a [`Request`]
//! carries only [`Credential`]s (header name + SHA-256), so a raw token never
//! leaves this module, not even through `Debug`.

// The credential types live with the fingerprint rule, in `identity`;
// re-exported here because request parsers are where they are used.
pub use crate::identity::credential::{CREDENTIAL_HEADERS, Credential, CredentialHeaders};

/// The HTTP/2 connection preface a prior-knowledge h2c client sends first.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A request head longer than this is not waited for.
pub const MAX_HEAD: usize = 16 * 1024;
/// Header slots tried first; a head with more is parsed again with room
/// for as many as [`MAX_HEAD`] bytes can hold.
const MAX_HEADERS: usize = 96;
/// Header slots are handed to httparse uninitialised: it writes those it
/// fills, and writing all 96 first was a visible share of every request.
type Slots<'b> = [MaybeUninit<httparse::Header<'b>>];
/// Requests taken from one buffer at most (bounds work on garbage).
const MAX_REQUESTS: usize = 1024;

use std::mem::MaybeUninit;

// The method rule is the kernel's: one table, in `agent_common::http`.
pub use agent_common::http::{could_start_with_method, starts_with_method};

use super::http_lenient::{self, Lenient};

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
    /// The head breaks RFC 9112 in a way a lenient server still serves
    /// (see `http_lenient`): an unknown method, extra whitespace, no
    /// version (HTTP/0.9).
    pub lenient: bool,
    /// The kernel's rule counts this head when it starts a segment: a
    /// method token from its table, a space, and at least 16 bytes. The
    /// engine counts the others itself, live too.
    pub kernel_counts: bool,
    /// Per-flow number the flow's response tracker gives the request (from
    /// 1; 0 until registered), to pair it with its response.
    pub id: u64,
    /// The HTTP/2 stream that carries it.
    pub stream_id: Option<u32>,
    /// An HTTP/1 head found by resynchronising after the client stream was
    /// lost (unseen bytes, a chunked body): requests before it may have
    /// gone unseen, so its response cannot be told from theirs.
    pub after_gap: bool,
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

/// [`scan_requests_with`] the standard credential headers.
pub fn scan_requests(buf: &[u8]) -> RequestScan {
    scan_requests_with(buf, &CredentialHeaders::STANDARD)
}

/// Splits `buf`, which starts at a request head, into requests.
pub fn scan_requests_with(buf: &[u8], credential_headers: &CredentialHeaders) -> RequestScan {
    let mut scan = RequestScan {
        requests: Vec::new(),
        consumed: 0,
        end: ScanEnd::Complete,
    };
    while scan.requests.len() < MAX_REQUESTS {
        let mut rest = buf.get(scan.consumed..).unwrap_or_default();
        // Some clients send a stray CRLF after a body (RFC 9112 2.2 says
        // servers should ignore empty lines before a request-line).
        if scan.consumed > 0 {
            while let Some(after) = rest
                .strip_prefix(b"\r\n")
                .or_else(|| rest.strip_prefix(b"\n"))
            {
                scan.consumed += rest.len() - after.len();
                rest = after;
            }
        }
        if rest.is_empty() {
            scan.end = ScanEnd::Complete;
            return scan;
        }
        let strict = if starts_with_method(rest) {
            parse_head(rest, credential_headers)
        } else {
            HeadResult::Invalid
        };
        let parsed = match strict {
            HeadResult::Complete(parsed) => parsed,
            HeadResult::Partial => {
                scan.end = if rest.len() >= MAX_HEAD {
                    ScanEnd::Stopped
                } else {
                    ScanEnd::NeedMore
                };
                return scan;
            }
            // A head here that httparse rejects: what a lenient server
            // would serve still counts.
            HeadResult::Invalid => match http_lenient::parse(rest) {
                Lenient::Complete(head) => lenient_head(head, credential_headers),
                Lenient::Partial if rest.len() < MAX_HEAD => {
                    scan.end = ScanEnd::NeedMore;
                    return scan;
                }
                Lenient::Partial | Lenient::NotARequest => {
                    scan.end = if could_start_with_method(rest) {
                        ScanEnd::NeedMore
                    } else {
                        ScanEnd::NotHttp
                    };
                    return scan;
                }
            },
        };
        scan.consumed += parsed.head_len;
        let mut parsed = parsed;
        // The kernel counts a segment that starts with a token of its table
        // and holds 16 bytes; the head alone decides it here, as segment
        // boundaries are gone from reassembled bytes (only an HTTP/0.9
        // line can be shorter than 16 bytes).
        parsed.request.kernel_counts = starts_with_method(rest) && parsed.head_len >= 16;
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
    // Only the Upgrade header matters here: no strings, no hashing.
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(_)) => Some(
            req.headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("upgrade") && upgrade_lists_h2c(h.value)),
        ),
        Ok(httparse::Status::Partial) => None,
        // Too many headers for the quick look: the full parse decides.
        Err(httparse::Error::TooManyHeaders) => match parse_head(buf, &CredentialHeaders::STANDARD)
        {
            HeadResult::Complete(parsed) => Some(parsed.request.upgrade_h2c),
            HeadResult::Partial => None,
            HeadResult::Invalid => Some(false),
        },
        Err(_) => Some(false),
    }
}

fn upgrade_lists_h2c(value: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"h2c"))
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

fn parse_head(buf: &[u8], credential_headers: &CredentialHeaders) -> HeadResult {
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    match parse_head_with(buf, &mut headers, credential_headers) {
        Err(httparse::Error::TooManyHeaders) => {
            // Rare: retry with room for as many headers as MAX_HEAD can hold.
            let mut many = Box::new_uninit_slice(MAX_HEAD / 4);
            parse_head_with(buf, &mut many, credential_headers).unwrap_or(HeadResult::Invalid)
        }
        Err(_) => HeadResult::Invalid,
        Ok(result) => result,
    }
}

fn parse_head_with<'b>(
    buf: &'b [u8],
    headers: &mut Slots<'b>,
    credential_headers: &CredentialHeaders,
) -> Result<HeadResult, httparse::Error> {
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, headers)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(HeadResult::Partial),
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Ok(HeadResult::Invalid);
    };
    let headers = req.headers.iter().map(|h| (h.name, h.value));
    Ok(HeadResult::Complete(head(
        method,
        target,
        headers,
        head_len,
        credential_headers,
    )))
}

/// A head the lenient parser accepted, as the strict path would read it.
fn lenient_head(
    h: http_lenient::LenientHead<'_>,
    credential_headers: &CredentialHeaders,
) -> ParsedHead {
    let headers = h.headers.iter().map(|(n, v)| (*n, v.as_slice()));
    let mut parsed = head(h.method, h.target, headers, h.head_len, credential_headers);
    parsed.request.lenient = true;
    parsed
}

/// What a request line and its headers say: target, Host, credentials
/// (hashed here), upgrade, where the body ends.
fn head<'a>(
    method: &str,
    target: &str,
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    head_len: usize,
    credential_headers: &CredentialHeaders,
) -> ParsedHead {
    let (mut host, path) = split_target(target);
    let mut credentials = Vec::new();
    let mut upgrade_h2c = false;
    let mut body = Body::None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("host") {
            if let Ok(value) = std::str::from_utf8(value) {
                host = Some(normalize_host(value));
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            if !matches!(body, Body::Unknown) {
                body = match std::str::from_utf8(value).map(|v| v.trim().parse::<u64>()) {
                    Ok(Ok(0)) => Body::None,
                    Ok(Ok(len)) => Body::Length(len),
                    _ => Body::Unknown,
                };
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Any transfer coding (chunked in practice) hides where the body ends.
            body = Body::Unknown;
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_h2c |= upgrade_lists_h2c(value);
        } else if let Some(credential) = credential_headers.hash(name, value) {
            credentials.push(credential);
        }
    }
    ParsedHead {
        request: Request {
            method: method.to_owned(),
            path: path.to_owned(),
            host: host.filter(|h| host_is_printable(h)),
            credentials,
            upgrade_h2c,
            lenient: false,
            kernel_counts: false,
            id: 0,
            stream_id: None,
            after_gap: false,
        },
        head_len,
        body,
    }
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

/// A Host value (HTTP/1 `Host`, HTTP/2 `:authority`) as the contract
/// matches it: normalised, and `None` unless printable.
pub(crate) fn host_of(value: &str) -> Option<String> {
    Some(normalize_host(value)).filter(|h| host_is_printable(h))
}

/// Printable ASCII only: a Host with control or non-ASCII bytes names
/// nothing and must not reach an operator's terminal.
fn host_is_printable(h: &str) -> bool {
    !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic())
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
