//! What flowlat asks of the host: to attach to its interfaces and own the
//! filters it leaves there ([`attach`], [`owner`]), the privileges that takes
//! ([`privilege`]), the names of its cgroups ([`cgroup`]), the processes
//! that hold listening sockets ([`listeners`]), the processes of a network
//! namespace ([`netns`]) and the workloads that cgroups belong to
//! ([`workload`]).

pub mod attach;
mod cache;
pub mod cgroup;
pub mod listeners;
pub mod netns;
pub mod owner;
pub mod privilege;
#[cfg(test)]
mod scratch;
pub mod workload;
