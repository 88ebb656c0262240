//! Request heads a strict parser rejects but a lenient server serves.
//!
//! httparse follows RFC 9112 closely; servers do not. A request that nginx,
//! python's `http.server` or Go's `net/http` would serve must be counted and
//! judged, or a malformed request line becomes a way around quotas and
//! revocation. What is accepted here is the union of what those servers
//! accept, so nothing any of them serves goes uncounted:
//!
//! - a method of any RFC 9110 token characters, any case (Go and python
//!   take any token; nginx takes `A-Z`, `_` and `-`), not only the table
//!   the kernel counts by;
//! - runs of spaces or tabs between the parts (nginx and python; Go wants
//!   single spaces);
//! - no version at all: HTTP/0.9, a request line alone with no headers
//!   (nginx and python serve `GET /`);
//! - bare LF line ends (all three);
//! - header lines with whitespace before the colon or without a space after
//!   it (python), obs-fold continuation lines (python, nginx), and lines
//!   without a colon, which are skipped (python keeps going).
//!
//! What still makes a request line: a token, then a target that starts like
//! one (`/`, `*`, `http://`, `https://`, or `host:port` for CONNECT), then an
//! optional `HTTP/d.d`, and nothing else. That keeps free text from passing
//! as a request; and the caller looks for heads only where one is due (the
//! start of a stream, after the previous request and its body), never at
//! arbitrary segment starts.

use super::http::MAX_HEAD;

/// A lenient head, parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct LenientHead<'b> {
    pub method: &'b str,
    pub target: &'b str,
    /// `None` for HTTP/0.9.
    pub version: Option<&'b str>,
    /// Header (name, value) pairs, names as sent.
    pub headers: Vec<(&'b str, Vec<u8>)>,
    /// Bytes of the head, its final empty line included.
    pub head_len: usize,
}

/// What [`parse`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lenient<'b> {
    Complete(LenientHead<'b>),
    /// A plausible request line or head, not complete yet.
    Partial,
    NotARequest,
}

/// Headers kept at most (the rest are skipped).
const MAX_HEADERS: usize = 256;

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// The next line of `buf` from `at`: (line without its line end, index
/// after the line end), or `None` when no line end is there yet.
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let lf = rest.iter().position(|b| *b == b'\n')?;
    let mut l = &rest[..lf];
    if let [head @ .., b'\r'] = l {
        l = head;
    }
    Some((l, at + lf + 1))
}

/// Whether `target` starts like a request target.
fn target_like(method: &[u8], target: &[u8]) -> bool {
    match target.first() {
        Some(b'/') => true,
        Some(b'*') => target.len() == 1,
        _ => {
            let lower = target.get(..8).map(<[u8]>::to_ascii_lowercase);
            let absolute = lower
                .as_deref()
                .is_some_and(|p| p.starts_with(b"http://") || p == b"https://");
            // CONNECT's authority form: host:port.
            absolute
                || (method.eq_ignore_ascii_case(b"CONNECT")
                    && target.contains(&b':')
                    && target.iter().all(|b| b.is_ascii_graphic()))
        }
    }
}

fn version_like(v: &[u8]) -> bool {
    matches!(v, [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit())
}

/// Method, target and version (absent for HTTP/0.9) of a request line.
type Line<'b> = (&'b [u8], &'b [u8], Option<&'b [u8]>);

/// The parts of a request line, or `None` when it is not one.
fn request_line(l: &[u8]) -> Option<Line<'_>> {
    let mut parts = l.split(|b| is_ws(*b)).filter(|p| !p.is_empty());
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next();
    if parts.next().is_some()
        || method.len() > 32
        || !method.iter().all(|b| is_tchar(*b))
        || !target_like(method, target)
        || !target.iter().all(|b| b.is_ascii_graphic())
        || version.is_some_and(|v| !version_like(v))
        // The HTTP/2 preface's first line is not an HTTP/1 request.
        || version == Some(b"HTTP/2.0")
    {
        return None;
    }
    Some((method, target, version))
}

/// Could these bytes, with no line end yet, still become a request line?
fn could_be_request_line(b: &[u8]) -> bool {
    if b.len() >= MAX_HEAD {
        return false;
    }
    let Some(end) = b.iter().position(|c| is_ws(*c)) else {
        return !b.is_empty() && b.len() <= 32 && b.iter().all(|c| is_tchar(*c));
    };
    let (method, rest) = b.split_at(end);
    if method.len() > 32 || !method.iter().all(|c| is_tchar(*c)) {
        return false;
    }
    let rest = rest.trim_ascii_start();
    // A target cut short can start like anything in its first bytes
    // ("ht" of "http://"); past them it must look like one.
    rest.len() < 8 || target_like(method, rest.split(|c| is_ws(*c)).next().unwrap_or(rest))
}

/// Parses a lenient request head at the start of `buf`.
pub fn parse(buf: &[u8]) -> Lenient<'_> {
    let Some((first, mut at)) = line(buf, 0) else {
        return if could_be_request_line(buf) {
            Lenient::Partial
        } else {
            Lenient::NotARequest
        };
    };
    let Some((method, target, version)) = request_line(first) else {
        return Lenient::NotARequest;
    };
    let (Ok(method), Ok(target)) = (std::str::from_utf8(method), std::str::from_utf8(target))
    else {
        return Lenient::NotARequest;
    };
    let version = version.and_then(|v| std::str::from_utf8(v).ok());
    let mut head = LenientHead {
        method,
        target,
        version,
        headers: Vec::new(),
        head_len: at,
    };
    if version.is_none() {
        // HTTP/0.9: the request line is the whole request.
        return Lenient::Complete(head);
    }
    loop {
        if at >= MAX_HEAD {
            return Lenient::NotARequest;
        }
        let Some((l, next)) = line(buf, at) else {
            return Lenient::Partial;
        };
        at = next;
        if l.is_empty() {
            head.head_len = at;
            return Lenient::Complete(head);
        }
        if is_ws(l[0]) {
            // obs-fold: this line continues the previous value.
            if let Some((_, value)) = head.headers.last_mut() {
                value.push(b' ');
                value.extend_from_slice(l.trim_ascii());
            }
            continue;
        }
        let Some(colon) = l.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = l[..colon].trim_ascii_end();
        if name.is_empty()
            || !name.iter().all(|b| is_tchar(*b))
            || head.headers.len() >= MAX_HEADERS
        {
            continue;
        }
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        head.headers
            .push((name, l[colon + 1..].trim_ascii().to_vec()));
    }
}

/// Whether `buf`, a segment start where no head is known to be due (the
/// request cursor lost its place after unseen bytes), begins a request a
/// lenient server serves: a request line of any token method that names
/// `HTTP/1.0` or `HTTP/1.1`, and the whole head within `buf`. Stricter than
/// where a head is due, since a body segment may begin with a word and a
/// space: the version and the empty line that ends the head are what body
/// text does not carry by chance. HTTP/0.9 (no version) is not taken here.
pub fn resynchronises(buf: &[u8]) -> bool {
    // The kernel's shape test first: most body segments fail it at once,
    // before the parser allocates anything.
    agent_common::http::starts_like_request(buf)
        && matches!(
            parse(buf),
            Lenient::Complete(LenientHead {
                version: Some("HTTP/1.0" | "HTTP/1.1"),
                ..
            })
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(b: &[u8]) -> LenientHead<'_> {
        match parse(b) {
            Lenient::Complete(h) => h,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(b)),
        }
    }

    #[test]
    fn forms_lenient_servers_serve() {
        let h = complete(b"GET /\r\n");
        assert_eq!(
            (h.method, h.target, h.version, h.head_len),
            ("GET", "/", None, 7)
        );
        let h = complete(b"get  /v1/x   HTTP/1.1\nHost: a\n\n");
        assert_eq!(
            (h.method, h.target, h.version),
            ("get", "/v1/x", Some("HTTP/1.1"))
        );
        assert_eq!(h.headers, vec![("Host", b"a".to_vec())]);
        let h = complete(
            b"PURGE\t/cache HTTP/1.0\r\nAuthorization :Bearer t\r\nX: a\r\n b\r\njunk\r\n\r\n",
        );
        assert_eq!(h.method, "PURGE");
        assert_eq!(
            h.headers,
            vec![
                ("Authorization", b"Bearer t".to_vec()),
                ("X", b"a b".to_vec())
            ]
        );
        let h = complete(b"CONNECT api.example.com:443 HTTP/1.1\r\n\r\n");
        assert_eq!(h.target, "api.example.com:443");
        let h = complete(b"OPTIONS * HTTP/1.1\r\n\r\n");
        assert_eq!(h.target, "*");
    }

    #[test]
    fn free_text_and_bodies_are_not_requests() {
        for b in [
            &b"hello world\r\n"[..],
            b"{\"a\": 1}\n",
            b"GET\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET / HTTX/1.1\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n",
            b"\r\n",
        ] {
            assert_eq!(
                parse(b),
                Lenient::NotARequest,
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn cut_heads_wait_for_more() {
        for b in [
            &b"GE"[..],
            b"GET",
            b"GET /v1",
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            b"POST http",
        ] {
            assert_eq!(
                parse(b),
                Lenient::Partial,
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        assert_eq!(parse(b"this is prose"), Lenient::NotARequest);
    }

    #[test]
    fn only_whole_versioned_heads_resynchronise() {
        for b in [
            &b"PURGE /v1/items HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"get /x HTTP/1.0\n\n",
            b"X_SYNC  /x   HTTP/1.1\r\n\r\nbody after",
        ] {
            assert!(resynchronises(b), "{:?}", String::from_utf8_lossy(b));
        }
        for b in [
            // Body text that starts with a word and a space.
            &b"hello world, this is a body\r\n\r\n"[..],
            b"name /value and more text",
            // A head cut short by the sample.
            b"PURGE /v1/items HTTP/1.1\r\nHost: a\r\n",
            // HTTP/0.9 and other versions stay out of reach after a gap.
            b"PURGE /v1/items\r\n",
            b"PURGE /v1/items HTTP/2.0\r\n\r\n",
            b"PURGE /v1/items HTTP/1.2\r\n\r\n",
            // A method longer than the kernel's word test.
            b"SUBSCRIBE /x HTTP/1.1\r\n\r\n",
        ] {
            assert!(!resynchronises(b), "{:?}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let alphabet = b"GET /HTP1.\r\n :ab\t";
        let mut x: u32 = 7;
        for n in 0..4000 {
            let b: Vec<u8> = (0..n % 97)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    alphabet[(x >> 16) as usize % alphabet.len()]
                })
                .collect();
            let _ = parse(&b);
        }
    }
}
