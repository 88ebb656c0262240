//! The HTTP/1 parser's rules, reused for HTTP/2 fields: which headers are
//! credentials, and what a Host value normalises to.
//!
//! One home for each rule: `protocol::http` owns both, but keeps
//! `CredentialHeaders::lookup` and `normalize_host` private. Until they are
//! `pub(crate)` (a two-word change in http.rs, left to the merge so this
//! branch touches no shared file), the HTTP/1 parser is asked directly with
//! a one-header request head. Only the answer is kept; the head holds a
//! placeholder value for credential names, never the field's value.

use std::borrow::Cow;

use crate::protocol::http::{self, CREDENTIAL_HEADERS, CredentialHeaders};

/// The lowercase credential header name `name` stands for, if it is one.
pub fn credential_name(creds: &CredentialHeaders, name: &[u8]) -> Option<Cow<'static, str>> {
    if let Some(known) = CREDENTIAL_HEADERS
        .iter()
        .find(|k| name.eq_ignore_ascii_case(k.as_bytes()))
    {
        return Some(Cow::Borrowed(known));
    }
    if *creds == CredentialHeaders::STANDARD || !name.iter().all(|&b| is_tchar(b)) {
        return None;
    }
    let mut head = Vec::with_capacity(name.len() + 24);
    head.extend_from_slice(b"GET / HTTP/1.1\r\n");
    head.extend_from_slice(name);
    head.extend_from_slice(b": x\r\n\r\n");
    let mut scan = http::scan_requests_with(&head, creds);
    let request = scan.requests.pop()?;
    request.credentials.into_iter().next().map(|c| c.header)
}

/// A `:authority` or `host` value as HTTP/1's Host: lowercase, without
/// port, userinfo or IPv6 brackets, printable ASCII only.
pub fn normalize_host(value: &[u8]) -> Option<String> {
    if value.is_empty() || value.iter().any(|&b| b == b'\r' || b == b'\n') {
        return None;
    }
    let mut head = Vec::with_capacity(value.len() + 32);
    head.extend_from_slice(b"GET / HTTP/1.1\r\nHost: ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n\r\n");
    http::scan_requests(&head).requests.pop()?.host
}

/// RFC 9110 token characters: what httparse accepts in a header name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_normalise_like_http1() {
        assert_eq!(
            normalize_host(b"API.Example.COM:8443").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(normalize_host(b"[::1]:8080").as_deref(), Some("::1"));
        assert_eq!(
            normalize_host(b"user@host.example").as_deref(),
            Some("host.example")
        );
        assert_eq!(normalize_host(b"bad\r\nx: y"), None);
        assert_eq!(normalize_host(b""), None);
    }

    #[test]
    fn credential_names_follow_the_contract_list() {
        let std = CredentialHeaders::STANDARD;
        assert_eq!(
            credential_name(&std, b"authorization").as_deref(),
            Some("authorization")
        );
        assert_eq!(
            credential_name(&std, b"X-API-Key").as_deref(),
            Some("x-api-key")
        );
        assert_eq!(credential_name(&std, b"x-tenant-token"), None);
        let extra = CredentialHeaders::with_extra(["X-Tenant-Token"]);
        assert_eq!(
            credential_name(&extra, b"x-tenant-token").as_deref(),
            Some("x-tenant-token")
        );
        assert_eq!(credential_name(&extra, b"x-other"), None);
        assert_eq!(credential_name(&extra, b"x-tenant-token: y\r\nz"), None);
    }
}
