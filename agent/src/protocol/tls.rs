//! TLS handshake facts from the first bytes of a direction.
//!
//! Input is the reassembled byte stream of one direction from its start.
//! Handshake messages may be split over several records and records over
//! several segments, so the record layer is walked here and the handshake
//! bytes are joined (up to [`MAX_HANDSHAKE`]) before tls-parser decodes the
//! messages. Each parser answers [`TlsParse::NeedMore`] while the message it
//! looks for is incomplete, so the caller can retry with more bytes.

use std::{borrow::Cow, fmt, str::FromStr};

use sha2::{Digest, Sha256};
use tls_parser::{
    TlsCipherSuite, TlsExtension, parse_tls_client_hello_extension,
    parse_tls_handshake_client_hello, parse_tls_handshake_server_hello,
    parse_tls_server_hello_extension,
};

/// Handshake bytes joined per direction at most; a hello or a client
/// certificate larger than this is not waited for.
pub const MAX_HANDSHAKE: usize = 16 * 1024;

const CONTENT_HANDSHAKE: u8 = 22;
const HS_CLIENT_HELLO: u8 = 1;
const HS_SERVER_HELLO: u8 = 2;
const HS_CERTIFICATE: u8 = 11;
/// Largest record body TLS allows (2^14 plus expansion for ciphertext).
const MAX_RECORD_BODY: usize = 16384 + 2048;

/// Outcome of a parser over a direction's first bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsParse<T> {
    /// The message is not complete yet: call again with more bytes.
    NeedMore,
    /// Found (or, for the client certificate, known to be absent).
    Done(T),
    /// The bytes are not the expected TLS handshake (or are malformed, or
    /// the message exceeds [`MAX_HANDSHAKE`]).
    NotTls,
}

/// Protocol versions, ordered oldest to newest.
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
    /// The version for a wire value; TLS 1.3 drafts count as 1.3. GREASE
    /// and unknown values are `None`.
    pub fn from_wire(v: u16) -> Option<Self> {
        Some(match v {
            0x0002 => Self::Ssl2,
            0x0300 => Self::Ssl3,
            0x0301 => Self::Tls10,
            0x0302 => Self::Tls11,
            0x0303 => Self::Tls12,
            0x0304 | 0x7f00..=0x7fff => Self::Tls13,
            _ => return None,
        })
    }

    /// The name used in contracts and output: "ssl3", "1.0" … "1.3".
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
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of [`TlsVersion::from_str`].
#[derive(Debug, thiserror::Error)]
#[error("unknown TLS version {0:?}; use one of \"ssl3\", \"1.0\", \"1.1\", \"1.2\", \"1.3\"")]
pub struct UnknownTlsVersion(pub String);

impl FromStr for TlsVersion {
    type Err = UnknownTlsVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "ssl2" => Self::Ssl2,
            "ssl3" => Self::Ssl3,
            "1.0" => Self::Tls10,
            "1.1" => Self::Tls11,
            "1.2" => Self::Tls12,
            "1.3" => Self::Tls13,
            _ => return Err(UnknownTlsVersion(s.to_owned())),
        })
    }
}

/// A cipher suite by its IANA number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CipherSuite(pub u16);

impl CipherSuite {
    /// The IANA name, e.g. "TLS_AES_128_GCM_SHA256", if the suite is known.
    pub fn name(self) -> Option<&'static str> {
        TlsCipherSuite::from_id(self.0).map(|s| s.name)
    }

    /// GREASE values (RFC 8701) and signalling values (renegotiation-info
    /// and fallback SCSV) are not suites anyone can negotiate.
    pub fn is_placeholder(self) -> bool {
        is_grease(self.0) || self.0 == 0x00ff || self.0 == 0x5600
    }
}

impl fmt::Display for CipherSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "0x{:04X}", self.0),
        }
    }
}

impl fmt::Debug for CipherSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// What a ClientHello offers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// Version in the first record header (None for SSLv2-style hellos).
    pub record_version: Option<TlsVersion>,
    /// `legacy_version` field of the hello (the real offer before TLS 1.3).
    pub legacy_version: Option<TlsVersion>,
    /// The supported_versions extension, GREASE removed, in offered order.
    pub supported_versions: Vec<TlsVersion>,
    /// Highest version offered: supported_versions if present, else legacy.
    pub max_version: Option<TlsVersion>,
    /// Server name (SNI), lowercase, without a trailing dot.
    pub sni: Option<String>,
    /// ALPN protocol names in offered order.
    pub alpn: Vec<String>,
    /// Offered suites in order, GREASE and SCSV values removed.
    pub cipher_suites: Vec<CipherSuite>,
    /// The hello came in the SSLv2 record format.
    pub sslv2: bool,
}

/// What a ServerHello (or TLS 1.3 HelloRetryRequest) selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerHello {
    /// Negotiated version: supported_versions if present, else legacy.
    pub version: Option<TlsVersion>,
    /// `legacy_version` field of the hello.
    pub legacy_version: Option<TlsVersion>,
    pub cipher: CipherSuite,
    /// ALPN protocol the server selected.
    pub alpn: Option<String>,
    /// This is a TLS 1.3 HelloRetryRequest (same version and cipher as the
    /// ServerHello that will follow).
    pub hello_retry: bool,
}

/// The random value that marks a ServerHello as a HelloRetryRequest.
const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// Does this look like the start of a TLS client direction (a handshake
/// record or an SSLv2 hello)? `None` when fewer than 3 bytes are there.
pub fn looks_like_client_hello(buf: &[u8]) -> Option<bool> {
    match *buf {
        [CONTENT_HANDSHAKE, 3, minor, ..] => Some(minor <= 4),
        [b0, _, 1, ..] if b0 & 0x80 != 0 => Some(true),
        [_, _, _, ..] => Some(false),
        _ => None,
    }
}

/// Parses the ClientHello at the start of the client's bytes.
pub fn parse_client_hello(buf: &[u8]) -> TlsParse<ClientHello> {
    if let Some(&b0) = buf.first()
        && b0 & 0x80 != 0
    {
        return parse_sslv2_hello(buf);
    }
    let stream = match HandshakeStream::collect(buf) {
        Ok(stream) => stream,
        Err(outcome) => return outcome,
    };
    let body = match stream.message(0, HS_CLIENT_HELLO) {
        Ok((body, _)) => body,
        Err(outcome) => return outcome,
    };
    let Ok((_, ch)) = parse_tls_handshake_client_hello(body) else {
        return TlsParse::NotTls;
    };
    let mut hello = ClientHello {
        record_version: stream.record_version,
        legacy_version: TlsVersion::from_wire(ch.version.0),
        cipher_suites: ch
            .ciphers
            .iter()
            .map(|c| CipherSuite(c.0))
            .filter(|c| !c.is_placeholder())
            .collect(),
        ..ClientHello::default()
    };
    for ext in extensions(ch.ext.unwrap_or_default(), parse_tls_client_hello_extension) {
        match ext {
            TlsExtension::SNI(names) => {
                hello.sni = names
                    .iter()
                    .find(|(kind, _)| kind.0 == 0)
                    .and_then(|(_, name)| std::str::from_utf8(name).ok())
                    // A name is printable ASCII; anything else (escape
                    // sequences aimed at an operator's terminal) is dropped.
                    .filter(|name| name.bytes().all(|b| b.is_ascii_graphic()))
                    .map(|name| name.trim_end_matches('.').to_ascii_lowercase());
            }
            TlsExtension::ALPN(protocols) => {
                hello.alpn = protocols
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
            }
            TlsExtension::SupportedVersions(versions) => {
                hello.supported_versions = versions
                    .iter()
                    .filter_map(|v| TlsVersion::from_wire(v.0))
                    .collect();
            }
            _ => {}
        }
    }
    hello.max_version = hello
        .supported_versions
        .iter()
        .copied()
        .max()
        .or(hello.legacy_version);
    TlsParse::Done(hello)
}

/// Parses the ServerHello at the start of the server's bytes.
pub fn parse_server_hello(buf: &[u8]) -> TlsParse<ServerHello> {
    let stream = match HandshakeStream::collect(buf) {
        Ok(stream) => stream,
        Err(outcome) => return outcome,
    };
    let body = match stream.message(0, HS_SERVER_HELLO) {
        Ok((body, _)) => body,
        Err(outcome) => return outcome,
    };
    let Ok((_, sh)) = parse_tls_handshake_server_hello(body) else {
        return TlsParse::NotTls;
    };
    let legacy_version = TlsVersion::from_wire(sh.version.0);
    let mut hello = ServerHello {
        version: legacy_version,
        legacy_version,
        cipher: CipherSuite(sh.cipher.0),
        alpn: None,
        hello_retry: sh.random == HRR_RANDOM,
    };
    for ext in extensions(sh.ext.unwrap_or_default(), parse_tls_server_hello_extension) {
        match ext {
            TlsExtension::SupportedVersions(versions) => {
                if let Some(v) = versions.first().and_then(|v| TlsVersion::from_wire(v.0)) {
                    hello.version = Some(v);
                }
            }
            TlsExtension::ALPN(protocols) => {
                hello.alpn = protocols
                    .first()
                    .map(|p| String::from_utf8_lossy(p).into_owned());
            }
            _ => {}
        }
    }
    TlsParse::Done(hello)
}

/// Finds the client's Certificate message (TLS ≤ 1.2 mutual TLS: it opens
/// the client's second flight) and returns the SHA-256 of the leaf
/// certificate's DER bytes.
///
/// `Done(None)`: the client sent no certificate, an empty one, or the
/// handshake went encrypted first (TLS 1.3, where the certificate is not
/// visible). `buf` is the client's bytes from the start of the connection.
pub fn parse_client_certificate(buf: &[u8]) -> TlsParse<Option<[u8; 32]>> {
    let stream = match HandshakeStream::collect(buf) {
        Ok(stream) => stream,
        Err(outcome) => return outcome,
    };
    let mut pos = 0;
    loop {
        let Some(&[kind, a, b, c]) = stream.bytes.get(pos..pos + 4) else {
            return stream.need_more_or(TlsParse::Done(None));
        };
        let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
        let body_start = pos + 4;
        match kind {
            HS_CLIENT_HELLO => {}
            HS_CERTIFICATE => {
                let body = stream.bytes.get(body_start..).unwrap_or_default();
                let body = body.get(..len).unwrap_or(body);
                return match leaf_certificate(body) {
                    Some(Some(leaf)) => TlsParse::Done(Some(Sha256::digest(leaf).into())),
                    Some(None) => TlsParse::Done(None),
                    None if body.len() < len => stream.need_more_or(TlsParse::NotTls),
                    None => TlsParse::NotTls,
                };
            }
            // Anything else (ClientKeyExchange, …) without a certificate first.
            _ => return TlsParse::Done(None),
        }
        pos = body_start + len;
    }
}

/// The first certificate of a Certificate message body, which may be cut
/// after the leaf. `None`: the leaf is not complete in `body`;
/// `Some(None)`: the list is empty.
fn leaf_certificate(body: &[u8]) -> Option<Option<&[u8]>> {
    let &[a, b, c] = body.first_chunk::<3>()?;
    let list_len = u32::from_be_bytes([0, a, b, c]);
    if list_len == 0 {
        return Some(None);
    }
    let &[a, b, c] = body.get(3..)?.first_chunk::<3>()?;
    let leaf_len = u32::from_be_bytes([0, a, b, c]) as usize;
    body.get(6..6 + leaf_len).map(Some)
}

/// Parses an SSLv2-format CLIENT-HELLO (RFC 6101 appendix E.2).
fn parse_sslv2_hello(buf: &[u8]) -> TlsParse<ClientHello> {
    let Some(&[b0, b1]) = buf.first_chunk::<2>() else {
        return TlsParse::NeedMore;
    };
    let len = usize::from(b0 & 0x7f) << 8 | usize::from(b1);
    let Some(body) = buf.get(2..2 + len) else {
        return if len > MAX_HANDSHAKE {
            TlsParse::NotTls
        } else {
            TlsParse::NeedMore
        };
    };
    let Some(&[HS_CLIENT_HELLO, v0, v1, cl0, cl1, _, _, _, _]) = body.first_chunk::<9>() else {
        return TlsParse::NotTls;
    };
    let specs_len = usize::from(u16::from_be_bytes([cl0, cl1]));
    let Some(specs) = body.get(9..9 + specs_len) else {
        return TlsParse::NotTls;
    };
    let version = TlsVersion::from_wire(u16::from_be_bytes([v0, v1]));
    let cipher_suites = specs
        .chunks_exact(3)
        // SSLv2 kinds have a non-zero first byte; TLS suites are 0x00XXYY.
        .filter(|spec| spec.first() == Some(&0))
        .filter_map(|spec| match *spec {
            [_, hi, lo] => Some(CipherSuite(u16::from_be_bytes([hi, lo]))),
            _ => None,
        })
        .filter(|c| !c.is_placeholder())
        .collect();
    TlsParse::Done(ClientHello {
        record_version: None,
        legacy_version: version,
        supported_versions: Vec::new(),
        max_version: version,
        sni: None,
        alpn: Vec::new(),
        cipher_suites,
        sslv2: true,
    })
}

/// Handshake bytes joined from the leading handshake records of a direction.
struct HandshakeStream<'a> {
    bytes: Cow<'a, [u8]>,
    record_version: Option<TlsVersion>,
    /// More handshake bytes may follow (no non-handshake record seen, bound
    /// not reached).
    open: bool,
}

impl<'a> HandshakeStream<'a> {
    /// Walks the records at the start of `buf`. Errors are final outcomes:
    /// `NeedMore` when not even one record header is there, `NotTls` when
    /// the first record is not a TLS handshake record.
    fn collect<T>(buf: &'a [u8]) -> Result<Self, TlsParse<T>> {
        let mut stream = Self {
            bytes: Cow::Borrowed(&[]),
            record_version: None,
            open: true,
        };
        let mut off = 0;
        // An SSLv2-format hello may open the client's bytes; skip it.
        if let Some(&[b0, b1, 1]) = buf.first_chunk::<3>()
            && b0 & 0x80 != 0
        {
            off = 2 + (usize::from(b0 & 0x7f) << 8 | usize::from(b1));
        }
        while let Some(&[kind, major, minor, l0, l1]) =
            buf.get(off..).and_then(|r| r.first_chunk::<5>())
        {
            let len = usize::from(u16::from_be_bytes([l0, l1]));
            if major != 3 || minor > 4 || len > MAX_RECORD_BODY {
                if stream.record_version.is_none() && off == 0 {
                    return Err(TlsParse::NotTls);
                }
                stream.open = false;
                break;
            }
            if kind != CONTENT_HANDSHAKE {
                if off == 0 {
                    return Err(TlsParse::NotTls);
                }
                // ChangeCipherSpec, alert, application data: the plaintext
                // handshake of this direction is over.
                stream.open = false;
                break;
            }
            if stream.record_version.is_none() && off == 0 {
                stream.record_version = TlsVersion::from_wire(u16::from_be_bytes([major, minor]));
            }
            let body_start = off + 5;
            // A record cut by the end of the buffer still gives its bytes.
            let available = buf.get(body_start..).unwrap_or_default();
            let fragment = available.get(..len).unwrap_or(available);
            stream.append(fragment, buf.len());
            if stream.bytes.len() >= MAX_HANDSHAKE {
                stream.open = false;
                break;
            }
            if fragment.len() < len {
                break;
            }
            off = body_start + len;
        }
        if off == 0 && stream.bytes.is_empty() && buf.len() < 5 {
            // Judge the part of the first record header that is there.
            return Err(match *buf {
                [] | [CONTENT_HANDSHAKE] | [CONTENT_HANDSHAKE, 3] => TlsParse::NeedMore,
                [CONTENT_HANDSHAKE, 3, minor, ..] if minor <= 4 => TlsParse::NeedMore,
                _ => TlsParse::NotTls,
            });
        }
        Ok(stream)
    }

    /// Appends a record's body; `whole` is the length of the buffer the
    /// records come from, which bounds their bodies together.
    fn append(&mut self, fragment: &'a [u8], whole: usize) {
        let room = MAX_HANDSHAKE.saturating_sub(self.bytes.len());
        let fragment = fragment.get(..room).unwrap_or(fragment);
        if self.bytes.is_empty() {
            self.bytes = Cow::Borrowed(fragment);
            return;
        }
        if let Cow::Borrowed(first) = self.bytes {
            // One allocation for every record still to come, not a copy
            // that grows record by record (a client's TLS 1.2 flight is
            // several records, parsed again as each segment arrives).
            let mut owned =
                Vec::with_capacity(whole.min(MAX_HANDSHAKE).max(first.len() + fragment.len()));
            owned.extend_from_slice(first);
            self.bytes = Cow::Owned(owned);
        }
        self.bytes.to_mut().extend_from_slice(fragment);
    }

    /// The body of the message at `pos`, which must be of type `kind`, and
    /// the position after it.
    fn message<T>(&self, pos: usize, kind: u8) -> Result<(&[u8], usize), TlsParse<T>> {
        let Some(&[found, a, b, c]) = self.bytes.get(pos..pos + 4) else {
            return Err(self.need_more_or(TlsParse::NotTls));
        };
        if found != kind {
            return Err(TlsParse::NotTls);
        }
        let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
        match self.bytes.get(pos + 4..pos + 4 + len) {
            Some(body) => Ok((body, pos + 4 + len)),
            None => Err(self.need_more_or(TlsParse::NotTls)),
        }
    }

    fn need_more_or<T>(&self, otherwise: TlsParse<T>) -> TlsParse<T> {
        if self.open {
            TlsParse::NeedMore
        } else {
            otherwise
        }
    }
}

/// Parses each extension separately, so one that tls-parser rejects does not
/// hide the ones after it.
fn extensions<'a>(
    mut raw: &'a [u8],
    parse: fn(&'a [u8]) -> tls_parser::IResult<&'a [u8], TlsExtension<'a>>,
) -> Vec<TlsExtension<'a>> {
    let mut out = Vec::new();
    while let Some(&[_, _, l0, l1]) = raw.first_chunk::<4>() {
        let end = 4 + usize::from(u16::from_be_bytes([l0, l1]));
        let Some(one) = raw.get(..end) else { break };
        if let Ok((_, ext)) = parse(one) {
            out.push(ext);
        }
        raw = raw.get(end..).unwrap_or_default();
    }
    out
}

fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}
