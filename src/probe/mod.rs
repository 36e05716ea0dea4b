//! flowlat's own BPF program: its maps, its record and the measurement contract.
//!
//! The C side is `bpf/probe.c`; [`abi`] mirrors `bpf/flowlat.h`. User space
//! finishes what the classifier starts: [`record`] turns a record's
//! timestamps into the contract's `rtt`, `local` and `total`, [`table`]
//! reports the attempts that time out by sweeping the table of attempts
//! ([`slots`] for the slot table), [`delivery`] hands out the records of the
//! rings and batches, [`aggregate`] reads the kernel's counts, [`filter`] and
//! [`gate`] write what the classifier reads, [`load`] makes it all.

pub(crate) mod abi;
pub mod aggregate;
mod attempts;
pub mod delivery;
pub mod filter;
pub mod gate;
mod ledger;
pub mod load;
pub mod procs;
pub mod record;
pub mod slots;
mod state;
pub mod stats;
pub mod table;

/// Which clsact hook a program runs at: the one netlink attaches to.
pub use crate::netlink::tc::Hook;
pub use abi::MAX_FILTER_PROCS;
pub use abi::{
    Batch, Event, Key, Pending, BATCH, HIST_BOUNDS_NS, HIST_N, MAX_FILTER_CGROUPS, MAX_FILTER_NETS,
    REASONS, RESULTS,
};
pub use aggregate::{hist_bucket, AggKey, AggValue, Aggregation, Failure, Hist};
pub use attempts::{Sweep, Table, ANSWERED_HOLD, REPORTED_HOLD};
pub use filter::Filter;
pub use load::{object_bytes, Framing, ProbeConfig};
pub use procs::ProcPrograms;
pub use record::{Comm, Dir, Outcome, Process, Reason, Record};
pub use state::Probe;
pub use stats::KernelStats;

#[cfg(test)]
mod tests;
