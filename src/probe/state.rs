//! The loaded classifier's state: its programs, maps and mappings, and what
//! user space keeps beside them. Each concern's file adds its methods.

use std::os::fd::OwnedFd;

use super::attempts::TableMap;
use super::ledger::Delivered;
use crate::bpf::map::Map;
use crate::bpf::mmap::Mapping;

/// The loaded classifier: four programs (two hooks × two framings) and their maps.
pub struct Probe {
    pub(super) ingress: OwnedFd,
    pub(super) egress: OwnedFd,
    /// Loaded only when an interface needs them (see [`Probe::load_for`]).
    pub(super) ingress_l3: Option<OwnedFd>,
    pub(super) egress_l3: Option<OwnedFd>,
    pub(super) table: TableMap,
    pub(super) events: Map,
    pub(super) stats: Map,
    /// The probe's globals (section .bss, one map), mapped: the ACK gate's
    /// counters and the settings.
    pub(super) globals: Mapping,
    pub(super) _globals_fd: Map,
    /// Where the gate's counters start in `globals`, in 32-bit words.
    pub(super) gate_word: usize,
    /// Where `config` is in `globals`, in 32-bit words.
    pub(super) config_word: usize,
    /// Where `filter` is in `globals`, in 32-bit words.
    pub(super) filter_word: usize,
    pub(super) nets: Map,
    pub(super) agg: Map,
    /// Each CPU's cache of aggregates (`agg_cpu`).
    pub(super) agg_cpu: Map,
    /// Failures by reason (`fails`).
    pub(super) fails: Map,
    /// The `batches` map, mapped: each CPU's batch of records not yet sent.
    pub(super) batches: Mapping,
    pub(super) _batches_fd: Map,
    /// The process behind each socket a cgroup hook saw (`procs`), which
    /// the classifier reads; and its per-CPU scratch space (`scratch`).
    pub(super) _procs: Map,
    /// The process of each connect(), by socket cookie (`conn_procs`).
    pub(super) _conn_procs: Map,
    pub(super) _scratch: Map,
    /// The cgroup programs that fill `procs`, or why they did not load.
    pub(super) proc_programs: Result<super::procs::ProcPrograms, String>,
    /// Per possible CPU, what [`Probe::drain`] has delivered of its batches.
    pub(super) delivered: Vec<Delivered>,
    /// Records of batches the perf ring had no room for that were read from
    /// their slot before the batch filled, so not lost.
    pub(super) recovered: u64,
    /// Records that came whole but did not decode (see [`Probe::records_lost`]).
    pub(super) malformed: u64,
    /// `config.batch`: records per perf event.
    pub(super) records_per_event: u32,
    /// Whether the filter names cgroups, which the sweep applies to `in` attempts.
    pub(super) cgroup_filter: bool,
    /// `in` attempts the sweep dropped for the cgroup filter, for [`KernelStats::filtered`].
    pub(super) swept_filtered: u64,
    pub(super) possible_cpus: usize,
    /// The ACK gate's active bank, and when it last changed (`None` before the first sweep).
    pub(super) bank: u32,
    pub(super) rotated_ns: Option<u64>,
    /// Entries removed by user space (timeouts, old tombstones), for the eviction count.
    pub(super) swept: u64,
    /// Tombstones inserted by user space, for the eviction count.
    pub(super) tombstones: u64,
}
