//! The maps shared by all programs; names and layouts come from `agent-common`.

use agent_common::{
    Config, EndpointKey, FlowKey, FlowStats, PortEntry, Scratch, WORKLOAD_ENDPOINT_ENTRIES,
    WorkloadKey, config_flags, stat,
};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};

/// Run-time configuration, one entry, written by userspace before attaching.
#[map]
pub static RW_CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Monitored endpoints with ports: (port, address prefix) → endpoint id.
#[map]
pub static RW_ENDPOINTS: LpmTrie<EndpointKey, u32> = LpmTrie::with_max_entries(65536, 0);

/// Monitored endpoints for any port: address prefix → endpoint id.
#[map]
pub static RW_ENDPOINTS_ANY: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(16384, 0);

/// Endpoints served by workloads: (local socket's cgroup id, local port) →
/// endpoint id. Userspace keeps it in sync with the cgroups whose workload
/// an endpoint's `workloads` select (pods come and go); consulted only for
/// ports flagged `port_flags::WORKLOAD`.
#[map]
pub static RW_WL_ENDPOINTS: HashMap<WorkloadKey, u32> =
    HashMap::with_max_entries(WORKLOAD_ENDPOINT_ENTRIES, 0);

/// Per-port prefilter, indexed by host-order port: an inlined array lookup
/// rules out most unmonitored packets before the (costlier) trie lookup.
#[map]
pub static RW_PORTS: Array<PortEntry> = Array::with_max_entries(agent_common::PORT_ENTRIES, 0);

/// What passed the port prefilter: the run-time configuration, the
/// prefilter entries of the connection's two ports (in the caller's order)
/// and whether the contract watches endpoints on any port.
pub struct Prefiltered {
    pub cfg: &'static Config,
    pub a: PortEntry,
    pub b: PortEntry,
    pub any_port: bool,
}

/// The first test of the packet and TLS paths alike: `None`, after three
/// inlined array lookups, when neither port `a` nor `b` can belong to a
/// watched endpoint (the common unmonitored case).
#[inline(always)]
pub fn port_prefilter(a: u16, b: u16) -> Option<Prefiltered> {
    let cfg = RW_CONFIG.get(0)?;
    let (pa, pb) = (RW_PORTS.get(u32::from(a))?, RW_PORTS.get(u32::from(b))?);
    let any_port = cfg.flags & config_flags::NO_PORT_PREFILTER != 0;
    if !any_port && pa.flags == 0 && pb.flags == 0 {
        return None;
    }
    Some(Prefiltered {
        cfg,
        a: *pa,
        b: *pb,
        any_port,
    })
}

/// Per-flow counters. LRU so a full table evicts the stalest flow instead of
/// refusing new ones; userspace notices vanished flows. Size set by userspace.
#[map]
pub static RW_FLOWS: LruHashMap<FlowKey, FlowStats> = LruHashMap::with_max_entries(65536, 0);

/// One all-zero `FlowStats`, the initial value of new flows (never written).
#[map]
pub static RW_ZERO_FLOW: Array<FlowStats> = Array::with_max_entries(1, 0);

const EEXIST: i32 = 17;

/// Creates `key`'s all-zero `RW_FLOWS` entry unless another CPU just did,
/// and returns it with whether this run created it (the caller then stamps
/// its cgroup and endpoint). `None`, counted, when the table refused it.
#[inline(always)]
pub fn create_flow(key: &FlowKey) -> Option<(*mut FlowStats, bool)> {
    // The all-zero initial value lives in a map: a 168-byte stack value
    // would not fit next to the rest (512-byte stack).
    let zero = RW_ZERO_FLOW.get(0)?;
    let mut created = false;
    match RW_FLOWS.insert(key, zero, u64::from(BPF_NOEXIST)) {
        Ok(()) => {
            created = true;
            count(stat::FLOWS_CREATED);
        }
        // Another CPU created it first.
        Err(e) if e == -EEXIST => {}
        Err(_) => {
            count(stat::FLOW_TABLE_FULL);
            return None;
        }
    }
    let Some(f) = RW_FLOWS.get_ptr_mut(key) else {
        count(stat::FLOW_TABLE_FULL);
        return None;
    };
    Some((f, created))
}

/// Samples and flow-end records. Size set by userspace.
#[map]
pub static RW_EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Loss and activity counters, see `agent_common::stat`.
#[map]
pub static RW_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Where a sample (header + payload) is assembled before it is copied to the
/// ring: too big for the 512-byte stack, and a ring reservation needs a
/// constant size.
#[map]
pub static RW_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Adds 1 to a counter. Atomic although per-CPU: an ingress run in softirq
/// can interrupt an egress run on the same CPU, and the flood test needs
/// exact counts.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(p) = RW_STATS.get_ptr_mut(index) {
        // SAFETY: the map value is a live, 8-byte aligned u64.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                p, 1,
            )
        };
    }
}

/// Adds 1 to an activity counter (packets seen/monitored) with a plain
/// read-modify-write: a locked add on every packet is a measurable part of
/// the unmonitored cost. Only nesting on one CPU (a softirq run interrupting
/// a process-context run between its load and store) can lose an increment;
/// losses and samples, which must be exact, use [`count`].
#[inline(always)]
pub fn count_activity(index: u32) {
    if let Some(p) = RW_STATS.get_ptr_mut(index) {
        // SAFETY: the map value is a live, 8-byte aligned u64 of this CPU.
        unsafe { *p += 1 };
    }
}
