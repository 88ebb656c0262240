//! The validated contract: what the engine reads at run time.
//!
//! Everything here has passed `decode`: names are unique, references
//! resolve, stages are ordered, and times are [`Nanos`].

use std::{fmt, net::IpAddr, sync::Arc};

use ipnet::IpNet;

use crate::{event::Nanos, identity::Fingerprint};

/// `required` or `optional`, for encryption and authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Requirement {
    Required,
    Optional,
}

impl Requirement {
    pub const fn is_required(self) -> bool {
        matches!(self, Self::Required)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::Optional => "optional",
        }
    }
}

/// The TLS version type is the protocol parser's: one type for what a
/// contract asks (`minTlsVersion`) and what the wire shows.
pub use crate::protocol::tls::TlsVersion;

/// A contract's `minTlsVersion` ("1.0" … "1.3"; SSL 3 is never an
/// acceptable minimum).
pub fn min_tls_version(s: &str) -> Option<TlsVersion> {
    Some(match s {
        "1.0" => TlsVersion::Tls10,
        "1.1" => TlsVersion::Tls11,
        "1.2" => TlsVersion::Tls12,
        "1.3" => TlsVersion::Tls13,
        _ => return None,
    })
}

/// A `forbiddenCiphers` entry: a glob (`*`, `?`, `[...]`) over IANA cipher
/// suite names, matched case-insensitively.
#[derive(Clone, Debug)]
pub struct CipherGlob {
    pub(crate) text: String,
    pub(crate) pattern: glob::Pattern,
}

impl CipherGlob {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, iana_name: &str) -> bool {
        self.pattern.matches_with(
            iana_name,
            glob::MatchOptions {
                case_sensitive: false,
                require_literal_separator: false,
                require_literal_leading_dot: false,
            },
        )
    }
}

/// A class of data and what carrying it requires.
#[derive(Clone, Debug)]
pub struct DataClass {
    pub name: Arc<str>,
    pub encryption: Requirement,
    /// Defaults to required.
    pub authentication: Requirement,
    /// The lowest acceptable TLS version, if any.
    pub min_tls_version: Option<TlsVersion>,
    pub forbidden_ciphers: Vec<CipherGlob>,
}

impl DataClass {
    pub fn encryption_required(&self) -> bool {
        self.encryption.is_required()
    }

    pub fn authentication_required(&self) -> bool {
        self.authentication.is_required()
    }

    /// Whether `version` is below this class's `minTlsVersion`.
    pub fn tls_version_too_low(&self, version: TlsVersion) -> bool {
        self.min_tls_version.is_some_and(|min| version < min)
    }

    /// Whether the IANA suite name (e.g. `TLS_RSA_WITH_AES_128_CBC_SHA`)
    /// matches one of `forbiddenCiphers`.
    pub fn cipher_forbidden(&self, iana_name: &str) -> bool {
        self.forbidden_ciphers.iter().any(|g| g.matches(iana_name))
    }

    /// The first glob that forbids `iana_name`, to explain a violation.
    pub fn forbidding_glob(&self, iana_name: &str) -> Option<&CipherGlob> {
        self.forbidden_ciphers.iter().find(|g| g.matches(iana_name))
    }
}

/// One entry of an endpoint's `hosts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// A DNS name, lowercased without a trailing dot; matches the TLS SNI or
    /// HTTP Host. `*.example.com` matches any name below `example.com`.
    Name(String),
    /// An IP address (as a /32 or /128) or CIDR; matches the server address.
    Net(IpNet),
}

impl HostPattern {
    /// Whether `name` (already normalised: lowercase, no port, no trailing
    /// dot) matches this pattern.
    pub fn matches_name(&self, name: &str) -> bool {
        match self {
            Self::Name(pattern) => match pattern.strip_prefix("*.") {
                Some(parent) => name
                    .strip_suffix(parent)
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                None => pattern == name,
            },
            Self::Net(_) => false,
        }
    }

    pub fn matches_addr(&self, addr: IpAddr) -> bool {
        match self {
            Self::Net(net) => net.contains(&addr),
            Self::Name(_) => false,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Net(net) => write!(f, "{net}"),
        }
    }
}

/// An API endpoint the contract covers.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub name: Arc<str>,
    pub data_class: Arc<DataClass>,
    pub hosts: Vec<HostPattern>,
    /// `None`: any port.
    pub ports: Option<Vec<u16>>,
    /// Path prefixes; empty: any path.
    pub paths: Vec<String>,
    /// Local workloads that serve it (live only): a flow whose server-side
    /// socket's workload matches one of them, on one of `ports` (required
    /// with workloads), belongs to it. No `exe` here (see decode).
    pub workloads: Vec<WorkloadSelector>,
}

impl Endpoint {
    pub fn port_matches(&self, port: u16) -> bool {
        self.ports.as_ref().is_none_or(|p| p.contains(&port))
    }

    /// Whether the server socket's workload `w` is one of this endpoint's
    /// `workloads` (the port is checked apart, with [`Self::port_matches`]).
    pub fn served_by(&self, w: &crate::identity::workload::FlowWorkload) -> bool {
        self.workloads.iter().any(|s| s.matches(w))
    }

    /// The longest of `paths` that is a prefix of `path` on a segment
    /// boundary (`/v1/payments` covers `/v1/payments`, `/v1/payments/x` and
    /// `/v1/payments?x`, not `/v1/paymentsX`).
    pub fn matching_path(&self, path: &str) -> Option<&str> {
        let path = strip_absolute_form(path);
        self.paths
            .iter()
            .filter(|prefix| path_has_prefix(path, prefix))
            .max_by_key(|prefix| prefix.len())
            .map(String::as_str)
    }
}

/// `http://host:port/x?y` (proxy-style request target) → `/x?y`.
fn strip_absolute_form(path: &str) -> &str {
    let lower_starts = |p: &str| {
        path.get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p))
    };
    for scheme in ["http://", "https://"] {
        if lower_starts(scheme) {
            let rest = path.get(scheme.len()..).unwrap_or_default();
            return rest
                .find(['/', '?'])
                .map_or("/", |i| rest.get(i..).unwrap_or("/"));
        }
    }
    path
}

/// Prefix match on a path segment boundary.
pub(crate) fn path_has_prefix(path: &str, prefix: &str) -> bool {
    let Some(rest) = path.strip_prefix(prefix) else {
        return false;
    };
    prefix.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?', '#'])
}

/// A listed credential of a client. Only its fingerprint is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// The header carrying it, lowercased (`authorization`, `x-api-key`).
    pub header: String,
    pub fingerprint: Fingerprint,
    pub issued_at: Nanos,
}

impl Credential {
    /// Age at `t` (negative before issuance).
    pub fn age_at(&self, t: Nanos) -> Nanos {
        t.saturating_sub(self.issued_at)
    }
}

/// Which claim of a JWT from `issuer` names the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwtClaim {
    /// `sub`.
    Subject(String),
    /// `client_id`, else `azp`.
    ClientId(String),
}

/// A `jwt` entry of a client: tokens from `issuer` with this claim are
/// this client's (the signature is not verified; see `identity::token`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtMatch {
    pub issuer: String,
    pub claim: JwtClaim,
}

/// A known caller.
#[derive(Clone, Debug)]
pub struct Client {
    pub name: Arc<str>,
    pub credentials: Vec<Credential>,
    /// Bearer JWTs that name this client by their claims.
    pub jwt: Vec<JwtMatch>,
    /// Fingerprints of client certificates (DER).
    pub certificates: Vec<Fingerprint>,
    pub sources: Vec<IpNet>,
    /// Local workloads whose sockets are this client (live only: the
    /// kernel names the socket's cgroup; replay has no workloads).
    pub workloads: Vec<WorkloadSelector>,
}

/// A case-sensitive glob (`*`, `?`, `[...]`) over a workload name: a
/// namespace, pod, container or executable path.
#[derive(Clone, Debug)]
pub struct NameGlob {
    pub(crate) text: String,
    pub(crate) pattern: glob::Pattern,
}

impl NameGlob {
    pub fn new(text: &str) -> Result<Self, glob::PatternError> {
        Ok(Self {
            text: text.to_owned(),
            pattern: glob::Pattern::new(text)?,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, name: &str) -> bool {
        self.pattern.matches_with(
            name,
            glob::MatchOptions {
                case_sensitive: true,
                // `exe: /usr/bin/*` should not match `/usr/bin/x/y`.
                require_literal_separator: true,
                require_literal_leading_dot: false,
            },
        )
    }
}

impl PartialEq for NameGlob {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// `workloads[]` entry: every field given must match what the node says
/// about the socket's workload; a field the node does not know (a pod
/// without a name yet, a process whose `exe` is unreadable) never matches.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct WorkloadSelector {
    pub namespace: Option<NameGlob>,
    pub pod: Option<NameGlob>,
    pub container: Option<NameGlob>,
    pub exe: Option<NameGlob>,
}

impl WorkloadSelector {
    pub fn matches(&self, w: &crate::identity::workload::FlowWorkload) -> bool {
        fn one(p: Option<&NameGlob>, v: Option<&str>) -> bool {
            p.is_none_or(|p| v.is_some_and(|v| p.matches(v)))
        }
        one(self.namespace.as_ref(), w.namespace.as_deref())
            && one(self.pod.as_ref(), w.pod.as_deref())
            && one(self.container.as_ref(), w.container.as_deref())
            && one(self.exe.as_ref(), w.exe.as_deref())
    }
}

/// A quota a stage grants one client on one endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct QuotaRule {
    pub client: Arc<str>,
    pub endpoint: Arc<str>,
    pub quota: Quota,
}

/// A token bucket: `burst` tokens, refilled at `rps` per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quota {
    pub rps: f64,
    pub burst: u64,
}

impl Quota {
    /// What a stage grants a client on an endpoint it does not list.
    pub const ZERO: Self = Self { rps: 0.0, burst: 0 };
}

/// One step of the ramp.
#[derive(Clone, Debug)]
pub struct Stage {
    pub name: Arc<str>,
    /// Position in `spec.stages` (ordered by `starts_at`).
    pub index: usize,
    pub starts_at: Nanos,
    /// `None`: credentials never go stale in this stage.
    pub credential_max_age: Option<Nanos>,
    /// Credentials must be issued after `starts_at` (`rotateOnStageStart`).
    pub rotate_on_stage_start: bool,
    /// JWT signing key ids (`kid`) accepted in this stage; empty: any.
    pub signing_keys: Vec<String>,
    pub quotas: Vec<QuotaRule>,
}

impl Stage {
    /// The quota this stage grants `client` on `endpoint`; `None` when it
    /// grants none (the engine then applies [`Quota::ZERO`]).
    pub fn quota(&self, client: &str, endpoint: &str) -> Option<Quota> {
        self.quotas
            .iter()
            .find(|q| &*q.client == client && &*q.endpoint == endpoint)
            .map(|q| q.quota)
    }

    /// Whether `credential` is older than this stage's `credentialMaxAge` at `t`.
    pub fn credential_stale(&self, credential: &Credential, t: Nanos) -> bool {
        self.credential_max_age
            .is_some_and(|max| credential.age_at(t) > max)
    }
}

/// What a revocation names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevocationTarget {
    /// A credential fingerprint (`fingerprint:`).
    Credential(Fingerprint),
    /// A whole client (`client:`).
    Client(Arc<str>),
    /// A client certificate fingerprint (`certificate:`).
    Certificate(Fingerprint),
}

impl fmt::Display for RevocationTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Credential(fp) => write!(f, "credential {}", fp.short()),
            Self::Client(c) => write!(f, "client {c}"),
            Self::Certificate(fp) => write!(f, "certificate {}", fp.short()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub target: RevocationTarget,
    pub revoked_at: Nanos,
    pub reason: Option<String>,
}

/// How long a violation may stay open before it escalates: to `critical`
/// after `warn_after`, to `breach` after `breach_after`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub warn_after: Option<Nanos>,
    pub breach_after: Option<Nanos>,
}

impl Window {
    /// Each bound from `self`, else from `fallback`.
    pub fn or(self, fallback: Self) -> Self {
        Self {
            warn_after: self.warn_after.or(fallback.warn_after),
            breach_after: self.breach_after.or(fallback.breach_after),
        }
    }
}

/// The remediation windows: global, per data class and per violation kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Remediation {
    pub warn_after: Option<Nanos>,
    pub breach_after: Option<Nanos>,
    /// `remediation.kinds`: by violation kind name (`unencrypted_flow`, …).
    pub kinds: Vec<(String, Window)>,
    /// `remediation.dataClasses`: by data class name.
    pub data_classes: Vec<(Arc<str>, Window)>,
}

impl Remediation {
    /// The global window.
    pub fn global(&self) -> Window {
        Window {
            warn_after: self.warn_after,
            breach_after: self.breach_after,
        }
    }

    /// The window of a `kind` violation on an endpoint of `class` (none:
    /// unlisted): the most specific wins, bound by bound: the kind's, then
    /// the class's, then the global one.
    pub fn window(&self, kind: &str, class: Option<&str>) -> Window {
        let by_kind = self
            .kinds
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, w)| *w)
            .unwrap_or_default();
        let by_class = class
            .and_then(|c| self.data_classes.iter().find(|(n, _)| &**n == c))
            .map(|(_, w)| *w)
            .unwrap_or_default();
        by_kind.or(by_class).or(self.global())
    }
}

/// Extra API traffic to watch beyond the endpoints.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub networks: Vec<IpNet>,
    /// `None`: any port.
    pub ports: Option<Vec<u16>>,
}

impl Scope {
    pub fn contains(&self, addr: IpAddr, port: u16) -> bool {
        self.networks.iter().any(|n| n.contains(&addr))
            && self.ports.as_ref().is_none_or(|p| p.contains(&port))
    }
}

/// Server-side addresses the kernel should watch (see
/// [`crate::contract::Contract::server_rules`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerRule {
    pub net: IpNet,
    /// `None`: any port.
    pub ports: Option<Vec<u16>>,
}

/// A host name an endpoint lists; the agent resolves it to addresses for
/// the kernel (see [`crate::contract::Contract::host_names`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameRule {
    /// Lowercase; may start with `*.` (then it cannot be resolved, only
    /// matched against SNI/Host on already watched addresses).
    pub host: String,
    pub ports: Option<Vec<u16>>,
    pub endpoint: Arc<str>,
}
