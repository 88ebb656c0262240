//! `rampwatch contract diff OLD NEW`: what a contract change changes, for
//! whom, and whether any term loosens, so a contract change can gate a pull
//! request (exit 1 when one does).
//!
//! Stages, classes, endpoints, clients and revocations are matched by name
//! (revocations by what they name). A stage only one side has is compared
//! with the stage the other side has in force at its start: that is what
//! adding or removing it changes. Every change gets an [`Effect`]; the rules
//! for "loosens" are listed in docs/contract.md#contract-diff.

use serde::Serialize;

use crate::{
    contract::{
        Contract, DataClass, Endpoint, HostPattern, NameGlob, TlsVersion, WorkloadSelector,
        format_duration, path_has_prefix,
    },
    event::Nanos,
    identity::Fingerprint,
};

/// What a change does to the contract's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Allows something the old contract did not (exit 1).
    Loosens,
    /// Allows less than before.
    Tightens,
    /// Neither (a new client, a renamed reason, a widened watch).
    Changes,
}

impl Effect {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Loosens => "loosens",
            Self::Tightens => "tightens",
            Self::Changes => "changes",
        }
    }
}

/// One difference. JSON keys are always present (`null` when they do not
/// apply), so scripts can rely on them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub effect: Effect,
    /// `contract`, `scope`, `class`, `endpoint`, `client`, `stage`,
    /// `quota`, `revocation` or `remediation`.
    pub area: &'static str,
    /// The contract field, as written in the file (`minTlsVersion`).
    pub field: &'static str,
    /// The stage it is about, if any.
    pub stage: Option<String>,
    /// Whom it concerns: a client name.
    pub client: Option<String>,
    pub endpoint: Option<String>,
    /// The class, endpoint, client, revocation target or scope rule.
    pub subject: String,
    /// `null`: absent (not granted, not set).
    pub old: Option<String>,
    pub new: Option<String>,
    /// One sentence for people.
    pub detail: String,
}

impl Change {
    pub(super) fn new(
        effect: Effect,
        area: &'static str,
        field: &'static str,
        subject: &str,
    ) -> Self {
        Self {
            effect,
            area,
            field,
            stage: None,
            client: None,
            endpoint: None,
            subject: subject.to_owned(),
            old: None,
            new: None,
            detail: String::new(),
        }
    }

    pub(super) fn values(mut self, old: Option<String>, new: Option<String>) -> Self {
        self.old = old;
        self.new = new;
        self
    }

    pub(super) fn detail(mut self, detail: String) -> Self {
        self.detail = detail;
        self
    }

    pub(super) fn stage(mut self, stage: &str) -> Self {
        self.stage = Some(stage.to_owned());
        self
    }

    pub(super) fn client(mut self, client: &str) -> Self {
        self.client = Some(client.to_owned());
        self
    }

    pub(super) fn endpoint(mut self, endpoint: &str) -> Self {
        self.endpoint = Some(endpoint.to_owned());
        self
    }
}

/// Every difference from `old` to `new`, in contract order (scope, classes,
/// endpoints, clients, stages, revocations, remediation).
pub fn diff(old: &Contract, new: &Contract) -> Vec<Change> {
    let mut out = Vec::new();
    if old.name() != new.name() {
        out.push(
            Change::new(Effect::Changes, "contract", "metadata.name", new.name())
                .values(Some(old.name().into()), Some(new.name().into()))
                .detail(format!("renamed `{}` → `{}`", old.name(), new.name())),
        );
    }
    watched(old, new, &mut out);
    watched_workloads(old, new, &mut out);
    classes(old, new, &mut out);
    endpoints(old, new, &mut out);
    super::diff_parties::clients(old, new, &mut out);
    super::diff_stages::stages(old, new, &mut out);
    super::diff_parties::revocations(old, new, &mut out);
    remediation(old, new, &mut out);
    out
}

/// `None` is "unlimited" (no maximum age, never escalates): longer than any
/// duration.
pub(super) fn duration_effect(old: Option<Nanos>, new: Option<Nanos>) -> Option<Effect> {
    match (old, new) {
        (Some(a), Some(b)) if a == b => None,
        (None, None) => None,
        (Some(a), Some(b)) if b > a => Some(Effect::Loosens),
        (Some(_), None) => Some(Effect::Loosens),
        _ => Some(Effect::Tightens),
    }
}

pub(super) fn show_duration(d: Option<Nanos>, none: &str) -> String {
    d.map_or_else(|| none.to_owned(), format_duration)
}

fn show_ports(ports: Option<&[u16]>) -> String {
    ports.map_or_else(
        || "any port".to_owned(),
        |p| {
            let list: Vec<String> = p.iter().map(u16::to_string).collect();
            format!("port {}", list.join(","))
        },
    )
}

/// Whether `outer` covers every port of `inner` (`None`: any port).
fn ports_cover(outer: Option<&[u16]>, inner: Option<&[u16]>) -> bool {
    match (outer, inner) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(o), Some(i)) => i.iter().all(|p| o.contains(p)),
    }
}

fn name_covers(outer: &str, inner: &str) -> bool {
    outer == inner || HostPattern::Name(outer.to_owned()).matches_name(inner)
}

/// What the agent watches: scope networks and endpoint addresses (the
/// kernel's rules) and endpoint host names. Anything OLD watches that NEW no
/// longer does is traffic nobody judges any more.
fn watched(old: &Contract, new: &Contract, out: &mut Vec<Change>) {
    let (old_rules, new_rules) = (old.server_rules(), new.server_rules());
    let covered_by = |rules: &[crate::contract::ServerRule], r: &crate::contract::ServerRule| {
        rules
            .iter()
            .any(|n| n.net.contains(&r.net) && ports_cover(n.ports.as_deref(), r.ports.as_deref()))
    };
    for (from, to, effect, verb) in [
        (&old_rules, &new_rules, Effect::Loosens, "no longer watched"),
        (&new_rules, &old_rules, Effect::Tightens, "newly watched"),
    ] {
        for r in from.iter().filter(|r| !covered_by(to, r)) {
            let subject = format!("{} {}", r.net, show_ports(r.ports.as_deref()));
            let (o, n) = match effect {
                Effect::Loosens => (Some(subject.clone()), None),
                _ => (None, Some(subject.clone())),
            };
            out.push(
                Change::new(effect, "scope", "scope.networks", &subject)
                    .values(o, n)
                    .detail(format!("watched scope: {subject} {verb}")),
            );
        }
    }
    let (old_names, new_names) = (old.host_names(), new.host_names());
    for (from, to, effect, verb) in [
        (&old_names, &new_names, Effect::Loosens, "no longer watched"),
        (&new_names, &old_names, Effect::Tightens, "newly watched"),
    ] {
        for r in from.iter().filter(|r| {
            !to.iter().any(|n| {
                name_covers(&n.host, &r.host) && ports_cover(n.ports.as_deref(), r.ports.as_deref())
            })
        }) {
            let subject = format!("{} {}", r.host, show_ports(r.ports.as_deref()));
            let (o, n) = match effect {
                Effect::Loosens => (Some(subject.clone()), None),
                _ => (None, Some(subject.clone())),
            };
            out.push(
                Change::new(effect, "scope", "endpoints.hosts", &subject)
                    .endpoint(&r.endpoint)
                    .values(o, n)
                    .detail(format!("watched scope: host {subject} {verb}")),
            );
        }
    }
}

/// One glob covers another: the same text, no glob at all (any), or a
/// literal name the glob matches. Globs other than these are compared by
/// text, so a rewritten glob shows up as a change rather than going unseen.
fn glob_covers(outer: Option<&NameGlob>, inner: Option<&NameGlob>) -> bool {
    match (outer, inner) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(o), Some(i)) => {
            o.as_str() == i.as_str()
                || (!i.as_str().contains(['*', '?', '[']) && o.matches(i.as_str()))
        }
    }
}

fn selector_covers(outer: &WorkloadSelector, inner: &WorkloadSelector) -> bool {
    glob_covers(outer.namespace.as_ref(), inner.namespace.as_ref())
        && glob_covers(outer.pod.as_ref(), inner.pod.as_ref())
        && glob_covers(outer.container.as_ref(), inner.container.as_ref())
        && glob_covers(outer.exe.as_ref(), inner.exe.as_ref())
}

fn show_selector(s: &WorkloadSelector) -> String {
    let fields = [
        ("namespace", &s.namespace),
        ("pod", &s.pod),
        ("container", &s.container),
        ("exe", &s.exe),
    ];
    let shown: Vec<String> = fields
        .iter()
        .filter_map(|(k, g)| g.as_ref().map(|g| format!("{k}={}", g.as_str())))
        .collect();
    format!("workload {}", shown.join(","))
}

/// The sockets endpoints served by workloads make the kernel watch: every
/// (selector, ports) of every endpoint. One OLD watches that no NEW one
/// covers is traffic nobody judges any more (loosens), and the reverse is
/// newly watched.
fn watched_workloads(old: &Contract, new: &Contract, out: &mut Vec<Change>) {
    type Served<'a> = Vec<(&'a str, &'a WorkloadSelector, Option<&'a [u16]>)>;
    fn served(c: &Contract) -> Served<'_> {
        c.endpoints()
            .iter()
            .flat_map(|e| {
                e.workloads
                    .iter()
                    .map(move |s| (&*e.name, s, e.ports.as_deref()))
            })
            .collect()
    }
    let (o, n) = (served(old), served(new));
    for (from, to, effect, verb) in [
        (&o, &n, Effect::Loosens, "no longer watched"),
        (&n, &o, Effect::Tightens, "newly watched"),
    ] {
        for (endpoint, sel, ports) in from.iter().filter(|(_, sel, ports)| {
            !to.iter()
                .any(|(_, s, p)| selector_covers(s, sel) && ports_cover(*p, *ports))
        }) {
            let subject = format!("{} {}", show_selector(sel), show_ports(*ports));
            let (ov, nv) = match effect {
                Effect::Loosens => (Some(subject.clone()), None),
                _ => (None, Some(subject.clone())),
            };
            out.push(
                Change::new(effect, "scope", "endpoints.workloads", &subject)
                    .endpoint(endpoint)
                    .values(ov, nv)
                    .detail(format!(
                        "watched scope: endpoint {endpoint} served by {subject} {verb}"
                    )),
            );
        }
    }
}

/// One term of a data class that differs.
struct Term {
    effect: Effect,
    field: &'static str,
    old: Option<String>,
    new: Option<String>,
    what: String,
}

fn show_tls(v: Option<TlsVersion>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| v.as_str().to_owned())
}

/// How `new`'s requirements differ from `old`'s.
fn class_terms(old: &DataClass, new: &DataClass) -> Vec<Term> {
    let mut terms = Vec::new();
    for (field, a, b) in [
        ("encryption", old.encryption, new.encryption),
        ("authentication", old.authentication, new.authentication),
    ] {
        if a != b {
            terms.push(Term {
                effect: if a.is_required() {
                    Effect::Loosens
                } else {
                    Effect::Tightens
                },
                field,
                old: Some(a.as_str().into()),
                new: Some(b.as_str().into()),
                what: format!("{field} {} → {}", a.as_str(), b.as_str()),
            });
        }
    }
    let (a, b) = (old.min_tls_version, new.min_tls_version);
    if a != b {
        // No minimum is lower than any minimum.
        let lowered = match (a, b) {
            (Some(a), Some(b)) => b < a,
            (Some(_), None) => true,
            _ => false,
        };
        terms.push(Term {
            effect: if lowered {
                Effect::Loosens
            } else {
                Effect::Tightens
            },
            field: "minTlsVersion",
            old: a.map(|v| v.as_str().into()),
            new: b.map(|v| v.as_str().into()),
            what: format!("minTlsVersion {} → {}", show_tls(a), show_tls(b)),
        });
    }
    let has = |list: &[crate::contract::CipherGlob], g: &str| {
        list.iter().any(|x| x.as_str().eq_ignore_ascii_case(g))
    };
    for g in &old.forbidden_ciphers {
        if !has(&new.forbidden_ciphers, g.as_str()) {
            terms.push(Term {
                effect: Effect::Loosens,
                field: "forbiddenCiphers",
                old: Some(g.as_str().into()),
                new: None,
                what: format!("forbidden cipher {} removed", g.as_str()),
            });
        }
    }
    for g in &new.forbidden_ciphers {
        if !has(&old.forbidden_ciphers, g.as_str()) {
            terms.push(Term {
                effect: Effect::Tightens,
                field: "forbiddenCiphers",
                old: None,
                new: Some(g.as_str().into()),
                what: format!("forbidden cipher {} added", g.as_str()),
            });
        }
    }
    terms
}

fn classes(old: &Contract, new: &Contract, out: &mut Vec<Change>) {
    for o in old.data_classes() {
        let Some(n) = new.data_class(&o.name) else {
            out.push(
                Change::new(Effect::Changes, "class", "dataClasses", &o.name)
                    .values(Some(o.name.to_string()), None)
                    .detail(format!("class {} removed", o.name)),
            );
            continue;
        };
        for t in class_terms(o, n) {
            out.push(
                Change::new(t.effect, "class", t.field, &o.name)
                    .values(t.old, t.new)
                    .detail(format!("class {}: {}", o.name, t.what)),
            );
        }
    }
    for n in new.data_classes() {
        if old.data_class(&n.name).is_none() {
            out.push(
                Change::new(Effect::Changes, "class", "dataClasses", &n.name)
                    .values(None, Some(n.name.to_string()))
                    .detail(format!("class {} added", n.name)),
            );
        }
    }
}

/// Path prefixes `new` lists that none of `old` covers (`old` empty: any
/// path, so nothing is gained).
fn paths_gained(old: &[String], new: &[String]) -> Vec<String> {
    if old.is_empty() {
        return Vec::new();
    }
    if new.is_empty() {
        return vec!["any path".into()];
    }
    new.iter()
        .filter(|p| !old.iter().any(|q| path_has_prefix(p, q)))
        .cloned()
        .collect()
}

fn hosts_gained(old: &[HostPattern], new: &[HostPattern]) -> Vec<String> {
    new.iter()
        .filter(|h| {
            !old.iter().any(|o| match (o, h) {
                (HostPattern::Name(o), HostPattern::Name(h)) => name_covers(o, h),
                (HostPattern::Net(o), HostPattern::Net(h)) => o.contains(h),
                _ => false,
            })
        })
        .map(ToString::to_string)
        .collect()
}

fn ports_gained(old: Option<&[u16]>, new: Option<&[u16]>) -> Vec<String> {
    match (old, new) {
        (None, _) => Vec::new(),
        (Some(_), None) => vec!["any port".into()],
        (Some(o), Some(n)) => n
            .iter()
            .filter(|p| !o.contains(p))
            .map(u16::to_string)
            .collect(),
    }
}

/// What an endpoint covers, one coverage field at a time: more coverage
/// means requests that were `unlisted_endpoint` now pass.
fn coverage(name: &str, o: &Endpoint, n: &Endpoint, out: &mut Vec<Change>) {
    let fields: [(&'static str, Vec<String>, Vec<String>); 3] = [
        (
            "paths",
            paths_gained(&o.paths, &n.paths),
            paths_gained(&n.paths, &o.paths),
        ),
        (
            "hosts",
            hosts_gained(&o.hosts, &n.hosts),
            hosts_gained(&n.hosts, &o.hosts),
        ),
        (
            "ports",
            ports_gained(o.ports.as_deref(), n.ports.as_deref()),
            ports_gained(n.ports.as_deref(), o.ports.as_deref()),
        ),
    ];
    for (field, gained, lost) in fields {
        for (effect, list, verb) in [
            (Effect::Loosens, gained, "widened"),
            (Effect::Tightens, lost, "narrowed"),
        ] {
            if list.is_empty() {
                continue;
            }
            let list = list.join(", ");
            let (old_v, new_v) = match effect {
                Effect::Loosens => (None, Some(list.clone())),
                _ => (Some(list.clone()), None),
            };
            out.push(
                Change::new(effect, "endpoint", field, name)
                    .endpoint(name)
                    .values(old_v, new_v)
                    .detail(format!("endpoint {name}: {field} {verb} ({list})")),
            );
        }
    }
}

fn endpoints(old: &Contract, new: &Contract, out: &mut Vec<Change>) {
    for o in old.endpoints() {
        let name = &*o.name;
        let Some(n) = new.endpoint(name) else {
            out.push(
                Change::new(Effect::Tightens, "endpoint", "endpoints", name)
                    .endpoint(name)
                    .values(Some(name.into()), None)
                    .detail(format!(
                        "endpoint {name} removed: its traffic is unlisted from now on"
                    )),
            );
            continue;
        };
        if o.data_class.name != n.data_class.name {
            let terms = class_terms(&o.data_class, &n.data_class);
            let effect = terms
                .iter()
                .map(|t| t.effect)
                .min()
                .unwrap_or(Effect::Changes);
            let what: Vec<String> = terms.into_iter().map(|t| t.what).collect();
            let what = if what.is_empty() {
                "same requirements".to_owned()
            } else {
                what.join(", ")
            };
            out.push(
                Change::new(effect, "endpoint", "dataClass", name)
                    .endpoint(name)
                    .values(
                        Some(o.data_class.name.to_string()),
                        Some(n.data_class.name.to_string()),
                    )
                    .detail(format!(
                        "endpoint {name}: class {} → {} ({what})",
                        o.data_class.name, n.data_class.name
                    )),
            );
        }
        coverage(name, o, n, out);
    }
    for n in new.endpoints() {
        if old.endpoint(&n.name).is_none() {
            out.push(
                Change::new(Effect::Changes, "endpoint", "endpoints", &n.name)
                    .endpoint(&n.name)
                    .values(None, Some(n.name.to_string()))
                    .detail(format!(
                        "endpoint {} added (class {})",
                        n.name, n.data_class.name
                    )),
            );
        }
    }
}

fn remediation(old: &Contract, new: &Contract, out: &mut Vec<Change>) {
    let (a, b) = (old.remediation(), new.remediation());
    for (field, x, y) in [
        ("warnAfter", a.warn_after, b.warn_after),
        ("breachAfter", a.breach_after, b.breach_after),
    ] {
        if let Some(effect) = duration_effect(x, y) {
            out.push(
                Change::new(effect, "remediation", field, "remediation")
                    .values(x.map(format_duration), y.map(format_duration))
                    .detail(format!(
                        "remediation {field} {} → {}",
                        show_duration(x, "never"),
                        show_duration(y, "never")
                    )),
            );
        }
    }
}

/// A fingerprint as shown in a diff (short, never a credential).
pub(super) fn show_fp(fp: &Fingerprint) -> String {
    fp.short()
}
