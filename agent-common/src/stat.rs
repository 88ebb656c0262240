//! The `RW_STATS` counters: one declarative table, read by the kernel
//! programs (the index constants), the capture (`Counters`), the metrics
//! exporter (losses become `rampwatch_events_lost_total{reason=name}`) and
//! `rampwatch status`. Adding a counter is one line in [`stats!`] below
//! (and a row in docs/architecture.md's loss table, which a test checks).

/// What a counter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Something the pipeline did not see or could not use: exported as a
    /// loss reason.
    Loss,
    /// Seen, but not all of it (a cut sample): counted, not a loss.
    Cut,
    /// Work done: packets, samples, flows.
    Activity,
}

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Index into `RW_STATS`.
    pub index: u32,
    /// Stable name: the `reason` label of a loss, the key in `status`.
    pub name: &'static str,
    pub kind: Kind,
    /// One line for operators.
    pub help: &'static str,
}

macro_rules! stats {
    ($($konst:ident = $index:literal, $name:ident, $kind:ident, $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $konst: u32 = $index;
        )*
        /// Number of indexes.
        pub const COUNT: u32 = [$($index),*].len() as u32;
        /// Every counter, in index order.
        pub const ALL: [Stat; COUNT as usize] = [
            $(Stat { index: $konst, name: stringify!($name), kind: Kind::$kind, help: $help },)*
        ];
        impl Counters {
            $(
                #[doc = $help]
                pub const fn $name(&self) -> u64 {
                    self.0[$konst as usize]
                }
            )*
        }
    };
}

// Losses first, then activity. Indexes are part of the kernel/user contract:
// append, never renumber.
stats! {
    RING_FULL = 0, ring_full, Loss,
        "A sample did not fit in the ring buffer (the reader is behind).";
    FLOW_END_RING_FULL = 1, flow_end_ring_full, Loss,
        "A flow-end record did not fit in the ring buffer (the end is still reported from the frozen map entry).";
    FLOW_TABLE_FULL = 2, flow_table_full, Loss,
        "A new flow could not be inserted in the kernel flow map.";
    SAMPLE_TRUNCATED = 3, sample_truncated, Cut,
        "A sample's payload was longer than snaplen and was cut.";
    MALFORMED = 4, malformed, Loss,
        "IP/TCP headers could not be read or were inconsistent.";
    SKIPPED_UNPARSED = 5, skipped_unparsed, Loss,
        "IPv4 fragments and TCP behind IPv6 fragment/AH headers: not parsed.";
    PAYLOAD_LOAD_FAILED = 6, payload_load_failed, Loss,
        "Copying a sample's payload out of the packet failed.";
    PACKETS_SEEN = 7, packets_seen, Activity,
        "Every packet the programs ran on.";
    PACKETS_MONITORED = 8, packets_monitored, Activity,
        "TCP packets to or from a monitored endpoint.";
    SAMPLES_EMITTED = 9, samples_emitted, Activity,
        "Samples written to the ring buffer.";
    FLOW_ENDS_EMITTED = 10, flow_ends_emitted, Activity,
        "Flow-end records written to the ring buffer.";
    FLOWS_CREATED = 11, flows_created, Activity,
        "Flow map entries created.";
    STRAY_PACKETS = 12, stray_packets, Activity,
        "Monitored packets after a flow's end, or FIN/RST/bare-ACK packets of a flow not in the map (evicted): counted, not added to any flow.";
    TLS_RING_FULL = 13, tls_ring_full, Loss,
        "TLS: a plaintext record did not fit in the ring buffer.";
    TLS_COPY_FAILED = 14, tls_copy_failed, Loss,
        "TLS: reading the call's buffer from user memory failed (page not resident); the record is sent empty, so the gap shows.";
    TLS_CUT_BYTES = 15, tls_cut_bytes, Cut,
        "TLS: plaintext bytes past the per-call copy cap, not copied (the next call's offset shows the gap).";
    TLS_CUT_CALLS = 16, tls_cut_calls, Cut,
        "TLS: calls whose plaintext was cut at the per-call copy cap.";
    TLS_NO_FD = 17, tls_no_fd, Loss,
        "TLS: a call on an SSL object whose socket is not known yet (no SSL_set_fd and no socket syscall seen inside a call).";
    TLS_NO_SOCKET = 18, tls_no_socket, Loss,
        "TLS: the call's fd is not an open socket.";
    TLS_SOCK_WALK_FAILED = 19, tls_sock_walk_failed, Loss,
        "TLS: reading the task, files, fdtable, file, socket, sock chain failed.";
    TLS_CALL_TABLE_FULL = 20, tls_call_table_full, Loss,
        "TLS: the in-progress call table was full (an older call was evicted).";
    TLS_TRIGGER_RING_FULL = 21, tls_trigger_ring_full, Loss,
        "TLS: a probe-manager trigger (fork, exec, exit, listen, connect) did not fit in its ring.";
    TLS_NOT_WATCHED = 22, tls_not_watched, Activity,
        "TLS: library calls on connections to no watched endpoint (nothing copied).";
    TLS_CALLS = 23, tls_calls, Activity,
        "TLS: library calls on watched connections.";
    TLS_RECORDS_EMITTED = 24, tls_records_emitted, Activity,
        "TLS: plaintext records written to the ring buffer.";
    REQUEST_STARTS = 25, request_starts, Activity,
        "Request starts (a segment or TLS read to the server that begins with an HTTP/1 method) on watched traffic, counted before the flow lookup: the baseline every request count is checked against.";
    REQUESTS_FLOW_TABLE_FULL = 26, requests_flow_table_full, Loss,
        "Request starts in packets or TLS reads whose flow could not be inserted in the kernel flow map (never reported per flow).";
    REQUESTS_STRAY = 27, requests_stray, Loss,
        "Request starts in packets of a flow that had already ended (a 4-tuple reused before its frozen entry was deleted) or that carried FIN/RST without a flow entry.";
    LOCAL_DUPLICATES = 28, local_duplicates, Activity,
        "Packets of a node-local connection's server-socket view skipped because its client-socket view counts and samples the same packets (both sockets on this node: loopback, veth).";
}

// The table is dense and in index order, so `ALL[i].index == i`.
const _: () = {
    let mut i = 0;
    while i < ALL.len() {
        assert!(ALL[i].index as usize == i);
        i += 1;
    }
};

/// The counters summed over CPUs, indexed like `RW_STATS`; one accessor
/// per row of the table (`counters.ring_full()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters([u64; COUNT as usize]);

impl Counters {
    /// From per-index sums; missing indexes (an older kernel object) are 0.
    pub fn from_sums(sums: &[u64]) -> Self {
        let mut c = [0; COUNT as usize];
        for (slot, v) in c.iter_mut().zip(sums) {
            *slot = *v;
        }
        Self(c)
    }

    /// The counter at `index`, 0 when out of range.
    pub fn get(&self, index: u32) -> u64 {
        self.0.get(index as usize).copied().unwrap_or(0)
    }

    /// `(name, value)` for every counter, in index order.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ALL.iter().map(|s| (s.name, self.get(s.index)))
    }

    /// `(name, value)` for the counters of kind [`Kind::Loss`].
    pub fn losses(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ALL.iter()
            .filter(|s| s.kind == Kind::Loss)
            .map(|s| (s.name, self.get(s.index)))
    }
}
