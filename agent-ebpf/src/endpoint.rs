//! The endpoint match shared by the packet path (`track`), the TLS probes
//! (`tls`) and the connect trigger (`discover`): is this (address, port),
//! or this local socket's cgroup on this port, a watched endpoint?
//!
//! Hook: none of its own; inlined into every program that asks.
//! Why: one home for the rule, so the wire and the TLS plaintext agree on
//! what is watched, endpoints served by workloads (matched by the local
//! socket's cgroup id in `RW_WL_ENDPOINTS`) included.
//! Cost: nothing for ports no rule flags (callers test `RW_PORTS` first);
//! per flagged side at most one cgroup-id helper call and hash lookup
//! (only on `WORKLOAD` ports), one LPM lookup per trie consulted.

use agent_common::{
    ADDR_KEY_BITS, ENDPOINT_KEY_BITS, EndpointKey, PortEntry, WorkloadKey, port_flags,
};
use aya_ebpf::maps::lpm_trie::Key;

use crate::maps::{RW_ENDPOINTS, RW_ENDPOINTS_ANY, RW_WL_ENDPOINTS};

/// `match_side` result when nothing matches; otherwise `MATCHED | id`.
pub const NO_MATCH: u64 = 0;
const MATCHED: u64 = 1 << 32;

/// Endpoint id if (addr, port) is monitored. `local_cgroup` gives the
/// cgroup id of this side's socket when it is local (0 otherwise); it is
/// only called for ports a workload endpoint uses. Precedence: a workload
/// endpoint served by this very socket's cgroup on this port, then a rule
/// naming the port, then an any-port rule for the address, then a
/// port-only rule.
#[inline(always)]
pub fn match_side<C: FnOnce() -> u64>(
    addr: &[u8; 16],
    port: u16,
    pe: PortEntry,
    any_port: bool,
    local_cgroup: C,
) -> u64 {
    if pe.flags & port_flags::WORKLOAD != 0 {
        let cgroup_id = local_cgroup();
        if cgroup_id != 0 {
            let k = WorkloadKey {
                cgroup_id,
                port,
                _pad0: 0,
                _pad1: 0,
            };
            // SAFETY: the value is copied out at once; userspace may
            // replace the entry, never shrink it.
            if let Some(id) = unsafe { RW_WL_ENDPOINTS.get(k) } {
                return MATCHED | u64::from(*id);
            }
        }
    }
    if pe.flags & port_flags::LPM != 0 {
        let k = Key::new(
            ENDPOINT_KEY_BITS,
            EndpointKey {
                port_be: port.to_be_bytes(),
                addr: *addr,
            },
        );
        if let Some(id) = RW_ENDPOINTS.get(&k) {
            return MATCHED | u64::from(*id);
        }
    }
    if any_port && let Some(id) = RW_ENDPOINTS_ANY.get(Key::new(ADDR_KEY_BITS, *addr)) {
        return MATCHED | u64::from(*id);
    }
    if pe.flags & port_flags::PORT_ONLY != 0 {
        return MATCHED | u64::from(pe.endpoint_id);
    }
    NO_MATCH
}
