//! SHA-256 fingerprints of credentials and certificates.
//!
//! A credential is hashed the moment it is read from a request; only the
//! [`Fingerprint`] travels further through the pipeline, so no raw token can
//! end up in a log line, an error or a `Debug` dump.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// The textual prefix every fingerprint carries: `sha256:`.
pub const PREFIX: &str = "sha256:";

/// A SHA-256 digest, written `sha256:<64 lowercase hex digits>`.
///
/// `Debug` and `Display` both print only the fingerprint, never what was
/// hashed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

/// Why a string is not a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintParseError {
    #[error("a fingerprint starts with `sha256:`; compute one with `rampwatch fingerprint`")]
    MissingPrefix,
    #[error(
        "a fingerprint has 64 lowercase hex digits after `sha256:`, this one has {0} characters; compute one with `rampwatch fingerprint`"
    )]
    BadLength(usize),
    #[error(
        "a fingerprint has only lowercase hex digits (0-9, a-f) after `sha256:`; compute one with `rampwatch fingerprint`"
    )]
    BadDigit,
}

impl Fingerprint {
    /// Wraps a digest computed elsewhere.
    pub const fn from_bytes(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    /// The raw digest.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// SHA-256 of `data`, as is.
    pub fn of_bytes(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// Fingerprint of a DER-encoded certificate (the leaf a client presents).
    pub fn of_der(cert_der: &[u8]) -> Self {
        Self::of_bytes(cert_der)
    }

    /// The first `n` hex digits, for compact tables (`sha256:1a2b3c4d…`).
    pub fn short(&self) -> String {
        let hex = hex::encode(self.0);
        format!("{PREFIX}{}…", hex.get(..12).unwrap_or(&hex))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintParseError;

    /// Parses `sha256:<64 lowercase hex>`; uppercase digits are rejected so
    /// that one fingerprint has exactly one spelling in contracts and logs.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s
            .strip_prefix(PREFIX)
            .ok_or(FingerprintParseError::MissingPrefix)?;
        if hex.len() != 64 {
            return Err(FingerprintParseError::BadLength(hex.chars().count()));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(FingerprintParseError::BadDigit);
        }
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hex, &mut digest).map_err(|_| FingerprintParseError::BadDigit)?;
        Ok(Self(digest))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Fingerprint {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Fingerprint".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^sha256:[0-9a-f]{64}$",
            "description": "SHA-256 fingerprint, `sha256:` and 64 lowercase hex digits. Compute it with `rampwatch fingerprint`."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from `echo -n X | sha256sum`.
    const ABC: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn known_vectors() {
        assert_eq!(Fingerprint::of_bytes(b"abc").to_string(), ABC);
        assert_eq!(Fingerprint::of_bytes(b"").to_string(), EMPTY);
        assert_eq!(Fingerprint::of_der(b"abc").to_string(), ABC);
    }

    #[test]
    fn parse_round_trips_and_rejects_bad_spellings() {
        let fp: Fingerprint = ABC.parse().unwrap();
        assert_eq!(fp.to_string(), ABC);
        assert_eq!(format!("{fp:?}"), format!("Fingerprint({ABC})"));
        assert_eq!(
            "ba7816bf".parse::<Fingerprint>(),
            Err(FingerprintParseError::MissingPrefix)
        );
        assert_eq!(
            "sha256:ba78".parse::<Fingerprint>(),
            Err(FingerprintParseError::BadLength(4))
        );
        assert_eq!(
            ABC.to_uppercase()
                .replace("SHA256", "sha256")
                .parse::<Fingerprint>(),
            Err(FingerprintParseError::BadDigit)
        );
        let g = format!("{}g", &ABC[..ABC.len() - 1]);
        assert_eq!(
            g.parse::<Fingerprint>(),
            Err(FingerprintParseError::BadDigit)
        );
    }

    #[test]
    fn short_form() {
        assert_eq!(
            Fingerprint::of_bytes(b"abc").short(),
            "sha256:ba7816bf8f01…"
        );
    }
}
