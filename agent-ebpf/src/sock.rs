//! fd → TCP 4-tuple of the calling task, for the TLS probes.
//!
//! Hook: none of its own; called from the uprobes and the `sys_enter` raw
//! tracepoint in process context.
//! Why: the plaintext of a TLS call must join the cgroup_skb flow of its
//! connection, and the socket's own addresses are the exact key. Walks
//! task → files → fdtable → fd[fd] → file → private_data (struct socket)
//! → sk → __sk_common with `bpf_probe_read_kernel`, checking
//! `socket->file == file` (so a non-socket fd is refused, as DeepFlow does).
//! The member offsets come from the running kernel's BTF, read by
//! userspace at start into `TlsConfig`: nothing is compiled in.
//! Cost: 8-10 kernel reads (~40 ns each) per call on a watched process.

use agent_common::{TlsConfig, stat};
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// The socket's addresses (IPv4 as `::ffff:a.b.c.d`; the bytes of a
/// `[u8; 16]` held in a `u128`, so that zeroing and copying it are register
/// moves, not the memsets the BPF backend rejects), ports host order.
pub struct Tuple {
    pub local: u128,
    pub remote: u128,
    pub lport: u16,
    pub rport: u16,
}

impl Tuple {
    pub const EMPTY: Self = Self {
        local: 0,
        remote: 0,
        lport: 0,
        rport: 0,
    };
}

#[inline(always)]
fn rk<T: Copy>(addr: u64) -> Option<T> {
    // SAFETY: the helper reads kernel memory safely and fails on a bad address.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

/// An IPv4 address (network-order u32 as loaded) in the mapped form.
#[inline(always)]
fn mapped(v4: u32) -> u128 {
    let ffff = u128::from(u32::from_ne_bytes([0, 0, 0xff, 0xff]));
    #[cfg(target_endian = "little")]
    let v = (ffff << 64) | (u128::from(v4) << 96);
    #[cfg(target_endian = "big")]
    let v = (ffff << 32) | u128::from(v4);
    v
}

/// Fills `out` with the 4-tuple of `fd` in the current task. Returns 0, or
/// the `stat` index saying why not (`TLS_NO_SOCKET`, `TLS_SOCK_WALK_FAILED`).
/// An out-parameter, not `Option<Tuple>`: LLVM may spill the undefined
/// payload of a `None`, which the verifier rejects.
#[inline(always)]
pub fn tuple_of_fd(cfg: &TlsConfig, fd: i32, out: &mut Tuple) -> u32 {
    if fd < 0 {
        return stat::TLS_NO_SOCKET;
    }
    // SAFETY: helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let Some(files) = rk::<u64>(task + u64::from(cfg.task_files)) else {
        return stat::TLS_SOCK_WALK_FAILED;
    };
    let Some(fdt) = rk::<u64>(files + u64::from(cfg.files_fdt)) else {
        return stat::TLS_SOCK_WALK_FAILED;
    };
    let Some(max) = rk::<u32>(fdt + u64::from(cfg.fdt_max_fds)) else {
        return stat::TLS_SOCK_WALK_FAILED;
    };
    if fd as u32 >= max {
        return stat::TLS_NO_SOCKET;
    }
    let Some(arr) = rk::<u64>(fdt + u64::from(cfg.fdt_fd)) else {
        return stat::TLS_SOCK_WALK_FAILED;
    };
    let Some(file) = rk::<u64>(arr + 8 * u64::from(fd as u32)) else {
        return stat::TLS_SOCK_WALK_FAILED;
    };
    if file == 0 {
        return stat::TLS_NO_SOCKET;
    }
    let Some(socket) = rk::<u64>(file + u64::from(cfg.file_private_data)) else {
        return stat::TLS_SOCK_WALK_FAILED;
    };
    if socket == 0 {
        return stat::TLS_NO_SOCKET;
    }
    // A socket's file points back at it; any other private_data does not
    // (or the read fails), so non-socket fds stop here.
    match rk::<u64>(socket + u64::from(cfg.socket_file)) {
        Some(f) if f == file => {}
        _ => return stat::TLS_NO_SOCKET,
    }
    let Some(sk) = rk::<u64>(socket + u64::from(cfg.socket_sk)) else {
        return stat::TLS_SOCK_WALK_FAILED;
    };
    if sk == 0 {
        return stat::TLS_NO_SOCKET;
    }
    tuple_of_sock(cfg, sk, out)
}

/// The 4-tuple of a `struct sock *`; see [`tuple_of_fd`] for the result.
#[inline(always)]
pub fn tuple_of_sock(cfg: &TlsConfig, sk: u64, out: &mut Tuple) -> u32 {
    let Some(family) = rk::<u16>(sk + u64::from(cfg.skc_family)) else {
        return stat::TLS_SOCK_WALK_FAILED;
    };
    let (Some(lport), Some(rport_be)) = (
        rk::<u16>(sk + u64::from(cfg.skc_num)),
        rk::<u16>(sk + u64::from(cfg.skc_dport)),
    ) else {
        return stat::TLS_SOCK_WALK_FAILED;
    };
    if family == AF_INET {
        let (Some(l), Some(r)) = (
            rk::<u32>(sk + u64::from(cfg.skc_rcv_saddr)),
            rk::<u32>(sk + u64::from(cfg.skc_daddr)),
        ) else {
            return stat::TLS_SOCK_WALK_FAILED;
        };
        out.local = mapped(l);
        out.remote = mapped(r);
    } else if family == AF_INET6 {
        let (Some(l), Some(r)) = (
            rk::<u128>(sk + u64::from(cfg.skc_v6_rcv_saddr)),
            rk::<u128>(sk + u64::from(cfg.skc_v6_daddr)),
        ) else {
            return stat::TLS_SOCK_WALK_FAILED;
        };
        out.local = l;
        out.remote = r;
    } else {
        return stat::TLS_NO_SOCKET;
    }
    out.lport = lport;
    out.rport = u16::from_be(rport_be);
    0
}
