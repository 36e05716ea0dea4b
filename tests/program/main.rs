//! The library against the real kernel, without the flowlat binary: the
//! embedded classifier run on crafted packets through `BPF_PROG_TEST_RUN`
//! (`probe_*`, and `fuzz` against a model of the measurement contract), and
//! the netlink layer's tc attachments on a veth pair (`netlink_tc`). Needs
//! root; takes about a minute.
//!
//! One test here moves this process into cgroups of its own; the tests that
//! read the cgroup of this process keep it out meanwhile (see `kit::cgroup`).

mod fuzz;
mod netlink_tc;
mod probe_agg;
mod probe_causes;
mod probe_filters;
mod probe_procs;
mod probe_run;
mod probe_tables;
