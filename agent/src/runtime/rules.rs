//! The kernel's endpoint map, derived from the contract.
//!
//! CIDRs and addresses come straight from the contract (`server_rules`).
//! Host names are resolved now and again every few minutes, so an endpoint
//! that scales out to new addresses is followed; a name that does not
//! resolve is watched by port alone and matched in userspace by SNI/Host.
//! Endpoints served by workloads become rules that flag their ports; which
//! sockets serve them is synced apart (`super::workloads`).

use std::{collections::BTreeSet, net::IpAddr, sync::Arc, time::Duration};

use ipnet::IpNet;
use tokio::sync::mpsc;

use crate::{
    capture::{EndpointRule, PortSpec},
    contract::Contract,
};

fn ports(p: &Option<Vec<u16>>) -> PortSpec {
    match p {
        None => PortSpec::Any,
        Some(list) => PortSpec::List(list.clone()),
    }
}

/// A dead resolver must not hold the rules back for long.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Resolves `host` (no port) with the system resolver; empty when it fails
/// or takes longer than [`RESOLVE_TIMEOUT`].
async fn resolve(host: &str) -> Vec<IpAddr> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, 0))).await {
        Ok(Ok(addrs)) => addrs
            .map(|a| a.ip())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        Ok(Err(e)) => {
            tracing::debug!(host, error = %e, "host name does not resolve");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!(
                host,
                "resolving the host name timed out; watching its ports instead"
            );
            Vec::new()
        }
    }
}

/// Computes the rules off the engine's task (DNS may be slow) and sends
/// them tagged with `generation`, so a late answer for an older contract
/// can be told apart.
pub fn spawn_kernel_rules(
    contract: Arc<Contract>,
    generation: u64,
    tx: mpsc::Sender<(u64, Vec<EndpointRule>)>,
) {
    tokio::spawn(async move {
        let rules = kernel_rules(&contract).await;
        let _ = tx.send((generation, rules)).await;
    });
}

/// Every rule the kernel needs for `contract`. Rule ids only have to be
/// distinct: userspace re-matches each flow against the contract.
pub async fn kernel_rules(contract: &Contract) -> Vec<EndpointRule> {
    // Endpoints served by workloads first: their ids are what the
    // cgroup map (`super::workloads`) names, so they must not depend on DNS.
    let mut rules: Vec<EndpointRule> = super::workloads::workload_endpoints(contract)
        .map(|(id, e)| EndpointRule {
            id,
            prefix: None,
            ports: ports(&e.ports),
            workload: true,
        })
        .collect();
    let mut push = |prefix: Option<IpNet>, spec: PortSpec| {
        let id = u32::try_from(rules.len()).unwrap_or(u32::MAX);
        rules.push(EndpointRule {
            id,
            prefix,
            ports: spec,
            workload: false,
        });
    };
    for rule in contract.server_rules() {
        push(Some(rule.net), ports(&rule.ports));
    }
    for name in contract.host_names() {
        let addrs = if name.host.starts_with("*.") {
            Vec::new()
        } else {
            resolve(&name.host).await
        };
        if addrs.is_empty() {
            // Unresolvable (or a wildcard): watch its ports on any address.
            // A name without ports would mean every TCP packet; skip it and
            // say so, its traffic is still judged where another rule sees it.
            if name.ports.is_none() {
                tracing::warn!(
                    host = %name.host,
                    endpoint = %name.endpoint,
                    "host name does not resolve and the endpoint lists no ports; give it ports so its traffic can be watched"
                );
                continue;
            }
            push(None, ports(&name.ports));
        } else {
            for ip in addrs {
                push(Some(IpNet::from(ip)), ports(&name.ports));
            }
        }
    }
    rules
}
