//! What a decoded header block says: the request facts of a client block
//! (credential values hashed as each field is decoded) or the `:status` of
//! a server block.

use std::borrow::Cow;

use super::rules;
use crate::protocol::http::{Credential, CredentialHeaders, Request};

/// Credential fields hashed per block at most; past it the rest are
/// dropped (an HPACK block can repeat one large indexed entry thousands of
/// times).
const MAX_CREDENTIALS: usize = 64;
/// Bytes of `cookie` crumbs joined per block at most.
const MAX_COOKIE: usize = 16 * 1024;

/// Request facts collected from one client header block. Not `Debug`: it
/// holds `cookie` crumbs until the block ends.
pub struct RequestFields<'c> {
    creds: &'c CredentialHeaders,
    method: Option<String>,
    path: Option<String>,
    authority: Option<String>,
    host: Option<String>,
    grpc: bool,
    credentials: Vec<Credential>,
    /// Cookie crumbs joined with "; " (RFC 9113 8.2.3), hashed at the end
    /// of the block like HTTP/1's single Cookie header.
    cookie: Option<Vec<u8>>,
    /// Fields dropped by the caps above.
    pub dropped: bool,
}

impl<'c> RequestFields<'c> {
    pub fn new(creds: &'c CredentialHeaders) -> Self {
        Self {
            creds,
            method: None,
            path: None,
            authority: None,
            host: None,
            grpc: false,
            credentials: Vec::new(),
            cookie: None,
            dropped: false,
        }
    }

    /// One decoded field.
    pub fn field(&mut self, name: &[u8], value: &[u8]) {
        match name {
            b":method" => self.method = Some(printable(value)),
            b":path" => self.path = Some(printable(value)),
            b":authority" => self.authority = rules::normalize_host(value),
            b"host" => self.host = rules::normalize_host(value),
            b"content-type" => {
                self.grpc = value
                    .get(..16)
                    .is_some_and(|v| v.eq_ignore_ascii_case(b"application/grpc"));
            }
            _ if name.first() == Some(&b':') => {}
            _ => self.credential(name, value),
        }
    }

    fn credential(&mut self, name: &[u8], value: &[u8]) {
        let Some(header) = rules::credential_name(self.creds, name) else {
            return;
        };
        if header == "cookie" {
            let cookie = self.cookie.get_or_insert_with(Vec::new);
            if cookie.len() + value.len() + 2 > MAX_COOKIE {
                self.dropped = true;
                return;
            }
            if !cookie.is_empty() {
                cookie.extend_from_slice(b"; ");
            }
            cookie.extend_from_slice(value);
            return;
        }
        if self.credentials.len() >= MAX_CREDENTIALS {
            self.dropped = true;
            return;
        }
        self.credentials.push(Credential::read(header, value));
    }

    /// The request and whether it is gRPC. The raw cookie is hashed and
    /// dropped here.
    pub fn finish(mut self) -> (Request, bool) {
        if let Some(cookie) = self.cookie.take() {
            self.credentials
                .push(Credential::read(Cow::Borrowed("cookie"), &cookie));
        }
        let method = self.method.unwrap_or_default();
        // CONNECT has no :path; HTTP/1 shows its authority-form target.
        let path = match self.path {
            Some(p) => p,
            None if method == "CONNECT" => self.authority.clone().unwrap_or_default(),
            None => String::new(),
        };
        let request = Request {
            method,
            path,
            host: self.authority.or(self.host),
            credentials: self.credentials,
            upgrade_h2c: false,
            lenient: false,
            kernel_counts: false,
            id: 0,
            stream_id: None,
            after_gap: false,
        };
        (request, self.grpc)
    }
}

/// A request whose header block could not be decoded.
pub fn unknown_request() -> Request {
    Request {
        method: String::new(),
        path: String::new(),
        host: None,
        credentials: Vec::new(),
        upgrade_h2c: false,
        lenient: false,
        kernel_counts: false,
        id: 0,
        stream_id: None,
        after_gap: false,
    }
}

/// A method or path as text an operator's terminal can show: invalid UTF-8
/// and control characters become U+FFFD.
fn printable(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// The `:status` of a server header block, if it has a valid one.
#[derive(Default)]
pub struct ResponseFields {
    pub status: Option<u16>,
}

impl ResponseFields {
    pub fn field(&mut self, name: &[u8], value: &[u8]) {
        if name == b":status" {
            self.status = match value {
                [a, b, c] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
                    Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
                }
                _ => None,
            };
        }
    }
}
