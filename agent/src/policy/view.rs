//! The engine's compiled form of a contract: indexes built once per
//! contract (re)load so that per-request questions (which client, which
//! quota, revoked since when) cost one hash lookup, with findings keyed by
//! index. Endpoint matching is the contract's own
//! ([`Contract::match_endpoint`]), mapped to indexes here.

use std::{collections::HashMap as StdHashMap, net::SocketAddr, sync::Arc};

/// Lookups on the request path: foldhash, not SipHash (keys are not
/// attacker-chosen in a way that matters: fingerprints and small indexes).
pub type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::FixedState>;

pub use crate::identity::{Fp, Identity, Presented, Via};
use crate::{
    contract::{self, Contract, DataClass, RevocationTarget},
    event::Nanos,
    flow::TlsVersion,
    identity::{Directory, workload::FlowWorkload},
};

/// What a data class demands.
#[derive(Clone, Debug)]
pub struct ClassView {
    pub name: Arc<str>,
    pub encryption_required: bool,
    pub authentication_required: bool,
    pub min_tls: Option<TlsVersion>,
    class: Arc<DataClass>,
    /// Suite ids whose IANA names a forbidden glob matches, computed once so
    /// judging a flow is a set lookup, not a glob match.
    forbidden_ids: std::collections::HashSet<u16, foldhash::fast::FixedState>,
}

impl ClassView {
    fn new(class: &Arc<DataClass>) -> Self {
        Self {
            name: class.name.clone(),
            encryption_required: class.encryption_required(),
            authentication_required: class.authentication_required(),
            min_tls: class.min_tls_version,
            forbidden_ids: if class.forbidden_ciphers.is_empty() {
                Default::default()
            } else {
                (0..=u16::MAX)
                    .filter(|id| {
                        crate::flow::facts::CipherSuite(*id)
                            .name()
                            .is_some_and(|n| class.forbidding_glob(n).is_some())
                    })
                    .collect()
            },
            class: class.clone(),
        }
    }

    /// Whether the suite with wire value `id` is forbidden.
    pub fn forbids_id(&self, id: u16) -> bool {
        self.forbidden_ids.contains(&id)
    }

    /// The forbidden-cipher glob `name` (IANA) matches, if any.
    pub fn forbids(&self, name: &str) -> Option<&str> {
        self.class.forbidding_glob(name).map(|g| g.as_str())
    }

    pub fn forbids_any(&self) -> bool {
        !self.class.forbidden_ciphers.is_empty()
    }
}

#[derive(Clone, Debug)]
pub struct EndpointView {
    pub name: Arc<str>,
    pub class: usize,
    /// Listed by name only, with ports: a port match hints a server.
    names_only_ports: Option<Vec<u16>>,
}

/// A stage's quota for one (client, endpoint), as the token buckets take
/// it (the contract's is `contract::Quota`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StageQuota {
    pub requests_per_second: f64,
    pub burst: f64,
}

/// A stage compiled to indexes (the API's view of a stage is
/// `sinks::api::views::StageView`).
#[derive(Clone, Debug, Default)]
pub struct StageTerms {
    pub name: Arc<str>,
    pub starts_at: Nanos,
    pub credential_max_age: Option<Nanos>,
    /// `rotateOnStageStart`.
    pub rotate_on_stage_start: bool,
    /// `signingKeys`; empty: any key.
    pub signing_keys: Vec<Arc<str>>,
    /// By (client index, endpoint index).
    pub quotas: HashMap<(usize, usize), StageQuota>,
}

#[derive(Clone, Debug)]
pub struct Revoked {
    pub at: Nanos,
    pub reason: Option<String>,
}

#[derive(Clone)]
pub struct View {
    pub contract: Arc<Contract>,
    pub contract_name: Arc<str>,
    pub classes: Vec<ClassView>,
    pub endpoints: Vec<EndpointView>,
    pub clients: Vec<Arc<str>>,
    /// Who is calling: `identity::Directory::identify`.
    pub directory: Directory,
    /// Sorted by `starts_at`.
    pub stages: Vec<StageTerms>,
    /// Revoked credential and certificate fingerprints.
    pub revoked_fingerprints: HashMap<Fp, Revoked>,
    /// Revoked clients by index.
    pub revoked_clients: HashMap<usize, Revoked>,
    /// `spec.remediation`: windows global, per class, per kind.
    pub remediation: contract::Remediation,
}

/// `contract::EndpointMatch` as indexes: where a server (and, when visible,
/// the requested name and path) lands in
/// the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointRef {
    /// Covered by this endpoint.
    Endpoint(usize),
    /// A listed host/port whose `paths` do not cover the path.
    PathNotListed(usize),
    /// In `scope` but no endpoint covers it.
    Unlisted,
    /// Not API traffic the contract watches.
    Unwatched,
}

impl EndpointRef {
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
        self.contract.in_scope(addr)
            || self.endpoints.iter().any(|e| {
                e.names_only_ports
                    .as_ref()
                    .is_some_and(|p| p.contains(&addr.port()))
            })
    }

    /// Which endpoint covers `server` (whose socket, when on this node, is
    /// the workload `served_by`), reached by `name` (SNI or Host) and
    /// asking for `path` (when visible).
    pub fn match_endpoint(
        &self,
        server: SocketAddr,
        served_by: Option<&FlowWorkload>,
        name: Option<&str>,
        path: Option<&str>,
    ) -> EndpointRef {
        let index = |e: &contract::Endpoint| {
            self.contract
                .endpoints()
                .iter()
                .position(|x| std::ptr::eq(x, e))
        };
        match self
            .contract
            .match_endpoint_served(server, served_by, name, path)
        {
            contract::EndpointMatch::Endpoint(e) => {
                index(e).map_or(EndpointRef::Unwatched, EndpointRef::Endpoint)
            }
            contract::EndpointMatch::PathNotListed(e) => {
                index(e).map_or(EndpointRef::Unwatched, EndpointRef::PathNotListed)
            }
            contract::EndpointMatch::Unlisted => EndpointRef::Unlisted,
            contract::EndpointMatch::NotWatched => EndpointRef::Unwatched,
        }
    }

    /// Compiles `contract`.
    pub fn new(contract: Arc<Contract>) -> Self {
        let c = &*contract;
        let classes: Vec<ClassView> = c.data_classes().iter().map(ClassView::new).collect();
        let class_index = |dc: &Arc<DataClass>| {
            c.data_classes()
                .iter()
                .position(|x| Arc::ptr_eq(x, dc) || x.name == dc.name)
                .unwrap_or(0)
        };
        let endpoints = c
            .endpoints()
            .iter()
            .map(|e| EndpointView {
                name: e.name.clone(),
                class: class_index(&e.data_class),
                names_only_ports: e
                    .hosts
                    .iter()
                    .all(|h| matches!(h, contract::HostPattern::Name(_)))
                    .then(|| e.ports.clone())
                    .flatten(),
            })
            .collect();
        let clients: Vec<Arc<str>> = c.clients().iter().map(|x| x.name.clone()).collect();
        let client_index = |name: &str| clients.iter().position(|n| &**n == name);
        let endpoint_index = |name: &str| c.endpoints().iter().position(|e| &*e.name == name);
        let stages = c
            .stages()
            .iter()
            .map(|s| StageTerms {
                name: s.name.clone(),
                starts_at: s.starts_at,
                credential_max_age: s.credential_max_age,
                rotate_on_stage_start: s.rotate_on_stage_start,
                signing_keys: s
                    .signing_keys
                    .iter()
                    .map(|k| Arc::from(k.as_str()))
                    .collect(),
                quotas: s
                    .quotas
                    .iter()
                    .filter_map(|q| {
                        Some((
                            (client_index(&q.client)?, endpoint_index(&q.endpoint)?),
                            StageQuota {
                                requests_per_second: q.quota.rps,
                                burst: q.quota.burst as f64,
                            },
                        ))
                    })
                    .collect(),
            })
            .collect();
        let mut revoked_fingerprints: HashMap<Fp, Revoked> = HashMap::default();
        let mut revoked_clients: HashMap<usize, Revoked> = HashMap::default();
        for r in c.revocations() {
            let rev = Revoked {
                at: r.revoked_at,
                reason: r.reason.clone(),
            };
            let keep_earliest = |old: &mut Revoked| {
                if rev.at < old.at {
                    *old = rev.clone();
                }
            };
            match &r.target {
                RevocationTarget::Credential(fp) | RevocationTarget::Certificate(fp) => {
                    revoked_fingerprints
                        .entry(*fp.as_bytes())
                        .and_modify(keep_earliest)
                        .or_insert_with(|| rev.clone());
                }
                RevocationTarget::Client(name) => {
                    if let Some(i) = client_index(name) {
                        revoked_clients
                            .entry(i)
                            .and_modify(keep_earliest)
                            .or_insert_with(|| rev.clone());
                    }
                }
            }
        }
        let remediation = c.remediation().clone();
        Self {
            contract_name: Arc::from(c.name()),
            classes,
            endpoints,
            clients,
            directory: Directory::new(c),
            stages,
            revoked_fingerprints,
            revoked_clients,
            remediation,
            contract,
        }
    }

    /// The remediation window of a violation: by its kind, then the data
    /// class of its endpoint (none for `unlisted`), then global.
    pub fn window_for(&self, key: &super::ViolationKey) -> contract::Window {
        let class = self
            .endpoints
            .iter()
            .find(|e| e.name == key.endpoint)
            .and_then(|e| self.classes.get(e.class))
            .map(|c| &*c.name);
        self.remediation.window(key.kind.as_str(), class)
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
    pub fn quota(&self, stage: Option<usize>, client: usize, endpoint: usize) -> StageQuota {
        stage
            .and_then(|s| self.stages.get(s))
            .and_then(|s| s.quotas.get(&(client, endpoint)).copied())
            .unwrap_or(StageQuota {
                requests_per_second: 0.0,
                burst: 0.0,
            })
    }
}
