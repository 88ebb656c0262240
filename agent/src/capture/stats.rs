//! What the capture counts: the kernel's `RW_STATS` counters (their table
//! is `agent_common::stat`) and the ring reader's own.

pub use agent_common::stat::Counters as KernelCounters;

/// [`super::Capture::stats`]: kernel counters summed over CPUs, and the
/// counters of the userspace reader kept apart from them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    pub kernel: KernelCounters,
    /// Ring records that could not be decoded (a loss).
    pub decode_errors: u64,
    /// Ring records read.
    pub records_read: u64,
    /// Records of a second view of an already reported connection
    /// (loopback seen by both sockets), dropped on purpose.
    pub duplicate_views: u64,
    /// Request starts the kernel counted on those second views (part of
    /// `request_starts`, charged to no one).
    pub duplicate_view_requests: u64,
    /// (cgroup, port) pairs of workload endpoints that did not fit in the
    /// kernel map (each counted once; a loss: that socket is not watched).
    pub workload_map_full: u64,
    /// Distinct cgroup ids in the kernel's workload endpoint map now.
    pub workload_cgroups: u64,
}

impl CaptureStats {
    /// Loss reasons and totals, kernel and reader: each is exported as
    /// `rampwatch_events_lost_total{reason}`. A truncated sample is cut,
    /// not lost, and is not among them.
    pub fn losses(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.kernel.losses().chain([
            ("decode_errors", self.decode_errors),
            ("workload_map_full", self.workload_map_full),
        ])
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
        use agent_common::stat;
        let mut c = vec![0u64; stat::COUNT as usize];
        c[stat::RING_FULL as usize] = 5;
        c[stat::SAMPLES_EMITTED as usize] = 7;
        c[stat::SAMPLE_TRUNCATED as usize] = 9;
        let s = CaptureStats {
            kernel: KernelCounters::from_sums(&c),
            decode_errors: 3,
            ..CaptureStats::default()
        };
        assert_eq!(s.kernel.ring_full(), 5);
        assert_eq!(s.kernel.samples_emitted(), 7);
        assert!(s.kernel.named().any(|n| n == ("ring_full", 5)));
        let losses: Vec<_> = s.losses().collect();
        assert!(losses.contains(&("ring_full", 5)));
        assert!(losses.contains(&("decode_errors", 3)));
        // Cut, not lost; activity is not a loss either.
        assert!(
            !losses
                .iter()
                .any(|(n, _)| *n == "sample_truncated" || *n == "samples_emitted")
        );
        // Short input (older kernel object) is not a panic.
        assert_eq!(KernelCounters::from_sums(&[]).ring_full(), 0);
    }

    /// Every exported loss reason has a row in the architecture document's
    /// loss table, so a new counter cannot go undocumented.
    #[test]
    fn every_loss_reason_is_documented() {
        let doc = include_str!("../../../docs/architecture.md");
        let table = doc
            .split("## Where every loss is counted")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("docs/architecture.md has a loss table");
        for (reason, _) in CaptureStats::default().losses() {
            assert!(
                table.contains(&format!("| `{reason}` |")),
                "docs/architecture.md's loss table has no row for `{reason}`"
            );
        }
    }
}
