//! cgroup_skb ingress and egress: the default capture point.
//!
//! Hook: `BPF_PROG_TYPE_CGROUP_SKB` attached to a cgroup v2 directory (the
//! root by default), so every socket below it is seen, containers included,
//! without touching interfaces. The skb starts at the IP header.
//! Why: it sees local sockets' traffic with the owning cgroup known, before
//! TLS offload or GSO splitting, at a fixed cost per packet. The owning
//! cgroup is also what endpoints served by workloads (`workloads` in the
//! contract) are matched by: a socket in a selected pod's cgroup listening
//! on one of the endpoint's ports is its server.
//! Cost: an unmonitored TCP packet reads the few header words it needs
//! (direct packet loads; `bpf_skb_load_bytes` only for non-linear headers),
//! bumps a plain per-CPU counter and does three inlined array lookups
//! (config, port prefilter for both ports); non-TCP or short packets stop
//! after the first check. Only on a port a workload endpoint uses does a
//! packet outside an established flow add `bpf_skb_cgroup_id` and one
//! hash lookup (`RW_WL_ENDPOINTS`). Measured with `bench_capture` on a noisy 2-core VM,
//! including the bpf_stats overhead (an empty program shows ~55-60 ns):
//! ~72 ns/packet unmonitored. Monitored packets add the address read, a flow
//! hash lookup (an LPM lookup for new flows) and atomic adds (~250 ns);
//! sampled ones a payload copy and a ring-buffer write (~480 ns; ~550 ns
//! with a lagging reader, which is woken at most once per 64 KiB written).
//! Always returns 1 (allow).

use agent_common::observer;
use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};

use crate::track::{Hook, handle};

#[cgroup_skb]
pub fn rw_cgroup_ingress(ctx: SkBuffContext) -> i32 {
    handle(ctx.skb.skb, Hook::CgroupIngress);
    1
}

#[cgroup_skb]
pub fn rw_cgroup_egress(ctx: SkBuffContext) -> i32 {
    handle(ctx.skb.skb, Hook::CgroupEgress);
    1
}

/// The socket whose hook saw the packet: egress runs on the sender's
/// socket, ingress on the receiver's.
#[inline(always)]
pub fn cgroup_observer(egress: bool, to_server: bool) -> u8 {
    if egress == to_server {
        observer::CLIENT_SOCKET
    } else {
        observer::SERVER_SOCKET
    }
}
