//! The parties of `contract diff`: clients (credentials, certificates,
//! sources) and revocations.

use super::diff::{Change, Effect, duration_effect, show_fp};
use crate::contract::{Client, Contract, RevocationTarget, format_rfc3339};

pub(super) fn clients(old: &Contract, new: &Contract, out: &mut Vec<Change>) {
    for o in old.clients() {
        let name = &*o.name;
        match new.client(name) {
            Some(n) => client(o, n, out),
            None => out.push(
                Change::new(Effect::Tightens, "client", "clients", name)
                    .client(name)
                    .values(Some(name.into()), None)
                    .detail(format!(
                        "client {name} removed: its traffic is unknown_client from now on"
                    )),
            ),
        }
    }
    for n in new.clients() {
        if old.client(&n.name).is_none() {
            out.push(
                Change::new(Effect::Changes, "client", "clients", &n.name)
                    .client(&n.name)
                    .values(None, Some(n.name.to_string()))
                    .detail(format!("client {} added", n.name)),
            );
        }
    }
}

/// One client present in both. A listed credential or certificate is an
/// identity, not a grant (quotas are), so adding one only `changes`; a
/// credential claiming a later `issuedAt` stays fresh longer, and a wider
/// `sources` attributes more addresses to the client: both loosen.
fn client(o: &Client, n: &Client, out: &mut Vec<Change>) {
    let name = &*o.name;
    let row = |effect, field, subject: String| {
        Change::new(effect, "client", field, &subject).client(name)
    };
    for c in &o.credentials {
        let fp = show_fp(&c.fingerprint);
        match n
            .credentials
            .iter()
            .find(|x| x.fingerprint == c.fingerprint)
        {
            None => out.push(
                row(Effect::Tightens, "credentials", fp.clone())
                    .values(Some(fp.clone()), None)
                    .detail(format!("client {name}: credential {fp} removed")),
            ),
            Some(x) => {
                if x.issued_at != c.issued_at {
                    let later = x.issued_at > c.issued_at;
                    out.push(
                        row(
                            if later {
                                Effect::Loosens
                            } else {
                                Effect::Tightens
                            },
                            "issuedAt",
                            fp.clone(),
                        )
                        .values(
                            Some(format_rfc3339(c.issued_at)),
                            Some(format_rfc3339(x.issued_at)),
                        )
                        .detail(format!(
                            "client {name}: credential {fp} issuedAt {} → {}{}",
                            format_rfc3339(c.issued_at),
                            format_rfc3339(x.issued_at),
                            if later { " (stale later)" } else { "" }
                        )),
                    );
                }
                if x.header != c.header {
                    out.push(
                        row(Effect::Changes, "header", fp.clone())
                            .values(Some(c.header.clone()), Some(x.header.clone()))
                            .detail(format!(
                                "client {name}: credential {fp} header {} → {}",
                                c.header, x.header
                            )),
                    );
                }
            }
        }
    }
    for x in &n.credentials {
        if !o.credentials.iter().any(|c| c.fingerprint == x.fingerprint) {
            let fp = show_fp(&x.fingerprint);
            out.push(
                row(Effect::Changes, "credentials", fp.clone())
                    .values(None, Some(fp.clone()))
                    .detail(format!(
                        "client {name}: credential {fp} added (issued {})",
                        format_rfc3339(x.issued_at)
                    )),
            );
        }
    }
    for (list_a, list_b, effect, verb) in [
        (
            &o.certificates,
            &n.certificates,
            Effect::Tightens,
            "removed",
        ),
        (&n.certificates, &o.certificates, Effect::Changes, "added"),
    ] {
        for fp in list_a.iter().filter(|fp| !list_b.contains(fp)) {
            let s = show_fp(fp);
            let (a, b) = if verb == "removed" {
                (Some(s.clone()), None)
            } else {
                (None, Some(s.clone()))
            };
            out.push(
                row(effect, "certificates", s.clone())
                    .values(a, b)
                    .detail(format!("client {name}: certificate {s} {verb}")),
            );
        }
    }
    for (list_a, list_b, effect, verb) in [
        (&n.sources, &o.sources, Effect::Loosens, "widened"),
        (&o.sources, &n.sources, Effect::Tightens, "narrowed"),
    ] {
        for net in list_a
            .iter()
            .filter(|net| !list_b.iter().any(|b| b.contains(*net)))
        {
            let s = net.to_string();
            let (a, b) = if verb == "narrowed" {
                (Some(s.clone()), None)
            } else {
                (None, Some(s.clone()))
            };
            out.push(
                row(effect, "sources", s.clone())
                    .values(a, b)
                    .detail(format!("client {name}: sources {verb} ({s})")),
            );
        }
    }
}

/// Revocations, matched by what they name.
pub(super) fn revocations(old: &Contract, new: &Contract, out: &mut Vec<Change>) {
    // Whom a revocation concerns: the client it names, or the one that
    // lists the revoked credential or certificate (in either contract).
    let client_of = |r: &RevocationTarget| match r {
        RevocationTarget::Client(c) => Some(c.to_string()),
        RevocationTarget::Credential(fp) => [old, new]
            .iter()
            .flat_map(|c| c.clients())
            .find(|c| c.credentials.iter().any(|x| x.fingerprint == *fp))
            .map(|c| c.name.to_string()),
        RevocationTarget::Certificate(fp) => [old, new]
            .iter()
            .flat_map(|c| c.clients())
            .find(|c| c.certificates.contains(fp))
            .map(|c| c.name.to_string()),
    };
    for o in old.revocations() {
        let subject = o.target.to_string();
        let base = |effect, field| {
            let c = Change::new(effect, "revocation", field, &subject);
            match client_of(&o.target) {
                Some(name) => c.client(&name),
                None => c,
            }
        };
        match new.revocations().iter().find(|n| n.target == o.target) {
            None => out.push(
                base(Effect::Loosens, "revocations")
                    .values(Some(format_rfc3339(o.revoked_at)), None)
                    .detail(format!(
                        "revocation of {subject} (at {}) removed",
                        format_rfc3339(o.revoked_at)
                    )),
            ),
            Some(n) if n.revoked_at != o.revoked_at => {
                let effect = duration_effect(Some(o.revoked_at), Some(n.revoked_at))
                    .unwrap_or(Effect::Changes);
                out.push(
                    base(effect, "revokedAt")
                        .values(
                            Some(format_rfc3339(o.revoked_at)),
                            Some(format_rfc3339(n.revoked_at)),
                        )
                        .detail(format!(
                            "revocation of {subject} moved {}: {} → {}",
                            if n.revoked_at > o.revoked_at {
                                "later"
                            } else {
                                "earlier"
                            },
                            format_rfc3339(o.revoked_at),
                            format_rfc3339(n.revoked_at)
                        )),
                );
            }
            Some(_) => {}
        }
    }
    for n in new.revocations() {
        if !old.revocations().iter().any(|o| o.target == n.target) {
            let subject = n.target.to_string();
            let c = Change::new(Effect::Tightens, "revocation", "revocations", &subject);
            let c = match client_of(&n.target) {
                Some(name) => c.client(&name),
                None => c,
            };
            out.push(
                c.values(None, Some(format_rfc3339(n.revoked_at)))
                    .detail(format!(
                        "{subject} revoked from {}",
                        format_rfc3339(n.revoked_at)
                    )),
            );
        }
    }
}
