//! flowlat's own BPF program: its maps, its record and the measurement contract.
//!
//! The C side is `bpf/probe.c`; [`abi`] mirrors `bpf/flowlat.h`. User space
//! finishes what the classifier starts: [`record`] turns a record's
//! timestamps into the contract's `rtt`, `local` and `total`, [`table`]
//! reports the attempts that time out by sweeping the table of attempts
//! ([`slots`] for the slot table), [`delivery`] hands out the records of the
//! rings and batches, [`aggregate`] reads the kernel's counts, [`filter`] and
//! [`gate`] write what the classifier reads, [`load`] makes it all.

use std::os::fd::OwnedFd;

use crate::bpf::map::Map;
use crate::bpf::mmap::Mapping;

pub(crate) mod abi;
pub mod aggregate;
pub mod delivery;
pub mod filter;
pub mod gate;
pub mod load;
pub mod record;
pub mod slots;
pub mod stats;
pub mod table;

/// Which clsact hook a program runs at: the one netlink attaches to.
pub use crate::netlink::tc::Hook;
pub use abi::{
    Batch, Event, Key, Pending, BATCH, HIST_BOUNDS_NS, HIST_N, MAX_FILTER_CGROUPS, MAX_FILTER_NETS,
    REASONS, RESULTS,
};
pub use aggregate::{hist_bucket, AggKey, AggValue, Aggregation, Hist};
pub use filter::Filter;
pub use load::{object_bytes, Framing, ProbeConfig, Table};
pub use record::{Dir, Outcome, Reason, Record};
pub use stats::KernelStats;
pub use table::{Sweep, ANSWERED_HOLD, REPORTED_HOLD};

use delivery::Delivered;
use table::TableMap;

/// The loaded classifier: four programs (two hooks × two framings) and their maps.
pub struct Probe {
    ingress: OwnedFd,
    egress: OwnedFd,
    /// Loaded only when an interface needs them (see [`Probe::load_for`]).
    ingress_l3: Option<OwnedFd>,
    egress_l3: Option<OwnedFd>,
    table: TableMap,
    events: Map,
    stats: Map,
    /// The probe's globals (section .bss, one map), mapped: the ACK gate's
    /// counters and the settings.
    globals: Mapping,
    _globals_fd: Map,
    /// Where the gate's counters start in `globals`, in 32-bit words.
    gate_word: usize,
    /// Where `config` is in `globals`, in 32-bit words.
    config_word: usize,
    /// Where `filter` is in `globals`, in 32-bit words.
    filter_word: usize,
    nets: Map,
    agg: Map,
    /// Each CPU's cache of aggregates (`agg_cpu`).
    agg_cpu: Map,
    /// Failures by reason (`fails`).
    fails: Map,
    /// The `batches` map, mapped: each CPU's batch of records not yet sent.
    batches: Mapping,
    _batches_fd: Map,
    /// Per possible CPU, what [`Probe::drain`] has delivered of its batches.
    delivered: Vec<Delivered>,
    /// Records of batches the perf ring had no room for that were read from
    /// their slot before the batch filled, so not lost.
    recovered: u64,
    /// Records that came whole but did not decode (see [`Probe::records_lost`]).
    malformed: u64,
    /// `config.batch`: records per perf event.
    records_per_event: u32,
    /// Whether the filter names cgroups, which the sweep applies to `in` attempts.
    cgroup_filter: bool,
    /// `in` attempts the sweep dropped for the cgroup filter, for [`KernelStats::filtered`].
    swept_filtered: u64,
    possible_cpus: usize,
    /// The ACK gate's active bank, and when it last changed (`None` before the first sweep).
    bank: u32,
    rotated_ns: Option<u64>,
    /// Entries removed by user space (timeouts, old tombstones), for the eviction count.
    swept: u64,
    /// Tombstones inserted by user space, for the eviction count.
    tombstones: u64,
}

#[cfg(test)]
mod tests;
