//! `clients`, `stages`, `revocations` and `remediation`: who calls, and
//! how much they may.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use super::{
    super::{
        model::{
            Client, Credential, JwtClaim, JwtMatch, NameGlob, Quota, QuotaRule, Remediation,
            Revocation, RevocationTarget, Stage, Window, WorkloadSelector,
        },
        reader::{Fields, Reader, join, shown},
        timefmt::{format_duration, format_rfc3339},
        yaml::{Kind, Node},
    },
    CLIENT_KEYS, CREDENTIAL_KEYS, JWT_KEYS, Names, QUOTA_KEYS, REMEDIATION_KEYS,
    RESERVED_CLIENT_NAMES, REVOCATION_KEYS, Refs, STAGE_KEYS, WINDOW_KEYS, WORKLOAD_KEYS,
};
use crate::{
    event::Nanos,
    identity::{
        Fingerprint, Fp,
        token::{self, MAX_CLAIM, MAX_KID},
    },
};

pub(super) fn client(
    r: &mut Reader,
    node: &Node,
    path: &str,
    names: &mut Names,
    seen: &mut HashMap<Fingerprint, String>,
    seen_jwt: &mut HashMap<Fp, String>,
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
    let jwt = r.list_of(f.get("jwt"), &f.path("jwt"), |r, n, p| {
        let m = jwt_match(r, n, p)?;
        let key = match &m.claim {
            JwtClaim::Subject(s) => token::subject_key(&m.issuer, s),
            JwtClaim::ClientId(c) => token::client_key(&m.issuer, c),
        };
        if let Some(first) = seen_jwt.get(&key) {
            r.err(
                p,
                n.pos,
                format!("the same issuer and claim are already listed at {first}; one token subject identifies one client"),
            );
            return None;
        }
        seen_jwt.insert(key, p.to_owned());
        Some(m)
    });
    let certificates = r.list_of(f.get("certificates"), &f.path("certificates"), |r, n, p| {
        let fp = r.fingerprint(n, p)?;
        unique(r, fp, n, p)
    });
    let sources = r.list_of(f.get("sources"), &f.path("sources"), |r, n, p| {
        r.network(n, p)
    });
    let workloads = r.list_of(f.get("workloads"), &f.path("workloads"), workload_selector);
    let listed = ["credentials", "jwt", "certificates", "sources", "workloads"]
        .iter()
        .any(|k| f.get(k).is_some());
    if !listed {
        r.err(
            &f.path,
            f.pos,
            "this client lists no credentials, jwt, certificates, sources or workloads, so no traffic can be attributed to it; add at least one",
        );
    }
    Some(Client {
        name: name?,
        credentials,
        jwt,
        certificates,
        sources,
        workloads,
    })
}

/// `{issuer, subject}` or `{issuer, clientId}`.
fn jwt_match(r: &mut Reader, node: &Node, path: &str) -> Option<JwtMatch> {
    let f = r.fields(node, path, JWT_KEYS)?;
    let issuer = r
        .required(&f, "issuer")
        .and_then(|n| claim_text(r, n, &f.path("issuer")));
    let claim = match (f.get("subject"), f.get("clientId")) {
        (Some(n), None) => claim_text(r, n, &f.path("subject")).map(JwtClaim::Subject),
        (None, Some(n)) => claim_text(r, n, &f.path("clientId")).map(JwtClaim::ClientId),
        (given_sub, _) => {
            r.err(
                path,
                f.pos,
                if given_sub.is_some() {
                    "a jwt entry names one of `subject` or `clientId`, not both; list two entries to accept either"
                } else {
                    "a jwt entry needs `subject` (matched against `sub`) or `clientId` (matched against `client_id`, else `azp`)"
                },
            );
            None
        }
    };
    Some(JwtMatch {
        issuer: issuer?,
        claim: claim?,
    })
}

/// A claim value the contract matches exactly: non-empty, at most
/// [`MAX_CLAIM`] bytes (what the token reader keeps).
fn claim_text(r: &mut Reader, node: &Node, path: &str) -> Option<String> {
    let text = r.text(node, path)?;
    if text.is_empty() || text.len() > MAX_CLAIM {
        r.err(
            path,
            node.pos,
            format!(
                "a claim value is 1 to {MAX_CLAIM} bytes, matched exactly; {} is {} bytes",
                shown(text),
                text.len()
            ),
        );
        return None;
    }
    Some(text.to_owned())
}

/// A `workloads[]` entry: at least one of `namespace`, `pod`, `container`,
/// `exe`, each a glob.
pub(super) fn workload_selector(
    r: &mut Reader,
    node: &Node,
    path: &str,
) -> Option<WorkloadSelector> {
    let f = r.fields(node, path, WORKLOAD_KEYS)?;
    let mut ok = true;
    let mut glob = |r: &mut Reader, key: &str| -> Option<NameGlob> {
        let n = f.get(key)?;
        let p = f.path(key);
        // A field that fails must fail the selector: dropping it would widen
        // the match.
        let Some(text) = r.text(n, &p) else {
            ok = false;
            return None;
        };
        if text.is_empty() {
            r.err(
                &p,
                n.pos,
                "an empty pattern matches nothing; leave the field out to match any",
            );
            ok = false;
            return None;
        }
        match NameGlob::new(text) {
            Ok(g) => Some(g),
            Err(e) => {
                r.err(
                    &p,
                    n.pos,
                    format!(
                        "{} is not a glob pattern ({}); use `*`, `?` and `[...]`",
                        shown(text),
                        e.msg
                    ),
                );
                ok = false;
                None
            }
        }
    };
    let sel = WorkloadSelector {
        namespace: glob(r, "namespace"),
        pod: glob(r, "pod"),
        container: glob(r, "container"),
        exe: glob(r, "exe"),
    };
    if WORKLOAD_KEYS.iter().all(|k| f.get(k).is_none()) {
        r.err(
            path,
            f.pos,
            "a workload selector names none of `namespace`, `pod`, `container` or `exe`, so it would match every local process; name at least one",
        );
        return None;
    }
    if sel
        .exe
        .as_ref()
        .is_some_and(|g| !g.as_str().starts_with('/'))
    {
        if let Some(n) = f.get("exe") {
            r.err(
                &f.path("exe"),
                n.pos,
                "`exe` is the executable's absolute path as the process sees it (`/usr/bin/curl`, `/app/*`); start it with `/`",
            );
        }
        return None;
    }
    ok.then_some(sel)
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

pub(super) fn stage(
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
    let rotate_on_stage_start = match f.get("rotateOnStageStart") {
        Some(n) => r.boolean(n, &f.path("rotateOnStageStart")),
        None => Some(false),
    };
    let signing_keys = signing_keys(r, f.get("signingKeys"), &f.path("signingKeys"));
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
        rotate_on_stage_start: rotate_on_stage_start?,
        signing_keys: signing_keys?,
        quotas,
    })
}

/// `signingKeys`: distinct key ids of at most [`MAX_KID`] bytes; given, at
/// least one (an empty list would reject every token).
fn signing_keys(r: &mut Reader, node: Option<&Node>, path: &str) -> Option<Vec<String>> {
    let Some(node) = node else {
        return Some(Vec::new());
    };
    let before = r.diags.len();
    let mut seen: HashSet<String> = HashSet::new();
    let keys = r.list_of(Some(node), path, |r, n, p| {
        let kid = r.text(n, p)?;
        if kid.is_empty() || kid.len() > MAX_KID {
            r.err(
                p,
                n.pos,
                format!(
                    "a key id is 1 to {MAX_KID} bytes; {} is {}",
                    shown(kid),
                    kid.len()
                ),
            );
            return None;
        }
        if !seen.insert(kid.to_owned()) {
            r.err(
                p,
                n.pos,
                format!("key id {} is listed twice; keep one", shown(kid)),
            );
            return None;
        }
        Some(kid.to_owned())
    });
    if keys.is_empty() && r.diags.len() == before {
        r.err(
            path,
            node.pos,
            "an empty signingKeys list rejects every token; list the key ids in use, or leave the field out to accept any",
        );
    }
    (r.diags.len() == before).then_some(keys)
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

pub(super) fn revocation(
    r: &mut Reader,
    node: &Node,
    path: &str,
    clients: &Names,
) -> Option<Revocation> {
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

pub(super) fn remediation(r: &mut Reader, node: &Node, path: &str, classes: &Names) -> Remediation {
    let Some(f) = r.fields(node, path, REMEDIATION_KEYS) else {
        return Remediation::default();
    };
    let global = window_bounds(r, &f);
    let mut kinds = Vec::new();
    if let Some(n) = f.get("kinds") {
        let names: Vec<&'static str> = crate::policy::Kind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect();
        let kpath = f.path("kinds");
        if let Some(kf) = r.fields(n, &kpath, &names) {
            for name in &names {
                if let Some(w) = kf.get(name).and_then(|n| window(r, n, &kf.path(name))) {
                    kinds.push(((*name).to_owned(), w));
                }
            }
        }
    }
    let mut data_classes = Vec::new();
    if let Some(n) = f.get("dataClasses") {
        let cpath = f.path("dataClasses");
        match &n.kind {
            Kind::Map(entries) => {
                for (key, value) in entries {
                    let Some(name) = r.text(key, &cpath) else {
                        continue;
                    };
                    let p = join(&cpath, name);
                    let Some(class) = classes.reference(r, key, &p) else {
                        continue;
                    };
                    if data_classes.iter().any(|(c, _)| *c == class) {
                        r.err(
                            &p,
                            key.pos,
                            format!("data class `{class}` is given twice; keep one"),
                        );
                        continue;
                    }
                    if let Some(w) = window(r, value, &p) {
                        data_classes.push((class, w));
                    }
                }
            }
            _ => r.err(
                &cpath,
                n.pos,
                format!(
                    "expected a mapping of data class names to windows, found {}",
                    n.describe()
                ),
            ),
        }
    }
    Remediation {
        warn_after: global.warn_after,
        breach_after: global.breach_after,
        kinds,
        data_classes,
    }
}

/// A `{warnAfter, breachAfter}` window of `kinds` or `dataClasses`: at
/// least one bound.
fn window(r: &mut Reader, node: &Node, path: &str) -> Option<Window> {
    let f = r.fields(node, path, WINDOW_KEYS)?;
    if f.get("warnAfter").is_none() && f.get("breachAfter").is_none() {
        r.err(
            path,
            f.pos,
            "a remediation window gives warnAfter, breachAfter or both",
        );
        return None;
    }
    Some(window_bounds(r, &f))
}

/// `warnAfter` and `breachAfter` of a mapping, breach not before warn.
fn window_bounds(r: &mut Reader, f: &Fields<'_>) -> Window {
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
    Window {
        warn_after,
        breach_after,
    }
}
