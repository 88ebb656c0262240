//! Walks the YAML tree into the validated model, collecting every problem.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use super::{
    model::{
        CipherGlob, Client, Credential, DataClass, Endpoint, HostPattern, Quota, QuotaRule,
        Remediation, Requirement, Revocation, RevocationTarget, Scope, Stage, TlsVersion,
    },
    reader::{Fields, Reader, parse_net, shown},
    timefmt::{format_duration, format_rfc3339},
    yaml::Node,
};
use crate::{event::Nanos, identity::Fingerprint};

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
pub(crate) const ENDPOINT_KEYS: &[&str] = &["name", "dataClass", "hosts", "ports", "paths"];
pub(crate) const CLIENT_KEYS: &[&str] = &["name", "credentials", "certificates", "sources"];
pub(crate) const CREDENTIAL_KEYS: &[&str] = &["header", "fingerprint", "issuedAt"];
pub(crate) const STAGE_KEYS: &[&str] = &["name", "startsAt", "credentialMaxAge", "quotas"];
pub(crate) const QUOTA_KEYS: &[&str] = &["client", "endpoint", "requestsPerSecond", "burst"];
pub(crate) const REVOCATION_KEYS: &[&str] = &[
    "fingerprint",
    "client",
    "certificate",
    "revokedAt",
    "reason",
];
pub(crate) const REMEDIATION_KEYS: &[&str] = &["warnAfter", "breachAfter"];

/// Labels rampwatch reports use for "no client" and "no endpoint".
const RESERVED_CLIENT_NAMES: &[&str] = &["unknown"];
const RESERVED_ENDPOINT_NAMES: &[&str] = &["unlisted"];

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
    out.clients = r.list_of(spec.get("clients"), &path, |r, n, p| {
        client(r, n, p, &mut client_names, &mut seen_fps)
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
            && matches!(&n.kind, super::yaml::Kind::Seq(items) if items.is_empty())
        {
            r.err(&path, n.pos, "a contract needs at least one stage");
        }
    }

    let path = spec.path("revocations");
    out.revocations = r.list_of(spec.get("revocations"), &path, |r, n, p| {
        revocation(r, n, p, &client_names)
    });

    if let Some(n) = spec.get("remediation") {
        out.remediation = remediation(r, n, &spec.path("remediation"));
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
struct Names {
    what: &'static str,
    all: HashMap<Arc<str>, String>,
}

impl Names {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            all: HashMap::new(),
        }
    }

    fn read(&mut self, r: &mut Reader, fields: &Fields<'_>, reserved: &[&str]) -> Option<Arc<str>> {
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
    fn reference(&self, r: &mut Reader, node: &Node, path: &str) -> Option<Arc<str>> {
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

struct Refs<'a> {
    clients: &'a Names,
    endpoints: &'a Names,
}

fn scope(r: &mut Reader, node: &Node, path: &str) -> Scope {
    let Some(f) = r.fields(node, path, SCOPE_KEYS) else {
        return Scope::default();
    };
    Scope {
        networks: r.list_of(f.get("networks"), &f.path("networks"), |r, n, p| {
            r.network(n, p)
        }),
        ports: r.ports(f.get("ports"), &f.path("ports")),
    }
}

fn requirement(r: &mut Reader, node: &Node, path: &str) -> Option<Requirement> {
    match r.text(node, path)? {
        "required" => Some(Requirement::Required),
        "optional" => Some(Requirement::Optional),
        other => {
            r.err(
                path,
                node.pos,
                format!(
                    "{} is not allowed; write `required` or `optional`",
                    shown(other)
                ),
            );
            None
        }
    }
}

fn data_class(r: &mut Reader, node: &Node, path: &str, names: &mut Names) -> Option<DataClass> {
    let f = r.fields(node, path, DATA_CLASS_KEYS)?;
    let name = names.read(r, &f, &[]);
    let encryption = r
        .required(&f, "encryption")
        .and_then(|n| requirement(r, n, &f.path("encryption")));
    let authentication = match f.get("authentication") {
        Some(n) => requirement(r, n, &f.path("authentication")),
        None => Some(Requirement::Required),
    };
    let min_tls_version = match f.get("minTlsVersion") {
        Some(n) => tls_version(r, n, &f.path("minTlsVersion")).map(Some),
        None => Some(None),
    };
    let forbidden_ciphers = r.list_of(
        f.get("forbiddenCiphers"),
        &f.path("forbiddenCiphers"),
        |r, n, p| {
            let text = r.text(n, p)?;
            match glob::Pattern::new(text) {
                Ok(pattern) => Some(CipherGlob {
                    text: text.to_owned(),
                    pattern,
                }),
                Err(e) => {
                    r.err(
                        p,
                        n.pos,
                        format!("{} is not a valid glob: {}", shown(text), e.msg),
                    );
                    None
                }
            }
        },
    );
    Some(DataClass {
        name: name?,
        encryption: encryption?,
        authentication: authentication?,
        min_tls_version: min_tls_version?,
        forbidden_ciphers,
    })
}

fn tls_version(r: &mut Reader, node: &Node, path: &str) -> Option<TlsVersion> {
    let text = r.text(node, path)?;
    let v = TlsVersion::from_contract(text);
    if v.is_none() {
        r.err(
            path,
            node.pos,
            format!(
                "{} is not a TLS version; write \"1.0\", \"1.1\", \"1.2\" or \"1.3\"",
                shown(text)
            ),
        );
    }
    v
}

fn endpoint(
    r: &mut Reader,
    node: &Node,
    path: &str,
    names: &mut Names,
    class_names: &Names,
    classes: &HashMap<&str, &Arc<DataClass>>,
) -> Option<Endpoint> {
    let f = r.fields(node, path, ENDPOINT_KEYS)?;
    let name = names.read(r, &f, RESERVED_ENDPOINT_NAMES);
    let class = r
        .required(&f, "dataClass")
        .and_then(|n| class_names.reference(r, n, &f.path("dataClass")))
        .and_then(|c| classes.get(&*c).map(|c| Arc::clone(c)));
    let hosts_node = r.required(&f, "hosts");
    let hosts_path = f.path("hosts");
    let hosts = r.list_of(hosts_node, &hosts_path, host);
    if let Some(n) = hosts_node
        && matches!(&n.kind, super::yaml::Kind::Seq(items) if items.is_empty())
    {
        r.err(
            &hosts_path,
            n.pos,
            "an endpoint needs at least one host name, IP address or CIDR",
        );
    }
    let ports = r.ports(f.get("ports"), &f.path("ports"));
    let paths = r.list_of(f.get("paths"), &f.path("paths"), |r, n, p| {
        let text = r.text(n, p)?;
        if !text.starts_with('/') {
            r.err(
                p,
                n.pos,
                format!("{} is not a path prefix; paths start with '/'", shown(text)),
            );
            return None;
        }
        Some(text.to_owned())
    });
    Some(Endpoint {
        name: name?,
        data_class: class?,
        hosts,
        ports,
        paths,
    })
}

fn host(r: &mut Reader, node: &Node, path: &str) -> Option<HostPattern> {
    let text = r.text(node, path)?;
    if let Some(net) = parse_net(text) {
        return Some(HostPattern::Net(net));
    }
    let looks_numeric = text.contains('/')
        || text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || text.contains("::");
    if looks_numeric {
        r.err(
            path,
            node.pos,
            format!("{} is not a valid IP address or CIDR", shown(text)),
        );
        return None;
    }
    if text.contains(':') {
        r.err(
            path,
            node.pos,
            format!(
                "{} carries a port; list host names or addresses here and ports under `ports`",
                shown(text)
            ),
        );
        return None;
    }
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    let labels = name.strip_prefix("*.").unwrap_or(&name);
    let valid = !labels.is_empty()
        && name.len() <= 253
        && labels.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        r.err(
            path,
            node.pos,
            format!(
                "{} is not a host name, IP address or CIDR (names may start with \"*.\" to match subdomains)",
                shown(text)
            ),
        );
        return None;
    }
    Some(HostPattern::Name(name))
}

fn client(
    r: &mut Reader,
    node: &Node,
    path: &str,
    names: &mut Names,
    seen: &mut HashMap<Fingerprint, String>,
) -> Option<Client> {
    let f = r.fields(node, path, CLIENT_KEYS)?;
    let name = names.read(r, &f, RESERVED_CLIENT_NAMES);
    let mut unique = |r: &mut Reader, fp: Fingerprint, n: &Node, p: &str| {
        if let Some(first) = seen.get(&fp) {
            r.err(
                p,
                n.pos,
                format!(
                    "fingerprint {} is already listed at {first}; one secret identifies one client",
                    fp.short()
                ),
            );
            None
        } else {
            seen.insert(fp, p.to_owned());
            Some(fp)
        }
    };
    let credentials = r.list_of(f.get("credentials"), &f.path("credentials"), |r, n, p| {
        let cf = r.fields(n, p, CREDENTIAL_KEYS)?;
        let header = match cf.get("header") {
            Some(h) => header_name(r, h, &cf.path("header")),
            None => Some("authorization".to_owned()),
        };
        let fp_path = cf.path("fingerprint");
        let fingerprint = r.required(&cf, "fingerprint").and_then(|fnode| {
            let fp = r.fingerprint(fnode, &fp_path)?;
            unique(r, fp, fnode, &fp_path)
        });
        let issued_at = r
            .required(&cf, "issuedAt")
            .and_then(|n| r.time(n, &cf.path("issuedAt")));
        Some(Credential {
            header: header?,
            fingerprint: fingerprint?,
            issued_at: issued_at?,
        })
    });
    let certificates = r.list_of(f.get("certificates"), &f.path("certificates"), |r, n, p| {
        let fp = r.fingerprint(n, p)?;
        unique(r, fp, n, p)
    });
    let sources = r.list_of(f.get("sources"), &f.path("sources"), |r, n, p| {
        r.network(n, p)
    });
    let listed = ["credentials", "certificates", "sources"]
        .iter()
        .any(|k| f.get(k).is_some());
    if !listed {
        r.err(
            &f.path,
            f.pos,
            "this client lists no credentials, certificates or sources, so no traffic can be attributed to it; add at least one",
        );
    }
    Some(Client {
        name: name?,
        credentials,
        certificates,
        sources,
    })
}

fn header_name(r: &mut Reader, node: &Node, path: &str) -> Option<String> {
    let text = r.text(node, path)?;
    let valid = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b));
    if !valid {
        r.err(
            path,
            node.pos,
            format!("{} is not an HTTP header name", shown(text)),
        );
        return None;
    }
    Some(text.to_ascii_lowercase())
}

fn stage(
    r: &mut Reader,
    node: &Node,
    path: &str,
    index: usize,
    names: &mut Names,
    refs: &Refs<'_>,
    previous: &mut Option<(Arc<str>, Nanos)>,
) -> Option<Stage> {
    let f = r.fields(node, path, STAGE_KEYS)?;
    let name = names.read(r, &f, &[]);
    let starts_path = f.path("startsAt");
    let starts_at = r.required(&f, "startsAt").and_then(|n| {
        let t = r.time(n, &starts_path)?;
        if let Some((prev_name, prev_t)) = previous.as_ref() {
            if t == *prev_t {
                r.err(
                    &starts_path,
                    n.pos,
                    format!("starts at the same time as stage `{prev_name}` ({}); stages need distinct start times", format_rfc3339(t)),
                );
            } else if t < *prev_t {
                r.err(
                    &starts_path,
                    n.pos,
                    format!(
                        "starts before the previous stage `{prev_name}` ({}); list stages in the order they start",
                        format_rfc3339(*prev_t)
                    ),
                );
            }
        }
        *previous = Some((name.clone().unwrap_or_else(|| Arc::from("?")), t));
        Some(t)
    });
    let credential_max_age = match f.get("credentialMaxAge") {
        Some(n) => r.duration(n, &f.path("credentialMaxAge")).map(Some),
        None => Some(None),
    };
    if let Some(Some(age)) = credential_max_age
        && age == 0
        && let Some(n) = f.get("credentialMaxAge")
    {
        r.err(
            &f.path("credentialMaxAge"),
            n.pos,
            format!("a maximum age of {} makes every credential stale; leave the field out for no limit", format_duration(age)),
        );
    }
    let mut seen: HashSet<(Arc<str>, Arc<str>)> = HashSet::new();
    let quotas = r.list_of(f.get("quotas"), &f.path("quotas"), |r, n, p| {
        let q = quota(r, n, p, refs)?;
        if !seen.insert((q.client.clone(), q.endpoint.clone())) {
            r.err(
                p,
                n.pos,
                format!(
                    "a second quota for client `{}` on endpoint `{}` in this stage; keep one",
                    q.client, q.endpoint
                ),
            );
            return None;
        }
        Some(q)
    });
    Some(Stage {
        name: name?,
        index,
        starts_at: starts_at?,
        credential_max_age: credential_max_age?,
        quotas,
    })
}

fn quota(r: &mut Reader, node: &Node, path: &str, refs: &Refs<'_>) -> Option<QuotaRule> {
    let f = r.fields(node, path, QUOTA_KEYS)?;
    let client = r
        .required(&f, "client")
        .and_then(|n| refs.clients.reference(r, n, &f.path("client")));
    let endpoint = r
        .required(&f, "endpoint")
        .and_then(|n| refs.endpoints.reference(r, n, &f.path("endpoint")));
    let rps = r
        .required(&f, "requestsPerSecond")
        .and_then(|n| r.non_negative_f64(n, &f.path("requestsPerSecond")));
    let burst = match f.get("burst") {
        Some(n) => r.non_negative_u64(n, &f.path("burst")).map(Some),
        None => Some(None),
    };
    let (rps, burst) = (rps?, burst?);
    // Without an explicit burst, allow one second's worth (at least one).
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "rps is finite and non-negative; the saturating cast caps absurd values"
    )]
    let burst = burst.unwrap_or_else(|| rps.ceil().max(1.0) as u64);
    Some(QuotaRule {
        client: client?,
        endpoint: endpoint?,
        quota: Quota { rps, burst },
    })
}

fn revocation(r: &mut Reader, node: &Node, path: &str, clients: &Names) -> Option<Revocation> {
    let f = r.fields(node, path, REVOCATION_KEYS)?;
    let given: Vec<&str> = ["fingerprint", "client", "certificate"]
        .into_iter()
        .filter(|k| f.get(k).is_some())
        .collect();
    let target = match given.as_slice() {
        ["fingerprint"] => f
            .get("fingerprint")
            .and_then(|n| r.fingerprint(n, &f.path("fingerprint")))
            .map(RevocationTarget::Credential),
        ["certificate"] => f
            .get("certificate")
            .and_then(|n| r.fingerprint(n, &f.path("certificate")))
            .map(RevocationTarget::Certificate),
        ["client"] => f
            .get("client")
            .and_then(|n| clients.reference(r, n, &f.path("client")))
            .map(RevocationTarget::Client),
        _ => {
            r.err(
                path,
                f.pos,
                format!(
                    "a revocation names exactly one of `fingerprint`, `client` or `certificate`; this one names {}",
                    if given.is_empty() { "none".to_owned() } else { given.join(" and ") }
                ),
            );
            None
        }
    };
    let revoked_at = r
        .required(&f, "revokedAt")
        .and_then(|n| r.time(n, &f.path("revokedAt")));
    let reason = match f.get("reason") {
        Some(n) => r.text(n, &f.path("reason")).map(|t| Some(t.to_owned())),
        None => Some(None),
    };
    Some(Revocation {
        target: target?,
        revoked_at: revoked_at?,
        reason: reason?,
    })
}

fn remediation(r: &mut Reader, node: &Node, path: &str) -> Remediation {
    let Some(f) = r.fields(node, path, REMEDIATION_KEYS) else {
        return Remediation::default();
    };
    let warn_after = f
        .get("warnAfter")
        .and_then(|n| r.duration(n, &f.path("warnAfter")));
    let breach_after = f
        .get("breachAfter")
        .and_then(|n| r.duration(n, &f.path("breachAfter")));
    if let (Some(w), Some(b), Some(n)) = (warn_after, breach_after, f.get("breachAfter"))
        && b < w
    {
        r.err(
            &f.path("breachAfter"),
            n.pos,
            format!(
                "breachAfter ({}) is shorter than warnAfter ({}); a violation warns before it breaches",
                format_duration(b),
                format_duration(w)
            ),
        );
    }
    Remediation {
        warn_after,
        breach_after,
    }
}
