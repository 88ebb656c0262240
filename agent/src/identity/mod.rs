//! Who is calling: credential fingerprints and the identity of a request.
//!
//! Resolution order (implemented by [`crate::contract::Contract::identify`]):
//!
//! 1. **credential**: the fingerprint of a credential header
//!    ([`Fingerprint::of_credential`]) listed under a client's `credentials`;
//! 2. **client certificate**: the fingerprint of the leaf certificate the
//!    client presented in a TLS ≤ 1.2 handshake, listed under `certificates`;
//! 3. **source address**: the client's IP inside one of a client's `sources`;
//! 4. **unknown**: none of the above. The fingerprint of an unrecognised
//!    credential (or else certificate) is kept so operators can tell callers
//!    apart without ever seeing the secret.
//!
//! An unrecognised credential does not stop the search: a caller presenting
//! an unknown token from a listed client certificate or source address is
//! still that client (and `revoked_client` / `stale_credential` judge the
//! credential by its fingerprint separately).

mod fingerprint;

use std::{fmt, net::IpAddr, sync::Arc};

pub use fingerprint::{Fingerprint, FingerprintParseError, PREFIX};

/// The label used for callers no client in the contract matches.
pub const UNKNOWN_CLIENT: &str = "unknown";

/// The outcome of identity resolution for one request or flow.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A listed credential of `client`.
    Credential {
        client: Arc<str>,
        fingerprint: Fingerprint,
    },
    /// A listed client certificate of `client`.
    Certificate {
        client: Arc<str>,
        fingerprint: Fingerprint,
    },
    /// The source address lies in one of `client`'s `sources`.
    Source { client: Arc<str>, addr: IpAddr },
    /// No client matched. `fingerprint` is the presented credential's (or,
    /// without one, the certificate's) fingerprint, if any was presented.
    Unknown { fingerprint: Option<Fingerprint> },
}

impl Identity {
    /// The client's name, `None` when unknown.
    pub fn client(&self) -> Option<&Arc<str>> {
        match self {
            Self::Credential { client, .. }
            | Self::Certificate { client, .. }
            | Self::Source { client, .. } => Some(client),
            Self::Unknown { .. } => None,
        }
    }

    /// The client's name, or [`UNKNOWN_CLIENT`]: the label violations,
    /// metrics and replay output use.
    pub fn label(&self) -> &str {
        self.client().map_or(UNKNOWN_CLIENT, |c| c)
    }

    /// Whether a client was recognised.
    pub fn is_known(&self) -> bool {
        self.client().is_some()
    }

    /// How the client was recognised: `credential`, `certificate`,
    /// `source` or `unknown`.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Credential { .. } => "credential",
            Self::Certificate { .. } => "certificate",
            Self::Source { .. } => "source",
            Self::Unknown { .. } => "unknown",
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Credential {
                client,
                fingerprint,
            } => write!(f, "{client} (credential {})", fingerprint.short()),
            Self::Certificate {
                client,
                fingerprint,
            } => write!(f, "{client} (certificate {})", fingerprint.short()),
            Self::Source { client, addr } => write!(f, "{client} (source {addr})"),
            Self::Unknown {
                fingerprint: Some(fp),
            } => write!(f, "{UNKNOWN_CLIENT} ({})", fp.short()),
            Self::Unknown { fingerprint: None } => f.write_str(UNKNOWN_CLIENT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_display_never_show_more_than_a_short_fingerprint() {
        let fp = Fingerprint::of_bytes(b"abc");
        let id = Identity::Credential {
            client: "acme".into(),
            fingerprint: fp,
        };
        assert_eq!(id.label(), "acme");
        assert_eq!(id.method(), "credential");
        assert_eq!(id.to_string(), "acme (credential sha256:ba7816bf8f01…)");
        let id = Identity::Source {
            client: "globex".into(),
            addr: "10.0.0.1".parse().unwrap(),
        };
        assert_eq!(id.to_string(), "globex (source 10.0.0.1)");
        let id = Identity::Unknown {
            fingerprint: Some(fp),
        };
        assert_eq!((id.label(), id.is_known()), (UNKNOWN_CLIENT, false));
        assert_eq!(id.to_string(), "unknown (sha256:ba7816bf8f01…)");
        assert_eq!(
            Identity::Unknown { fingerprint: None }.to_string(),
            "unknown"
        );
    }
}
