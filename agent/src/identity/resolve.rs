//! Who is calling: the contract's clients compiled into lookup tables
//! ([`Directory`]), and the one implementation of the resolution order
//! ([`Directory::identify_presented`]): listed credential fingerprint → JWT
//! claims → client certificate → local workload → source address → unknown.

use std::{collections::HashMap as StdHashMap, net::IpAddr};

use ipnet::IpNet;

use super::{
    token::{self, TokenFacts},
    workload::FlowWorkload,
};
use crate::{
    contract::{self, Contract, JwtClaim, WorkloadSelector},
    event::Nanos,
};

/// Lookups on the request path: foldhash, not SipHash (the keys are
/// fingerprints, not attacker-chosen in a way that matters).
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::FixedState>;

/// A SHA-256 fingerprint (credential or DER certificate), raw.
pub type Fp = [u8; 32];

/// How a client was recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// A credential whose fingerprint the contract lists.
    Credential,
    /// A JWT whose issuer and subject (or client id) the contract lists.
    Jwt,
    Certificate,
    /// The client's local socket belongs to a workload the contract names.
    Workload,
    Source,
    Unknown,
}

impl Via {
    /// Strength of the identification, in the contract's order.
    pub const fn rank(self) -> u8 {
        match self {
            Self::Credential => 5,
            Self::Jwt => 4,
            Self::Certificate => 3,
            Self::Workload => 2,
            Self::Source => 1,
            Self::Unknown => 0,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Credential => "credential",
            Self::Jwt => "jwt",
            Self::Certificate => "certificate",
            Self::Workload => "workload",
            Self::Source => "source",
            Self::Unknown => "unknown",
        }
    }
}

/// Who is calling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Index of the client in the contract.
    pub client: Option<usize>,
    pub via: Via,
    /// The credential seen (first credential header), known or not.
    pub credential: Option<Fp>,
    /// The JWT facts of `credential`, when it is a JWT.
    pub token: Option<TokenFacts>,
    pub certificate: Option<Fp>,
}

/// A credential as a request presents it: fingerprint and JWT facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Presented {
    pub fingerprint: Fp,
    pub token: Option<TokenFacts>,
}

impl Presented {
    /// An opaque credential (no JWT facts).
    pub const fn opaque(fingerprint: Fp) -> Self {
        Self {
            fingerprint,
            token: None,
        }
    }
}

/// A credential the contract lists.
#[derive(Clone, Copy, Debug)]
pub struct KnownCredential {
    /// Index of the client in the contract.
    pub client: usize,
    pub issued_at: Option<Nanos>,
}

/// The contract's clients as lookup tables, built once per (re)load.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    pub credentials: HashMap<Fp, KnownCredential>,
    /// `token::subject_key` / `token::client_key` of each `jwt` entry.
    pub jwt: HashMap<Fp, usize>,
    pub certificates: HashMap<Fp, usize>,
    /// In file order: the first client whose network holds the source wins.
    pub sources: Vec<(IpNet, usize)>,
    /// In file order: the first client with a matching selector wins.
    pub workloads: Vec<(WorkloadSelector, usize)>,
}

impl Directory {
    pub fn new(contract: &Contract) -> Self {
        let mut d = Self::default();
        for (i, cl) in contract.clients().iter().enumerate() {
            for cred in &cl.credentials {
                d.credentials.insert(
                    *cred.fingerprint.as_bytes(),
                    KnownCredential {
                        client: i,
                        issued_at: Some(cred.issued_at),
                    },
                );
            }
            for j in &cl.jwt {
                let key = match &j.claim {
                    JwtClaim::Subject(s) => token::subject_key(&j.issuer, s),
                    JwtClaim::ClientId(c) => token::client_key(&j.issuer, c),
                };
                d.jwt.insert(key, i);
            }
            for fp in &cl.certificates {
                d.certificates.insert(*fp.as_bytes(), i);
            }
            for net in &cl.sources {
                d.sources.push((*net, i));
            }
            for sel in &cl.workloads {
                d.workloads.push((sel.clone(), i));
            }
        }
        d
    }

    /// [`Self::identify_presented`] for opaque credentials.
    pub fn identify(
        &self,
        credentials: &[Fp],
        certificate: Option<Fp>,
        workload: Option<&FlowWorkload>,
        source: IpAddr,
    ) -> Identity {
        let mut presented = [Presented::opaque([0; 32]); 4];
        let n = credentials.len().min(presented.len());
        for (slot, fp) in presented.iter_mut().zip(credentials) {
            *slot = Presented::opaque(*fp);
        }
        self.identify_presented(
            presented.get(..n).unwrap_or_default(),
            certificate,
            workload,
            source,
        )
    }

    /// Identity in the contract's order: listed credential fingerprint →
    /// JWT claims (`sub`, then `client_id`/`azp`, of the first credential
    /// that names a listed one) → client certificate → workload of the
    /// client's local socket (live only) → source address → unknown. An
    /// unrecognised credential does not stop the search, and is kept
    /// (hashed) when nothing identifies the caller.
    pub fn identify_presented(
        &self,
        credentials: &[Presented],
        certificate: Option<Fp>,
        workload: Option<&FlowWorkload>,
        source: IpAddr,
    ) -> Identity {
        let first = credentials.first();
        let mut id = Identity {
            client: None,
            via: Via::Unknown,
            credential: first.map(|c| c.fingerprint),
            token: first.and_then(|c| c.token),
            certificate,
        };
        let by_claims = |c: &Presented| {
            let t = c.token?;
            [t.subject_key, t.client_key]
                .into_iter()
                .flatten()
                .find_map(|k| self.jwt.get(&k).copied())
        };
        if let Some((c, known)) = credentials
            .iter()
            .find_map(|c| self.credentials.get(&c.fingerprint).map(|k| (c, k)))
        {
            id.client = Some(known.client);
            id.via = Via::Credential;
            id.credential = Some(c.fingerprint);
            id.token = c.token;
        } else if let Some((c, client)) = credentials
            .iter()
            .find_map(|c| by_claims(c).map(|k| (c, k)))
        {
            id.client = Some(client);
            id.via = Via::Jwt;
            id.credential = Some(c.fingerprint);
            id.token = c.token;
        } else if let Some(c) = certificate.and_then(|fp| self.certificates.get(&fp)) {
            id.client = Some(*c);
            id.via = Via::Certificate;
        } else if let Some((_, c)) =
            workload.and_then(|w| self.workloads.iter().find(|(sel, _)| sel.matches(w)))
        {
            id.client = Some(*c);
            id.via = Via::Workload;
        } else if let Some((_, c)) = self
            .sources
            .iter()
            .find(|(n, _)| n.contains(&contract::canonical_ip(source)))
        {
            id.client = Some(*c);
            id.via = Via::Source;
        }
        id
    }
}
