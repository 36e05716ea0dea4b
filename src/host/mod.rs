//! What flowlat asks of the host: to attach to its interfaces and own the
//! filters it leaves there ([`attach`], [`owner`]), the privileges that takes
//! ([`privilege`]), the names of its cgroups ([`cgroup`]), and the processes
//! that hold listening sockets ([`listeners`]).

pub mod attach;
mod cache;
pub mod cgroup;
pub mod listeners;
pub mod owner;
pub mod privilege;
