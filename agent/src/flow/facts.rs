//! What the flow table learns about a flow, in the `protocol` parsers' own
//! types: the engine judges these.

pub use crate::protocol::{
    Protocol,
    http::Request,
    tls::{CipherSuite, ClientHello, ServerHello, TlsVersion},
};

/// Whether application data of this protocol travels in clear text.
pub const fn is_plaintext(p: Protocol) -> bool {
    matches!(p, Protocol::Http | Protocol::H2c | Protocol::Other)
}

/// A flow's TLS facts, allocated when the first one is learnt: a plaintext
/// flow carries a null pointer instead of the facts (176 bytes), and most
/// flows in a big table are plaintext or settled. Reads of an empty slot see
/// empty facts; writes allocate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSlot(Option<Box<TlsFacts>>);

/// What an empty [`TlsSlot`] reads as.
static NO_TLS: TlsFacts = TlsFacts {
    client_hello: None,
    server_hello: None,
    client_cert: None,
    client_finished: false,
};

impl std::ops::Deref for TlsSlot {
    type Target = TlsFacts;

    fn deref(&self) -> &TlsFacts {
        self.0.as_deref().unwrap_or(&NO_TLS)
    }
}

impl std::ops::DerefMut for TlsSlot {
    fn deref_mut(&mut self) -> &mut TlsFacts {
        self.0.get_or_insert_default()
    }
}

impl TlsSlot {
    /// Whether any fact was stored (a heap allocation is held).
    pub fn is_allocated(&self) -> bool {
        self.0.is_some()
    }
}

/// Per-flow TLS facts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFacts {
    pub client_hello: Option<ClientHello>,
    pub server_hello: Option<ServerHello>,
    /// SHA-256 of the client's leaf certificate (TLS ≤ 1.2 only: in TLS 1.3
    /// the client's Certificate is encrypted).
    pub client_cert: Option<[u8; 32]>,
    /// The client sent application data, so its handshake flight is over.
    pub client_finished: bool,
}

impl TlsFacts {
    /// The negotiated version, or the client's best offer while the
    /// ServerHello is unseen.
    pub fn version(&self) -> Option<TlsVersion> {
        match &self.server_hello {
            Some(sh) => sh.version,
            None => self.client_hello.as_ref().and_then(|c| c.max_version),
        }
    }

    /// The negotiated cipher suite.
    pub fn cipher(&self) -> Option<CipherSuite> {
        self.server_hello.as_ref().map(|s| s.cipher)
    }

    pub fn sni(&self) -> Option<&str> {
        self.client_hello.as_ref().and_then(|c| c.sni.as_deref())
    }

    /// The ALPN protocol the server chose; while its hello is unseen, the
    /// client's first offer.
    pub fn alpn(&self) -> Option<&str> {
        match &self.server_hello {
            Some(sh) => sh.alpn.as_deref(),
            None => self
                .client_hello
                .as_ref()
                .and_then(|c| c.alpn.first().map(String::as_str)),
        }
    }
}
