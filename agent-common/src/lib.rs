//! Wire types shared by the kernel programs (`agent-ebpf`) and the userspace
//! capture (`agent::capture`).
//!
//! Everything here is `#[repr(C)]` with explicit padding and only fixed-width
//! integers and byte arrays: no `bool`, enum or `Option` crosses the
//! kernel/user boundary, because the kernel can write any bit pattern and
//! userspace must be able to read every one of them without undefined
//! behaviour. Sizes are asserted at compile time so a layout change fails the
//! build on both sides instead of corrupting records at run time.
//!
//! With the `user` feature the types implement `aya::Pod` (map keys and
//! values) and ring-buffer records decode through `TryFrom<&[u8]>`, field by
//! field from little-endian bytes (BPF on x86_64/aarch64 is little-endian;
//! no transmute).
#![no_std]

#[cfg(feature = "user")]
pub mod decode;
pub mod ether;
pub mod http;
pub mod stat;
pub mod tcp;

/// Names of the maps in the kernel object, as userspace looks them up.
pub mod map_names {
    pub const CONFIG: &str = "RW_CONFIG";
    pub const ENDPOINTS: &str = "RW_ENDPOINTS";
    pub const ENDPOINTS_ANY_PORT: &str = "RW_ENDPOINTS_ANY";
    pub const PORTS: &str = "RW_PORTS";
    pub const FLOWS: &str = "RW_FLOWS";
    pub const EVENTS: &str = "RW_EVENTS";
    pub const STATS: &str = "RW_STATS";
    pub const SCRATCH: &str = "RW_SCRATCH";
    pub const TLS_CONFIG: &str = "RW_TLS_CONFIG";
    pub const TLS_AWAITING: &str = "RW_TLS_AWAITING";
    pub const TLS_PROCS: &str = "RW_TLS_PROCS";
    pub const TLS_TRIGGERS: &str = "RW_TLS_TRIGGERS";
    pub const WORKLOAD_ENDPOINTS: &str = "RW_WL_ENDPOINTS";
}

/// Names of the programs in the kernel object.
pub mod program_names {
    pub const CGROUP_INGRESS: &str = "rw_cgroup_ingress";
    pub const CGROUP_EGRESS: &str = "rw_cgroup_egress";
    pub const TC_INGRESS: &str = "rw_tc_ingress";
    pub const TC_EGRESS: &str = "rw_tc_egress";
    /// An empty cgroup_skb program: the benchmarks' cost floor, never
    /// attached by the agent.
    pub const FLOOR: &str = "rw_floor";
    /// Uprobe on `SSL_write` (entry).
    pub const TLS_WRITE: &str = "rw_tls_write";
    /// Uprobe on `SSL_write_ex` (entry).
    pub const TLS_WRITE_EX: &str = "rw_tls_write_ex";
    /// Uprobe on `SSL_read` (entry).
    pub const TLS_READ: &str = "rw_tls_read";
    /// Uprobe on `SSL_read_ex` (entry).
    pub const TLS_READ_EX: &str = "rw_tls_read_ex";
    /// Uretprobe on both `SSL_read` and `SSL_read_ex`.
    pub const TLS_READ_RET: &str = "rw_tls_read_ret";
    /// Uprobe on `SSL_set_fd` (entry).
    pub const TLS_SET_FD: &str = "rw_tls_set_fd";
    /// Uprobe on `SSL_free` (entry): forgets the SSL*'s fd.
    pub const TLS_FREE: &str = "rw_tls_free";
    /// Raw tracepoint `sys_enter`: the fd of the syscall an SSL call makes.
    pub const TLS_SYS_ENTER: &str = "rw_tls_sys_enter";
    /// Raw tracepoints feeding the probe manager.
    pub const TLS_FORK: &str = "rw_tls_fork";
    pub const TLS_EXEC: &str = "rw_tls_exec";
    pub const TLS_EXIT: &str = "rw_tls_exit";
    pub const TLS_SOCK_STATE: &str = "rw_tls_sock_state";
}

/// Ring buffer record ids, the first `u32` of every record. Gaps are left on
/// purpose so new record kinds (and versions) can be added without renumbering.
pub mod event_id {
    /// [`crate::SampleHeader`] followed by `captured_len` payload bytes.
    pub const SAMPLE: u32 = 0x10;
    /// [`crate::FlowEndRecord`].
    pub const FLOW_END: u32 = 0x20;
    /// Plaintext of one TLS library call (uprobes on OpenSSL), header and
    /// copied bytes; see the `tls` module.
    pub const TLS_DATA: u32 = 0x30;
    /// [`crate::TlsTrigger`], on the probe manager's own ring (`RW_TLS_TRIGGERS`).
    pub const TLS_TRIGGER: u32 = 0x31;
}

/// Which socket (or interface) saw the packets of a flow entry. On loopback
/// with the root cgroup every packet passes the sender's egress hook and the
/// receiver's ingress hook; keeping the observer in the key keeps both views
/// as separate, internally consistent flows (userspace keeps one).
pub mod observer {
    /// cgroup_skb on the client's socket.
    pub const CLIENT_SOCKET: u8 = 1;
    /// cgroup_skb on the server's socket.
    pub const SERVER_SOCKET: u8 = 2;
    /// TC classifier on an interface (`FlowKey::ifindex` says which).
    pub const TC: u8 = 3;
    /// The TLS library probes in the process that owns the socket: a
    /// plaintext layer of a connection, kept beside its wire view (it never
    /// competes with the wire views for the connection).
    pub const TLS_PLAINTEXT: u8 = 4;
}

/// Direction values on the wire (`SampleHeader::direction`, `FlowStats::dirs` index).
pub mod direction {
    pub const TO_SERVER: u8 = 0;
    pub const TO_CLIENT: u8 = 1;
}

/// `FlowEndRecord::reason`.
pub mod end_reason {
    /// FINs from both sides, then the last ACK.
    pub const FIN: u32 = 1;
    pub const RST: u32 = 2;
}

/// Bits of `FlowStats::state`.
pub mod flow_state {
    pub const FIN_TO_SERVER: u64 = 1;
    pub const FIN_TO_CLIENT: u64 = 2;
    /// The flow ended (FIN/RST). The kernel keeps the entry, frozen, until
    /// userspace has seen the end and deletes it: so a flow that vanishes
    /// from the map was evicted, and a lost flow-end record can be
    /// reconstructed from the map.
    pub const ENDED: u64 = 4;
    /// With `ENDED`: the end was a reset (else both FINs).
    pub const END_RST: u64 = 8;
    /// With `ENDED`: the flow-end record did not fit in the ring.
    pub const END_RECORD_LOST: u64 = 16;
    /// The flow speaks HTTP/2 (the client sent the prior-knowledge
    /// preface, or the server answered `101 Switching Protocols`): every
    /// payload segment of both directions is sampled, since HPACK decodes
    /// header blocks only in order and the kernel cannot count HTTP/2
    /// requests itself.
    pub const ALL_SEGMENTS: u64 = 32;
    /// A server-socket view of a node-local connection (loopback, veth)
    /// whose client-socket view counts and samples every packet too:
    /// after its first sample (which names the server's socket) the kernel
    /// skips its packets, ends excepted, instead of doing the work twice.
    pub const LOCAL_DUPLICATE: u64 = 64;
    /// A server-socket view that must count on its own (no client-socket
    /// view had sampled the connection's first request when it was
    /// decided: a remote client, or the server spoke first; or its client
    /// view left the map): never skipped, whatever other bit is set.
    pub const LOCAL_SOLE: u64 = 128;
}

/// Bits of `Config::flags`.
pub mod config_flags {
    /// Some endpoint rule matches any port, so the per-port prefilter cannot
    /// rule a packet out: consult `RW_ENDPOINTS_ANY` for every TCP packet.
    pub const NO_PORT_PREFILTER: u32 = 1;
}

/// Bits of `PortEntry::flags`.
pub mod port_flags {
    /// Some address rule covers this port: consult `RW_ENDPOINTS`.
    pub const LPM: u32 = 1;
    /// A port-only rule (any address) covers this port; `PortEntry::endpoint_id` names it.
    pub const PORT_ONLY: u32 = 2;
    /// An endpoint served by workloads listens on this port: consult
    /// `RW_WL_ENDPOINTS` with the local socket's cgroup id. Ports no
    /// workload endpoint uses never pay that lookup.
    pub const WORKLOAD: u32 = 4;
}

/// Values of `TlsDataHeader::call` and the kernel's in-progress call kinds.
pub mod tls_call {
    pub const WRITE: u32 = 1;
    pub const READ: u32 = 2;
    pub const READ_EX: u32 = 3;
}

/// `TlsTrigger::kind`: what the probe manager is told.
pub mod tls_trigger {
    /// A probed process forked a new process (`pid` child, `ppid` parent).
    pub const FORK: u32 = 1;
    /// A probed process called exec: its probes no longer apply.
    pub const EXEC: u32 = 2;
    /// A probed process exited.
    pub const EXIT: u32 = 3;
    /// A socket entered LISTEN on a watched port (`port`), in process `pid`.
    pub const LISTEN: u32 = 4;
    /// A socket entered SYN_SENT to a watched endpoint (`addr`, `port`).
    pub const CONNECT: u32 = 5;
}

/// Largest `snaplen` the kernel programs support (scratch buffer size).
pub const SNAPLEN_MAX: u32 = 4096;
/// Default payload bytes captured per sample. A sender's GSO skb can carry a
/// whole ClientHello in one sample; with post-quantum key shares and ECH
/// GREASE that passes 2 KiB, so the default is the maximum. Longer payloads
/// are cut and counted; records are only as long as what was captured.
pub const DEFAULT_SNAPLEN: u32 = SNAPLEN_MAX;
/// Default number of payload segments per direction always sampled.
pub const DEFAULT_FIRST_SEGMENTS: u32 = 4;
/// Default 1-in-N sampling of the remaining segments.
pub const DEFAULT_SAMPLE_ONE_IN: u32 = 64;
/// Number of entries of the port prefilter array.
pub const PORT_ENTRIES: u32 = 65536;
/// Bits of an `EndpointKey`: 16 port bits + 128 address bits.
pub const ENDPOINT_KEY_BITS: u32 = 144;
/// Bits of an `RW_ENDPOINTS_ANY` key (an address).
pub const ADDR_KEY_BITS: u32 = 128;

/// The run-time configuration, the single entry of `RW_CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Payload bytes captured per sample, at most [`SNAPLEN_MAX`].
    pub snaplen: u32,
    /// Payload segments per direction always sampled.
    pub first_segments: u32,
    /// Sample 1 in N of the other segments; 0 = never.
    pub sample_one_in: u32,
    /// See [`config_flags`].
    pub flags: u32,
}

/// Data part of an `RW_ENDPOINTS` LPM-trie key: the port in network byte
/// order, then the IPv6 address (IPv4 as `::ffff:a.b.c.d`); prefix length =
/// 16 + address prefix bits. The port comes first because an LPM prefix can
/// only be partial in its last component: (10.0.0.0/8, port 443) is
/// expressible this way, not address-first. Port ranges are expanded to one
/// entry per port; rules for any port use `RW_ENDPOINTS_ANY` (key: the
/// address alone, prefix length = address prefix bits).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub port_be: [u8; 2],
    pub addr: [u8; 16],
}

/// Most entries of `RW_WL_ENDPOINTS`: (cgroup, port) pairs of endpoints
/// served by workloads. Userspace counts the pairs that do not fit.
pub const WORKLOAD_ENDPOINT_ENTRIES: u32 = 16384;

/// Key of `RW_WL_ENDPOINTS` (value: endpoint id): a local socket in cgroup
/// `cgroup_id` listening on `port` (host order) serves that endpoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    /// cgroup v2 id (the inode of the cgroup's directory).
    pub cgroup_id: u64,
    /// Host byte order.
    pub port: u16,
    pub _pad0: u16,
    pub _pad1: u32,
}

/// Value of an `RW_PORTS` entry (indexed by host-order port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortEntry {
    /// See [`port_flags`].
    pub flags: u32,
    /// Endpoint id of the port-only rule, when `PORT_ONLY` is set.
    pub endpoint_id: u32,
}

/// Key of `RW_FLOWS`: one TCP connection as seen by one observer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// IPv6, or IPv4 as `::ffff:a.b.c.d`.
    pub client_addr: [u8; 16],
    pub server_addr: [u8; 16],
    /// Host byte order.
    pub client_port: u16,
    pub server_port: u16,
    /// See [`observer`].
    pub observer: u8,
    // Two fields, not `[u8; 3]`: the BPF backend cannot lower a 3-byte memset.
    pub _pad0: u8,
    pub _pad1: u16,
    /// Interface index for TC observers, 0 otherwise.
    pub ifindex: u32,
}

/// Counters of one direction of a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Packets (skbs; a GSO super-packet counts once).
    pub packets: u64,
    /// IP-level bytes (IP header + TCP header + payload).
    pub bytes: u64,
    pub payload_bytes: u64,
    /// Packets with a non-empty payload.
    pub payload_segments: u64,
    /// Payload segments starting with an HTTP/1.x method token and a space.
    pub request_starts: u64,
    /// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE, a few ms
    /// resolution, cheap) of the first and last packet.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// Samples emitted (or attempted, if the ring was full).
    pub samples: u64,
    /// OR of all TCP flags seen (64-bit: BPF's generic CPU has only 64-bit atomic OR).
    pub tcp_flags: u64,
}

/// Value of `RW_FLOWS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Indexed by [`direction`].
    pub dirs: [DirStats; 2],
    /// cgroup v2 id of the socket that created the entry (0 when unknown, e.g. forwarded traffic at TC).
    pub cgroup_id: u64,
    /// See [`flow_state`] (64-bit for the atomic OR).
    pub state: u64,
    pub endpoint_id: u32,
    pub _pad: u32,
}

impl DirStats {
    pub const ZERO: Self = Self {
        packets: 0,
        bytes: 0,
        payload_bytes: 0,
        payload_segments: 0,
        request_starts: 0,
        first_seen_ns: 0,
        last_seen_ns: 0,
        samples: 0,
        tcp_flags: 0,
    };
}

/// Fixed part of an [`event_id::SAMPLE`] record; `captured_len` payload
/// bytes follow immediately.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleHeader {
    /// [`event_id::SAMPLE`].
    pub event: u32,
    /// See [`direction`].
    pub direction: u8,
    pub tcp_flags: u8,
    pub _pad: u16,
    /// Payload bytes following this header.
    pub captured_len: u32,
    /// Payload length on the wire.
    pub payload_len: u32,
    /// TCP sequence number (host order).
    pub seq: u32,
    pub endpoint_id: u32,
    /// `bpf_ktime_get_boot_ns`.
    pub ts_boot_ns: u64,
    pub cgroup_id: u64,
    pub key: FlowKey,
    pub _pad2: u32,
}

/// An [`event_id::FLOW_END`] record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEndRecord {
    /// [`event_id::FLOW_END`].
    pub event: u32,
    /// See [`end_reason`].
    pub reason: u32,
    pub ts_boot_ns: u64,
    pub key: FlowKey,
    pub _pad: u32,
    pub stats: FlowStats,
}

/// The TLS probes' configuration, the single entry of `RW_TLS_CONFIG`:
/// kernel struct member offsets read from the running kernel's BTF at start
/// (never compiled in), the syscall numbers of this architecture, the copy
/// cap. `enabled == 0` makes every TLS program return at once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    pub enabled: u32,
    /// Most bytes copied per call (a multiple of [`TLS_CHUNK_MAX`], at most
    /// [`TLS_COPY_CAP_MAX`]).
    pub max_copy: u32,
    pub task_files: u32,
    pub task_tgid: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_private_data: u32,
    pub socket_file: u32,
    pub socket_sk: u32,
    pub skc_family: u32,
    /// Local port, host order.
    pub skc_num: u32,
    /// Remote port, network order.
    pub skc_dport: u32,
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    /// Offset of the first syscall argument in `struct pt_regs`.
    pub regs_arg0: u32,
    /// Syscall numbers whose first argument is the socket fd.
    pub sys_read: u32,
    pub sys_write: u32,
    pub sys_readv: u32,
    pub sys_writev: u32,
    pub sys_sendto: u32,
    pub sys_recvfrom: u32,
    pub sys_sendmsg: u32,
    pub sys_recvmsg: u32,
}

/// Largest plaintext chunk in one record.
pub const TLS_CHUNK_MAX: u32 = 4096;
/// Small record size class: chunks up to this many bytes use a small
/// reservation (request and response heads mostly fit).
pub const TLS_CHUNK_SMALL: u32 = 512;
/// Most chunks one call is split into.
pub const TLS_MAX_CHUNKS: u32 = 16;
/// Largest per-call copy cap.
pub const TLS_COPY_CAP_MAX: u32 = TLS_CHUNK_MAX * TLS_MAX_CHUNKS;

/// Fixed part of an [`event_id::TLS_DATA`] record: one chunk of one TLS
/// library call's plaintext; `captured_len` bytes follow (the reservation
/// may be longer: a fixed size class).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsDataHeader {
    /// [`event_id::TLS_DATA`].
    pub event: u32,
    /// See [`direction`].
    pub direction: u8,
    pub _pad0: u8,
    pub _pad1: u16,
    /// Bytes following this header (0 when the copy failed).
    pub captured_len: u32,
    /// Bytes of the stream this chunk covers.
    pub chunk_len: u32,
    /// Offset of the chunk's first byte in the direction's plaintext stream.
    pub offset: u64,
    /// Bytes the whole call moved.
    pub call_len: u32,
    /// See [`tls_call`].
    pub call: u32,
    pub pid: u32,
    pub tid: u32,
    pub endpoint_id: u32,
    pub _pad2: u32,
    pub ts_boot_ns: u64,
    pub cgroup_id: u64,
    pub key: FlowKey,
    pub _pad3: u32,
}

/// A probe-manager trigger ([`event_id::TLS_TRIGGER`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsTrigger {
    /// [`event_id::TLS_TRIGGER`].
    pub event: u32,
    /// See [`tls_trigger`].
    pub kind: u32,
    pub pid: u32,
    /// Parent (fork) or 0.
    pub ppid: u32,
    /// LISTEN: local port; CONNECT: remote port (host order).
    pub port: u16,
    pub _pad0: u16,
    pub _pad1: u32,
    /// CONNECT: remote address (IPv4 mapped), else zero.
    pub addr: [u8; 16],
    pub ts_boot_ns: u64,
}

/// Size of [`TlsDataHeader`] on the wire.
pub const TLS_DATA_HEADER_LEN: usize = core::mem::size_of::<TlsDataHeader>();
/// Size of [`TlsTrigger`] on the wire.
pub const TLS_TRIGGER_LEN: usize = core::mem::size_of::<TlsTrigger>();

/// Size of [`SampleHeader`] on the wire.
pub const SAMPLE_HEADER_LEN: usize = core::mem::size_of::<SampleHeader>();
/// Size of [`FlowEndRecord`] on the wire.
pub const FLOW_END_LEN: usize = core::mem::size_of::<FlowEndRecord>();
/// Size of the per-CPU scratch buffer a sample is assembled in.
pub const SCRATCH_LEN: usize = SAMPLE_HEADER_LEN + SNAPLEN_MAX as usize;

/// The per-CPU buffer a sample is assembled in before it is copied to the ring.
#[repr(C, align(8))]
pub struct Scratch {
    pub buf: [u8; SCRATCH_LEN],
}

// The layout is part of the wire contract: change these only together with
// the decoder and the kernel programs.
const _: () = {
    use core::mem::{align_of, size_of};
    assert!(size_of::<Config>() == 16);
    assert!(size_of::<EndpointKey>() == 18);
    assert!(size_of::<PortEntry>() == 8);
    assert!(size_of::<WorkloadKey>() == 16);
    assert!(size_of::<FlowKey>() == 44);
    assert!(align_of::<FlowKey>() == 4);
    assert!(size_of::<DirStats>() == 72);
    assert!(size_of::<FlowStats>() == 168);
    assert!(size_of::<SampleHeader>() == 88);
    assert!(size_of::<FlowEndRecord>() == 232);
    assert!(SAMPLE_HEADER_LEN.is_multiple_of(8));
    assert!(SNAPLEN_MAX.is_power_of_two());
    assert!(DEFAULT_SNAPLEN <= SNAPLEN_MAX);
    assert!(size_of::<TlsConfig>() == 104);
    assert!(size_of::<TlsDataHeader>() == 112);
    assert!(TLS_DATA_HEADER_LEN.is_multiple_of(8));
    assert!(size_of::<TlsTrigger>() == 48);
    assert!(TLS_CHUNK_MAX.is_power_of_two() && TLS_CHUNK_SMALL.is_power_of_two());
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, contain only integers and byte
    // arrays (every bit pattern is valid) and have explicit padding fields, so
    // no uninitialised bytes are exposed.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EndpointKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PortEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::WorkloadKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DirStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TlsConfig {}
}
