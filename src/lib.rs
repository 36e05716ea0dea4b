//! flowlat: TCP handshake latency per connection, measured by a tc classifier.
//!
//! Layers, bottom up; a record flows one way, ring → [`probe::Record`] →
//! [`sinks::Fanout`] → consumers:
//! - [`bpf`] and [`netlink`]: generic kernel-ABI layers (the `bpf()` syscall,
//!   ELF objects, perf rings; rtnetlink links and tc). They know nothing of
//!   flowlat and nothing of each other.
//! - [`probe`]: our program on them: the mirror of `bpf/flowlat.h`, the record
//!   and the measurement contract, loading, delivery of records, the table of
//!   attempts and its sweep, the kernel's aggregates and filters.
//! - [`host`]: what flowlat asks of the host: attaching to interfaces and
//!   owning its filters, privileges, cgroup names.
//! - [`sinks`]: everything that consumes records, behind one fan-out that
//!   owns the counting policy: lines, summaries, histograms, metrics and
//!   their HTTP endpoint, display names.
//! - [`cli`] parses the options, [`run`] is the loop, [`error`] is the
//!   crate's error; the binary (`src/main.rs`) parses, wires, prints errors
//!   and exits.

pub mod bpf;
pub mod cli;
pub mod error;
pub mod host;
pub mod netlink;
pub mod probe;
pub mod run;
pub mod sinks;
#[cfg(test)]
mod test_child;
