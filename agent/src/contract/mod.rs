//! The ramp contract: YAML model, strict parsing, and the lookups the engine
//! makes for every flow and request.
//!
//! ```text
//! text ──yaml::load──▶ positioned tree ──decode──▶ model (+ every diagnostic) ──▶ Contract
//! ```
//!
//! Parsing never stops at the first problem: [`ContractError::Invalid`]
//! carries one [`Diagnostic`] per problem, each with its field path
//! (`spec.stages[1].startsAt`) and line:column. `docs/contract.md` describes
//! the file format; `docs/contract.schema.json` is generated from
//! [`schema`] (see [`schema_json`]).

mod decode;
mod error;
mod matching;
mod model;
pub(crate) mod reader;
pub mod schema;
mod timefmt;
pub(crate) mod yaml;

#[cfg(test)]
pub(crate) mod tests;

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Arc,
};

pub use decode::{API_VERSION, KIND};
pub use error::{ContractError, Diagnostic};
pub use matching::{EndpointMatch, UNLISTED_ENDPOINT, normalize_host};
pub(crate) use model::path_has_prefix;
pub use model::{
    CipherGlob, Client, Credential, DataClass, Endpoint, HostPattern, JwtClaim, JwtMatch, NameGlob,
    NameRule, Quota, QuotaRule, Remediation, Requirement, Revocation, RevocationTarget, Scope,
    ServerRule, Stage, TlsVersion, Window, WorkloadSelector,
};
pub use schema::schema_json;
pub use timefmt::{
    DurationError, TimeError, format_duration, format_rfc3339, parse_duration, parse_rfc3339,
};

use crate::{event::Nanos, identity::Fingerprint};

/// A validated ramp contract. Cheap to share behind an `Arc`; immutable.
#[derive(Clone, Debug)]
pub struct Contract {
    name: String,
    source_name: String,
    sha256: Fingerprint,
    scope: Scope,
    data_classes: Vec<Arc<DataClass>>,
    endpoints: Vec<Endpoint>,
    clients: Vec<Client>,
    stages: Vec<Stage>,
    revocations: Vec<Revocation>,
    remediation: Remediation,
}

impl Contract {
    /// Reads and parses a contract file. The file name prefixes every
    /// diagnostic.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ContractError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ContractError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_bytes(&bytes, &path.display().to_string())
    }

    /// Parses contract text; `source_name` (a file name, or `<stdin>`)
    /// prefixes diagnostics.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ContractError> {
        Self::parse_bytes(text.as_bytes(), source_name)
    }

    /// Parses a contract file's bytes (what [`Contract::load`] and the
    /// agent's reload watcher read); invalid UTF-8 is an error with its line.
    pub fn parse_bytes(bytes: &[u8], source_name: &str) -> Result<Self, ContractError> {
        let invalid = |diagnostics: Vec<Diagnostic>| ContractError::Invalid {
            source_name: source_name.to_owned(),
            diagnostics,
        };
        let one = |line, column, message: String| {
            invalid(vec![Diagnostic {
                path: String::new(),
                line,
                column,
                message,
            }])
        };
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let before = bytes.get(..e.valid_up_to()).unwrap_or_default();
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            one(
                line,
                1,
                "the file is not UTF-8 text; save it as UTF-8".into(),
            )
        })?;
        let root = yaml::load(text)
            .map_err(|e| {
                one(
                    e.pos.line,
                    e.pos.column,
                    format!("YAML syntax error: {}", e.message),
                )
            })?
            .ok_or_else(|| {
                one(
                    1,
                    1,
                    "the file is empty; a contract starts with `apiVersion: rampwatch.io/v1`"
                        .into(),
                )
            })?;
        let mut reader = reader::Reader::default();
        let decoded = decode::decode(&mut reader, &root);
        let mut diagnostics = reader.diags;
        if !diagnostics.is_empty() {
            diagnostics.sort_by_key(|d| (d.line, d.column));
            diagnostics.dedup();
            return Err(invalid(diagnostics));
        }
        Ok(Self::build(
            decoded,
            source_name,
            Fingerprint::of_bytes(bytes),
        ))
    }

    fn build(d: decode::Decoded, source_name: &str, sha256: Fingerprint) -> Self {
        Self {
            name: d.name,
            source_name: source_name.to_owned(),
            sha256,
            scope: d.scope,
            data_classes: d.data_classes,
            endpoints: d.endpoints,
            clients: d.clients,
            stages: d.stages,
            revocations: d.revocations,
            remediation: d.remediation,
        }
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file name (or source name) it was parsed from.
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// SHA-256 of the exact file bytes, for the audit log: it identifies
    /// which contract judged the traffic.
    pub fn sha256(&self) -> Fingerprint {
        self.sha256
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    pub fn data_classes(&self) -> &[Arc<DataClass>] {
        &self.data_classes
    }

    pub fn data_class(&self, name: &str) -> Option<&Arc<DataClass>> {
        self.data_classes.iter().find(|c| &*c.name == name)
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| &*e.name == name)
    }

    pub fn clients(&self) -> &[Client] {
        &self.clients
    }

    pub fn client(&self, name: &str) -> Option<&Client> {
        self.clients.iter().find(|c| &*c.name == name)
    }

    /// All stages, ordered by `starts_at` (strictly increasing).
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| &*s.name == name)
    }

    pub fn revocations(&self) -> &[Revocation] {
        &self.revocations
    }

    pub fn remediation(&self) -> &Remediation {
        &self.remediation
    }

    /// The active stage at `t`: the last one whose `startsAt` is at or
    /// before `t`; `None` before the first stage starts.
    pub fn stage_at(&self, t: Nanos) -> Option<&Stage> {
        let started = self.stages.partition_point(|s| s.starts_at <= t);
        started.checked_sub(1).and_then(|i| self.stages.get(i))
    }

    /// The first stage starting strictly after `t`: when the engine must
    /// re-evaluate quotas and credential ages.
    pub fn next_stage_change_after(&self, t: Nanos) -> Option<&Stage> {
        let started = self.stages.partition_point(|s| s.starts_at <= t);
        self.stages.get(started)
    }

    /// The quota `stage` grants `client` on `endpoint`; `None` if it grants
    /// none (the engine treats that as [`Quota::ZERO`]).
    pub fn quota(&self, stage: &Stage, client: &str, endpoint: &str) -> Option<Quota> {
        stage.quota(client, endpoint)
    }

    /// The request headers that carry credentials in this contract,
    /// lowercase and without duplicates; always includes `authorization`.
    /// The HTTP parser fingerprints exactly these headers.
    pub fn credential_headers(&self) -> Vec<&str> {
        let mut headers = vec!["authorization"];
        for cred in self.clients.iter().flat_map(|c| &c.credentials) {
            if !headers.contains(&cred.header.as_str()) {
                headers.push(&cred.header);
            }
        }
        headers
    }

    /// Whether the server address is watched at all: inside `scope`, or
    /// the address (and port) of an endpoint listed by IP/CIDR. Endpoints
    /// listed only by name are matched through [`Self::match_endpoint`].
    pub fn in_scope(&self, server: SocketAddr) -> bool {
        let ip = canonical_ip(server.ip());
        self.scope.contains(ip, server.port())
            || self.endpoints.iter().any(|e| {
                e.port_matches(server.port()) && e.hosts.iter().any(|h| h.matches_addr(ip))
            })
    }

    /// Addresses and ports the kernel should watch: every `scope` network
    /// (with the scope's ports) and every IP/CIDR host of an endpoint (with
    /// the endpoint's ports). Host names come separately from
    /// [`Self::host_names`]; the agent resolves them into more rules.
    pub fn server_rules(&self) -> Vec<ServerRule> {
        let mut rules: Vec<ServerRule> = Vec::new();
        let mut add = |net, ports: &Option<Vec<u16>>| {
            let rule = ServerRule {
                net,
                ports: ports.clone(),
            };
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        };
        for net in &self.scope.networks {
            add(*net, &self.scope.ports);
        }
        for e in &self.endpoints {
            for h in &e.hosts {
                if let HostPattern::Net(net) = h {
                    add(*net, &e.ports);
                }
            }
        }
        rules
    }

    /// Host names endpoints list, with their ports, for the agent to
    /// resolve into [`ServerRule`]s.
    pub fn host_names(&self) -> Vec<NameRule> {
        self.endpoints
            .iter()
            .flat_map(|e| {
                e.hosts.iter().filter_map(|h| match h {
                    HostPattern::Name(n) => Some(NameRule {
                        host: n.clone(),
                        ports: e.ports.clone(),
                        endpoint: e.name.clone(),
                    }),
                    HostPattern::Net(_) => None,
                })
            })
            .collect()
    }
}

impl std::str::FromStr for Contract {
    type Err = ContractError;

    /// [`Contract::parse`] with the source name `<string>`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text, "<string>")
    }
}

/// `::ffff:10.0.0.1` → `10.0.0.1`, so IPv4 rules match dual-stack sockets.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}
