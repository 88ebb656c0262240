//! Endpoint rules and their translation into the kernel's match maps.
//!
//! Three kernel structures (see `agent_common::EndpointKey`):
//! - `RW_ENDPOINTS`: (port, address prefix) → id, for rules with ports; port
//!   ranges are expanded to one entry per port, because an LPM prefix can
//!   only be partial in its last component;
//! - `RW_ENDPOINTS_ANY`: address prefix → id, for any-port rules;
//! - `RW_PORTS`: 65536-entry prefilter, so most unmonitored packets cost one
//!   array lookup per side; port-only rules (host names that did not resolve:
//!   watch the port, match SNI/Host in userspace) live there entirely;
//! - workload rules (endpoints served by workloads) only flag their ports
//!   there (`port_flags::WORKLOAD`): which sockets serve them is the
//!   (cgroup, port) → id map `RW_WL_ENDPOINTS`, kept in sync with the
//!   cgroups apart from the rules ([`WorkloadEntries`]).

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    ops::RangeInclusive,
};

use agent_common::{EndpointKey, PortEntry, WorkloadKey, port_flags};
use ipnet::IpNet;

/// Ports a rule covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    Any,
    List(Vec<u16>),
    Ranges(Vec<RangeInclusive<u16>>),
}

/// One monitored endpoint: traffic to `prefix` (any address when `None`) on
/// `ports` is tagged with `id` in the kernel. A `workload` rule has no
/// prefix: its server is a local socket listening on one of `ports` in a
/// cgroup [`WorkloadEntries`] lists for `id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRule {
    pub id: u32,
    pub prefix: Option<IpNet>,
    pub ports: PortSpec,
    pub workload: bool,
}

/// (cgroup id, port) → endpoint id: the sockets that serve workload rules
/// now, the content of `RW_WL_ENDPOINTS`.
pub type WorkloadEntries = BTreeMap<WorkloadKey, u32>;

/// Most per-port entries one rule set may expand to.
pub const MAX_PORT_ENTRIES: usize = 65536;

/// Why a rule set cannot be installed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error(
        "endpoint rule {0} matches every address on every port; give it an address prefix or ports"
    )]
    MatchesEverything(u32),
    #[error(
        "endpoint rules expand to more than {MAX_PORT_ENTRIES} (port, prefix) entries; use fewer or smaller port ranges, or any port"
    )]
    TooManyEntries,
    #[error("endpoint rule {0} has an empty port range or list")]
    NoPorts(u32),
    #[error(
        "endpoint rule {0} is served by workloads but lists no ports; list the ports its pods listen on"
    )]
    WorkloadWithoutPorts(u32),
}

/// The kernel-side form of a rule set.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    /// (prefix length, key) → endpoint id for `RW_ENDPOINTS`.
    pub port_entries: HashMap<(u32, EndpointKey), u32>,
    /// (prefix length, address) → endpoint id for `RW_ENDPOINTS_ANY`.
    pub any_port_entries: HashMap<(u32, [u8; 16]), u32>,
    /// Non-default entries of `RW_PORTS`.
    pub ports: BTreeMap<u16, PortEntry>,
    /// Some rule matches any port: the prefilter must not skip the any-port trie.
    pub any_port: bool,
}

/// An address as the kernel keys it: IPv6, IPv4 as `::ffff:a.b.c.d`, with
/// the prefix length adjusted to the 128-bit form.
pub fn kernel_prefix(net: &IpNet) -> ([u8; 16], u32) {
    let net = net.trunc();
    match net.addr() {
        IpAddr::V4(a) => (
            a.to_ipv6_mapped().octets(),
            96 + u32::from(net.prefix_len()),
        ),
        IpAddr::V6(a) => (a.octets(), u32::from(net.prefix_len())),
    }
}

/// Every port a spec names, sorted and deduplicated (`None` for any).
pub fn expand_ports(spec: &PortSpec) -> Option<Vec<u16>> {
    let mut v: Vec<u16> = match spec {
        PortSpec::Any => return None,
        PortSpec::List(l) => l.clone(),
        PortSpec::Ranges(r) => r.iter().flat_map(|r| r.clone()).collect(),
    };
    v.sort_unstable();
    v.dedup();
    Some(v)
}

/// Translates rules into kernel entries. Later rules do not override earlier
/// ones for the same key (first rule wins, as in the contract).
pub fn compile(rules: &[EndpointRule]) -> Result<Compiled, RuleError> {
    let mut c = Compiled::default();
    for rule in rules {
        let ports = expand_ports(&rule.ports);
        if let Some(p) = &ports
            && p.is_empty()
        {
            return Err(RuleError::NoPorts(rule.id));
        }
        if rule.workload {
            let Some(ports) = ports else {
                return Err(RuleError::WorkloadWithoutPorts(rule.id));
            };
            for port in ports {
                c.ports.entry(port).or_default().flags |= port_flags::WORKLOAD;
            }
            continue;
        }
        match (&rule.prefix, ports) {
            (None, None) => return Err(RuleError::MatchesEverything(rule.id)),
            (None, Some(ports)) => {
                for port in ports {
                    let e = c.ports.entry(port).or_default();
                    if e.flags & port_flags::PORT_ONLY == 0 {
                        e.flags |= port_flags::PORT_ONLY;
                        e.endpoint_id = rule.id;
                    }
                }
            }
            (Some(net), None) => {
                let (addr, bits) = kernel_prefix(net);
                c.any_port_entries.entry((bits, addr)).or_insert(rule.id);
                c.any_port = true;
            }
            (Some(net), Some(ports)) => {
                let (addr, bits) = kernel_prefix(net);
                for port in ports {
                    c.ports.entry(port).or_default().flags |= port_flags::LPM;
                    let key = EndpointKey {
                        port_be: port.to_be_bytes(),
                        addr,
                    };
                    c.port_entries.entry((16 + bits, key)).or_insert(rule.id);
                    if c.port_entries.len() > MAX_PORT_ENTRIES {
                        return Err(RuleError::TooManyEntries);
                    }
                }
            }
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: u32, prefix: Option<&str>, ports: PortSpec) -> EndpointRule {
        EndpointRule {
            id,
            prefix: prefix.map(|p| p.parse().expect("test prefix")),
            ports,
            workload: false,
        }
    }

    #[test]
    fn workload_rules_flag_their_ports_only() {
        let mut w = rule(5, None, PortSpec::List(vec![8080, 9090]));
        w.workload = true;
        let c = compile(&[
            w.clone(),
            rule(1, Some("127.0.0.1/32"), PortSpec::List(vec![8080])),
        ])
        .unwrap();
        assert_eq!(
            c.ports.get(&8080).map(|e| e.flags),
            Some(port_flags::WORKLOAD | port_flags::LPM)
        );
        // No endpoint id in the prefilter: the cgroup map names it.
        assert_eq!(
            c.ports[&9090],
            PortEntry {
                flags: port_flags::WORKLOAD,
                endpoint_id: 0
            }
        );
        assert!(c.port_entries.len() == 1 && !c.any_port);
        w.ports = PortSpec::Any;
        assert_eq!(compile(&[w]), Err(RuleError::WorkloadWithoutPorts(5)));
    }

    #[test]
    fn ipv4_prefix_becomes_mapped_v6_with_port_first() {
        let c = compile(&[rule(7, Some("10.1.2.0/24"), PortSpec::List(vec![443]))]).unwrap();
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..15].copy_from_slice(&[10, 1, 2]);
        let key = EndpointKey {
            port_be: [0x01, 0xbb],
            addr,
        };
        assert_eq!(c.port_entries.get(&(16 + 96 + 24, key)), Some(&7));
        assert_eq!(c.ports.get(&443).map(|e| e.flags), Some(port_flags::LPM));
        assert!(!c.any_port);
    }

    #[test]
    fn host_bits_are_cleared() {
        let (addr, bits) = kernel_prefix(&"10.1.2.3/8".parse().unwrap());
        assert_eq!(bits, 104);
        assert_eq!(&addr[12..], &[10, 0, 0, 0]);
    }

    #[test]
    fn ranges_expand_per_port_inclusive_and_deduplicated() {
        let spec = PortSpec::Ranges(vec![8080..=8083, 8082..=8084, 65535..=65535]);
        assert_eq!(
            expand_ports(&spec).unwrap(),
            vec![8080, 8081, 8082, 8083, 8084, 65535]
        );
        let c = compile(&[rule(1, Some("::1/128"), spec)]).unwrap();
        assert_eq!(c.port_entries.len(), 6);
        assert!(c.ports.contains_key(&65535));
        assert!(!c.ports.contains_key(&8085));
        assert!(!c.ports.contains_key(&8079));
    }

    #[test]
    fn any_port_rule_uses_address_trie_and_disables_prefilter() {
        let c = compile(&[rule(3, Some("2001:db8::/32"), PortSpec::Any)]).unwrap();
        assert!(c.any_port);
        assert!(c.port_entries.is_empty());
        let (addr, _) = kernel_prefix(&"2001:db8::/32".parse().unwrap());
        assert_eq!(c.any_port_entries.get(&(32, addr)), Some(&3));
    }

    #[test]
    fn port_only_rules_first_wins_and_coexist_with_lpm() {
        let c = compile(&[
            rule(1, None, PortSpec::List(vec![443])),
            rule(2, None, PortSpec::List(vec![443])),
            rule(3, Some("127.0.0.1/32"), PortSpec::List(vec![443])),
        ])
        .unwrap();
        let e = c.ports[&443];
        assert_eq!(e.endpoint_id, 1);
        assert_eq!(e.flags, port_flags::PORT_ONLY | port_flags::LPM);
    }

    #[test]
    fn invalid_rules_are_rejected() {
        assert_eq!(
            compile(&[rule(9, None, PortSpec::Any)]),
            Err(RuleError::MatchesEverything(9))
        );
        assert_eq!(
            compile(&[rule(4, Some("::1/128"), PortSpec::List(vec![]))]),
            Err(RuleError::NoPorts(4))
        );
        let many: Vec<_> = (0..2)
            .map(|i| {
                rule(
                    i,
                    Some(if i == 0 { "::1/128" } else { "::2/128" }),
                    PortSpec::Ranges(vec![0..=65535]),
                )
            })
            .collect();
        assert_eq!(compile(&many), Err(RuleError::TooManyEntries));
    }
}
