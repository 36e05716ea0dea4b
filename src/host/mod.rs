//! What flowlat asks of the host: to attach to its interfaces and own the
//! filters it leaves there ([`attach`], [`owner`]), the privileges that takes
//! ([`privilege`]), and the names of its cgroups ([`cgroup`]).

pub mod attach;
pub mod cgroup;
pub mod owner;
pub mod privilege;
