//! `unlisted_endpoint`: API traffic in `scope` that no endpoint covers, or a
//! request to a listed host/port whose path matches none of its `paths`.
//! Both are keyed to endpoint "unlisted" (like the flow record); the detail
//! names the endpoint whose paths missed and only the path's first segment:
//! deeper segments, query strings and path parameters (`;jsessionid=…`) may
//! carry secrets.

use std::net::SocketAddr;

use super::{
    Ctx,
    view::{EndpointRef, Identity},
    violations::{Finding, Kind},
};

/// The path's first segment, then "/…": deeper segments are where URLs
/// carry tokens (webhook keys, reset links), and a detail goes to logs, the
/// audit trail and the API. Query strings and `;` parameters never appear.
fn first_segment(path: &str) -> String {
    let path = path.split(['?', '#', ';']).next().unwrap_or_default();
    let rest = path.strip_prefix('/').unwrap_or(path);
    let (first, more) = match rest.split_once('/') {
        Some((first, after)) => (first, !after.is_empty()),
        None => (rest, false),
    };
    let first: String = first.chars().take(32).collect();
    if more {
        format!("/{first}/…")
    } else {
        format!("/{first}")
    }
}

pub fn check(
    ctx: &Ctx<'_>,
    m: EndpointRef,
    server: SocketAddr,
    path: Option<&str>,
    id: &Identity,
) -> Option<Finding> {
    let (endpoint, detail) = match m {
        EndpointRef::Unlisted => (None, format!("no endpoint covers {server}")),
        EndpointRef::PathNotListed(e) => {
            let shown = first_segment(path.unwrap_or_default());
            let name = ctx.view.endpoint_name(Some(e)).map_or("", |n| &**n);
            (None, format!("path {shown} not in {name}'s paths"))
        }
        EndpointRef::Endpoint(_) | EndpointRef::Unwatched => return None,
    };
    Some(ctx.finding(Kind::UnlistedEndpoint, endpoint, id.client, detail, 1))
}
