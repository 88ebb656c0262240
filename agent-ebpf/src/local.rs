//! The second view of a node-local connection.
//!
//! Hook: none of its own; called from `track::handle` for every established
//! server-socket view of a cgroup_skb hook.
//! Why: when client and server are both on this node (loopback, a veth to
//! another namespace) each packet passes the sender's egress hook and the
//! receiver's ingress hook, and the second view's full path (counters, head
//! read, a ring sample) was work userspace then threw away.
//! Cost: a state read for a decided flow, plus one lookup of the client
//! view on each skipped packet; the decision itself one lookup, once per
//! flow.

use agent_common::{FlowKey, FlowStats, flow_state, observer, tcp};

use crate::{maps::RW_FLOWS, packet::Tcp, track::or};

/// Whether this packet of an established server-socket view is one its
/// client-socket view has already counted. When both sockets of a
/// connection are on this node (loopback, a pod calling a pod or the host
/// over a veth) every packet passes the sender's egress hook and the
/// receiver's ingress hook, and both views used to do the whole work (the
/// tracker then reported one and dropped the other's samples). Userspace
/// reports the client-socket view of a connection when its first sample
/// comes first; so the server view is skipped once it has sampled once
/// (that sample names the server's socket) if its first sample was the
/// first request and the client view, whose egress hook saw that packet
/// before this ingress hook did, had sampled it too. A client view under
/// the same key exists only if the client's socket is on this node; any
/// other flow is decided sole by one missed lookup. Decided once per flow
/// (a state bit); each skipped packet checks that the client view is still
/// in the map; FIN/RST and what follows a FIN are never skipped, so the
/// entry still ends with the connection.
#[inline(always)]
pub fn local_duplicate(key: &FlowKey, p: &Tcp, flow: *mut FlowStats) -> bool {
    // SAFETY: `flow` is a live map value.
    let state = unsafe { (*flow).state };
    if state & flow_state::LOCAL_SOLE != 0 {
        return false;
    }
    let ending = p.flags & (tcp::FIN | tcp::RST) != 0
        || state & (flow_state::FIN_TO_SERVER | flow_state::FIN_TO_CLIENT | flow_state::ENDED) != 0;
    let mut peer = *key;
    peer.observer = observer::CLIENT_SOCKET;
    if state & flow_state::LOCAL_DUPLICATE != 0 {
        if ending {
            return false;
        }
        // Only while the client view is there to count: one evicted by the
        // LRU, or deleted because a reload took its rule away, leaves this
        // view to count on its own from here (both bits set: sole wins).
        if RW_FLOWS.get_ptr(peer).is_some() {
            return true;
        }
        // SAFETY: `flow` is a live map value, 8-byte aligned.
        or(unsafe { &raw mut (*flow).state }, flow_state::LOCAL_SOLE);
        return false;
    }
    // SAFETY: live map value.
    let (to_server, to_client) = unsafe { ((*flow).dirs[0].samples, (*flow).dirs[1].samples) };
    if to_server == 0 && to_client == 0 {
        // Not sampled yet: the socket is not named yet.
        return false;
    }
    // SAFETY: live map value, read at once.
    let peer_first = RW_FLOWS
        .get_ptr(peer)
        .is_some_and(|f| unsafe { (*f).dirs[0].samples } != 0);
    let bit = if to_client == 0 && peer_first {
        flow_state::LOCAL_DUPLICATE
    } else {
        flow_state::LOCAL_SOLE
    };
    // SAFETY: `flow` is a live map value, 8-byte aligned.
    or(unsafe { &raw mut (*flow).state }, bit);
    bit == flow_state::LOCAL_DUPLICATE && !ending
}
