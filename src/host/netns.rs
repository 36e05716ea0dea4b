//! The processes of a network namespace, and its name: for an interface
//! whose veth peer lives in another network namespace (a pod's, a
//! container's), the workload at the other end is whatever runs in that
//! namespace, named by the cgroup of one of its processes
//! ([`super::workload`]).
//!
//! A namespace is known by the inode of its nsfs file: `/proc/PID/ns/net`
//! is a link that reads `net:[INODE]` and whose `stat` gives that inode (and
//! the nsfs device), and each entry of `/run/netns` (`ip netns add`) is a
//! bind mount of such a file. All namespaces live on the one nsfs, so the
//! inode alone tells them apart; the device only guards against a file that
//! is not a namespace at all (a `/run/netns` entry whose mount is gone).
//!
//! Functions take the root of procfs as a parameter, so that tests can lay
//! out a `/proc` of their own. Only the processes that flowlat's `/proc`
//! shows are found (its PID namespace and those below it), and reading
//! another user's `ns/net` takes root (or `CAP_SYS_PTRACE`); those it cannot
//! read are passed over.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::workload;

/// The most processes a [`Processes::scan`] looks at: one `readlink` each, a
/// few microseconds, so a scan takes well under a second.
pub const MAX_PROCESSES: usize = 100_000;
/// The most processes of one namespace whose cgroups
/// [`Processes::representative`] reads: the first ones name the workload as
/// well as any.
const MAX_CANDIDATES: usize = 256;

/// A namespace's nsfs file: device and inode as `stat` gives them. A `dev`
/// of 0 means the device is not known (the inode was read from the link's
/// text); no real device is 0, nsfs being an anonymous one numbered from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NsId {
    /// `st_dev` of the nsfs file, or 0 when unknown.
    pub dev: u64,
    /// `st_ino` of the nsfs file: the namespace's inode.
    pub ino: u64,
}

impl NsId {
    /// The namespace that `path` (`/proc/PID/ns/net`, `/run/netns/NAME`,
    /// `/proc/self/fd/N` of a namespace's fd) refers to, by `stat`.
    pub fn of_path(path: &Path) -> Option<NsId> {
        let meta = fs::metadata(path).ok()?;
        Some(NsId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Whether both name one namespace: the same inode, and the same device
    /// where both know theirs.
    pub fn same(&self, other: &NsId) -> bool {
        self.ino == other.ino && (self.dev == 0 || other.dev == 0 || self.dev == other.dev)
    }
}

/// The network namespace of process `pid`: `stat` of `PROC/PID/ns/net`, or
/// when that fails (a procfs that is not one, as in tests) the inode its link
/// reads, with the device unknown. `None` when the process is gone or its
/// namespace cannot be read.
pub fn netns_of_pid(proc_root: &Path, pid: u32) -> Option<NsId> {
    let link = proc_root.join(pid.to_string()).join("ns/net");
    NsId::of_path(&link).or_else(|| {
        Some(NsId {
            dev: 0,
            ino: link_inode(&link)?,
        })
    })
}

/// The inode of a namespace link that reads `net:[INODE]`.
fn link_inode(link: &Path) -> Option<u64> {
    fs::read_link(link)
        .ok()?
        .to_str()?
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The cgroup v2 path of process `pid`: the `0::` line of `PROC/PID/cgroup`
/// (on a hybrid host the v1 hierarchies have lines of their own). It is
/// relative to flowlat's own cgroup namespace, so it starts with `/..` for a
/// process outside it. `None` when the process is gone or has no v2 line.
pub fn cgroup_of_pid(proc_root: &Path, pid: u32) -> Option<String> {
    let text = fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_string)
}

/// The name of the namespace `ns` in `dir` (`/run/netns`, where `ip netns`
/// keeps its names): the first entry, in name order, that is `ns`. `None`
/// when none is (or the directory cannot be read).
pub fn netns_name(dir: &Path, ns: NsId) -> Option<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    names
        .into_iter()
        .find(|name| NsId::of_path(&dir.join(name)).is_some_and(|found| found.same(&ns)))
}

/// The processes of a procfs mount: each numeric entry of `proc_root`, as
/// its pid and its directory. Entries that vanish while listed are passed
/// over; an error only when `proc_root` cannot be listed.
pub(crate) fn processes(
    proc_root: &Path,
) -> io::Result<impl Iterator<Item = (u32, std::path::PathBuf)>> {
    Ok(fs::read_dir(proc_root)?.flatten().filter_map(|entry| {
        let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
        Some((pid, entry.path()))
    }))
}

/// Which processes are in which network namespace, from one walk of
/// `/proc`; it does not follow processes that start or end later.
#[derive(Debug)]
pub struct Processes {
    /// PIDs by namespace inode, in ascending order.
    by_ns: HashMap<u64, Vec<u32>>,
    complete: bool,
}

impl Processes {
    /// Walks `proc_root` (a procfs mount), reading each process's
    /// `ns/net` link, up to [`MAX_PROCESSES`] processes. Processes that vanish
    /// or whose namespace cannot be read are passed over; an error only when
    /// `proc_root` cannot be listed.
    pub fn scan(proc_root: &Path) -> io::Result<Processes> {
        Processes::scan_at_most(proc_root, MAX_PROCESSES)
    }

    fn scan_at_most(proc_root: &Path, limit: usize) -> io::Result<Processes> {
        let mut by_ns: HashMap<u64, Vec<u32>> = HashMap::new();
        let mut complete = true;
        for (seen, (pid, dir)) in processes(proc_root)?.enumerate() {
            if seen == limit {
                complete = false;
                break;
            }
            // The link's text, not `stat`: one syscall that needs no
            // device, and all namespaces share the one nsfs.
            if let Some(ino) = link_inode(&dir.join("ns/net")) {
                by_ns.entry(ino).or_default().push(pid);
            }
        }
        for pids in by_ns.values_mut() {
            pids.sort_unstable();
        }
        Ok(Processes { by_ns, complete })
    }

    /// The PIDs in the namespace of inode `ino`, lowest first; empty when the
    /// scan found none (a namespace that no process holds, kept alive by a
    /// mount in `/run/netns` or an open fd).
    pub fn pids_in(&self, ino: u64) -> &[u32] {
        self.by_ns.get(&ino).map_or(&[], Vec::as_slice)
    }

    /// The inodes of the namespaces found.
    pub fn namespaces(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_ns.keys().copied()
    }

    /// Whether the scan looked at every process ([`MAX_PROCESSES`] at most);
    /// when not, a namespace may hold more processes than it lists, or list
    /// none while it has some.
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// The process of namespace `ino` whose cgroup names its workload best,
    /// with that cgroup's path: one in a pod before one in a container, before
    /// one in a systemd unit, before any other cgroup; of equals, the lowest
    /// PID (the oldest, usually the one that made the namespace). In a pod
    /// every process, the sandbox's (`pause`) too, is in the pod's cgroup,
    /// so any of them names the pod. At most the first 256 processes are
    /// read. `None` when no process of the namespace has a readable cgroup.
    pub fn representative(&self, proc_root: &Path, ino: u64) -> Option<(u32, String)> {
        let mut best: Option<(u8, u32, String)> = None;
        for &pid in self.pids_in(ino).iter().take(MAX_CANDIDATES) {
            let Some(path) = cgroup_of_pid(proc_root, pid) else {
                continue;
            };
            let rank = workload::classify(&path).kind.rank();
            if best.as_ref().is_none_or(|(top, _, _)| rank > *top) {
                best = Some((rank, pid, path));
            }
        }
        best.map(|(_, pid, path)| (pid, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::scratch::TempDir;

    /// A directory laid out as /proc: per process, `ns/net` linking to
    /// `net:[INO]` (when given) and `cgroup` (when given).
    fn fake_proc(procs: &[(u32, Option<u64>, Option<&str>)]) -> TempDir {
        let proc = TempDir::new("netns-proc");
        for &(pid, ino, cgroup) in procs {
            let dir = proc.0.join(pid.to_string());
            fs::create_dir_all(dir.join("ns")).unwrap();
            if let Some(ino) = ino {
                std::os::unix::fs::symlink(format!("net:[{ino}]"), dir.join("ns/net")).unwrap();
            }
            if let Some(cgroup) = cgroup {
                fs::write(dir.join("cgroup"), cgroup).unwrap();
            }
        }
        fs::create_dir_all(proc.0.join("self")).unwrap();
        fs::write(proc.0.join("uptime"), "1.0 1.0\n").unwrap();
        proc
    }

    const HOST: u64 = 4026531840;
    const POD: u64 = 4026532000;
    const POD_SLICE: &str =
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1c2d3e4f_5a6b_7c8d_9e0f_1a2b3c4d5e6f.slice";

    #[test]
    fn a_scan_lists_the_processes_of_each_namespace() {
        let proc = fake_proc(&[
            (1, Some(HOST), None),
            (300, Some(POD), None),
            (42, Some(HOST), None),
            (200, Some(POD), None),
            (7, None, None),
        ]);
        let scan = Processes::scan(&proc.0).unwrap();
        assert_eq!(scan.pids_in(HOST), [1, 42]);
        assert_eq!(scan.pids_in(POD), [200, 300]);
        assert!(scan.pids_in(1).is_empty());
        let mut found: Vec<u64> = scan.namespaces().collect();
        found.sort();
        assert_eq!(found, [HOST, POD]);
        assert!(scan.complete());
        assert!(Processes::scan(&proc.0.join("absent")).is_err());
    }

    #[test]
    fn a_scan_stops_at_its_bound_and_says_so() {
        let procs: Vec<_> = (1..=50).map(|pid| (pid, Some(POD), None)).collect();
        let proc = fake_proc(&procs);
        let scan = Processes::scan_at_most(&proc.0, 20).unwrap();
        assert_eq!(scan.pids_in(POD).len(), 20);
        assert!(!scan.complete());
        let whole = Processes::scan_at_most(&proc.0, 50).unwrap();
        assert!(whole.complete(), "exactly at the bound is whole");
    }

    #[test]
    fn a_process_namespace_from_its_link() {
        let proc = fake_proc(&[(10, Some(POD), None), (11, None, None)]);
        assert_eq!(netns_of_pid(&proc.0, 10), Some(NsId { dev: 0, ino: POD }));
        assert_eq!(netns_of_pid(&proc.0, 11), None);
        assert_eq!(netns_of_pid(&proc.0, 12), None);
        fs::create_dir_all(proc.0.join("13/ns")).unwrap();
        std::os::unix::fs::symlink("mnt:[4026531841]", proc.0.join("13/ns/net")).unwrap();
        assert_eq!(netns_of_pid(&proc.0, 13), None, "not a net link");
    }

    #[test]
    fn this_process_namespace_by_stat_and_by_link_agree() {
        let proc = Path::new("/proc");
        let pid = std::process::id();
        let by_stat = netns_of_pid(proc, pid).expect("our own namespace");
        assert_ne!(by_stat.dev, 0);
        let by_link = link_inode(&proc.join(pid.to_string()).join("ns/net"));
        assert_eq!(by_link, Some(by_stat.ino));
        let scan = Processes::scan(proc).unwrap();
        assert!(scan.pids_in(by_stat.ino).contains(&pid));
    }

    #[test]
    fn the_cgroup_is_the_v2_line() {
        let hybrid = "12:memory:/user.slice\n1:name=systemd:/user.slice/session-1.scope\n0::/user.slice/user-1000.slice/session-1.scope\n";
        let proc = fake_proc(&[
            (1, None, Some(hybrid)),
            (2, None, Some("0::/\n")),
            (
                3,
                None,
                Some("0::/../../kubepods-podx.slice/cri-containerd-a:b.scope"),
            ),
            (4, None, Some("5:cpu:/\n")),
        ]);
        assert_eq!(
            cgroup_of_pid(&proc.0, 1).as_deref(),
            Some("/user.slice/user-1000.slice/session-1.scope")
        );
        assert_eq!(cgroup_of_pid(&proc.0, 2).as_deref(), Some("/"));
        assert_eq!(
            cgroup_of_pid(&proc.0, 3).as_deref(),
            Some("/../../kubepods-podx.slice/cri-containerd-a:b.scope")
        );
        assert_eq!(cgroup_of_pid(&proc.0, 4), None, "v1 only");
        assert_eq!(cgroup_of_pid(&proc.0, 5), None, "no such process");
    }

    #[test]
    fn the_representative_names_the_workload_best() {
        let container = format!("0::{POD_SLICE}/cri-containerd-{}.scope\n", "a".repeat(64));
        let pause = format!("0::{POD_SLICE}/cri-containerd-{}.scope\n", "b".repeat(64));
        let proc = fake_proc(&[
            (5, Some(POD), Some("0::/system.slice/containerd.service\n")),
            (6, Some(POD), Some("0::/\n")),
            (9, Some(POD), Some(&container)),
            (8, Some(POD), Some(&pause)),
            (7, Some(POD), None),
            (20, Some(HOST), Some("0::/init.scope\n")),
            (21, Some(HOST), Some("0::/user.slice\n")),
        ]);
        let scan = Processes::scan(&proc.0).unwrap();
        assert_eq!(
            scan.representative(&proc.0, POD),
            Some((8, pause.trim_start_matches("0::").trim_end().to_string())),
            "the lowest PID in the pod"
        );
        assert_eq!(
            scan.representative(&proc.0, HOST),
            Some((20, "/init.scope".to_string())),
            "a unit before a plain cgroup"
        );
        assert_eq!(scan.representative(&proc.0, 1), None);
        let dead = fake_proc(&[(3, Some(POD), None)]);
        let scan = Processes::scan(&dead.0).unwrap();
        assert_eq!(scan.representative(&dead.0, POD), None);
    }

    #[test]
    fn namespaces_are_named_by_their_entry_in_the_netns_dir() {
        let dir = TempDir::new("netns-dir");
        for name in ["red", "blue", "zz-same-as-blue"] {
            fs::write(dir.0.join(name), "").unwrap();
        }
        let red = NsId::of_path(&dir.0.join("red")).unwrap();
        let blue = NsId::of_path(&dir.0.join("blue")).unwrap();
        assert_eq!(netns_name(&dir.0, red).as_deref(), Some("red"));
        assert_eq!(netns_name(&dir.0, blue).as_deref(), Some("blue"));
        assert_eq!(
            netns_name(
                &dir.0,
                NsId {
                    dev: 0,
                    ino: red.ino
                }
            )
            .as_deref(),
            Some("red"),
            "an inode from a link's text"
        );
        let other_dev = NsId {
            dev: red.dev + 1,
            ino: red.ino,
        };
        assert_eq!(netns_name(&dir.0, other_dev), None, "another file system");
        let absent = NsId { dev: 0, ino: 1 };
        assert_eq!(netns_name(&dir.0, absent), None);
        assert_eq!(netns_name(&dir.0.join("absent"), red), None);
    }

    #[test]
    fn a_real_namespace_is_found_among_nsfs_files() {
        let ours = netns_of_pid(Path::new("/proc"), std::process::id()).expect("ours");
        let dir = Path::new("/proc/self/ns");
        assert_eq!(netns_name(dir, ours).as_deref(), Some("net"));
    }
}
