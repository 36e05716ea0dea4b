//! The classifier's own counters, summed over CPUs.

use super::abi::{
    STAT_AGG_FAILED, STAT_BELOW_MIN_RTT, STAT_CREATED, STAT_EXT_SKIPPED, STAT_FILTERED, STAT_MAX,
    STAT_REMOVED, STAT_SEND_FAILED, STAT_SENT,
};
use super::state::Probe;
use crate::bpf::BpfError;

/// The classifier's counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Records the classifier sent (put in its CPU's batch).
    pub sent: u64,
    /// Records of batches the perf ring had no room for (see [`Probe::records_lost`]).
    pub send_failed: u64,
    /// Pending entries the classifier inserted.
    pub created: u64,
    /// Pending entries the classifier removed when reporting them.
    pub removed: u64,
    /// IPv6 packets skipped because their extension header chain was too long.
    pub ext_skipped: u64,
    /// Attempts the [`Filter`] dropped: in the kernel at their SYN (a
    /// retransmitted SYN is not counted again) or, for the cgroup of an `in`
    /// attempt, at our first SYN-ACK or our RST; and those the sweep dropped
    /// ([`Sweep::filtered`]). Every one of them sent no record.
    pub filtered: u64,
    /// `ok` attempts that sent no record because their rtt was under
    /// [`Filter::min_rtt_ns`].
    pub below_min_rtt: u64,
    /// Ended attempts the aggregation map had no room for, not even in an
    /// `other` key (see [`Aggregation`]); not aggregated.
    pub agg_failed: u64,
}

impl Probe {
    /// Sums the per-CPU counters.
    pub fn kernel_stats(&self) -> Result<KernelStats, BpfError> {
        let mut sum = [0u64; STAT_MAX];
        // The map's one value: each CPU's counters, one after the other.
        let mut buf = vec![0u8; 8 * STAT_MAX * self.possible_cpus];
        if self.stats.lookup(&0u32.to_ne_bytes(), &mut buf)? {
            for cpu in buf.chunks_exact(8 * STAT_MAX) {
                for (total, c) in sum.iter_mut().zip(cpu.chunks_exact(8)) {
                    *total += u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
                }
            }
        }
        Ok(KernelStats {
            sent: sum[STAT_SENT],
            send_failed: sum[STAT_SEND_FAILED],
            created: sum[STAT_CREATED],
            removed: sum[STAT_REMOVED],
            ext_skipped: sum[STAT_EXT_SKIPPED],
            filtered: sum[STAT_FILTERED] + self.swept_filtered,
            below_min_rtt: sum[STAT_BELOW_MIN_RTT],
            agg_failed: sum[STAT_AGG_FAILED],
        })
    }
}

impl Probe {
    /// Counts attempts user space dropped for the filters (an `in` attempt
    /// whose process only user space could name), in [`KernelStats::filtered`].
    pub fn count_filtered(&mut self, n: u64) {
        self.swept_filtered += n;
    }
}
