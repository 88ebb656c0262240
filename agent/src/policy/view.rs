//! The engine's compiled form of a contract: indexes built once per
//! contract (re)load so that per-request questions (which endpoint, which
//! client, which quota, revoked since when) cost a few comparisons or one
//! hash lookup. Built from `contract::Contract` by [`View::from_contract`]
//! (see `convert.rs`); tests may build one directly.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use crate::{event::Nanos, flow::TlsVersion};

/// A SHA-256 fingerprint (credential or DER certificate).
pub type Fp = [u8; 32];

/// An IP network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Net {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let bits = u32::from(self.prefix.min(32));
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let bits = u32::from(self.prefix.min(128));
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What a data class demands.
#[derive(Clone, Debug, Default)]
pub struct ClassView {
    pub name: Arc<str>,
    pub encryption_required: bool,
    pub authentication_required: bool,
    pub min_tls: Option<TlsVersion>,
    /// Globs over IANA suite names (`*` matches any run).
    pub forbidden_ciphers: Vec<String>,
}

impl ClassView {
    /// The first forbidden-cipher glob `name` matches.
    pub fn forbids(&self, name: &str) -> Option<&str> {
        self.forbidden_ciphers
            .iter()
            .find(|g| glob(g.as_bytes(), name.as_bytes()))
            .map(String::as_str)
    }
}

/// `*`-only glob, case-insensitive.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    match pat.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| s.get(i..).is_some_and(|t| glob(rest, t))),
        Some((c, rest)) => s
            .split_first()
            .is_some_and(|(d, t)| c.eq_ignore_ascii_case(d) && glob(rest, t)),
    }
}

#[derive(Clone, Debug, Default)]
pub struct EndpointView {
    pub name: Arc<str>,
    pub class: usize,
    /// Lower-case host names (`*.example.com` allowed), matched against SNI
    /// or the HTTP Host.
    pub names: Vec<String>,
    pub nets: Vec<Net>,
    /// Empty: any port.
    pub ports: Vec<u16>,
    /// Empty: any path.
    pub paths: Vec<String>,
}

impl EndpointView {
    fn port_ok(&self, port: u16) -> bool {
        self.ports.is_empty() || self.ports.contains(&port)
    }

    fn host_ok(&self, ip: IpAddr, name: Option<&str>) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
            || name.is_some_and(|n| self.names.iter().any(|h| host_matches(h, n)))
    }

    fn path_ok(&self, path: &str) -> bool {
        self.paths.is_empty() || self.paths.iter().any(|p| path.starts_with(p.as_str()))
    }
}

fn host_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .strip_suffix(suffix)
            .is_some_and(|head| head.ends_with('.') && head.len() > 1),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub nets: Vec<Net>,
    /// Empty: any port.
    pub ports: Vec<u16>,
}

impl Scope {
    pub fn contains(&self, server: SocketAddr) -> bool {
        (self.ports.is_empty() || self.ports.contains(&server.port()))
            && self.nets.iter().any(|n| n.contains(server.ip()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quota {
    pub requests_per_second: f64,
    pub burst: f64,
}

#[derive(Clone, Debug, Default)]
pub struct StageView {
    pub name: Arc<str>,
    pub starts_at: Nanos,
    pub credential_max_age: Option<Nanos>,
    /// By (client index, endpoint index).
    pub quotas: HashMap<(usize, usize), Quota>,
}

#[derive(Clone, Debug)]
pub struct Revocation {
    pub at: Nanos,
    pub reason: Option<String>,
}

/// A known credential.
#[derive(Clone, Copy, Debug)]
pub struct CredentialView {
    pub client: usize,
    pub issued_at: Option<Nanos>,
}

#[derive(Clone, Debug, Default)]
pub struct View {
    pub contract_name: Arc<str>,
    pub classes: Vec<ClassView>,
    pub endpoints: Vec<EndpointView>,
    pub clients: Vec<Arc<str>>,
    pub client_sources: Vec<(Net, usize)>,
    pub credentials: HashMap<Fp, CredentialView>,
    pub certificates: HashMap<Fp, usize>,
    pub scope: Option<Scope>,
    /// Sorted by `starts_at`.
    pub stages: Vec<StageView>,
    /// Revoked credential and certificate fingerprints.
    pub revoked_fingerprints: HashMap<Fp, Revocation>,
    /// Revoked clients by index.
    pub revoked_clients: HashMap<usize, Revocation>,
    pub warn_after: Option<Nanos>,
    pub breach_after: Option<Nanos>,
}

/// Where a server (and, when visible, the requested name and path) lands in
/// the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointMatch {
    /// Covered by this endpoint.
    Endpoint(usize),
    /// A listed host/port whose `paths` do not cover the path.
    PathNotListed(usize),
    /// In `scope` but no endpoint covers it.
    Unlisted,
    /// Not API traffic the contract watches.
    Unwatched,
}

impl EndpointMatch {
    /// The endpoint whose class applies, if any.
    pub fn endpoint(self) -> Option<usize> {
        match self {
            Self::Endpoint(e) | Self::PathNotListed(e) => Some(e),
            Self::Unlisted | Self::Unwatched => None,
        }
    }

    pub fn watched(self) -> bool {
        self != Self::Unwatched
    }
}

/// How a client was recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Credential,
    Certificate,
    Source,
    Unknown,
}

impl Via {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Credential => "credential",
            Self::Certificate => "certificate",
            Self::Source => "source",
            Self::Unknown => "unknown",
        }
    }
}

/// Who is calling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub client: Option<usize>,
    pub via: Via,
    /// The credential seen (first credential header), known or not.
    pub credential: Option<Fp>,
    pub certificate: Option<Fp>,
}

impl View {
    /// The stage active at `t`: the last one whose start has passed.
    pub fn stage_at(&self, t: Nanos) -> Option<usize> {
        self.stages.iter().rposition(|s| s.starts_at <= t)
    }

    /// The stage after `current` (the first one when none is active).
    pub fn next_stage(&self, current: Option<usize>) -> Option<usize> {
        let i = current.map_or(0, |c| c + 1);
        (i < self.stages.len()).then_some(i)
    }

    /// Whether `addr` is a server the contract watches, for orienting flows.
    pub fn is_server(&self, addr: SocketAddr) -> bool {
        self.scope.as_ref().is_some_and(|s| s.contains(addr))
            || self.endpoints.iter().any(|e| {
                e.port_ok(addr.port())
                    && (e.nets.iter().any(|n| n.contains(addr.ip()))
                        || (e.nets.is_empty() && !e.ports.is_empty()))
            })
    }

    /// Which endpoint covers `server`, reached by `name` (SNI or Host) and
    /// asking for `path` (when visible).
    pub fn match_endpoint(
        &self,
        server: SocketAddr,
        name: Option<&str>,
        path: Option<&str>,
    ) -> EndpointMatch {
        let mut path_miss = None;
        for (i, e) in self.endpoints.iter().enumerate() {
            if !e.port_ok(server.port()) || !e.host_ok(server.ip(), name) {
                continue;
            }
            match path {
                Some(p) if !p.is_empty() && !e.path_ok(p) => {
                    path_miss.get_or_insert(i);
                }
                _ => return EndpointMatch::Endpoint(i),
            }
        }
        if let Some(i) = path_miss {
            EndpointMatch::PathNotListed(i)
        } else if self.scope.as_ref().is_some_and(|s| s.contains(server)) {
            EndpointMatch::Unlisted
        } else {
            EndpointMatch::Unwatched
        }
    }

    /// Identity in the contract's order: credential → client certificate →
    /// source address → unknown.
    pub fn identify(
        &self,
        credentials: &[Fp],
        certificate: Option<Fp>,
        source: IpAddr,
    ) -> Identity {
        let mut id = Identity {
            client: None,
            via: Via::Unknown,
            credential: credentials.first().copied(),
            certificate,
        };
        if let Some((fp, c)) = credentials
            .iter()
            .find_map(|fp| self.credentials.get(fp).map(|c| (*fp, c)))
        {
            id.client = Some(c.client);
            id.via = Via::Credential;
            id.credential = Some(fp);
        } else if let Some(c) = certificate.and_then(|fp| self.certificates.get(&fp)) {
            id.client = Some(*c);
            id.via = Via::Certificate;
        } else if let Some((_, c)) = self.client_sources.iter().find(|(n, _)| n.contains(source)) {
            id.client = Some(*c);
            id.via = Via::Source;
        }
        id
    }

    pub fn class_of(&self, endpoint: usize) -> Option<&ClassView> {
        self.endpoints
            .get(endpoint)
            .and_then(|e| self.classes.get(e.class))
    }

    pub fn endpoint_name(&self, endpoint: Option<usize>) -> Option<&Arc<str>> {
        endpoint
            .and_then(|e| self.endpoints.get(e))
            .map(|e| &e.name)
    }

    pub fn client_name(&self, client: Option<usize>) -> Option<&Arc<str>> {
        client.and_then(|c| self.clients.get(c))
    }

    /// The quota of `client` on `endpoint` in `stage`; none granted is 0.
    pub fn quota(&self, stage: Option<usize>, client: usize, endpoint: usize) -> Quota {
        stage
            .and_then(|s| self.stages.get(s))
            .and_then(|s| s.quotas.get(&(client, endpoint)).copied())
            .unwrap_or(Quota {
                requests_per_second: 0.0,
                burst: 0.0,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob(b"*_CBC_*", b"TLS_RSA_WITH_AES_128_CBC_SHA"));
        assert!(!glob(b"*_CBC_*", b"TLS_AES_128_GCM_SHA256"));
        assert!(glob(b"*RC4*", b"TLS_RSA_WITH_RC4_128_SHA"));
        assert!(glob(b"*", b""));
    }

    #[test]
    fn nets_and_hosts() {
        let n = Net {
            addr: "10.20.0.0".parse().unwrap(),
            prefix: 16,
        };
        assert!(n.contains("10.20.3.4".parse().unwrap()));
        assert!(n.contains("::ffff:10.20.3.4".parse().unwrap()));
        assert!(!n.contains("10.21.0.1".parse().unwrap()));
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(host_matches("Pay.example.com", "pay.example.com"));
    }
}
