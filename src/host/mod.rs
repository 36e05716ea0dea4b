//! What flowlat asks of the host: to attach to its interfaces and own the
//! filters it leaves there ([`attach`], [`owner`]), the privileges that takes
//! ([`privilege`]), the names of its cgroups ([`cgroup`]), the processes
//! that hold listening sockets ([`listeners`]), the processes of a network
//! namespace ([`netns`]), the workloads that cgroups belong to
//! ([`workload`]) and those behind each interface of a run ([`workloads`]),
//! which interfaces to watch ([`ifaces`]), a cgroup2 mount where there is
//! none ([`mounts`]), and the processes behind attempts: the cgroup hooks
//! that name them ([`process_hook`]) and the listeners made before flowlat
//! started ([`processes`]).

pub mod attach;
mod cache;
pub mod cgroup;
pub mod ifaces;
pub mod listeners;
pub mod mounts;
pub mod netns;
pub mod owner;
pub mod privilege;
pub mod process_hook;
pub mod processes;
#[cfg(test)]
mod scratch;
pub mod workload;
pub mod workloads;
