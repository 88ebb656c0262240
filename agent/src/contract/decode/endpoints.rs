//! `scope`, `dataClasses` and `endpoints`: where the API is and what it carries.

use std::{collections::HashMap, sync::Arc};

use super::{
    super::{
        model::{
            CipherGlob, DataClass, Endpoint, HostPattern, Requirement, Scope, TlsVersion,
            WorkloadSelector, min_tls_version,
        },
        reader::{Reader, join, parse_net, shown},
        yaml::{Kind, Node},
    },
    DATA_CLASS_KEYS, ENDPOINT_KEYS, Names, RESERVED_ENDPOINT_NAMES, SCOPE_KEYS,
    callers::workload_selector,
};

pub(super) fn scope(r: &mut Reader, node: &Node, path: &str) -> Scope {
    let Some(f) = r.fields(node, path, SCOPE_KEYS) else {
        return Scope::default();
    };
    Scope {
        networks: r.list_of(f.get("networks"), &f.path("networks"), |r, n, p| {
            r.network(n, p)
        }),
        ports: r.ports(f.get("ports"), &f.path("ports")),
    }
}

fn requirement(r: &mut Reader, node: &Node, path: &str) -> Option<Requirement> {
    match r.text(node, path)? {
        "required" => Some(Requirement::Required),
        "optional" => Some(Requirement::Optional),
        other => {
            r.err(
                path,
                node.pos,
                format!(
                    "{} is not allowed; write `required` or `optional`",
                    shown(other)
                ),
            );
            None
        }
    }
}

pub(super) fn data_class(
    r: &mut Reader,
    node: &Node,
    path: &str,
    names: &mut Names,
) -> Option<DataClass> {
    let f = r.fields(node, path, DATA_CLASS_KEYS)?;
    let name = names.read(r, &f, &[]);
    let encryption = r
        .required(&f, "encryption")
        .and_then(|n| requirement(r, n, &f.path("encryption")));
    let authentication = match f.get("authentication") {
        Some(n) => requirement(r, n, &f.path("authentication")),
        None => Some(Requirement::Required),
    };
    let min_tls_version = match f.get("minTlsVersion") {
        Some(n) => tls_version(r, n, &f.path("minTlsVersion")).map(Some),
        None => Some(None),
    };
    let forbidden_ciphers = r.list_of(
        f.get("forbiddenCiphers"),
        &f.path("forbiddenCiphers"),
        |r, n, p| {
            let text = r.text(n, p)?;
            match glob::Pattern::new(text) {
                Ok(pattern) => Some(CipherGlob {
                    text: text.to_owned(),
                    pattern,
                }),
                Err(e) => {
                    r.err(
                        p,
                        n.pos,
                        format!("{} is not a valid glob: {}", shown(text), e.msg),
                    );
                    None
                }
            }
        },
    );
    Some(DataClass {
        name: name?,
        encryption: encryption?,
        authentication: authentication?,
        min_tls_version: min_tls_version?,
        forbidden_ciphers,
    })
}

fn tls_version(r: &mut Reader, node: &Node, path: &str) -> Option<TlsVersion> {
    let text = r.text(node, path)?;
    let v = min_tls_version(text);
    if v.is_none() {
        r.err(
            path,
            node.pos,
            format!(
                "{} is not a TLS version; write \"1.0\", \"1.1\", \"1.2\" or \"1.3\"",
                shown(text)
            ),
        );
    }
    v
}

pub(super) fn endpoint(
    r: &mut Reader,
    node: &Node,
    path: &str,
    names: &mut Names,
    class_names: &Names,
    classes: &HashMap<&str, &Arc<DataClass>>,
) -> Option<Endpoint> {
    let f = r.fields(node, path, ENDPOINT_KEYS)?;
    let name = names.read(r, &f, RESERVED_ENDPOINT_NAMES);
    let class = r
        .required(&f, "dataClass")
        .and_then(|n| class_names.reference(r, n, &f.path("dataClass")))
        .and_then(|c| classes.get(&*c).map(|c| Arc::clone(c)));
    let workloads_node = f.get("workloads");
    let workloads_path = f.path("workloads");
    let workloads = r.list_of(workloads_node, &workloads_path, endpoint_workload);
    if let Some(n) = workloads_node
        && matches!(&n.kind, Kind::Seq(items) if items.is_empty())
    {
        r.err(
            &workloads_path,
            n.pos,
            "an empty workloads list serves nothing; name at least one workload or leave the field out",
        );
    }
    // With workloads, hosts are optional: the pods are the endpoint.
    let hosts_node = if workloads_node.is_some() {
        f.get("hosts")
    } else {
        r.required(&f, "hosts")
    };
    let hosts_path = f.path("hosts");
    let hosts = r.list_of(hosts_node, &hosts_path, host);
    if let Some(n) = hosts_node
        && matches!(&n.kind, Kind::Seq(items) if items.is_empty())
    {
        r.err(
            &hosts_path,
            n.pos,
            "an endpoint needs at least one host name, IP address or CIDR",
        );
    }
    let ports = r.ports(f.get("ports"), &f.path("ports"));
    if workloads_node.is_some() && f.get("ports").is_none() {
        r.err(
            &f.path("ports"),
            f.pos,
            "an endpoint served by workloads lists the ports its pods listen on (without them every socket of the pods would be watched); add `ports`",
        );
    }
    let paths = r.list_of(f.get("paths"), &f.path("paths"), |r, n, p| {
        let text = r.text(n, p)?;
        if !text.starts_with('/') {
            r.err(
                p,
                n.pos,
                format!("{} is not a path prefix; paths start with '/'", shown(text)),
            );
            return None;
        }
        Some(text.to_owned())
    });
    Some(Endpoint {
        name: name?,
        data_class: class?,
        hosts,
        ports,
        paths,
        workloads,
    })
}

/// An endpoint's `workloads[]` entry: the clients' selector, without
/// `exe` (a listening socket is matched by its cgroup, and which
/// executable serves a cgroup is not something the kernel can check).
fn endpoint_workload(r: &mut Reader, node: &Node, path: &str) -> Option<WorkloadSelector> {
    if let Kind::Map(entries) = &node.kind
        && let Some((key, _)) = entries
            .iter()
            .find(|(k, _)| matches!(&k.kind, Kind::Scalar { text, .. } if text == "exe"))
    {
        r.err(
            &join(path, "exe"),
            key.pos,
            "an endpoint is matched by the cgroup of its listening socket, so `exe` cannot select it; use `namespace`, `pod` or `container`",
        );
        return None;
    }
    workload_selector(r, node, path)
}

fn host(r: &mut Reader, node: &Node, path: &str) -> Option<HostPattern> {
    let text = r.text(node, path)?;
    if let Some(net) = parse_net(text) {
        return Some(HostPattern::Net(net));
    }
    let looks_numeric = text.contains('/')
        || text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || text.contains("::");
    if looks_numeric {
        r.err(
            path,
            node.pos,
            format!("{} is not a valid IP address or CIDR", shown(text)),
        );
        return None;
    }
    if text.contains(':') {
        r.err(
            path,
            node.pos,
            format!(
                "{} carries a port; list host names or addresses here and ports under `ports`",
                shown(text)
            ),
        );
        return None;
    }
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    let labels = name.strip_prefix("*.").unwrap_or(&name);
    let valid = !labels.is_empty()
        && name.len() <= 253
        && labels.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        r.err(
            path,
            node.pos,
            format!(
                "{} is not a host name, IP address or CIDR (names may start with \"*.\" to match subdomains)",
                shown(text)
            ),
        );
        return None;
    }
    Some(HostPattern::Name(name))
}
