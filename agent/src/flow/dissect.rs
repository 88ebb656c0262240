//! Small byte tests the flow table needs on top of the `protocol` parsers.

use crate::protocol::{Protocol, http, tls};

/// Classifies the first bytes a client sent; `None` while undecided.
/// `complete` says no more bytes will come: undecided then means other.
pub fn classify(b: &[u8], complete: bool) -> Option<Protocol> {
    match crate::protocol::classify(b) {
        // A head cut short (no more buffering): HTTP by its method.
        Protocol::Unknown if complete && http::starts_with_method(b) => Some(Protocol::Http),
        Protocol::Unknown if complete && !b.is_empty() => Some(Protocol::Other),
        Protocol::Unknown => None,
        // A TLS record caught mid-stream (capture started late).
        Protocol::Other if matches!(b, [0x14..=0x17, 3, 0..=4, ..]) => Some(Protocol::Tls),
        p => Some(p),
    }
}

/// Whether the sender looks like the client (`Some(true)`) or the server by
/// its first payload bytes.
pub fn sender_is_client(b: &[u8]) -> Option<bool> {
    crate::protocol::orientation_hint(b).map(|d| d == crate::event::Direction::ToServer)
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

/// A request whose head was cut short and will never be completed: what its
/// request line says, so it still counts.
pub fn partial_request(b: &[u8]) -> Option<http::Request> {
    if !http::starts_with_method(b) {
        return None;
    }
    let line = b
        .split(|c| *c == b'\r' || *c == b'\n')
        .next()
        .unwrap_or_default();
    let mut words = line.split(|c| *c == b' ');
    let method = String::from_utf8_lossy(words.next().unwrap_or_default()).into_owned();
    let path = match (words.next(), words.next()) {
        (Some(p), Some(_)) => String::from_utf8_lossy(p).into_owned(),
        _ => String::new(),
    };
    Some(http::Request {
        method,
        path,
        host: None,
        credentials: Vec::new(),
        upgrade_h2c: false,
        lenient: false,
        kernel_counts: b.len() >= 16,
        id: 0,
        stream_id: None,
        after_gap: false,
    })
}

/// Re-exported for the flow table.
pub use tls::{parse_client_certificate, parse_client_hello, parse_server_hello};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", false),
            Some(Protocol::Http)
        );
        assert_eq!(classify(b"GE", false), None);
        assert_eq!(classify(b"GE", true), Some(Protocol::Other));
        assert_eq!(
            classify(b"GET /x HTTP/1.1\r\nHo", true),
            Some(Protocol::Http)
        );
        assert_eq!(
            classify(&[0x17, 3, 3, 0, 5, 1, 2], false),
            Some(Protocol::Tls)
        );
        assert_eq!(classify(b"\x00\x01garbage", false), Some(Protocol::Other));
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
    fn partial_heads_keep_their_request_line() {
        let r = partial_request(b"POST /v1/x HTTP/1.1\r\nHost: a").expect("a request");
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/x"));
        let r = partial_request(b"GET /v1/x").expect("a request");
        assert_eq!(r.path, "");
        assert!(partial_request(b"xyz").is_none());
    }
}
