//! Kernel loss and activity counters, summed over CPUs, plus userspace ones.

use agent_common::stat;

/// All capture counters. Losses: `ring_full`, `flow_end_ring_full`,
/// `flow_table_full`, `sample_truncated` (cut, not lost), `malformed`,
/// `skipped_unparsed`, `payload_load_failed`, `decode_errors`, and the
/// TLS probes' `tls_*` but `tls_not_watched`, `tls_calls`,
/// `tls_records_emitted` (activity).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    pub ring_full: u64,
    pub flow_end_ring_full: u64,
    pub flow_table_full: u64,
    pub sample_truncated: u64,
    pub malformed: u64,
    pub skipped_unparsed: u64,
    pub payload_load_failed: u64,
    pub packets_seen: u64,
    pub packets_monitored: u64,
    pub samples_emitted: u64,
    pub flow_ends_emitted: u64,
    pub flows_created: u64,
    pub stray_packets: u64,
    /// TLS probes: see `agent_common::stat::TLS_*`.
    pub tls_ring_full: u64,
    pub tls_copy_failed: u64,
    pub tls_cut_bytes: u64,
    pub tls_cut_calls: u64,
    pub tls_no_fd: u64,
    pub tls_no_socket: u64,
    pub tls_sock_walk_failed: u64,
    pub tls_call_table_full: u64,
    pub tls_trigger_ring_full: u64,
    pub tls_not_watched: u64,
    pub tls_calls: u64,
    pub tls_records_emitted: u64,
    /// Userspace: ring records that could not be decoded.
    pub decode_errors: u64,
    /// Userspace: ring records read.
    pub records_read: u64,
    /// Userspace: records of a second view of an already reported
    /// connection (loopback seen by both sockets), dropped on purpose.
    pub duplicate_views: u64,
}

impl KernelStats {
    /// Builds the kernel part from per-index sums (index = `agent_common::stat`).
    pub fn from_counters(c: &[u64]) -> Self {
        let g = |i: u32| c.get(i as usize).copied().unwrap_or(0);
        Self {
            ring_full: g(stat::RING_FULL),
            flow_end_ring_full: g(stat::FLOW_END_RING_FULL),
            flow_table_full: g(stat::FLOW_TABLE_FULL),
            sample_truncated: g(stat::SAMPLE_TRUNCATED),
            malformed: g(stat::MALFORMED),
            skipped_unparsed: g(stat::SKIPPED_UNPARSED),
            payload_load_failed: g(stat::PAYLOAD_LOAD_FAILED),
            packets_seen: g(stat::PACKETS_SEEN),
            packets_monitored: g(stat::PACKETS_MONITORED),
            samples_emitted: g(stat::SAMPLES_EMITTED),
            flow_ends_emitted: g(stat::FLOW_ENDS_EMITTED),
            flows_created: g(stat::FLOWS_CREATED),
            stray_packets: g(stat::STRAY_PACKETS),
            tls_ring_full: g(stat::TLS_RING_FULL),
            tls_copy_failed: g(stat::TLS_COPY_FAILED),
            tls_cut_bytes: g(stat::TLS_CUT_BYTES),
            tls_cut_calls: g(stat::TLS_CUT_CALLS),
            tls_no_fd: g(stat::TLS_NO_FD),
            tls_no_socket: g(stat::TLS_NO_SOCKET),
            tls_sock_walk_failed: g(stat::TLS_SOCK_WALK_FAILED),
            tls_call_table_full: g(stat::TLS_CALL_TABLE_FULL),
            tls_trigger_ring_full: g(stat::TLS_TRIGGER_RING_FULL),
            tls_not_watched: g(stat::TLS_NOT_WATCHED),
            tls_calls: g(stat::TLS_CALLS),
            tls_records_emitted: g(stat::TLS_RECORDS_EMITTED),
            ..Self::default()
        }
    }

    /// `(name, value)` pairs for exporters, names stable.
    pub fn named(&self) -> [(&'static str, u64); 28] {
        [
            ("ring_full", self.ring_full),
            ("flow_end_ring_full", self.flow_end_ring_full),
            ("flow_table_full", self.flow_table_full),
            ("sample_truncated", self.sample_truncated),
            ("malformed", self.malformed),
            ("skipped_unparsed", self.skipped_unparsed),
            ("payload_load_failed", self.payload_load_failed),
            ("packets_seen", self.packets_seen),
            ("packets_monitored", self.packets_monitored),
            ("samples_emitted", self.samples_emitted),
            ("flow_ends_emitted", self.flow_ends_emitted),
            ("flows_created", self.flows_created),
            ("stray_packets", self.stray_packets),
            ("tls_ring_full", self.tls_ring_full),
            ("tls_copy_failed", self.tls_copy_failed),
            ("tls_cut_bytes", self.tls_cut_bytes),
            ("tls_cut_calls", self.tls_cut_calls),
            ("tls_no_fd", self.tls_no_fd),
            ("tls_no_socket", self.tls_no_socket),
            ("tls_sock_walk_failed", self.tls_sock_walk_failed),
            ("tls_call_table_full", self.tls_call_table_full),
            ("tls_trigger_ring_full", self.tls_trigger_ring_full),
            ("tls_not_watched", self.tls_not_watched),
            ("tls_calls", self.tls_calls),
            ("tls_records_emitted", self.tls_records_emitted),
            ("decode_errors", self.decode_errors),
            ("records_read", self.records_read),
            ("duplicate_views", self.duplicate_views),
        ]
    }
}

/// Per-program run statistics (`kernel.bpf_stats_enabled`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramCost {
    pub name: &'static str,
    pub run_time_ns: u64,
    pub run_count: u64,
    /// Instructions the verifier processed when loading the program.
    pub verified_instructions: Option<u32>,
}

impl ProgramCost {
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.run_count > 0).then(|| self.run_time_ns as f64 / self.run_count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_map_to_their_names() {
        let mut c = vec![0u64; stat::COUNT as usize];
        c[stat::RING_FULL as usize] = 5;
        c[stat::SAMPLES_EMITTED as usize] = 7;
        let s = KernelStats::from_counters(&c);
        assert_eq!(s.ring_full, 5);
        assert_eq!(s.samples_emitted, 7);
        assert!(s.named().contains(&("ring_full", 5)));
        // Short input (older kernel object) is not a panic.
        assert_eq!(KernelStats::from_counters(&[]).ring_full, 0);
    }
}
