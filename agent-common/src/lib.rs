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
}

/// Names of the programs in the kernel object.
pub mod program_names {
    pub const CGROUP_INGRESS: &str = "rw_cgroup_ingress";
    pub const CGROUP_EGRESS: &str = "rw_cgroup_egress";
    pub const TC_INGRESS: &str = "rw_tc_ingress";
    pub const TC_EGRESS: &str = "rw_tc_egress";
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
    assert!(size_of::<FlowKey>() == 44);
    assert!(align_of::<FlowKey>() == 4);
    assert!(size_of::<DirStats>() == 72);
    assert!(size_of::<FlowStats>() == 168);
    assert!(size_of::<SampleHeader>() == 88);
    assert!(size_of::<FlowEndRecord>() == 232);
    assert!(SAMPLE_HEADER_LEN.is_multiple_of(8));
    assert!(SNAPLEN_MAX.is_power_of_two());
    assert!(DEFAULT_SNAPLEN <= SNAPLEN_MAX);
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
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DirStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowStats {}
}
