//! The one rule that turns a credential header into a [`Fingerprint`].
//!
//! Every path that sees a credential goes through [`fingerprint`]: the HTTP/1.x
//! parser, `rampwatch fingerprint`, and the TLS-plaintext and HTTP/2 paths. A
//! second copy of this rule once disagreed with the first (a tab after
//! `Bearer`), so the CLI printed a fingerprint traffic never matched.
//!
//! [`Credential::read`] is the one place a header value is turned into what
//! the agent keeps of it: the fingerprint and, when the value is a JWT, its
//! [`TokenFacts`] (see [`super::token`]). The raw value is dropped there.

use std::{borrow::Cow, fmt};

use super::{
    Fingerprint,
    token::{self, TokenFacts},
};

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
    [&b"bearer"[..], &b"basic"[..]]
        .into_iter()
        .find_map(|scheme| after_scheme(value, scheme))
}

fn after_scheme<'v>(value: &'v [u8], scheme: &[u8]) -> Option<&'v [u8]> {
    let (head, rest) = value.split_at_checked(scheme.len())?;
    (head.eq_ignore_ascii_case(scheme) && matches!(rest.first(), Some(b' ' | b'\t')))
        .then(|| rest.trim_ascii())
}

/// The claims of a JWT carried in a credential header: in `Authorization`
/// after `Bearer` (never `Basic`), in any other credential header as the
/// whole trimmed value. `None` when the value is not a readable JWT.
pub fn token_facts(header_name: &str, raw_value: &[u8]) -> Option<TokenFacts> {
    let value = raw_value.trim_ascii();
    let token = if header_name.trim().eq_ignore_ascii_case("authorization") {
        match after_scheme(value, b"bearer") {
            Some(t) => t,
            None if after_scheme(value, b"basic").is_some() => return None,
            None => value,
        }
    } else {
        value
    };
    token::read(token)
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
        Some(Credential::read(header, raw_value))
    }
}

/// A credential header, hashed: the raw value is gone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credential {
    /// Lowercase header name (from [`CredentialHeaders`]).
    pub header: Cow<'static, str>,
    /// Per [`fingerprint`].
    pub fingerprint: Fingerprint,
    /// Per [`token_facts`]: set when the value is a JWT.
    pub token: Option<TokenFacts>,
}

impl Credential {
    /// What is kept of the value of credential header `header`
    /// (lowercase): its fingerprint and JWT facts. Every protocol parser
    /// builds its credentials here.
    pub fn read(header: Cow<'static, str>, raw_value: &[u8]) -> Self {
        Self {
            fingerprint: fingerprint(&header, raw_value),
            token: token_facts(&header, raw_value),
            header,
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}, {}", self.header, self.fingerprint)?;
        if self.token.is_some() {
            f.write_str(", jwt")?;
        }
        f.write_str(")")
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
        assert_eq!(c.token, None);
    }

    /// `{"alg":"HS256","kid":"k1"}.{"iss":"i","sub":"s"}.sig`
    const JWT: &str = "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJpIiwic3ViIjoicyJ9.c2ln";

    #[test]
    fn a_jwt_is_read_where_it_is_hashed() {
        let want = Some(token::subject_key("i", "s"));
        let headers = CredentialHeaders::with_extra(["x-token"]);
        for (name, value) in [
            ("authorization", format!("Bearer {JWT}")),
            ("Authorization", format!("bearer\t{JWT} ")),
            ("authorization", JWT.to_owned()),
            ("x-api-key", JWT.to_owned()),
            ("x-token", format!(" {JWT}")),
        ] {
            let c = headers.hash(name, value.as_bytes()).unwrap();
            assert_eq!(c.token.and_then(|t| t.subject_key), want, "{name}: {value}");
            assert_eq!(c.fingerprint, fingerprint(name, value.as_bytes()));
            assert!(!format!("{c:?}").contains(JWT));
        }
        // Basic credentials are never read as tokens; nor is a JWT behind
        // another scheme.
        for value in [format!("Basic {JWT}"), format!("Token {JWT}")] {
            let c = headers.hash("authorization", value.as_bytes()).unwrap();
            assert_eq!(c.token, None, "{value}");
        }
    }
}
