//! The table of attempts in progress as user space sees it: its entries,
//! and the sweep that reports the attempts that timed out and leaves
//! tombstones in their place.

use std::time::Duration;

use super::attempts::{sweep_table, Sweep, Table, TableMap};
use super::state::Probe;
use super::stats::KernelStats;
use crate::bpf::BpfError;

impl Probe {
    /// Which table of attempts the loaded classifier keeps.
    pub fn table(&self) -> Table {
        match self.table {
            TableMap::Slots(_) => Table::Slots,
            TableMap::Lru(_) => Table::Lru,
        }
    }

    /// Every entry of the table of attempts: attempts in progress and
    /// tombstones (tests, and the pending-attempts gauge).
    #[cfg(any(test, feature = "testing"))]
    pub fn pending_entries(&self) -> Result<Vec<(super::abi::Key, super::abi::Pending)>, BpfError> {
        use super::abi::{Key, Pending};
        use super::attempts::Attempts;
        fn keys_and_values<T: Attempts>(t: &T) -> Result<Vec<(Key, Pending)>, BpfError> {
            Ok(t.entries()?.into_iter().map(|(k, p, _)| (k, p)).collect())
        }
        match &self.table {
            TableMap::Slots(t) => keys_and_values(t),
            TableMap::Lru(t) => keys_and_values(t),
        }
    }

    /// Runs `f` while every entry of the slot table is busy, as an entry is
    /// while another CPU turns its ended attempt into a tombstone, or while
    /// the sweep times it out (tests); then gives each back as it was, a
    /// new generation. Runs `f` alone for the LRU table.
    #[cfg(any(test, feature = "testing"))]
    pub fn with_entries_busy<R>(&self, f: impl FnOnce() -> R) -> R {
        let TableMap::Slots(t) = &self.table else {
            return f();
        };
        let held: Vec<_> = t.entries().into_iter().filter(|e| t.claim(e)).collect();
        let r = f();
        for e in &held {
            t.replace(e, &e.p);
        }
        r
    }

    /// Each front bucket's count of attempts waiting in their main buckets,
    /// for the slot table (tests); empty for the LRU table.
    #[cfg(any(test, feature = "testing"))]
    pub fn front_spills(&self) -> Vec<u64> {
        match &self.table {
            TableMap::Slots(t) => t.spills(),
            TableMap::Lru(_) => Vec::new(),
        }
    }

    /// Reports every attempt whose first SYN is `timeout` or more before `now_ns`
    /// (`CLOCK_MONOTONIC`), and leaves a tombstone in its place (see
    /// [`REPORTED_HOLD`]). Whoever takes an entry out of the table reports it,
    /// so an attempt the classifier completes during the sweep is reported
    /// once. Tombstones whose client has been quiet for `REPORTED_HOLD` are
    /// removed.
    pub fn sweep(&mut self, now_ns: u64, timeout: Duration) -> Result<Sweep, BpfError> {
        let timeout_ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let (sweep, swept) = match &self.table {
            TableMap::Slots(t) => sweep_table(t, now_ns, timeout_ns, self.cgroup_filter)?,
            TableMap::Lru(t) => sweep_table(t, now_ns, timeout_ns, self.cgroup_filter)?,
        };
        self.swept += swept.removed;
        self.tombstones += swept.tombstones;
        self.swept_filtered += sweep.filtered;
        // After the timeouts are gone: see rotate_gate.
        self.rotate_gate(now_ns, timeout_ns);
        Ok(sweep)
    }

    /// Entries the table evicted to make room (the LRU table full, or a slot
    /// table's bucket): everything inserted
    /// that was neither removed nor is still in the table (`in_table` entries,
    /// pending attempts and tombstones).
    pub fn evicted(&self, ks: &KernelStats, in_table: u64) -> u64 {
        (ks.created + self.tombstones)
            .saturating_sub(ks.removed)
            .saturating_sub(self.swept)
            .saturating_sub(in_table)
    }
}
