//! Triggers for the userspace TLS probe manager.
//!
//! Hooks: raw tracepoints (no tracefs needed) `sched_process_fork`,
//! `sched_process_exec`, `sched_process_exit` and `inet_sock_set_state`.
//! Why: uprobes are attached per process, so the manager must learn when a
//! process starts serving a watched port (a socket entering LISTEN on it),
//! starts calling a watched endpoint (SYN_SENT to it), or when a probed
//! process forks a worker (nginx), execs or exits. A record goes to
//! `RW_TLS_TRIGGERS`, a small ring of the manager's own.
//! Cost: fork/exec/exit: one hash lookup (is the process probed?) and out;
//! state changes: two integer compares for anything but LISTEN/SYN_SENT,
//! then a port prefilter lookup (and the endpoint trie for SYN_SENT).

use agent_common::{TlsTrigger, config_flags, event_id, stat, tls_trigger};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, bpf_probe_read_kernel},
    macros::{map, raw_tracepoint},
    maps::{HashMap, RingBuf},
    programs::RawTracePointContext,
};

use crate::{
    endpoint::{NO_MATCH, match_side},
    maps::{RW_CONFIG, RW_PORTS, count},
    sock::{Tuple, tuple_of_sock},
    tls::RW_TLS_CONFIG,
};

const TCP_SYN_SENT: i32 = 2;
const TCP_LISTEN: i32 = 10;

/// Processes the manager probes (tgid → 1), written by userspace.
#[map]
static RW_TLS_PROCS: HashMap<u32, u32> = HashMap::with_max_entries(8192, 0);

/// Trigger records for the probe manager.
#[map]
static RW_TLS_TRIGGERS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

#[inline(always)]
fn send(kind: u32, pid: u32, ppid: u32, port: u16, addr: u128) {
    let Some(mut e) = RW_TLS_TRIGGERS.reserve::<TlsTrigger>(0) else {
        count(stat::TLS_TRIGGER_RING_FULL);
        return;
    };
    let r = e.as_mut_ptr();
    // SAFETY: the reservation is sized for a TlsTrigger. Volatile stores:
    // LLVM merges runs of constant zero stores into memsets, which the BPF
    // backend rejects.
    unsafe {
        use core::ptr::write_volatile as w;
        w(&raw mut (*r).event, event_id::TLS_TRIGGER);
        w(&raw mut (*r).kind, kind);
        w(&raw mut (*r).pid, pid);
        w(&raw mut (*r).ppid, ppid);
        w(&raw mut (*r).port, port);
        w(&raw mut (*r)._pad0, 0);
        w(&raw mut (*r)._pad1, 0);
        // Two 8-byte stores: the field is 8-aligned, not 16.
        let a = (&raw mut (*r).addr).cast::<u64>();
        core::ptr::write_volatile(a, addr as u64);
        core::ptr::write_volatile(a.add(1), (addr >> 64) as u64);
        (*r).ts_boot_ns = bpf_ktime_get_boot_ns();
    }
    e.submit(0);
}

#[inline(always)]
fn probed(tgid: u32) -> bool {
    // SAFETY: read-only lookup.
    unsafe { RW_TLS_PROCS.get(tgid) }.is_some()
}

/// `sched_process_fork(parent, child)`, in the parent.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn rw_tls_fork(ctx: RawTracePointContext) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !probed(tgid) {
        return 0;
    }
    let Some(cfg) = RW_TLS_CONFIG.get(0) else {
        return 0;
    };
    let child = ctx.arg::<u64>(1);
    // SAFETY: kernel read by the helper, which fails safely.
    let Ok(child_tgid) =
        (unsafe { bpf_probe_read_kernel((child + u64::from(cfg.task_tgid)) as *const u32) })
    else {
        return 0;
    };
    if child_tgid != tgid {
        // A new process, not a thread.
        send(tls_trigger::FORK, child_tgid, tgid, 0, 0);
    }
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn rw_tls_exec(_ctx: RawTracePointContext) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if probed(tgid) {
        send(tls_trigger::EXEC, tgid, 0, 0, 0);
    }
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn rw_tls_exit(_ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // The thread group leader's exit; other threads' exits are not the process's.
    if tgid == pid_tgid as u32 && probed(tgid) {
        send(tls_trigger::EXIT, tgid, 0, 0, 0);
    }
    0
}

/// `inet_sock_set_state(sk, oldstate, newstate)`, in the process that
/// calls listen() or connect().
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn rw_tls_sock_state(ctx: RawTracePointContext) -> i32 {
    let new = ctx.arg::<u64>(2) as u32 as i32;
    if new != TCP_LISTEN && new != TCP_SYN_SENT {
        return 0;
    }
    let (Some(cfg), Some(wire)) = (RW_TLS_CONFIG.get(0), RW_CONFIG.get(0)) else {
        return 0;
    };
    if cfg.enabled == 0 {
        return 0;
    }
    let sk = ctx.arg::<u64>(0);
    let mut t = Tuple::EMPTY;
    if tuple_of_sock(cfg, sk, &mut t) != 0 {
        return 0;
    }
    let any_port = wire.flags & config_flags::NO_PORT_PREFILTER != 0;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if new == TCP_LISTEN {
        // The listening address is often a wildcard: the port decides, and
        // the manager checks the rest.
        let Some(p) = RW_PORTS.get(u32::from(t.lport)) else {
            return 0;
        };
        if any_port || p.flags != 0 {
            send(tls_trigger::LISTEN, tgid, 0, t.lport, 0);
        }
    } else {
        let Some(p) = RW_PORTS.get(u32::from(t.rport)) else {
            return 0;
        };
        let p = *p;
        if (any_port || p.flags != 0)
            && match_side(&t.remote.to_ne_bytes(), t.rport, p, any_port, || 0) != NO_MATCH
        {
            send(tls_trigger::CONNECT, tgid, 0, t.rport, t.remote);
        }
    }
    0
}
