//! `unencrypted_flow`: plaintext application data (HTTP, h2c, anything not
//! TLS) to an endpoint whose data class requires encryption. Judged once per
//! flow, when its protocol is known (at its first request for HTTP, so the
//! Host header can pick the endpoint).

use super::{
    Ctx,
    view::{EndpointRef, Identity},
    violations::{Finding, Kind},
};
use crate::flow::Protocol;

pub fn check(ctx: &Ctx<'_>, protocol: Protocol, m: EndpointRef, id: &Identity) -> Option<Finding> {
    let e = m.endpoint()?;
    let class = ctx.view.class_of(e)?;
    if !class.encryption_required {
        return None;
    }
    let what = match protocol {
        Protocol::Http => "plaintext HTTP",
        Protocol::H2c => "plaintext HTTP/2 (h2c)",
        Protocol::Other => "plaintext (not TLS)",
        Protocol::Tls | Protocol::Unknown => return None,
    };
    let detail = format!("{what} to class {}", class.name);
    Some(ctx.finding(Kind::UnencryptedFlow, Some(e), id.client, detail, 1))
}
