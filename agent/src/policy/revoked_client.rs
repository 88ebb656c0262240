//! `revoked_client`: a request (or, for TLS flows whose requests are not
//! visible, a handshake) with a revoked credential or certificate, or from a
//! revoked client, at or after `revokedAt`.

use super::{
    Ctx, fmt_time,
    view::{Identity, Revoked},
    violations::{Finding, Kind},
};

pub fn check(ctx: &Ctx<'_>, endpoint: Option<usize>, id: &Identity) -> Option<Finding> {
    let v = ctx.view;
    let active = |r: &Revoked| r.at <= ctx.judge_time;
    let (what, r) = if let Some(r) = id
        .credential
        .and_then(|fp| v.revoked_fingerprints.get(&fp))
        .filter(|r| active(r))
    {
        ("credential", r)
    } else if let Some(r) = id
        .certificate
        .and_then(|fp| v.revoked_fingerprints.get(&fp))
        .filter(|r| active(r))
    {
        ("certificate", r)
    } else if let Some(r) = id
        .client
        .and_then(|c| v.revoked_clients.get(&c))
        .filter(|r| active(r))
    {
        ("client", r)
    } else {
        return None;
    };
    let detail = match &r.reason {
        Some(reason) => format!("{what} revoked since {}: {reason}", fmt_time(r.at)),
        None => format!("{what} revoked since {}", fmt_time(r.at)),
    };
    Some(ctx.finding(Kind::RevokedClient, endpoint, id.client, detail, 1))
}
