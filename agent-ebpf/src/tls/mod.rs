//! OpenSSL plaintext: uprobes on libssl and the `sys_enter` raw tracepoint.
//!
//! Hooks: entry uprobes on `SSL_write`, `SSL_write_ex`, `SSL_read`,
//! `SSL_read_ex`, `SSL_set_fd`, `SSL_free`; one uretprobe on the returns of
//! `SSL_read` and `SSL_read_ex`; a `sys_enter` raw tracepoint (no tracefs needed),
//! attached only while some process is probed. Userspace attaches the
//! uprobes per process (`UProbeScope::OneProcess`), so only processes that
//! serve or call watched endpoints ever trap.
//! Why: the wire shows only ciphertext; the library call has the clear text.
//! The socket fd comes from `SSL_set_fd`, else from the socket syscall the
//! SSL call makes (the "nested syscall": curl's custom BIO never calls
//! `SSL_set_fd`, and connections older than the agent were set up before
//! it), cached per (tgid, SSL*) until `SSL_free` (a freed SSL*'s address is
//! reused by the next connection). The fd's socket gives the exact 4-tuple
//! (see `sock`), so the plaintext joins the cgroup_skb flow. Whether the
//! connection goes to a watched endpoint is decided with the wire path's own
//! `match_side` before a byte is copied.
//! Cost: a uprobe hit is ~5.5-6 µs on these VMs and the uretprobe ~1.2 µs
//! more (the trap, not this code); the program adds a hash lookup or two,
//! the fd → socket walk (~0.4 µs) and, on watched connections, the flow
//! counters and one ring reservation + `bpf_probe_read_user` per 4 KiB
//! (`emit`). The `sys_enter` hook costs every syscall of the machine an
//! array lookup and a few compares while it is attached, and a
//! read/write-family syscall one hash lookup more (is this thread inside a
//! probed SSL call?) only while some call waits for its socket's syscall
//! (`RW_TLS_AWAITING`).

use agent_common::{TlsConfig, stat, tls_call};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_user},
    macros::{map, raw_tracepoint, uprobe, uretprobe},
    maps::{Array, LruHashMap},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext},
};

use crate::{maps::count, track::add};

mod emit;

use emit::emit;

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

/// Calls, on any thread, still waiting for the syscall that names their
/// socket: a read of an SSL* whose fd is not yet known, before its first
/// syscall; a write parked without a known fd. Reads of connections set up
/// with `SSL_set_fd` (nginx, python, wrk) never wait. While it is 0
/// (between calls, and whenever no call is in that window) `sys_enter`
/// stops before its hash lookup, so the machine's other syscalls pay two
/// array reads. A call is counted by its own thread when
/// it is parked and discharged by that thread, once, when its syscall,
/// its return or its replacement by the thread's next call finds it, so
/// the count is never below the calls waiting. One that is never found
/// again (evicted from the LRU table, its thread killed inside the call)
/// leaves the count high, which costs the lookup, not a record.
#[map]
pub static RW_TLS_AWAITING: Array<u64> = Array::with_max_entries(1, 0);

/// Adds `v` (`u64::MAX` to take one away) to `RW_TLS_AWAITING`.
#[inline(always)]
fn awaiting(v: u64) {
    if let Some(p) = RW_TLS_AWAITING.get_ptr_mut(0) {
        add(p, v);
    }
}

/// Parks `call` for this thread (counted while it waits for its syscall,
/// `fd < 0`), discharging the call it replaces if that one was still
/// waiting.
#[inline(always)]
fn park(pid_tgid: u64, call: &Call) {
    if let Some(old) = RW_TLS_CALLS.get_ptr(pid_tgid) {
        // SAFETY: live map value.
        if unsafe { (*old).fd } < 0 {
            awaiting(u64::MAX);
        }
    }
    if RW_TLS_CALLS.insert(pid_tgid, call, 0).is_err() {
        count(stat::TLS_CALL_TABLE_FULL);
        return;
    }
    if call.fd < 0 {
        awaiting(1);
    }
}

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

/// Without this, the next connection that gets the freed SSL*'s address
/// and never calls `SSL_set_fd` (curl's custom BIO) would be joined to the
/// old connection's fd until its first read syscall; its writes, which
/// trust the cache, to that socket for good.
#[uprobe]
pub fn rw_tls_free(ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let _ = RW_TLS_CONNS.remove(conn_key(tgid, arg(&ctx, 0)));
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
    park(pid_tgid, &call);
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
/// argument registers before it returns. The fd, when the SSL* already has
/// one, is taken now, so the call never waits for `sys_enter`.
#[inline(always)]
fn on_read_entry(ssl: u64, buf: u64, num: u64, readbytes: u64, kind: u32) {
    if config().is_none() {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let fd = match RW_TLS_CONNS.get_ptr(conn_key(tgid, ssl)) {
        // SAFETY: live map value.
        Some(fd) => unsafe { *fd },
        None => -1,
    };
    let call = Call {
        ssl,
        buf,
        num,
        readbytes,
        fd,
        kind,
    };
    park(pid_tgid, &call);
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
    if c.fd < 0 {
        // Returned without a syscall (served from libssl's buffer).
        awaiting(u64::MAX);
    }
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
    if c.fd < 0 {
        // Served from libssl's buffer before any syscall of this SSL* was
        // seen (the entry looked the cache up already).
        count(stat::TLS_NO_FD);
        return 0;
    }
    emit(cfg, pid_tgid, c.ssl, c.fd, c.buf, n, c.kind);
    0
}

/// The syscall an SSL call makes names its socket. Every other syscall of
/// the machine pays an array lookup and a few compares; read/write-family
/// syscalls two array lookups, and one hash lookup more only while some
/// call waits for its syscall (`RW_TLS_AWAITING`).
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
    match RW_TLS_AWAITING.get(0) {
        // SAFETY: a plain load of a live map value (updated atomically).
        Some(n) if unsafe { core::ptr::read_volatile(n) } != 0 => {}
        _ => return 0,
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
        awaiting(u64::MAX);
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
        awaiting(u64::MAX);
        let _ = RW_TLS_CONNS.insert(conn_key(tgid, call.ssl), fd, 0);
    }
    0
}
