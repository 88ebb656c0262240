//! TC classifier ingress and egress: opt-in capture on named interfaces.
//!
//! Hook: `BPF_PROG_TYPE_SCHED_CLS` (tcx on 6.6+, clsact otherwise) on an
//! interface, for traffic forwarded through the node that no local socket
//! owns. The skb starts at the Ethernet header; up to two VLAN tags (802.1Q,
//! 802.1ad) still in the packet are skipped (offloaded tags are not in the
//! data at all).
//! Cost: as cgroup_skb plus one 2-byte load per Ethernet/VLAN header.
//! Returns TC_ACT_UNSPEC (tcx: next program), so it never decides a verdict.

use aya_ebpf::{bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};

use crate::track::{Hook, handle};

#[classifier]
pub fn rw_tc_ingress(ctx: TcContext) -> i32 {
    handle(ctx.skb.skb, Hook::Tc);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn rw_tc_egress(ctx: TcContext) -> i32 {
    handle(ctx.skb.skb, Hook::Tc);
    TC_ACT_UNSPEC
}
