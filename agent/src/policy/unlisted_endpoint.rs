//! `unlisted_endpoint`: API traffic in `scope` that no endpoint covers, or a
//! request to a listed host/port whose path matches none of its `paths`.
//! Both are keyed to endpoint "unlisted" (like the flow record); the detail
//! names the endpoint whose paths missed. The query string and path
//! parameters (`;jsessionid=…`) are never reported (they may carry secrets).

use std::net::SocketAddr;

use super::{
    Ctx,
    view::{EndpointMatch, Identity},
    violations::{Finding, Kind},
};

pub fn check(
    ctx: &Ctx<'_>,
    m: EndpointMatch,
    server: SocketAddr,
    path: Option<&str>,
    id: &Identity,
) -> Option<Finding> {
    let (endpoint, detail) = match m {
        EndpointMatch::Unlisted => (None, format!("no endpoint covers {server}")),
        EndpointMatch::PathNotListed(e) => {
            let path = path.unwrap_or_default();
            let path = path.split(['?', '#', ';']).next().unwrap_or_default();
            let shown: String = path.chars().take(64).collect();
            let name = ctx.view.endpoint_name(Some(e)).map_or("", |n| &**n);
            (None, format!("path {shown} not in {name}'s paths"))
        }
        EndpointMatch::Endpoint(_) | EndpointMatch::Unwatched => return None,
    };
    Some(ctx.finding(Kind::UnlistedEndpoint, endpoint, id.client, detail, 1))
}
