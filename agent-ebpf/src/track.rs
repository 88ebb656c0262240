//! The packet path shared by all hooks: endpoint match, flow counters,
//! sampling, flow end.
//!
//! Hook: called from the cgroup_skb and TC programs for every TCP packet.
//! Why: per-flow counters must be exact (request starts for quotas), and
//! userspace needs the heads that carry identity (requests) and outcome
//! (responses) while the bulk of a flow's bytes stays in the kernel.
//! Endpoints served by workloads are matched by the local socket's cgroup
//! id and local port (`RW_WL_ENDPOINTS`), the local side being the server,
//! so an endpoint follows its pods rather than their addresses.
//! Cost: three inlined array lookups (`maps::port_prefilter`) for
//! unmonitored traffic; a packet on a port a workload endpoint uses
//! (`port_flags::WORKLOAD`) and no established flow
//! adds the socket's cgroup id and one hash lookup; for a monitored
//! segment a flow-table lookup, a few atomic adds, one 12-byte payload
//! read that serves the method, response and HTTP/2 tests (nine masked
//! compares and one more for `HTTP/1.`), and for a sampled segment the
//! payload copy and one ring write. Sampled: the first `first_segments`
//! of each direction, every request head (client) and response head
//! (server, `HTTP/1.`), every client segment that starts like a request
//! line of any token method (up to eight byte compares, only for segments
//! no other reason samples), every segment of an HTTP/2 flow, and 1 in
//! `sample_one_in` of the rest: a keep-alive flow of small requests and
//! responses is thus sampled in full, a bulk download only at its heads.
//! When both sockets of a connection are on this node (loopback, veth) each
//! packet passes two hooks: the server-socket view stops after its first
//! sample when the client-socket view counts the connection
//! (`local::local_duplicate`), so the second run costs a lookup and a state read,
//! not the whole path.

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering::Relaxed, atomic_or, atomic_xadd},
};

use agent_common::{
    FlowEndRecord, FlowKey, FlowStats, SAMPLE_HEADER_LEN, SNAPLEN_MAX, SampleHeader, direction,
    end_reason, event_id, flow_state, http, observer, stat, tcp,
};
use aya_ebpf::{
    bindings::{
        __sk_buff, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_PROD_POS,
    },
    helpers::{
        bpf_ktime_get_boot_ns, bpf_ktime_get_coarse_ns, bpf_ringbuf_output, bpf_skb_cgroup_id,
        bpf_skb_load_bytes,
    },
};

use crate::{
    cgroup::cgroup_observer,
    endpoint::{NO_MATCH, match_side},
    local::local_duplicate,
    maps::{
        Prefiltered, RW_EVENTS, RW_FLOWS, RW_SCRATCH, count, count_activity, create_flow,
        port_prefilter,
    },
    packet::{self, Tcp},
};

/// Unread ring bytes above which samples may wake the reader.
const WAKEUP_BYTES: u64 = 256 * 1024;
/// With a backlog, one forced wakeup per this many bytes written (a power
/// of two: `prod ^ next >= STEP` tests a boundary crossing).
const WAKEUP_STEP: u64 = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    CgroupIngress,
    CgroupEgress,
    Tc,
}

/// Runs on every packet; never fails the packet.
#[inline(always)]
pub fn handle(skb: *mut __sk_buff, hook: Hook) {
    count_activity(stat::PACKETS_SEEN);
    let (l3, proto) = if hook == Hook::Tc {
        match packet::ethernet(skb) {
            Some(v) => v,
            None => return,
        }
    } else {
        // SAFETY: context pointer; `protocol` is in network byte order.
        (0, u16::from_be(unsafe { (*skb).protocol } as u16))
    };
    let Some(p) = packet::tcp(skb, l3, proto) else {
        return;
    };
    let Some(Prefiltered {
        cfg,
        a: pd,
        b: ps,
        any_port,
    }) = port_prefilter(p.dport, p.sport)
    else {
        return;
    };
    let cfg = *cfg;
    let (obs_to_server, obs_to_client, ifindex) = match hook {
        Hook::CgroupIngress => (
            cgroup_observer(false, true),
            cgroup_observer(false, false),
            0,
        ),
        Hook::CgroupEgress => (cgroup_observer(true, true), cgroup_observer(true, false), 0),
        // SAFETY: context pointer.
        Hook::Tc => (observer::TC, observer::TC, unsafe { (*skb).ifindex }),
    };
    let Some((src, dst)) = packet::addrs(skb, &p) else {
        count(stat::MALFORMED);
        return;
    };
    // One call of `update` below, reached from both lookups: it is inlined,
    // so calling it from each would put two copies in every program.
    let (key, dir, endpoint, flow) = 'found: {
        if !any_port {
            // Established flows skip the trie: guess the orientation from the
            // prefilter and look the flow up directly. A wrong guess (both
            // ports flagged) only costs the full match below.
            let to_server = pd.flags != 0;
            let key = flow_key(
                &p,
                &src,
                &dst,
                to_server,
                obs_to_server,
                obs_to_client,
                ifindex,
            );
            if let Some(flow) = RW_FLOWS.get_ptr_mut(key) {
                let dir = if to_server {
                    direction::TO_SERVER
                } else {
                    direction::TO_CLIENT
                };
                // SAFETY: live map value.
                let endpoint = unsafe { (*flow).endpoint_id };
                break 'found (key, dir, endpoint, flow);
            }
        }
        // Plain integers, not `Option<u32>`: LLVM may spill the undefined
        // payload of a `None`, and the verifier rejects reading it. The
        // local socket (receiver on ingress, sender on egress) lends its
        // cgroup to the workload match; TC has no local socket.
        let to_dst = match_side(&dst, p.dport, pd, any_port, || {
            if hook == Hook::CgroupIngress {
                socket_cgroup(skb)
            } else {
                0
            }
        });
        let to_src = match_side(&src, p.sport, ps, any_port, || {
            if hook == Hook::CgroupEgress {
                socket_cgroup(skb)
            } else {
                0
            }
        });
        // The server is the monitored side; if both sides match, the lower port
        // (ephemeral ports are high), so both directions agree on the orientation.
        let (dir, found) = if to_dst != NO_MATCH && (to_src == NO_MATCH || p.sport >= p.dport) {
            (direction::TO_SERVER, to_dst)
        } else if to_src != NO_MATCH {
            (direction::TO_CLIENT, to_src)
        } else {
            return;
        };
        let key = flow_key(
            &p,
            &src,
            &dst,
            dir == direction::TO_SERVER,
            obs_to_server,
            obs_to_client,
            ifindex,
        );
        (key, dir, found as u32, core::ptr::null_mut())
    };
    if hook != Hook::Tc
        && key.observer == observer::SERVER_SOCKET
        && !flow.is_null()
        && local_duplicate(&key, &p, flow)
    {
        count_activity(stat::LOCAL_DUPLICATES);
        return;
    }
    count_activity(stat::PACKETS_MONITORED);
    update(skb, &key, &p, dir, endpoint, &cfg, flow);
}

#[inline(always)]
fn flow_key(
    p: &Tcp,
    src: &[u8; 16],
    dst: &[u8; 16],
    to_server: bool,
    obs_to_server: u8,
    obs_to_client: u8,
    ifindex: u32,
) -> FlowKey {
    if to_server {
        FlowKey {
            client_addr: *src,
            server_addr: *dst,
            client_port: p.sport,
            server_port: p.dport,
            observer: obs_to_server,
            _pad0: 0,
            _pad1: 0,
            ifindex,
        }
    } else {
        FlowKey {
            client_addr: *dst,
            server_addr: *src,
            client_port: p.dport,
            server_port: p.sport,
            observer: obs_to_client,
            _pad0: 0,
            _pad1: 0,
            ifindex,
        }
    }
}

/// cgroup v2 id of the socket that owns the packet (0: none).
#[inline(always)]
fn socket_cgroup(skb: *mut __sk_buff) -> u64 {
    // SAFETY: context pointer; the helper checks the socket itself.
    unsafe { bpf_skb_cgroup_id(skb) }
}

#[inline(always)]
pub fn add(p: *mut u64, v: u64) {
    // SAFETY: `p` points into a live map value, 8-byte aligned.
    unsafe { atomic_xadd::<u64, u64, { Relaxed }>(p, v) };
}

// The "generic" BPF CPU that aya-build links for has atomic add/or but not
// their fetching variants (v3), so reads and atomic updates are separate:
// concurrent packets of the same flow direction (rare) may share a segment
// index, and userspace drops a duplicated flow end.
#[inline(always)]
pub fn or(p: *mut u64, v: u64) {
    // SAFETY: `p` points into a live map value, 8-byte aligned.
    unsafe { atomic_or::<u64, u64, { Relaxed }>(p, v) };
}

#[inline(always)]
fn update(
    skb: *mut __sk_buff,
    key: &FlowKey,
    p: &Tcp,
    dir: u8,
    endpoint: u32,
    cfg: &agent_common::Config,
    found: *mut FlowStats,
) {
    // Flow timestamps use the coarse monotonic clock (a cached value, a few
    // ns); samples and flow ends get the precise boot-time clock.
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // The request-start test comes before the flow lookup, so the baseline
    // (`REQUEST_STARTS`) counts every request start on watched traffic,
    // also those whose flow is ended or could not enter the map. One read of
    // the first 12 bytes serves the method test and the HTTP/2 test (both
    // need at least 16 payload bytes).
    let head = if p.payload_len >= agent_common::http::MIN_REQUEST_LEN {
        packet::words::<3>(skb, p.payload_off)
    } else {
        None
    };
    let mut request = false;
    let mut w = 0u64;
    let mut w2 = 0u32;
    if let Some(b) = head {
        w = u64::from(b[0]) | (u64::from(b[1]) << 32);
        w2 = b[2];
        request = http::word_starts_with_method(w);
    }
    // Userspace counts requests to the server only (`request_starts[0]`).
    let counted = request && dir == direction::TO_SERVER;
    if counted {
        count(stat::REQUEST_STARTS);
    }
    let existing = if found.is_null() {
        RW_FLOWS.get_ptr_mut(key)
    } else {
        Some(found)
    };
    let flow = match existing {
        Some(f) => {
            // SAFETY: live map value.
            if unsafe { (*f).state } & flow_state::ENDED != 0 {
                // Trailing ACKs/RSTs after the end: the counters stay final.
                count(stat::STRAY_PACKETS);
                if counted {
                    // A 4-tuple reused before userspace deleted the frozen entry.
                    count(stat::REQUESTS_STRAY);
                }
                return;
            }
            f
        }
        None => {
            // Do not start a flow from a packet that carries nothing
            // (trailing ACK/FIN/RST of an evicted flow).
            if p.flags & (tcp::FIN | tcp::RST) != 0
                || (p.payload_len == 0 && p.flags & tcp::SYN == 0)
            {
                count(stat::STRAY_PACKETS);
                if counted {
                    count(stat::REQUESTS_STRAY);
                }
                return;
            }
            match create_flow(key) {
                Some((f, created)) => {
                    if created {
                        // SAFETY: `f` points to the live entry just created.
                        unsafe {
                            (*f).cgroup_id = bpf_skb_cgroup_id(skb);
                            (*f).endpoint_id = endpoint;
                        }
                    }
                    f
                }
                None => {
                    if counted {
                        count(stat::REQUESTS_FLOW_TABLE_FULL);
                    }
                    return;
                }
            }
        }
    };
    let d = if dir == direction::TO_SERVER { 0 } else { 1 };
    // SAFETY: `flow` points to a live map value; fields are accessed
    // atomically or with tolerated races (timestamps).
    unsafe {
        let ds = &raw mut (*flow).dirs[d];
        add(&raw mut (*ds).packets, 1);
        add(&raw mut (*ds).bytes, u64::from(p.ip_len));
        if (*ds).first_seen_ns == 0 {
            (*ds).first_seen_ns = now;
        }
        (*ds).last_seen_ns = now;
        if (*ds).tcp_flags & u64::from(p.flags) != u64::from(p.flags) {
            or(&raw mut (*ds).tcp_flags, u64::from(p.flags));
        }
        if p.payload_len > 0 {
            add(&raw mut (*ds).payload_bytes, u64::from(p.payload_len));
            let seg = (*ds).payload_segments;
            add(&raw mut (*ds).payload_segments, 1);
            // A response head is sampled, not counted: its status is paired
            // with the request in userspace.
            let response = d == 1 && head.is_some() && http::word_starts_response(w);
            if head.is_some()
                && (*flow).state & flow_state::ALL_SEGMENTS == 0
                && http::words_start_http2(d == 0, w, w2)
            {
                or(&raw mut (*flow).state, flow_state::ALL_SEGMENTS);
            }
            let n = u64::from(cfg.sample_one_in);
            let all = (*flow).state & flow_state::ALL_SEGMENTS != 0;
            // A client segment that starts like a request line of a
            // method outside the table (`PURGE /`, `get /`) is sampled,
            // not counted: userspace counts it only if it is a whole head
            // a lenient server serves. Tested last, so the other reasons
            // spare its byte compares.
            if all
                || seg < u64::from(cfg.first_segments)
                || request
                || response
                || (n != 0 && seg % n == 0)
                || (d == 0 && head.is_some() && http::word_starts_like_request(w))
            {
                add(&raw mut (*ds).samples, 1);
                sample(skb, key, p, dir, endpoint, (*flow).cgroup_id, cfg.snaplen);
            }
            // Counted after the head is in the ring: a poll of the flow map
            // that sees this count finds its head already committed (the
            // agent drains the ring before passing a poll on), so a count
            // never reaches the engine before the credential it is charged
            // to.
            if request {
                add(&raw mut (*ds).request_starts, 1);
            }
        }
        let state = &raw mut (*flow).state;
        if p.flags & tcp::RST != 0 {
            end(key, flow, end_reason::RST);
        } else if p.flags & tcp::FIN != 0 {
            let bit = if d == 0 {
                flow_state::FIN_TO_SERVER
            } else {
                flow_state::FIN_TO_CLIENT
            };
            or(state, bit);
        } else if p.flags & tcp::ACK != 0
            && p.payload_len == 0
            && *state & (flow_state::FIN_TO_SERVER | flow_state::FIN_TO_CLIENT)
                == flow_state::FIN_TO_SERVER | flow_state::FIN_TO_CLIENT
        {
            end(key, flow, end_reason::FIN);
        }
    }
}

#[inline(always)]
fn sample(
    skb: *mut __sk_buff,
    key: &FlowKey,
    p: &Tcp,
    dir: u8,
    endpoint: u32,
    cgroup_id: u64,
    snaplen: u32,
) {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let Some(scratch) = RW_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let snap = if snaplen > SNAPLEN_MAX {
        SNAPLEN_MAX
    } else {
        snaplen
    };
    let mut captured = p.payload_len;
    if captured > snap {
        captured = snap;
        count(stat::SAMPLE_TRUNCATED);
    }
    // SAFETY: `scratch` is this CPU's scratch buffer (SAMPLE_HEADER_LEN +
    // SNAPLEN_MAX bytes, 8-byte aligned); the payload copy length is masked
    // into 1..=SNAPLEN_MAX right before the call.
    unsafe {
        let buf = (*scratch).buf.as_mut_ptr();
        // Field by field: a whole-struct write would be built on the stack first.
        let hdr = buf as *mut SampleHeader;
        (*hdr).event = event_id::SAMPLE;
        (*hdr).direction = dir;
        (*hdr).tcp_flags = p.flags;
        (*hdr)._pad = 0;
        (*hdr).captured_len = captured;
        (*hdr).payload_len = p.payload_len;
        (*hdr).seq = p.seq;
        (*hdr).endpoint_id = endpoint;
        (*hdr).ts_boot_ns = now;
        (*hdr).cgroup_id = cgroup_id;
        // Volatile: LLVM otherwise turns the key's known-zero bytes (IPv4
        // mapping, padding) into odd-sized memsets the BPF backend rejects.
        core::ptr::write_volatile(&raw mut (*hdr).key, *key);
        (*hdr)._pad2 = 0;
        let mut len = SAMPLE_HEADER_LEN as u64;
        if captured > 0 {
            // The verifier needs a length it can prove to be in
            // 1..=SNAPLEN_MAX. LLVM folds range checks into forms it cannot
            // follow, so the length is read back through a volatile load
            // (opaque to LLVM) and forced into range with a mask; for
            // 1..=SNAPLEN_MAX the mask is the identity.
            let c = core::ptr::read_volatile(&raw const (*hdr).captured_len);
            let n = (c.wrapping_sub(1) & (SNAPLEN_MAX - 1)) + 1;
            let r = bpf_skb_load_bytes(
                skb as *const c_void,
                p.payload_off,
                buf.add(SAMPLE_HEADER_LEN) as *mut c_void,
                n,
            );
            if r < 0 {
                count(stat::PAYLOAD_LOAD_FAILED);
                (*hdr).captured_len = 0;
            } else {
                len += u64::from(n);
            }
        }
        let flags = wakeup_flags(len, false);
        let r = bpf_ringbuf_output(RW_EVENTS_PTR(), buf as *mut c_void, len, flags);
        if r < 0 {
            count(stat::RING_FULL);
        } else {
            count(stat::SAMPLES_EMITTED);
        }
    }
}

/// Ring submit flags for a record of `len` bytes (`reserved`: already
/// reserved, so the producer position includes it).
///
/// A forced wakeup (irq_work, ~7 µs on a VM) costs far more than the
/// record itself, and the reader also polls on a short timer. So a wakeup
/// is forced only while a backlog builds (more than WAKEUP_BYTES unread)
/// and only by the record that crosses a WAKEUP_STEP boundary of the
/// producer position: at most one per WAKEUP_STEP bytes written, instead of
/// one per record when the reader lags. Racy reads of the positions only
/// move a wakeup by a record; the poll timer covers a missed one. Never 0
/// (the kernel's default wakes the reader whenever it has caught up, i.e.
/// on almost every record).
#[inline(always)]
pub fn wakeup_flags(len: u64, reserved: bool) -> u64 {
    let avail = RW_EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    if avail < WAKEUP_BYTES {
        return u64::from(BPF_RB_NO_WAKEUP);
    }
    let prod = RW_EVENTS.query(u64::from(BPF_RB_PROD_POS));
    // The ring adds an 8-byte header and rounds up to 8.
    let size = (len + 8 + 7) & !7;
    let (start, end) = if reserved {
        (prod.wrapping_sub(size), prod)
    } else {
        (prod, prod + size)
    };
    if (start ^ end) >= WAKEUP_STEP {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

#[expect(non_snake_case, reason = "reads like the map it names")]
#[inline(always)]
fn RW_EVENTS_PTR() -> *mut c_void {
    (&raw const RW_EVENTS).cast_mut().cast()
}

/// Marks the flow ended (freezing its counters) and emits the flow-end
/// record once (whichever CPU marks it first, as far as the generic CPU's
/// atomics allow); userspace deletes the entry once it has seen the end.
#[inline(always)]
fn end(key: &FlowKey, flow: *mut FlowStats, reason: u32) {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let bits = if reason == end_reason::RST {
        flow_state::ENDED | flow_state::END_RST
    } else {
        flow_state::ENDED
    };
    // SAFETY: `flow` points to a live map value.
    unsafe {
        if (*flow).state & flow_state::ENDED != 0 {
            return;
        }
        or(&raw mut (*flow).state, bits);
    }
    match RW_EVENTS.reserve::<FlowEndRecord>(0) {
        Some(mut entry) => {
            // SAFETY: the reservation is sized for a FlowEndRecord; `flow`
            // is a live map value.
            unsafe {
                let r = entry.as_mut_ptr();
                (*r).event = event_id::FLOW_END;
                (*r).reason = reason;
                (*r).ts_boot_ns = now;
                core::ptr::write_volatile(&raw mut (*r).key, *key);
                (*r)._pad = 0;
                core::ptr::copy_nonoverlapping(flow.cast_const(), &raw mut (*r).stats, 1);
            }
            entry.submit(0);
            count(stat::FLOW_ENDS_EMITTED);
        }
        None => {
            // SAFETY: as above.
            or(
                unsafe { &raw mut (*flow).state },
                flow_state::END_RECORD_LOST,
            );
            count(stat::FLOW_END_RING_FULL);
        }
    }
}
