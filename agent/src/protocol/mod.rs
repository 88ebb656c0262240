//! Application protocols from the first bytes of each direction of a flow.
//!
//! Pure functions, no state: the flow table keeps the bytes, these decide
//! what they are. `tls` reads handshakes, `http` reads HTTP/1.x request
//! heads and recognises h2c.

pub mod h2;
pub mod http;
pub mod http_lenient;
pub mod http_response;
pub mod tls;

use crate::event::Direction;

/// What a flow speaks, judged from the first bytes sent to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// A TLS handshake (or SSLv2-style hello).
    Tls,
    /// Plaintext HTTP/1.x.
    Http,
    /// Plaintext HTTP/2: the prior-knowledge preface or `Upgrade: h2c`.
    H2c,
    /// Some other plaintext.
    Other,
    /// Not enough bytes to tell yet.
    Unknown,
}

impl Protocol {
    /// The name used in output: "tls", "http", "h2c", "other", "unknown".
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tls => "tls",
            Self::Http => "http",
            Self::H2c => "h2c",
            Self::Other => "other",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies a flow from the first bytes its client sent.
///
/// `Unknown` means "call again with more bytes"; once [`http::MAX_HEAD`]
/// bytes are there the answer is final.
pub fn classify(first_bytes_to_server: &[u8]) -> Protocol {
    let buf = first_bytes_to_server;
    if buf.is_empty() {
        return Protocol::Unknown;
    }
    match tls::looks_like_client_hello(buf) {
        Some(true) => return Protocol::Tls,
        None if buf.first().is_some_and(|&b| b == 0x16 || b & 0x80 != 0) => {
            return Protocol::Unknown;
        }
        _ => {}
    }
    if buf.starts_with(http::H2_PREFACE) {
        return Protocol::H2c;
    }
    if http::H2_PREFACE.starts_with(buf) {
        return Protocol::Unknown;
    }
    if http::starts_with_method(buf) {
        return match http::head_upgrades_to_h2c(buf) {
            Some(true) => Protocol::H2c,
            Some(false) => Protocol::Http,
            None if buf.len() >= http::MAX_HEAD => Protocol::Http,
            None => Protocol::Unknown,
        };
    }
    if http::could_start_with_method(buf) {
        return Protocol::Unknown;
    }
    // A request line a lenient server serves (an extension method, extra
    // whitespace, HTTP/0.9) is HTTP all the same.
    match http_lenient::parse(buf) {
        http_lenient::Lenient::Complete(_) => Protocol::Http,
        http_lenient::Lenient::Partial if buf.len() < http::MAX_HEAD => Protocol::Unknown,
        _ => Protocol::Other,
    }
}

/// Which way do these first bytes of one direction travel, judging by what
/// they look like? A request start (HTTP method, TLS ClientHello, HTTP/2
/// preface) goes to the server, a response start (HTTP/1.x status line, TLS
/// ServerHello) to the client. `None`: cannot tell.
pub fn orientation_hint(first_bytes: &[u8]) -> Option<Direction> {
    if http::starts_with_method(first_bytes) || first_bytes.starts_with(http::H2_PREFACE) {
        return Some(Direction::ToServer);
    }
    if http::is_response_start(first_bytes) == Some(true) {
        return Some(Direction::ToClient);
    }
    match first_bytes {
        // Handshake record whose first message is a ClientHello / ServerHello.
        [0x16, 3, _, _, _, 1, ..] => Some(Direction::ToServer),
        [0x16, 3, _, _, _, 2, ..] => Some(Direction::ToClient),
        [b0, _, 1, 3 | 0, ..] if b0 & 0x80 != 0 => Some(Direction::ToServer),
        _ => None,
    }
}

#[cfg(test)]
mod http_tests;
#[cfg(test)]
mod tls_tests;
