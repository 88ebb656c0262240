//! OpenSSL plaintext: uprobes on libssl and the `sys_enter` raw tracepoint.
//!
//! Hooks: entry uprobes on `SSL_write`, `SSL_write_ex`, `SSL_read`,
//! `SSL_read_ex`, `SSL_set_fd`; one uretprobe on the returns of `SSL_read`
//! and `SSL_read_ex`; a `sys_enter` raw tracepoint (no tracefs needed),
//! attached only while some process is probed. Userspace attaches the
//! uprobes per process (`UProbeScope::OneProcess`), so only processes that
//! serve or call watched endpoints ever trap.
//! Why: the wire shows only ciphertext; the library call has the clear text.
//! The socket fd comes from `SSL_set_fd`, else from the socket syscall the
//! SSL call makes (the "nested syscall": curl's custom BIO never calls
//! `SSL_set_fd`, and connections older than the agent were set up before
//! it), cached per (tgid, SSL*). The fd's socket gives the exact 4-tuple
//! (see `sock`), so the plaintext joins the cgroup_skb flow. Whether the
//! connection goes to a watched endpoint is decided with the wire path's own
//! `match_side` before a byte is copied.
//! Cost: a uprobe hit is ~5.5-6 µs on these VMs and the uretprobe ~1.2 µs
//! more (the trap, not this code); the program adds a hash lookup or two,
//! the fd → socket walk (~0.4 µs) and, on watched connections, the flow
//! counters and one ring reservation + `bpf_probe_read_user` per 4 KiB. The
//! `sys_enter` hook costs every other thread of the machine one hash lookup
//! (is this thread inside a probed SSL call?) while it is attached.
//!
//! Records: chunks of at most `TLS_CHUNK_MAX` bytes, up to `max_copy` per
//! call, each copied straight into a ring reservation of a fixed size class
//! (the verifier wants a constant reservation size). Not a per-CPU scratch
//! buffer: uprobe programs run preemptible (only migration is disabled), so
//! two tasks on one CPU could interleave in one scratch buffer.

use core::ffi::c_void;

use agent_common::{
    FlowKey, FlowStats, TLS_CHUNK_MAX, TLS_CHUNK_SMALL, TLS_DATA_HEADER_LEN, TLS_MAX_CHUNKS,
    TlsConfig, TlsDataHeader, config_flags, direction, event_id, http, observer, stat, tls_call,
};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
        bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
        generated::bpf_probe_read_user as raw_read_user,
    },
    macros::{map, raw_tracepoint, uprobe, uretprobe},
    maps::{Array, LruHashMap},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext},
};

use crate::{
    endpoint::{NO_MATCH, match_side},
    maps::{RW_CONFIG, RW_EVENTS, RW_FLOWS, RW_PORTS, RW_ZERO_FLOW, count, count_activity},
    sock::{Tuple, tuple_of_fd},
    track::{add, wakeup_flags},
};

const EEXIST: i32 = 17;

/// BTF offsets, syscall numbers, copy cap; written by userspace at start.
#[map]
pub static RW_TLS_CONFIG: Array<TlsConfig> = Array::with_max_entries(1, 0);

/// An SSL call in progress on a thread (key: pid_tgid).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Call {
    ssl: u64,
    buf: u64,
    num: u64,
    /// `SSL_read_ex`'s `size_t *readbytes`.
    readbytes: u64,
    /// The fd of the socket syscall made inside the call, or -1.
    fd: i32,
    /// See `tls_call`.
    kind: u32,
}

/// In-progress calls by thread. LRU: a call whose return never came
/// (thread killed) ages out instead of filling the table.
#[map]
static RW_TLS_CALLS: LruHashMap<u64, Call> = LruHashMap::with_max_entries(16384, 0);

/// Connection key: SSL* values repeat across processes, so the tgid is part of it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnKey {
    tgid: u32,
    _pad: u32,
    ssl: u64,
}

/// fd of each (tgid, SSL*), from `SSL_set_fd` or a nested syscall.
#[map]
static RW_TLS_CONNS: LruHashMap<ConnKey, i32> = LruHashMap::with_max_entries(65536, 0);

/// One ring record of a size class.
#[repr(C)]
struct Rec<const N: usize> {
    hdr: TlsDataHeader,
    data: [u8; N],
}

#[inline(always)]
fn config() -> Option<&'static TlsConfig> {
    let c = RW_TLS_CONFIG.get(0)?;
    if c.enabled == 0 { None } else { Some(c) }
}

#[inline(always)]
fn conn_key(tgid: u32, ssl: u64) -> ConnKey {
    ConnKey { tgid, _pad: 0, ssl }
}

#[inline(always)]
fn arg(ctx: &ProbeContext, n: usize) -> u64 {
    ctx.arg::<u64>(n).unwrap_or(0)
}

#[uprobe]
pub fn rw_tls_set_fd(ctx: ProbeContext) -> u32 {
    if config().is_none() {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let fd = arg(&ctx, 1) as i32;
    let _ = RW_TLS_CONNS.insert(conn_key(tgid, arg(&ctx, 0)), fd, 0);
    0
}

#[uprobe]
pub fn rw_tls_write(ctx: ProbeContext) -> u32 {
    // `int num`: the upper half of the register is not part of it.
    let num = arg(&ctx, 2) as u32 as i32;
    if num > 0 {
        on_write(arg(&ctx, 0), arg(&ctx, 1), num as u64);
    }
    0
}

#[uprobe]
pub fn rw_tls_write_ex(ctx: ProbeContext) -> u32 {
    let num = arg(&ctx, 2);
    if num > 0 {
        on_write(arg(&ctx, 0), arg(&ctx, 1), num);
    }
    0
}

/// Writes are copied at entry (buffer and length are known; no uretprobe).
/// Without a known fd the call is parked for `sys_enter`, which copies it
/// once the write syscall names the socket.
#[inline(always)]
fn on_write(ssl: u64, buf: u64, num: u64) {
    let Some(cfg) = config() else {
        return;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if let Some(fd) = RW_TLS_CONNS.get_ptr(conn_key(tgid, ssl)) {
        // SAFETY: live map value.
        let fd = unsafe { *fd };
        emit(cfg, pid_tgid, ssl, fd, buf, num, tls_call::WRITE);
        return;
    }
    let call = Call {
        ssl,
        buf,
        num,
        readbytes: 0,
        fd: -1,
        kind: tls_call::WRITE,
    };
    if RW_TLS_CALLS.insert(pid_tgid, call, 0).is_err() {
        count(stat::TLS_CALL_TABLE_FULL);
    }
}

#[uprobe]
pub fn rw_tls_read(ctx: ProbeContext) -> u32 {
    on_read_entry(arg(&ctx, 0), arg(&ctx, 1), arg(&ctx, 2), 0, tls_call::READ);
    0
}

#[uprobe]
pub fn rw_tls_read_ex(ctx: ProbeContext) -> u32 {
    on_read_entry(
        arg(&ctx, 0),
        arg(&ctx, 1),
        arg(&ctx, 2),
        arg(&ctx, 3),
        tls_call::READ_EX,
    );
    0
}

/// Saves the arguments for the return probe: Debian's libssl clears the
/// argument registers before it returns.
#[inline(always)]
fn on_read_entry(ssl: u64, buf: u64, num: u64, readbytes: u64, kind: u32) {
    if config().is_none() {
        return;
    }
    let call = Call {
        ssl,
        buf,
        num,
        readbytes,
        fd: -1,
        kind,
    };
    if RW_TLS_CALLS
        .insert(bpf_get_current_pid_tgid(), call, 0)
        .is_err()
    {
        count(stat::TLS_CALL_TABLE_FULL);
    }
}

#[uretprobe]
pub fn rw_tls_read_ret(ctx: RetProbeContext) -> u32 {
    let Some(cfg) = config() else {
        return 0;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(c) = RW_TLS_CALLS.get_ptr(pid_tgid) else {
        return 0;
    };
    // SAFETY: live map value, copied before the entry is removed.
    let c = unsafe { *c };
    let _ = RW_TLS_CALLS.remove(pid_tgid);
    let ret = ctx.ret::<u64>() as u32 as i32;
    let n = if c.kind == tls_call::READ {
        if ret <= 0 {
            return 0;
        }
        ret as u64
    } else if c.kind == tls_call::READ_EX {
        if ret != 1 || c.readbytes == 0 {
            return 0;
        }
        // SAFETY: user pointer read by the helper, which fails safely.
        match unsafe { bpf_probe_read_user(c.readbytes as *const u64) } {
            Ok(n) => n,
            Err(_) => {
                count(stat::TLS_COPY_FAILED);
                return 0;
            }
        }
    } else {
        // A parked write whose syscall never came, replaced by nothing.
        return 0;
    };
    if n == 0 || n > c.num {
        return 0;
    }
    let tgid = (pid_tgid >> 32) as u32;
    let fd = if c.fd >= 0 {
        c.fd
    } else {
        match RW_TLS_CONNS.get_ptr(conn_key(tgid, c.ssl)) {
            // SAFETY: live map value.
            Some(fd) => unsafe { *fd },
            None => {
                // A read served from libssl's buffer before any syscall
                // of this SSL* was seen.
                count(stat::TLS_NO_FD);
                return 0;
            }
        }
    };
    emit(cfg, pid_tgid, c.ssl, fd, c.buf, n, c.kind);
    0
}

/// The syscall an SSL call makes names its socket. Every other syscall of
/// the machine pays an array lookup and a few compares; read/write-family
/// syscalls of other threads one hash lookup more.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn rw_tls_sys_enter(ctx: RawTracePointContext) -> i32 {
    // The syscall number first: an inlined array lookup and a few compares
    // rule out most syscalls (epoll, futex, ...) before the hash lookup.
    let Some(cfg) = RW_TLS_CONFIG.get(0) else {
        return 0;
    };
    let id = ctx.arg::<u64>(1) as u32;
    let fd_syscall = id == cfg.sys_read
        || id == cfg.sys_write
        || id == cfg.sys_readv
        || id == cfg.sys_writev
        || id == cfg.sys_sendto
        || id == cfg.sys_recvfrom
        || id == cfg.sys_sendmsg
        || id == cfg.sys_recvmsg;
    if !fd_syscall || cfg.enabled == 0 {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(c) = RW_TLS_CALLS.get_ptr_mut(pid_tgid) else {
        return 0;
    };
    let regs = ctx.arg::<u64>(0);
    // SAFETY: kernel read by the helper, which fails safely.
    let Ok(fd) =
        (unsafe { bpf_probe_read_kernel((regs + u64::from(cfg.regs_arg0)) as *const u64) })
    else {
        return 0;
    };
    let fd = fd as i32;
    // SAFETY: live map value.
    let call = unsafe { *c };
    let tgid = (pid_tgid >> 32) as u32;
    if call.kind == tls_call::WRITE {
        // A parked write: copy it now that the socket is known.
        let _ = RW_TLS_CALLS.remove(pid_tgid);
        emit(
            cfg,
            pid_tgid,
            call.ssl,
            fd,
            call.buf,
            call.num,
            tls_call::WRITE,
        );
    } else if call.fd < 0 {
        // SAFETY: live map value.
        unsafe { (*c).fd = fd };
        let _ = RW_TLS_CONNS.insert(conn_key(tgid, call.ssl), fd, 0);
    }
    0
}

/// Joins one call's bytes to its connection, counts them and copies them
/// if the connection goes to a watched endpoint.
#[inline(always)]
fn emit(cfg: &TlsConfig, pid_tgid: u64, ssl: u64, fd: i32, buf: u64, len: u64, kind: u32) {
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
    let Some(wire) = RW_CONFIG.get(0) else {
        return;
    };
    let any_port = wire.flags & config_flags::NO_PORT_PREFILTER != 0;
    let (Some(pl), Some(pr)) = (
        RW_PORTS.get(u32::from(t.lport)),
        RW_PORTS.get(u32::from(t.rport)),
    ) else {
        return;
    };
    let (pl, pr) = (*pl, *pr);
    if !any_port && pl.flags == 0 && pr.flags == 0 {
        count_activity(stat::TLS_NOT_WATCHED);
        return;
    }
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
    let zero = RW_ZERO_FLOW.get(0)?;
    let mut created = false;
    match RW_FLOWS.insert(key, zero, u64::from(BPF_NOEXIST)) {
        Ok(()) => {
            created = true;
            count(stat::FLOWS_CREATED);
        }
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
