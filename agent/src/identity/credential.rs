//! The one rule that turns a credential header into a [`Fingerprint`].
//!
//! Every path that sees a credential goes through [`fingerprint`]: the HTTP/1.x
//! parser, `rampwatch fingerprint`, and the TLS-plaintext and HTTP/2 paths. A
//! second copy of this rule once disagreed with the first (a tab after
//! `Bearer`), so the CLI printed a fingerprint traffic never matched.

use std::{borrow::Cow, fmt};

use super::Fingerprint;

/// Headers whose values identify a client, lowercase. A contract may name
/// more: see [`CredentialHeaders`].
pub const CREDENTIAL_HEADERS: [&str; 6] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "cookie",
];

/// Fingerprint of a credential header value, the way contracts list it.
///
/// Surrounding whitespace is trimmed. For the `Authorization` header (name
/// compared case-insensitively) a `Bearer X` or `Basic X` value (scheme
/// case-insensitive, followed by spaces or tabs) is fingerprinted as `X`, so
/// the contract lists the token itself, not the scheme; a bare value without
/// a scheme is fingerprinted whole. Any other header (`X-Api-Key`,
/// `Proxy-Authorization`, ...) is fingerprinted on its whole trimmed value.
pub fn fingerprint(header_name: &str, raw_value: &[u8]) -> Fingerprint {
    let value = raw_value.trim_ascii();
    if header_name.trim().eq_ignore_ascii_case("authorization")
        && let Some(token) = strip_scheme(value)
    {
        return Fingerprint::of_bytes(token);
    }
    Fingerprint::of_bytes(value)
}

/// `Bearer X` / `Basic X` → `X` (scheme case-insensitive, separated by
/// spaces or tabs); anything else → `None`.
fn strip_scheme(value: &[u8]) -> Option<&[u8]> {
    for scheme in [&b"bearer"[..], &b"basic"[..]] {
        let Some((head, rest)) = value.split_at_checked(scheme.len()) else {
            continue;
        };
        if head.eq_ignore_ascii_case(scheme) && matches!(rest.first(), Some(b' ' | b'\t')) {
            return Some(rest.trim_ascii());
        }
    }
    None
}

/// Which request headers carry credentials: [`CREDENTIAL_HEADERS`] plus
/// any a contract names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialHeaders {
    /// Lowercase names beyond [`CREDENTIAL_HEADERS`].
    extra: Vec<String>,
}

impl CredentialHeaders {
    /// Just [`CREDENTIAL_HEADERS`].
    pub const STANDARD: Self = Self { extra: Vec::new() };

    /// [`CREDENTIAL_HEADERS`] plus `names` (any case).
    pub fn with_extra<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut extra: Vec<String> = Vec::new();
        for name in names {
            let name = name.as_ref().trim().to_ascii_lowercase();
            if !name.is_empty()
                && !CREDENTIAL_HEADERS.contains(&name.as_str())
                && !extra.contains(&name)
            {
                extra.push(name);
            }
        }
        Self { extra }
    }

    /// The lowercase name if `name` is a credential header.
    pub fn lookup(&self, name: &str) -> Option<Cow<'static, str>> {
        if let Some(known) = CREDENTIAL_HEADERS
            .iter()
            .find(|k| name.eq_ignore_ascii_case(k))
        {
            return Some(Cow::Borrowed(known));
        }
        self.extra
            .iter()
            .find(|k| name.eq_ignore_ascii_case(k))
            .map(|k| Cow::Owned(k.clone()))
    }

    /// The header hashed into a [`Credential`] if `name` is a credential
    /// header, else `None`: what a protocol parser calls per header.
    pub fn hash(&self, name: &str, raw_value: &[u8]) -> Option<Credential> {
        let header = self.lookup(name)?;
        let fingerprint = fingerprint(&header, raw_value);
        Some(Credential {
            header,
            fingerprint,
        })
    }
}

/// A credential header, hashed: the raw value is gone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credential {
    /// Lowercase header name (from [`CredentialHeaders`]).
    pub header: Cow<'static, str>,
    /// Per [`fingerprint`].
    pub fingerprint: Fingerprint,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}, {})", self.header, self.fingerprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACME_DEMO: &str =
        "sha256:79665b9580ab672b11d07c958da63e90a03b2b9fbf6365b47972b7d1762406a7";

    #[test]
    fn demo_token_vector() {
        assert_eq!(
            fingerprint("authorization", b"Bearer acme-demo-token").to_string(),
            ACME_DEMO
        );
    }

    #[test]
    fn bearer_and_basic_hash_the_token_only() {
        let want = Fingerprint::of_bytes(b"abc");
        for value in [
            &b"Bearer abc"[..],
            b"bearer abc",
            b"BEARER   abc",
            b"bEaReR   abc  ",
            b"Basic abc",
            b"basic\tabc",
            b"Bearer\tabc",
            b"Basic \t abc",
            b"  Bearer abc \r\n",
            b"abc",
        ] {
            assert_eq!(fingerprint("Authorization", value), want, "{value:?}");
            assert_eq!(fingerprint(" authorization ", value), want, "{value:?}");
        }
        assert_eq!(
            fingerprint("authorization", b"basic dXNlcg=="),
            Fingerprint::of_bytes(b"dXNlcg==")
        );
    }

    #[test]
    fn other_schemes_and_headers_hash_the_whole_value() {
        assert_eq!(
            fingerprint("authorization", b"Token abc"),
            Fingerprint::of_bytes(b"Token abc")
        );
        assert_eq!(
            fingerprint("authorization", b"Digest x=1"),
            Fingerprint::of_bytes(b"Digest x=1")
        );
        // "Bearerabc" has no separator: not a scheme.
        assert_eq!(
            fingerprint("authorization", b"Bearerabc"),
            Fingerprint::of_bytes(b"Bearerabc")
        );
        assert_eq!(
            fingerprint("x-api-key", b" Bearer abc "),
            Fingerprint::of_bytes(b"Bearer abc")
        );
        assert_eq!(
            fingerprint("proxy-authorization", b"Basic\tabc"),
            Fingerprint::of_bytes(b"Basic\tabc")
        );
        assert_eq!(
            fingerprint("x-api-key", b"abc\n"),
            Fingerprint::of_bytes(b"abc")
        );
    }

    #[test]
    fn headers_hash_into_credentials() {
        let headers = CredentialHeaders::with_extra(["X-Client-Secret", "cookie", " "]);
        let c = headers.hash("X-CLIENT-SECRET", b"s3cret").unwrap();
        assert_eq!(c.header, "x-client-secret");
        assert_eq!(c.fingerprint, Fingerprint::of_bytes(b"s3cret"));
        assert!(headers.hash("x-other", b"o").is_none());
        assert!(
            CredentialHeaders::STANDARD
                .hash("x-client-secret", b"s")
                .is_none()
        );
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }
}
