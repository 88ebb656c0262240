//! Which endpoint a flow or request belongs to.

use std::{borrow::Cow, net::SocketAddr};

use super::{Contract, Endpoint, canonical_ip};
use crate::identity::workload::FlowWorkload;

/// Which kind of candidate wins: the name the client asked for, then the
/// workload that serves the socket, then the server address.
#[derive(Clone, Copy)]
enum Tier {
    Name,
    Workload,
    Address,
}

/// The outcome of [`Contract::match_endpoint`].
#[derive(Clone, Copy, Debug)]
pub enum EndpointMatch<'a> {
    /// The request (or flow) belongs to this endpoint.
    Endpoint(&'a Endpoint),
    /// The host and port are this endpoint's, but the path is none of its
    /// `paths`: an `unlisted_endpoint` violation.
    PathNotListed(&'a Endpoint),
    /// Inside `scope`, but no endpoint covers it: an `unlisted_endpoint`
    /// violation.
    Unlisted,
    /// Neither an endpoint nor in scope: not rampwatch's business.
    NotWatched,
}

impl<'a> EndpointMatch<'a> {
    /// The endpoint whose class governs the traffic, for both a full match
    /// and a path miss on a listed host.
    pub fn endpoint(&self) -> Option<&'a Endpoint> {
        match self {
            Self::Endpoint(e) | Self::PathNotListed(e) => Some(e),
            Self::Unlisted | Self::NotWatched => None,
        }
    }

    /// Whether the traffic is an `unlisted_endpoint` violation.
    pub fn is_unlisted(&self) -> bool {
        matches!(self, Self::PathNotListed(_) | Self::Unlisted)
    }

    /// Whether the traffic is watched at all.
    pub fn is_watched(&self) -> bool {
        !matches!(self, Self::NotWatched)
    }

    /// The endpoint label used in reports: its name, or `unlisted`.
    pub fn label(&self) -> &'a str {
        match self {
            Self::Endpoint(e) => &e.name,
            Self::PathNotListed(_) | Self::Unlisted | Self::NotWatched => UNLISTED_ENDPOINT,
        }
    }
}

/// The label for traffic no endpoint covers.
pub const UNLISTED_ENDPOINT: &str = "unlisted";

/// Lowercases a TLS SNI or HTTP Host value and strips a port and a
/// trailing dot: `API.Example.com.:8443` → `api.example.com`,
/// `[::1]:443` → `::1`.
pub fn normalize_host(name: &str) -> String {
    normalized(name).into_owned()
}

/// [`normalize_host`] without allocating when the name is already lowercase.
fn normalized(name: &str) -> Cow<'_, str> {
    let name = name.trim();
    let host = if let Some(rest) = name.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if name.bytes().filter(|b| *b == b':').count() == 1 {
        name.split(':').next().unwrap_or(name)
    } else {
        name
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

impl Contract {
    /// Finds the endpoint for traffic to `server`, given the TLS SNI or HTTP
    /// Host (`name`, port and case ignored) and the request path when it is
    /// visible.
    ///
    /// An endpoint is a candidate when the port is one of its `ports` and
    /// either `name` matches one of its host names or `server`'s address
    /// lies in one of its IPs/CIDRs. Candidates matched by name beat those
    /// matched by address (several names may share one address). Among
    /// those, with a visible path, the endpoint with the longest matching
    /// path prefix wins, then the first one without `paths`; if none fits
    /// the path, the result is [`EndpointMatch::PathNotListed`] for the
    /// first candidate. Without a path (TLS) the first candidate wins. With
    /// no candidate, the result is [`EndpointMatch::Unlisted`] when
    /// [`Contract::in_scope`], else [`EndpointMatch::NotWatched`].
    pub fn match_endpoint(
        &self,
        server: SocketAddr,
        name: Option<&str>,
        path: Option<&str>,
    ) -> EndpointMatch<'_> {
        self.match_endpoint_served(server, None, name, path)
    }

    /// [`Self::match_endpoint`] for a server socket on this node whose
    /// workload is `served_by` (live only): an endpoint whose `workloads`
    /// select it, on one of its ports, is a candidate too. Candidates
    /// matched by name come first, then those served by the workload, then
    /// those matched by address.
    pub fn match_endpoint_served(
        &self,
        server: SocketAddr,
        served_by: Option<&FlowWorkload>,
        name: Option<&str>,
        path: Option<&str>,
    ) -> EndpointMatch<'_> {
        let ip = canonical_ip(server.ip());
        let port = server.port();
        let name = name.map(normalized).filter(|n| !n.is_empty());
        let by_name = |e: &Endpoint| {
            name.as_deref()
                .is_some_and(|n| e.hosts.iter().any(|h| h.matches_name(n)))
        };
        let by_workload = |e: &Endpoint| served_by.is_some_and(|w| e.served_by(w));
        let by_addr = |e: &Endpoint| e.hosts.iter().any(|h| h.matches_addr(ip));
        // Runs once per flow or request: filter twice rather than collect.
        let tier = if self
            .endpoints
            .iter()
            .any(|e| e.port_matches(port) && by_name(e))
        {
            Tier::Name
        } else if self
            .endpoints
            .iter()
            .any(|e| e.port_matches(port) && by_workload(e))
        {
            Tier::Workload
        } else {
            Tier::Address
        };
        let candidates = || {
            self.endpoints.iter().filter(move |e| {
                e.port_matches(port)
                    && match tier {
                        Tier::Name => by_name(e),
                        Tier::Workload => by_workload(e),
                        Tier::Address => by_addr(e),
                    }
            })
        };
        let Some(first) = candidates().next() else {
            return if self.in_scope(server) {
                EndpointMatch::Unlisted
            } else {
                EndpointMatch::NotWatched
            };
        };
        let Some(path) = path else {
            return EndpointMatch::Endpoint(first);
        };
        let mut best: Option<(usize, &Endpoint)> = None;
        for e in candidates() {
            if let Some(prefix) = e.matching_path(path)
                // Strictly longer: on a tie the endpoint listed first wins.
                && best.is_none_or(|(len, _)| prefix.len() > len)
            {
                best = Some((prefix.len(), e));
            }
        }
        if let Some((_, e)) = best {
            return EndpointMatch::Endpoint(e);
        }
        match candidates().find(|e| e.paths.is_empty()) {
            Some(e) => EndpointMatch::Endpoint(e),
            None => EndpointMatch::PathNotListed(first),
        }
    }
}
