//! The cgroup hooks that name the process behind each socket: the probe's
//! `connect4`, `connect6`, `post_bind4` and `post_bind6` programs
//! (`bpf/procs.h`), linked to the cgroup v2 root so that they run for every
//! process below it.
//!
//! Each is attached through a BPF link (`BPF_LINK_CREATE`) that only this
//! process's fd holds: beside whatever other programs are attached there
//! (a link attaches as `BPF_F_ALLOW_MULTI` does, and never replaces one),
//! and detached when the fd closes, which the kernel does when flowlat
//! exits, however it exits (`SIGKILL` included). So there is nothing for
//! `--detach` to clean up. The programs always return 1: they never change
//! the outcome of a connect() or a bind().

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::bpf::link::Link;
use crate::probe::Probe;

/// The probe's cgroup programs, attached; dropping it detaches them.
#[derive(Debug)]
pub struct ProcessHook {
    root: PathBuf,
    _links: Vec<Link>,
}

impl ProcessHook {
    /// Links the probe's cgroup programs to the cgroup `root` (the cgroup2
    /// mount), all or none. The error says what is missing and that
    /// attempts go on being measured without their processes.
    pub fn attach(probe: &Probe, root: &Path) -> Result<ProcessHook, String> {
        let progs = probe
            .proc_programs()
            .map_err(|e| format!("the kernel refused the programs that name processes ({e})"))?;
        let dir = File::open(root)
            .map_err(|e| format!("cannot open the cgroup2 root {} ({e})", root.display()))?;
        let mut links = Vec::new();
        for (attach_type, prog) in progs.each() {
            // On an error the links made so far are dropped, which detaches them.
            let link = Link::create(prog, dir.as_fd(), attach_type).map_err(|e| {
                format!("cannot attach to the cgroup2 root {} ({e})", root.display())
            })?;
            links.push(link);
        }
        Ok(ProcessHook {
            root: root.to_path_buf(),
            _links: links,
        })
    }

    /// The cgroup the programs are attached to.
    pub fn root(&self) -> &Path {
        &self.root
    }
}
