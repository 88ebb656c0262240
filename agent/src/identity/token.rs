//! The claims of a JWT bearer token, read once, where the credential is
//! hashed ([`super::credential`]), and reduced at once to [`TokenFacts`]:
//! hashes of (issuer, subject) and (issuer, client id) to look the client
//! up, the times the contract judges (`iat`, `exp`, `nbf`) and the signing
//! key id (`kid`). Nothing else of the token is kept, the raw token never.
//!
//! The signature is **not** verified: the agent holds no keys, and the
//! server it watches is the one that accepts or rejects the token. A
//! forged token can therefore claim any client; the contract's terms on
//! it (expiry, age, rotation, signing key) still hold for the claims it
//! carries, and a fingerprint listed for a client wins over claims.
//!
//! Hostile input: the token, each decoded segment and each claim are
//! bounded; anything malformed (not three base64url segments, not JSON
//! objects, a claim of the wrong type, a duplicate claim, a time out of
//! range) yields `None` or leaves that claim out, never a panic.

use std::{borrow::Cow, fmt};

use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::resolve::Fp;
use crate::event::Nanos;

/// Longest token whose claims are read (bytes of the compact form).
pub const MAX_TOKEN: usize = 8 * 1024;
/// Longest decoded header or payload.
const MAX_JSON: usize = 6 * 1024;
/// Longest `iss`, `sub`, `client_id` or `azp` matched; a longer claim is
/// left out (the contract rejects longer values, so it could not match).
pub const MAX_CLAIM: usize = 256;
/// Longest `kid` kept; a contract's `signingKeys` entries are at most this.
pub const MAX_KID: usize = 64;

/// base64url as tokens use it: padding optional, trailing bits tolerated.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// What the contract needs of a JWT; `Copy`, so it travels with an
/// identity. Times are Unix nanoseconds.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TokenFacts {
    /// [`subject_key`] of `iss` and `sub`.
    pub subject_key: Option<Fp>,
    /// [`client_key`] of `iss` and `client_id` (else `azp`).
    pub client_key: Option<Fp>,
    pub issued_at: Option<Nanos>,
    pub expires_at: Option<Nanos>,
    pub not_before: Option<Nanos>,
    pub key_id: Option<KeyId>,
}

impl fmt::Debug for TokenFacts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = |k: &Option<Fp>| k.map(|k| hex::encode(k.get(..4).unwrap_or_default()));
        f.debug_struct("TokenFacts")
            .field("subject_key", &short(&self.subject_key))
            .field("client_key", &short(&self.client_key))
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("not_before", &self.not_before)
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// A token's `kid`, inline so [`TokenFacts`] stays `Copy`. A `kid` longer
/// than [`MAX_KID`] is kept cut (for display) and never equals a pin.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId {
    bytes: [u8; MAX_KID],
    len: u8,
    cut: bool,
}

impl KeyId {
    fn new(kid: &str) -> Self {
        let mut end = kid.len().min(MAX_KID);
        while !kid.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0; MAX_KID];
        let head = kid.as_bytes().get(..end).unwrap_or_default();
        if let Some(dst) = bytes.get_mut(..end) {
            dst.copy_from_slice(head);
        }
        Self {
            bytes,
            len: u8::try_from(end).unwrap_or(0),
            cut: end < kid.len(),
        }
    }

    /// The key id (cut to [`MAX_KID`] bytes if it was longer).
    pub fn as_str(&self) -> &str {
        let bytes = self.bytes.get(..usize::from(self.len)).unwrap_or_default();
        std::str::from_utf8(bytes).unwrap_or_default()
    }

    /// Whether this is exactly `pin`.
    pub fn is(&self, pin: &str) -> bool {
        !self.cut && self.as_str() == pin
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for KeyId {
    /// Printable for an operator's terminal: control characters escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_str().escape_debug())?;
        if self.cut { f.write_str("…") } else { Ok(()) }
    }
}

/// The lookup key of a contract's `{issuer, subject}`.
pub fn subject_key(issuer: &str, subject: &str) -> Fp {
    key(b"sub", issuer, subject)
}

/// The lookup key of a contract's `{issuer, clientId}`.
pub fn client_key(issuer: &str, client_id: &str) -> Fp {
    key(b"cid", issuer, client_id)
}

fn key(tag: &[u8], issuer: &str, value: &str) -> Fp {
    let mut h = Sha256::new();
    h.update(tag);
    h.update([0]);
    h.update(issuer.as_bytes());
    h.update([0]);
    h.update(value.as_bytes());
    h.finalize().into()
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(default, borrow)]
    kid: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(default, borrow)]
    iss: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    sub: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    client_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    azp: Option<Cow<'a, str>>,
    #[serde(default)]
    iat: Option<f64>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
}

/// The facts of `token` if it is a JWS in compact form (`header.payload.
/// signature`, base64url JSON objects), else `None`.
pub fn read(token: &[u8]) -> Option<TokenFacts> {
    if token.len() > MAX_TOKEN || token.len() < 5 {
        return None;
    }
    let mut parts = token.split(|b| *b == b'.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || header.is_empty() || payload.is_empty() {
        return None;
    }
    let b64 = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=');
    if ![header, payload, signature]
        .iter()
        .all(|p| p.iter().all(b64))
    {
        return None;
    }
    let header = decode(header)?;
    let payload = decode(payload)?;
    // serde reads a struct from a JSON array too; a JWT part is an object.
    let object = |json: &[u8]| json.trim_ascii_start().first() == Some(&b'{');
    if !object(&header) || !object(&payload) {
        return None;
    }
    let header: Header<'_> = serde_json::from_slice(&header).ok()?;
    let claims: Payload<'_> = serde_json::from_slice(&payload).ok()?;
    let claim = |c: &Option<Cow<'_, str>>| {
        c.as_deref()
            .filter(|s| !s.is_empty() && s.len() <= MAX_CLAIM)
            .map(str::to_owned)
    };
    let issuer = claim(&claims.iss);
    let subject = claim(&claims.sub);
    let client_id = claim(&claims.client_id).or_else(|| claim(&claims.azp));
    Some(TokenFacts {
        subject_key: issuer
            .as_deref()
            .zip(subject.as_deref())
            .map(|(i, s)| subject_key(i, s)),
        client_key: issuer
            .as_deref()
            .zip(client_id.as_deref())
            .map(|(i, c)| client_key(i, c)),
        issued_at: claims.iat.and_then(numeric_date),
        expires_at: claims.exp.and_then(numeric_date),
        not_before: claims.nbf.and_then(numeric_date),
        key_id: header
            .kid
            .as_deref()
            .filter(|k| !k.is_empty())
            .map(KeyId::new),
    })
}

fn decode(segment: &[u8]) -> Option<Vec<u8>> {
    // base64 grows by 4/3: bound the input before allocating.
    if segment.len() > MAX_JSON / 3 * 4 + 4 {
        return None;
    }
    let out = B64URL.decode(segment).ok()?;
    (out.len() <= MAX_JSON).then_some(out)
}

/// A NumericDate (seconds since the epoch, maybe fractional) as Unix
/// nanoseconds; `None` outside 1970 … 2262 (what [`Nanos`] holds).
fn numeric_date(secs: f64) -> Option<Nanos> {
    const MAX_SECS: f64 = (i64::MAX / NANOS_PER_SEC) as f64;
    if !secs.is_finite() || !(0.0..MAX_SECS).contains(&secs) {
        return None;
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "range checked above; sub-second precision is not needed"
    )]
    let whole = secs.floor() as i64;
    whole.checked_mul(NANOS_PER_SEC)
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
