//! What the flow table learns about a flow: protocol, TLS handshake facts and
//! HTTP request heads. These are the engine's own types, filled from the
//! `protocol` parsers by [`super::dissect`], so the policy code does not
//! depend on the parsers' internal shapes.

use std::fmt;

use super::compat::Fingerprint;

/// Application protocol of a flow, as seen from its first bytes to the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AppProtocol {
    /// No payload to the server seen yet.
    #[default]
    Unknown,
    Tls,
    Http,
    /// HTTP/2 in clear text (prior knowledge preface or `Upgrade: h2c`).
    H2c,
    /// Plaintext that is neither TLS nor HTTP.
    Other,
}

impl AppProtocol {
    /// The name used in JSON output and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Tls => "tls",
            Self::Http => "http",
            Self::H2c => "h2c",
            Self::Other => "other",
        }
    }

    /// Whether application data travels in clear text.
    pub const fn is_plaintext(self) -> bool {
        matches!(self, Self::Http | Self::H2c | Self::Other)
    }
}

impl fmt::Display for AppProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A TLS (or SSL) protocol version, ordered from oldest to newest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    Ssl2,
    Ssl3,
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl TlsVersion {
    /// From the 16-bit wire value (0x0002 for SSLv2, 0x0300.. for the rest).
    pub const fn from_wire(v: u16) -> Option<Self> {
        Some(match v {
            0x0002 => Self::Ssl2,
            0x0300 => Self::Ssl3,
            0x0301 => Self::Tls10,
            0x0302 => Self::Tls11,
            0x0303 => Self::Tls12,
            0x0304 => Self::Tls13,
            // TLS 1.3 drafts announce themselves as 0x7fXX.
            0x7f00..=0x7fff => Self::Tls13,
            _ => return None,
        })
    }

    /// The spelling used in JSON output and in the contract's `minTlsVersion`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ssl2 => "ssl2",
            Self::Ssl3 => "ssl3",
            Self::Tls10 => "1.0",
            Self::Tls11 => "1.1",
            Self::Tls12 => "1.2",
            Self::Tls13 => "1.3",
        }
    }

    /// Human wording for violation details: "TLS 1.1", "SSL 3".
    pub const fn label(self) -> &'static str {
        match self {
            Self::Ssl2 => "SSL 2",
            Self::Ssl3 => "SSL 3",
            Self::Tls10 => "TLS 1.0",
            Self::Tls11 => "TLS 1.1",
            Self::Tls12 => "TLS 1.2",
            Self::Tls13 => "TLS 1.3",
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the client offered in its ClientHello.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHelloFacts {
    /// The best version offered (supported_versions, else legacy version).
    pub best_version: Option<TlsVersion>,
    /// Cipher suites offered, wire values, GREASE removed.
    pub ciphers: Vec<u16>,
    pub sni: Option<String>,
    pub alpn: Vec<String>,
}

/// What the server chose in its ServerHello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerHelloFacts {
    pub version: Option<TlsVersion>,
    pub cipher: u16,
}

/// Per-flow TLS facts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFacts {
    pub client_hello: Option<ClientHelloFacts>,
    pub server_hello: Option<ServerHelloFacts>,
    /// SHA-256 of the client's leaf certificate (TLS ≤ 1.2 only: in TLS 1.3
    /// the client's Certificate is encrypted).
    pub client_cert: Option<Fingerprint>,
    /// The client sent application data, so its handshake flight is over.
    pub client_finished: bool,
}

impl TlsFacts {
    /// The negotiated version, or the client's best offer while the
    /// ServerHello is unseen.
    pub fn version(&self) -> Option<TlsVersion> {
        self.server_hello
            .and_then(|s| s.version)
            .or_else(|| self.client_hello.as_ref().and_then(|c| c.best_version))
    }

    pub fn sni(&self) -> Option<&str> {
        self.client_hello.as_ref().and_then(|c| c.sni.as_deref())
    }
}

/// A credential seen in a request, already hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenCredential {
    /// Lower-case header name.
    pub header: String,
    pub fingerprint: Fingerprint,
}

/// One HTTP request head.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestFacts {
    pub method: String,
    pub path: String,
    /// Host header without port.
    pub host: Option<String>,
    pub credentials: Vec<SeenCredential>,
    /// `Upgrade: h2c` was requested.
    pub upgrade_h2c: bool,
}
