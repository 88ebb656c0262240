//! The HTTP/1 parser's rules, reused for HTTP/2 fields: which headers are
//! credentials, and what a Host value normalises to. One home for each:
//! `identity::credential` and `protocol::http`.

use std::borrow::Cow;

use crate::protocol::http::{self, CredentialHeaders};

/// The lowercase credential header name `name` stands for, if it is one.
pub fn credential_name(creds: &CredentialHeaders, name: &[u8]) -> Option<Cow<'static, str>> {
    creds.lookup(std::str::from_utf8(name).ok()?)
}

/// A `:authority` or `host` value as HTTP/1's Host: lowercase, without
/// port, userinfo or IPv6 brackets, printable ASCII only.
pub fn normalize_host(value: &[u8]) -> Option<String> {
    http::host_of(std::str::from_utf8(value).ok()?)
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
