//! Which process is behind an attempt: the cgroup programs that note the
//! process calling connect() or bind() in the socket's `procs` storage
//! (`bpf/procs.h`), and the switch that has the classifier copy it into the
//! attempt. Attaching the programs is the host's part
//! (`src/host/process_hook.rs`).

use std::mem::offset_of;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;

use super::abi::{ConfigGlobal, CFG_PROCS};
use super::state::Probe;
use crate::bpf::link::{
    BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_INET4_POST_BIND, BPF_CGROUP_INET6_CONNECT,
    BPF_CGROUP_INET6_POST_BIND,
};
use crate::bpf::sys::{BPF_PROG_TYPE_CGROUP_SOCK, BPF_PROG_TYPE_CGROUP_SOCK_ADDR};

/// The programs of `bpf/procs.h`: (name in the object, program type, attach
/// type), each loaded for the cgroup hook it is attached to.
pub(crate) const PROC_PROGRAMS: [(&str, u32, u32); 4] = [
    (
        "flowlat_connect4",
        BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        BPF_CGROUP_INET4_CONNECT,
    ),
    (
        "flowlat_connect6",
        BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        BPF_CGROUP_INET6_CONNECT,
    ),
    (
        "flowlat_bind4",
        BPF_PROG_TYPE_CGROUP_SOCK,
        BPF_CGROUP_INET4_POST_BIND,
    ),
    (
        "flowlat_bind6",
        BPF_PROG_TYPE_CGROUP_SOCK,
        BPF_CGROUP_INET6_POST_BIND,
    ),
];

/// The loaded cgroup programs, each with the attach type it was loaded for.
#[derive(Debug)]
pub struct ProcPrograms {
    pub(super) progs: Vec<(u32, OwnedFd)>,
}

impl ProcPrograms {
    /// (attach type, program) of each, to link to a cgroup.
    pub fn each(&self) -> impl Iterator<Item = (u32, BorrowedFd<'_>)> {
        self.progs.iter().map(|(t, fd)| (*t, fd.as_fd()))
    }
}

impl Probe {
    /// The cgroup programs, or why they could not be loaded (a kernel that
    /// refuses a helper they call to its cgroup programs).
    pub fn proc_programs(&self) -> Result<&ProcPrograms, &str> {
        self.proc_programs.as_ref().map_err(String::as_str)
    }

    /// The `conn_procs` array, for tests that give a socket a process of
    /// their choosing.
    #[cfg(any(test, feature = "testing"))]
    pub fn conn_procs_map(&self) -> BorrowedFd<'_> {
        self._conn_procs.as_fd()
    }

    /// Whether the classifier copies the process from a socket's storage
    /// into the attempt (`FLOWLAT_CFG_PROCS`). Off, which the probe loads
    /// with, it does not call the storage helper at all.
    pub fn set_process_attribution(&mut self, on: bool) {
        let flags = &self.globals.words()[self.config_word + offset_of!(ConfigGlobal, flags) / 4];
        if on {
            flags.fetch_or(CFG_PROCS, Ordering::SeqCst);
        } else {
            flags.fetch_and(!CFG_PROCS, Ordering::SeqCst);
        }
    }
}
