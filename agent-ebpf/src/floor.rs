//! The cost floor: an empty cgroup_skb program, never attached by the agent.
//!
//! Hook: `BPF_PROG_TYPE_CGROUP_SKB`, ingress and egress, attached only by the
//! benchmarks (`cargo xtask bench overhead|capture`) next to, or instead of,
//! the real programs.
//! Why: what any cgroup_skb design pays per packet on this machine at this
//! moment (the hook dispatch and, with `bpf_stats` on, its accounting); the
//! capture's own cost is published as the distance from this floor, measured
//! in the same run, because shared machines drift by 2x between runs.
//! Cost: nothing but the return (55-62 ns a packet measured here, most of it
//! the bpf_stats timing itself).

use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};

#[cgroup_skb]
pub fn rw_floor(_ctx: SkBuffContext) -> i32 {
    1
}
