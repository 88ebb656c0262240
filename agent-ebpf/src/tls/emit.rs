//! The copy half of the TLS probes: joins a call's plaintext to its flow,
//! counts it, and copies it into the ring.
//!
//! Hook: none of its own; called from the probes in `tls` (process context)
//! once a call's socket is known. Cost: the fd → socket walk (~0.4 µs),
//! the endpoint match, the flow counters and one ring reservation +
//! `bpf_probe_read_user` per 4 KiB copied; nothing past the walk for a
//! connection that goes to no watched endpoint.
//!
//! Records: chunks of at most `TLS_CHUNK_MAX` bytes, up to `max_copy` per
//! call, each copied straight into a ring reservation of a fixed size class
//! (the verifier wants a constant reservation size). Not a per-CPU scratch
//! buffer: uprobe programs run preemptible (only migration is disabled), so
//! two tasks on one CPU could interleave in one scratch buffer.

use core::ffi::c_void;

use agent_common::{
    FlowKey, FlowStats, TLS_CHUNK_MAX, TLS_CHUNK_SMALL, TLS_DATA_HEADER_LEN, TLS_MAX_CHUNKS,
    TlsConfig, TlsDataHeader, direction, event_id, http, observer, stat, tls_call,
};
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_ktime_get_boot_ns, bpf_ktime_get_ns, bpf_probe_read_user,
    generated::bpf_probe_read_user as raw_read_user,
};

use super::{RW_TLS_CONNS, conn_key};
use crate::{
    endpoint::{NO_MATCH, match_side},
    maps::{Prefiltered, RW_EVENTS, RW_FLOWS, count, count_activity, create_flow, port_prefilter},
    sock::{Tuple, tuple_of_fd},
    track::{add, wakeup_flags},
};

/// One ring record of a size class.
#[repr(C)]
struct Rec<const N: usize> {
    hdr: TlsDataHeader,
    data: [u8; N],
}

/// Joins one call's bytes to its connection, counts them and copies them
/// if the connection goes to a watched endpoint.
#[inline(always)]
pub(super) fn emit(
    cfg: &TlsConfig,
    pid_tgid: u64,
    ssl: u64,
    fd: i32,
    buf: u64,
    len: u64,
    kind: u32,
) {
    let tgid = (pid_tgid >> 32) as u32;
    let mut t = Tuple::EMPTY;
    let why = tuple_of_fd(cfg, fd, &mut t);
    if why != 0 {
        count(why);
        if why == stat::TLS_NO_SOCKET {
            // The cached fd is stale (closed or reused for a non-socket).
            let _ = RW_TLS_CONNS.remove(conn_key(tgid, ssl));
        }
        return;
    }
    // A parked write learnt its fd here: remember it for the next calls.
    if kind == tls_call::WRITE && RW_TLS_CONNS.get_ptr(conn_key(tgid, ssl)).is_none() {
        let _ = RW_TLS_CONNS.insert(conn_key(tgid, ssl), fd, 0);
    }
    let Some(Prefiltered {
        a: pl,
        b: pr,
        any_port,
        ..
    }) = port_prefilter(t.lport, t.rport)
    else {
        count_activity(stat::TLS_NOT_WATCHED);
        return;
    };
    let (local, remote) = (t.local.to_ne_bytes(), t.remote.to_ne_bytes());
    let rm = match_side(&remote, t.rport, pr, any_port, || 0);
    // The caller's cgroup is the local socket's (the process made it).
    // SAFETY: helper without preconditions.
    let lm = match_side(&local, t.lport, pl, any_port, || unsafe {
        bpf_get_current_cgroup_id()
    });
    // As on the wire: the watched side is the server; if both are, the
    // lower port.
    let server_is_remote = rm != NO_MATCH && (lm == NO_MATCH || t.lport >= t.rport);
    let (key, found) = if server_is_remote {
        (
            FlowKey {
                client_addr: local,
                server_addr: remote,
                client_port: t.lport,
                server_port: t.rport,
                observer: observer::TLS_PLAINTEXT,
                _pad0: 0,
                _pad1: 0,
                ifindex: 0,
            },
            rm,
        )
    } else if lm != NO_MATCH {
        (
            FlowKey {
                client_addr: remote,
                server_addr: local,
                client_port: t.rport,
                server_port: t.lport,
                observer: observer::TLS_PLAINTEXT,
                _pad0: 0,
                _pad1: 0,
                ifindex: 0,
            },
            lm,
        )
    } else {
        count_activity(stat::TLS_NOT_WATCHED);
        return;
    };
    count_activity(stat::TLS_CALLS);
    let endpoint = found as u32;
    // This process is the client when the remote side is watched: its
    // writes go to the server.
    let to_server = (kind == tls_call::WRITE) == server_is_remote;
    let dir = if to_server {
        direction::TO_SERVER
    } else {
        direction::TO_CLIENT
    };
    // The request-start test comes before the flow entry, so the baseline
    // (`REQUEST_STARTS`) also counts requests whose entry could not be made.
    // SAFETY: reading 8 bytes of the caller's buffer (faults are returned).
    let request = to_server
        && len >= u64::from(http::MIN_REQUEST_LEN)
        && unsafe { bpf_probe_read_user(buf as *const u64) }
            .is_ok_and(http::word_starts_with_method);
    if request {
        count(stat::REQUEST_STARTS);
    }
    let Some(flow) = flow_entry(&key, endpoint) else {
        if request {
            count(stat::REQUESTS_FLOW_TABLE_FULL);
        }
        return;
    };
    let d = if to_server { 0 } else { 1 };
    // SAFETY: live map value; counters updated atomically, timestamps racy
    // (tolerated, as on the wire path).
    let offset = unsafe {
        let ds = &raw mut (*flow).dirs[d];
        let offset = (*ds).payload_bytes;
        add(&raw mut (*ds).payload_bytes, len);
        add(&raw mut (*ds).payload_segments, 1);
        // CLOCK_MONOTONIC like the wire path's coarse clock (which kprobe-type
        // programs may not call).
        // SAFETY: helper without preconditions.
        let now = bpf_ktime_get_ns();
        if (*ds).first_seen_ns == 0 {
            (*ds).first_seen_ns = now;
        }
        (*ds).last_seen_ns = now;
        offset
    };
    let cap = u64::from(cfg.max_copy);
    let copy = if len > cap {
        count(stat::TLS_CUT_CALLS);
        add_stat(stat::TLS_CUT_BYTES, len - cap);
        cap
    } else {
        len
    };
    // SAFETY: live map value.
    let cgroup_id = unsafe { (*flow).cgroup_id };
    // Whole 4 KiB chunks in a loop with a constant-step counter and no
    // branch that survives an iteration (so the verifier's states at the
    // loop head stay few), then the tail in the smallest size class that
    // holds it.
    let full = copy / u64::from(TLS_CHUNK_MAX);
    let tail = (copy % u64::from(TLS_CHUNK_MAX)) as u32;
    let mut h = Head {
        dir,
        chunk_len: TLS_CHUNK_MAX,
        offset,
        call_len: len as u32,
        call: kind,
        pid_tgid,
        endpoint,
        cgroup_id,
    };
    let mut i = 0u64;
    while i < u64::from(TLS_MAX_CHUNKS) {
        if i >= full {
            break;
        }
        let at = i * u64::from(TLS_CHUNK_MAX);
        h.offset = offset + at;
        chunk::<{ TLS_CHUNK_MAX as usize }>(&h, &key, buf + at);
        i += 1;
    }
    if tail > 0 {
        let at = full * u64::from(TLS_CHUNK_MAX);
        h.offset = offset + at;
        h.chunk_len = tail;
        if tail <= TLS_CHUNK_SMALL {
            chunk::<{ TLS_CHUNK_SMALL as usize }>(&h, &key, buf + at);
        } else {
            chunk::<{ TLS_CHUNK_MAX as usize }>(&h, &key, buf + at);
        }
    }
    let records = full + u64::from(tail > 0);
    // SAFETY: live map value.
    add(unsafe { &raw mut (*flow).dirs[d].samples }, records);
    // Counted once the plaintext is in the ring, as on the wire path: a
    // poll that sees the count finds the head before it.
    if request {
        // SAFETY: live map value.
        add(unsafe { &raw mut (*flow).dirs[d].request_starts }, 1);
    }
}

/// The RW_FLOWS entry of a TLS layer, created on first use.
#[inline(always)]
fn flow_entry(key: &FlowKey, endpoint: u32) -> Option<*mut FlowStats> {
    if let Some(f) = RW_FLOWS.get_ptr_mut(key) {
        return Some(f);
    }
    let (f, created) = create_flow(key)?;
    if created {
        // SAFETY: the entry just created.
        unsafe {
            (*f).cgroup_id = bpf_get_current_cgroup_id();
            (*f).endpoint_id = endpoint;
        }
    }
    Some(f)
}

/// Header fields shared by the chunks of one call.
struct Head {
    dir: u8,
    chunk_len: u32,
    offset: u64,
    call_len: u32,
    call: u32,
    pid_tgid: u64,
    endpoint: u32,
    cgroup_id: u64,
}

/// Reserves a record of size class `N`, copies `h.chunk_len` (1..=N) user
/// bytes from `src` straight into it and submits it (counted when the
/// ring is full).
#[inline(always)]
fn chunk<const N: usize>(h: &Head, key: &FlowKey, src: u64) {
    let Some(mut entry) = RW_EVENTS.reserve::<Rec<N>>(0) else {
        count(stat::TLS_RING_FULL);
        return;
    };
    let r = entry.as_mut_ptr();
    // SAFETY: `r` is the reservation, sized for a `Rec<N>`; the copy length
    // is masked into 1..=N (N a power of two) right before the helper call.
    unsafe {
        let hdr = &raw mut (*r).hdr;
        (*hdr).event = event_id::TLS_DATA;
        (*hdr).direction = h.dir;
        (*hdr)._pad0 = 0;
        (*hdr)._pad1 = 0;
        (*hdr).chunk_len = h.chunk_len;
        (*hdr).offset = h.offset;
        (*hdr).call_len = h.call_len;
        (*hdr).call = h.call;
        (*hdr).pid = (h.pid_tgid >> 32) as u32;
        (*hdr).tid = h.pid_tgid as u32;
        (*hdr).endpoint_id = h.endpoint;
        (*hdr)._pad2 = 0;
        (*hdr).ts_boot_ns = bpf_ktime_get_boot_ns();
        (*hdr).cgroup_id = h.cgroup_id;
        core::ptr::write_volatile(&raw mut (*hdr).key, *key);
        (*hdr)._pad3 = 0;
        let c = core::ptr::read_volatile(&raw const h.chunk_len);
        let n = (c.wrapping_sub(1) & (N as u32 - 1)) + 1;
        let dst = (r as *mut u8).add(TLS_DATA_HEADER_LEN) as *mut c_void;
        if raw_read_user(dst, n, src as *const c_void) < 0 {
            count(stat::TLS_COPY_FAILED);
            (*hdr).captured_len = 0;
        } else {
            (*hdr).captured_len = n;
        }
    }
    entry.submit(wakeup_flags(core::mem::size_of::<Rec<N>>() as u64, true));
    count(stat::TLS_RECORDS_EMITTED);
}

/// Adds `v` to a loss counter (atomic, like `count`).
#[inline(always)]
fn add_stat(index: u32, v: u64) {
    if let Some(p) = crate::maps::RW_STATS.get_ptr_mut(index) {
        add(p, v);
    }
}
