//! What flowlat asks of the host: to attach to its interfaces and own the
//! filters it leaves there ([`attach`], [`owner`]), the privileges that takes
//! ([`privilege`]), the names of its cgroups ([`cgroup`]), the processes
//! that hold listening sockets ([`listeners`]), and the processes behind
//! attempts: the cgroup hooks that name them ([`process_hook`]) and the
//! listeners made before flowlat started ([`processes`]).

pub mod attach;
pub mod cgroup;
pub mod listeners;
pub mod owner;
pub mod privilege;
pub mod process_hook;
pub mod processes;
