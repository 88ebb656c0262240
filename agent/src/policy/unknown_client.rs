//! `unknown_client`: a request with no recognisable identity (no known
//! credential, client certificate or source address) to an endpoint whose
//! class requires authentication. Only for visible requests: a TLS flow
//! whose requests are encrypted is reported with client "unknown" but does
//! not raise this, since its credentials cannot be seen.

use super::{
    Ctx,
    view::{EndpointRef, Identity},
    violations::{Finding, Kind},
};

pub fn check(
    ctx: &Ctx<'_>,
    m: EndpointRef,
    id: &Identity,
    request_visible: bool,
) -> Option<Finding> {
    if !request_visible || id.client.is_some() {
        return None;
    }
    let e = m.endpoint()?;
    if !ctx.view.class_of(e)?.authentication_required {
        return None;
    }
    let detail = if id.credential.is_some() {
        "credential not in contract"
    } else {
        "no credential"
    };
    Some(ctx.finding(Kind::UnknownClient, Some(e), None, detail.to_owned(), 1))
}
