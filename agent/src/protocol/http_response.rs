//! HTTP/1.x response heads (httparse): the status and where the body ends,
//! which is all pairing a response with its request needs.
//!
//! RFC 9112 6.3: a response to HEAD, any 1xx, 204 and 304 have no body;
//! otherwise Transfer-Encoding (chunked) hides the end, Content-Length
//! gives it, and with neither the body runs to the end of the connection.

use std::mem::MaybeUninit;

use super::http::MAX_HEAD;

/// Header slots tried; a head with more is read for its status line only.
const MAX_HEADERS: usize = 64;

/// Where a response's body ends, counted from the end of its head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseBody {
    None,
    Length(u64),
    /// Chunked, to the end of the connection, or a length we cannot trust.
    Unknown,
}

/// What the bytes at the start of a buffer say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseHead {
    /// A whole head of `head_len` bytes.
    Complete {
        status: u16,
        head_len: usize,
        body: ResponseBody,
    },
    /// The status line is there but the head is cut short (or too large
    /// to parse): the status counts, where the next response starts is
    /// unknown.
    StatusOnly { status: u16 },
    /// Too few bytes to tell.
    Partial,
    /// Not an HTTP/1.x response.
    NotResponse,
}

impl ResponseHead {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Complete { status, .. } | Self::StatusOnly { status } => Some(*status),
            Self::Partial | Self::NotResponse => None,
        }
    }
}

/// An interim response (`100 Continue`, `103 Early Hints`): the final one
/// follows. `101` is final: the connection switches protocols after it.
pub const fn is_interim(status: u16) -> bool {
    status >= 100 && status < 200 && status != 101
}

/// Reads the response head at the start of `buf`; `to_head` says whether
/// it answers a HEAD request (no body whatever the headers say).
pub fn parse_response_head(buf: &[u8], to_head: bool) -> ResponseHead {
    // Uninitialised slots: the same parse as `Response::parse`, without
    // writing all 64 slots first on every head.
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(head_len)) => {
            let Some(status) = resp.code else {
                return ResponseHead::NotResponse;
            };
            let body = if to_head || (100..200).contains(&status) || status == 204 || status == 304
            {
                ResponseBody::None
            } else {
                body_of(resp.headers)
            };
            ResponseHead::Complete {
                status,
                head_len,
                body,
            }
        }
        Ok(httparse::Status::Partial) => match status_line(buf) {
            Some(status) if buf.len() >= MAX_HEAD || buf.contains(&b'\n') => {
                ResponseHead::StatusOnly { status }
            }
            Some(_) | None if could_be_response(buf) => ResponseHead::Partial,
            _ => ResponseHead::NotResponse,
        },
        Err(httparse::Error::TooManyHeaders) => match status_line(buf) {
            Some(status) => ResponseHead::StatusOnly { status },
            None => ResponseHead::NotResponse,
        },
        Err(_) => ResponseHead::NotResponse,
    }
}

/// Status of a head cut short: "HTTP/1.x NNN" then a space or line end.
pub fn status_line(buf: &[u8]) -> Option<u16> {
    match buf.get(..13) {
        Some(
            [
                b'H',
                b'T',
                b'T',
                b'P',
                b'/',
                b'1',
                b'.',
                v,
                b' ',
                a,
                b,
                c,
                end,
            ],
        ) if v.is_ascii_digit()
            && [a, b, c].iter().all(|d| d.is_ascii_digit())
            && matches!(end, b' ' | b'\r' | b'\n') =>
        {
            let d = |x: &u8| u16::from(x - b'0');
            Some(d(a) * 100 + d(b) * 10 + d(c))
        }
        _ => None,
    }
}

/// Could more bytes make `buf` a response head?
fn could_be_response(buf: &[u8]) -> bool {
    const PREFIX: &[u8] = b"HTTP/1.";
    let n = buf.len().min(PREFIX.len());
    buf.get(..n) == PREFIX.get(..n) && buf.len() < MAX_HEAD
}

fn body_of(headers: &[httparse::Header<'_>]) -> ResponseBody {
    let mut body = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return ResponseBody::Unknown;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            body = match (body, len) {
                // Differing lengths: RFC 9112 6.3 says the message is invalid.
                (Some(a), Some(b)) if a != b => return ResponseBody::Unknown,
                (_, Some(l)) => Some(l),
                (_, None) => return ResponseBody::Unknown,
            };
        }
    }
    match body {
        Some(0) => ResponseBody::None,
        Some(l) => ResponseBody::Length(l),
        // Read until the server closes the connection.
        None => ResponseBody::Unknown,
    }
}

/// Status class label for metrics: `1xx` … `5xx`, or `unknown` (not seen,
/// unreadable, or outside 100..=599).
pub const fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8], to_head: bool) -> (u16, usize, ResponseBody) {
        match parse_response_head(buf, to_head) {
            ResponseHead::Complete {
                status,
                head_len,
                body,
            } => (status, head_len, body),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bodies_follow_rfc_9112() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(complete(ok, false), (200, 38, ResponseBody::Length(5)));
        // HEAD, 204, 304 and 1xx carry no body whatever the headers say.
        assert_eq!(complete(ok, true).2, ResponseBody::None);
        let nc = b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(complete(nc, false).2, ResponseBody::None);
        let nm = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(complete(nm, false).2, ResponseBody::None);
        let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
        assert_eq!(complete(cont, false), (100, 25, ResponseBody::None));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(complete(chunked, false).2, ResponseBody::Unknown);
        let close = b"HTTP/1.0 403 Forbidden\r\n\r\n";
        assert_eq!(complete(close, false), (403, 26, ResponseBody::Unknown));
        let zero = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(complete(zero, false).2, ResponseBody::None);
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(complete(two, false).2, ResponseBody::Unknown);
        let bad = b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(complete(bad, false).2, ResponseBody::Unknown);
    }

    #[test]
    fn cut_heads_keep_their_status() {
        assert_eq!(
            parse_response_head(b"HTTP/1.1 429 Too Many\r\nRetry-After: 1", false),
            ResponseHead::StatusOnly { status: 429 }
        );
        assert_eq!(
            parse_response_head(b"HTTP/1.1 2", false),
            ResponseHead::Partial
        );
        assert_eq!(parse_response_head(b"HTT", false), ResponseHead::Partial);
        assert_eq!(
            parse_response_head(b"GET / HTTP/1.1\r\n\r\n", false),
            ResponseHead::NotResponse
        );
        assert_eq!(
            parse_response_head(b"\x17\x03\x03\x00\x10garbage", false),
            ResponseHead::NotResponse
        );
        let mut many = b"HTTP/1.1 503 Busy\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_response_head(&many, false),
            ResponseHead::StatusOnly { status: 503 }
        );
    }

    #[test]
    fn classes() {
        assert_eq!(status_class(Some(101)), "1xx");
        assert_eq!(status_class(Some(200)), "2xx");
        assert_eq!(status_class(Some(308)), "3xx");
        assert_eq!(status_class(Some(429)), "4xx");
        assert_eq!(status_class(Some(503)), "5xx");
        assert_eq!(status_class(Some(600)), "unknown");
        assert_eq!(status_class(None), "unknown");
        assert!(is_interim(100) && is_interim(103) && !is_interim(101) && !is_interim(200));
    }
}
