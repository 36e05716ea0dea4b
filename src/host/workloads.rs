//! The workloads of a run: which workload is behind each interface whose
//! peer lives in another network namespace (a pod's or container's veth),
//! and which workload each cgroup of this host's sockets belongs to.
//!
//! An interface's workload is found when it is attached: its peer's
//! namespace, named by the kernel as an nsid ([`crate::netlink::nsid`]), is
//! matched with the namespaces of the processes in `/proc` and of the
//! entries of `/run/netns`; the best-named process in it names the workload
//! and gives its cgroup ([`super::workload::Namer::name_netns`]). A name is
//! looked for again while it may still change (no process in the namespace
//! yet, a pod not in the kubelet's log directory yet): when a record of that
//! interface comes, at most every [`RECHECK`]. Never a syscall per record,
//! and every cache is bounded.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtnetlink::Handle;

use super::cache::Bounded;
use super::cgroup::Cgroups;
use super::netns::{NsId, Processes};
use super::workload::{Namer, Sources, Workload};
use crate::netlink::link::Peer;
use crate::netlink::nsid;

/// Cgroup ids whose workload is remembered; the oldest is forgotten first.
const CGROUPS_KEPT: usize = 8192;
/// Namespace inodes whose nsid is remembered.
const NSIDS_KEPT: usize = 65_536;
/// How often an interface whose workload's name may still change is looked
/// at again, and how old a scan of `/proc` may be to name a new one.
pub const RECHECK: Duration = Duration::from_millis(100);

/// The workload behind one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfaceWorkload {
    /// `pod NAMESPACE/NAME`, `container NAME`, `netns NAME`, ...
    pub name: Option<Arc<str>>,
    /// The workload's cgroup (a pod's slice, a container's scope).
    pub cgroup_id: Option<u64>,
    /// Whether the name is final: a process's cgroup named it, with all the
    /// names that cgroup can have.
    pub settled: bool,
}

/// An interface measured from its peer's side.
struct Far {
    peer: Peer,
    workload: IfaceWorkload,
    checked: Instant,
}

/// The run's workloads.
pub struct Workloads {
    namer: Namer,
    proc_root: std::path::PathBuf,
    netns_dir: std::path::PathBuf,
    ifaces: HashMap<u32, Far>,
    by_cgroup: Bounded<u64, Option<Arc<str>>>,
    /// Namespace inodes and their nsids in flowlat's namespace.
    nsids: Bounded<u64, i32>,
    procs: Option<(Processes, Instant)>,
}

impl Default for Workloads {
    fn default() -> Self {
        Workloads::new(sources_from_env())
    }
}

/// The host's places, where `FLOWLAT_POD_LOGS` and `FLOWLAT_DOCKER_ROOT`
/// may say otherwise (a kubelet with another root directory, Docker with
/// another `data-root`).
pub fn sources_from_env() -> Sources {
    let mut s = Sources::system();
    if let Some(dir) = std::env::var_os("FLOWLAT_POD_LOGS") {
        s.pods_log = dir.into();
    }
    if let Some(dir) = std::env::var_os("FLOWLAT_DOCKER_ROOT") {
        s.docker_root = dir.into();
    }
    s
}

impl Workloads {
    /// Workloads named from `sources`.
    pub fn new(sources: Sources) -> Workloads {
        Workloads {
            proc_root: sources.proc.clone(),
            netns_dir: sources.netns_dir.clone(),
            namer: Namer::new(sources),
            ifaces: HashMap::new(),
            by_cgroup: Bounded::new(CGROUPS_KEPT),
            nsids: Bounded::new(NSIDS_KEPT),
            procs: None,
        }
    }

    /// What is known of interface `ifindex`'s workload, if it is measured
    /// from its peer's side.
    pub fn iface(&self, ifindex: u32) -> Option<&IfaceWorkload> {
        self.ifaces.get(&ifindex).map(|f| &f.workload)
    }

    /// Forgets interface `ifindex` (gone for the TTL, or measured from this
    /// side again).
    pub fn forget(&mut self, ifindex: u32) {
        self.ifaces.remove(&ifindex);
    }

    /// Whether interface `ifindex`'s workload should be looked for again
    /// now: its name may still change, and it was not looked for lately.
    pub fn due(&self, ifindex: u32) -> bool {
        self.ifaces
            .get(&ifindex)
            .is_some_and(|f| !f.workload.settled && f.checked.elapsed() >= RECHECK)
    }

    /// Finds the workload behind interface `ifindex`, whose peer is `peer`.
    pub async fn resolve(
        &mut self,
        handle: &Handle,
        ifindex: u32,
        peer: Peer,
        cgroups: &mut Cgroups,
    ) -> &IfaceWorkload {
        let workload = self.find(handle, peer, cgroups).await;
        let far = Far {
            peer,
            workload,
            checked: Instant::now(),
        };
        &self.ifaces.entry(ifindex).insert_entry(far).into_mut().workload
    }

    /// Looks again for interface `ifindex`'s workload, if it is due.
    pub async fn recheck(&mut self, handle: &Handle, ifindex: u32, cgroups: &mut Cgroups) {
        if !self.due(ifindex) {
            return;
        }
        let Some(peer) = self.ifaces.get(&ifindex).map(|f| f.peer) else {
            return;
        };
        self.resolve(handle, ifindex, peer, cgroups).await;
    }

    async fn find(&mut self, handle: &Handle, peer: Peer, cgroups: &mut Cgroups) -> IfaceWorkload {
        let fresh = self
            .procs
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < RECHECK);
        if !fresh {
            // Nothing to name with otherwise; an error leaves the last scan.
            if let Ok(p) = Processes::scan(&self.proc_root) {
                self.procs = Some((p, Instant::now()));
            }
        }
        let Some(ino) = self.namespace_of(handle, peer.netnsid).await else {
            return IfaceWorkload::default();
        };
        let procs = match &self.procs {
            Some((p, _)) => p,
            None => return IfaceWorkload::default(),
        };
        let Some(named) = self.namer.name_netns(procs, NsId { dev: 0, ino }) else {
            return IfaceWorkload::default();
        };
        let settled = !matches!(named.workload, Workload::Netns(_) | Workload::PodUid(_));
        IfaceWorkload {
            name: Some(Arc::from(named.workload.to_string())),
            cgroup_id: named.cgroup.as_deref().and_then(|c| cgroups.id_of(c)),
            settled,
        }
    }

    /// The inode of the namespace whose nsid (in flowlat's namespace) is
    /// `netnsid`, among those of the processes last scanned and of
    /// `/run/netns`. Each namespace is asked its nsid once (nsids do not
    /// change while a namespace lives).
    async fn namespace_of(&mut self, handle: &Handle, netnsid: i32) -> Option<u64> {
        let mut candidates: Vec<(u64, std::path::PathBuf)> = Vec::new();
        if let Some((procs, _)) = &self.procs {
            for ino in procs.namespaces() {
                if let Some(&pid) = procs.pids_in(ino).first() {
                    candidates.push((ino, self.proc_root.join(format!("{pid}/ns/net"))));
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.netns_dir) {
            for e in entries.flatten() {
                if let Some(ns) = NsId::of_path(&e.path()) {
                    candidates.push((ns.ino, e.path()));
                }
            }
        }
        for (ino, _) in &candidates {
            if self.nsids.get(ino) == Some(&netnsid) {
                return Some(*ino);
            }
        }
        for (ino, path) in candidates {
            if self.nsids.get(&ino).is_some() {
                continue;
            }
            let Some(id) = nsid_at(handle, &path).await else {
                continue;
            };
            self.nsids.insert(ino, id);
            if id == netnsid {
                return Some(ino);
            }
        }
        None
    }

    /// The workload of an attempt on `ifindex` whose socket is in cgroup
    /// `cgroup_id`: the interface's, if it is a workload's; else the one the
    /// cgroup's path names (a host-network pod, a container, a unit).
    pub fn name(
        &mut self,
        ifindex: u32,
        cgroup_id: Option<u64>,
        cgroups: &mut Cgroups,
    ) -> Option<Arc<str>> {
        if let Some(f) = self.ifaces.get(&ifindex) {
            return f.workload.name.clone();
        }
        let id = cgroup_id?;
        if let Some(n) = self.by_cgroup.get(&id) {
            return n.clone();
        }
        // Not known yet: the walk of the tree that names a new cgroup is at
        // most a second away, so a miss is not remembered.
        let path = cgroups.name(id)?;
        let named = self.namer.name(&path);
        let name: Option<Arc<str>> = Some(Arc::from(named.workload.to_string()));
        // A pod not in the log directory yet may be named later.
        if !matches!(named.workload, Workload::PodUid(_)) {
            self.by_cgroup.insert(id, name.clone());
        }
        name
    }
}

/// The nsid of the namespace at `path` (an nsfs file), if it has one.
async fn nsid_at(handle: &Handle, path: &Path) -> Option<i32> {
    let f = File::open(path).ok()?;
    nsid::nsid_of(handle, f.as_fd()).await.ok().flatten()
}
