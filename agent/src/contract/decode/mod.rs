//! Walks the YAML tree into the validated model, collecting every problem.

mod callers;
mod endpoints;

use std::{collections::HashMap, sync::Arc};

use callers::{client, remediation, revocation, stage};
use endpoints::{data_class, endpoint, scope};

use super::{
    model::{Client, DataClass, Endpoint, Remediation, Revocation, Scope, Stage},
    reader::{Fields, Reader, shown},
    yaml::{Kind, Node},
};
use crate::event::Nanos;

pub const API_VERSION: &str = "rampwatch.io/v1";
pub const KIND: &str = "RampContract";

// The fields each mapping accepts. A unit test checks these lists against
// the published JSON Schema, so the two cannot drift apart.
pub(crate) const ROOT_KEYS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
pub(crate) const METADATA_KEYS: &[&str] = &["name"];
pub(crate) const SPEC_KEYS: &[&str] = &[
    "scope",
    "dataClasses",
    "endpoints",
    "clients",
    "stages",
    "revocations",
    "remediation",
];
pub(crate) const SCOPE_KEYS: &[&str] = &["networks", "ports"];
pub(crate) const DATA_CLASS_KEYS: &[&str] = &[
    "name",
    "encryption",
    "authentication",
    "minTlsVersion",
    "forbiddenCiphers",
];
pub(crate) const ENDPOINT_KEYS: &[&str] =
    &["name", "dataClass", "hosts", "workloads", "ports", "paths"];
pub(crate) const CLIENT_KEYS: &[&str] = &[
    "name",
    "credentials",
    "jwt",
    "certificates",
    "sources",
    "workloads",
];
pub(crate) const WORKLOAD_KEYS: &[&str] = &["namespace", "pod", "container", "exe"];
pub(crate) const CREDENTIAL_KEYS: &[&str] = &["header", "fingerprint", "issuedAt"];
pub(crate) const JWT_KEYS: &[&str] = &["issuer", "subject", "clientId"];
pub(crate) const STAGE_KEYS: &[&str] = &[
    "name",
    "startsAt",
    "credentialMaxAge",
    "rotateOnStageStart",
    "signingKeys",
    "quotas",
];
pub(crate) const QUOTA_KEYS: &[&str] = &["client", "endpoint", "requestsPerSecond", "burst"];
pub(crate) const REVOCATION_KEYS: &[&str] = &[
    "fingerprint",
    "client",
    "certificate",
    "revokedAt",
    "reason",
];
pub(crate) const REMEDIATION_KEYS: &[&str] = &["warnAfter", "breachAfter", "kinds", "dataClasses"];
pub(crate) const WINDOW_KEYS: &[&str] = &["warnAfter", "breachAfter"];

/// Labels rampwatch reports use for "no client" and "no endpoint".
pub(super) const RESERVED_CLIENT_NAMES: &[&str] = &["unknown"];
pub(super) const RESERVED_ENDPOINT_NAMES: &[&str] = &["unlisted"];

/// The decoded parts of a contract; complete only when no diagnostic was
/// recorded.
#[derive(Default)]
pub(crate) struct Decoded {
    pub name: String,
    pub scope: Scope,
    pub data_classes: Vec<Arc<DataClass>>,
    pub endpoints: Vec<Endpoint>,
    pub clients: Vec<Client>,
    pub stages: Vec<Stage>,
    pub revocations: Vec<Revocation>,
    pub remediation: Remediation,
}

pub(crate) fn decode(r: &mut Reader, root: &Node) -> Decoded {
    let mut out = Decoded::default();
    let Some(top) = r.fields(root, "", ROOT_KEYS) else {
        return out;
    };
    expect_literal(r, &top, "apiVersion", API_VERSION);
    expect_literal(r, &top, "kind", KIND);
    if let Some(meta) = r
        .required(&top, "metadata")
        .and_then(|n| r.fields(n, "metadata", METADATA_KEYS))
        && let Some(n) = r.required(&meta, "name")
    {
        out.name = r
            .name(n, &meta.path("name"), &[])
            .map(|s| s.to_string())
            .unwrap_or_default();
    }
    let Some(spec) = r
        .required(&top, "spec")
        .and_then(|n| r.fields(n, "spec", SPEC_KEYS))
    else {
        return out;
    };

    if let Some(n) = spec.get("scope") {
        out.scope = scope(r, n, &spec.path("scope"));
    }

    let path = spec.path("dataClasses");
    let mut class_names = Names::new("data class");
    out.data_classes = r.list_of(spec.get("dataClasses"), &path, |r, n, p| {
        data_class(r, n, p, &mut class_names).map(Arc::new)
    });
    let classes: HashMap<&str, &Arc<DataClass>> =
        out.data_classes.iter().map(|c| (&*c.name, c)).collect();

    let path = spec.path("endpoints");
    let mut endpoint_names = Names::new("endpoint");
    out.endpoints = r.list_of(spec.get("endpoints"), &path, |r, n, p| {
        endpoint(r, n, p, &mut endpoint_names, &class_names, &classes)
    });

    let path = spec.path("clients");
    let mut client_names = Names::new("client");
    let mut seen_fps = HashMap::new();
    let mut seen_jwt = HashMap::new();
    out.clients = r.list_of(spec.get("clients"), &path, |r, n, p| {
        client(r, n, p, &mut client_names, &mut seen_fps, &mut seen_jwt)
    });

    let path = spec.path("stages");
    if r.required(&spec, "stages").is_some() {
        let mut stage_names = Names::new("stage");
        let refs = Refs {
            clients: &client_names,
            endpoints: &endpoint_names,
        };
        let mut previous: Option<(Arc<str>, Nanos)> = None;
        let mut index = 0;
        out.stages = r.list_of(spec.get("stages"), &path, |r, n, p| {
            let s = stage(r, n, p, index, &mut stage_names, &refs, &mut previous)?;
            index += 1;
            Some(s)
        });
        if let Some(n) = spec.get("stages")
            && matches!(&n.kind, Kind::Seq(items) if items.is_empty())
        {
            r.err(&path, n.pos, "a contract needs at least one stage");
        }
    }

    let path = spec.path("revocations");
    out.revocations = r.list_of(spec.get("revocations"), &path, |r, n, p| {
        revocation(r, n, p, &client_names)
    });

    if let Some(n) = spec.get("remediation") {
        out.remediation = remediation(r, n, &spec.path("remediation"), &class_names);
    }
    out
}

fn expect_literal(r: &mut Reader, top: &Fields<'_>, key: &str, want: &str) {
    let Some(n) = r.required(top, key) else {
        return;
    };
    if let Some(text) = r.text(n, key)
        && text != want
    {
        r.err(
            key,
            n.pos,
            format!("must be `{want}`, found {}", shown(text)),
        );
    }
}

/// Names seen so far in one list, to report duplicates; `all` also holds
/// names whose item had other errors, so references to them do not cascade
/// into "does not exist" errors.
pub(super) struct Names {
    what: &'static str,
    all: HashMap<Arc<str>, String>,
}

impl Names {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            all: HashMap::new(),
        }
    }

    pub fn read(
        &mut self,
        r: &mut Reader,
        fields: &Fields<'_>,
        reserved: &[&str],
    ) -> Option<Arc<str>> {
        let node = r.required(fields, "name")?;
        let path = fields.path("name");
        let name = r.name(node, &path, reserved)?;
        if let Some(first) = self.all.get(&name) {
            r.err(
                &path,
                node.pos,
                format!(
                    "duplicate {} name `{name}` (first defined at {first}); names must be unique",
                    self.what
                ),
            );
            return None;
        }
        self.all.insert(name.clone(), fields.path.clone());
        Some(name)
    }

    /// Checks a reference; reports it when it names nothing.
    pub fn reference(&self, r: &mut Reader, node: &Node, path: &str) -> Option<Arc<str>> {
        let text = r.text(node, path)?;
        match self.all.get_key_value(text) {
            Some((name, _)) => Some(name.clone()),
            None => {
                let mut known: Vec<&str> = self.all.keys().map(|k| &**k).collect();
                known.sort_unstable();
                let hint = if known.is_empty() {
                    format!("no {} is defined", self.what)
                } else {
                    format!("defined: {}", known.join(", "))
                };
                r.err(
                    path,
                    node.pos,
                    format!("there is no {} named {} ({hint})", self.what, shown(text)),
                );
                None
            }
        }
    }
}

pub(super) struct Refs<'a> {
    pub clients: &'a Names,
    pub endpoints: &'a Names,
}
