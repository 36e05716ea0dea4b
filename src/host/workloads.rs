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
use std::time::Duration;

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
/// How long a namespace named by something other than a pod or container
/// is looked at again before its name is taken as final.
const SETTLE: Duration = Duration::from_secs(10);

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
    /// When the scan of `/proc` it was last named from was taken
    /// (`CLOCK_MONOTONIC` ns, as records' times): a process that started
    /// after it is not known to the name.
    checked_ns: u64,
    /// When it was first looked for.
    first_ns: u64,
}

/// `CLOCK_MONOTONIC` now, in ns: the clock of the classifier's timestamps.
fn now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// [`RECHECK`] in ns.
const RECHECK_NS: u64 = RECHECK.as_nanos() as u64;

/// The run's workloads.
pub struct Workloads {
    namer: Namer,
    proc_root: std::path::PathBuf,
    netns_dir: std::path::PathBuf,
    ifaces: HashMap<u32, Far>,
    by_cgroup: Bounded<u64, Option<Arc<str>>>,
    /// Namespace inodes and their nsids in flowlat's namespace.
    nsids: Bounded<u64, i32>,
    /// The last scan of `/proc`, and when it was taken (ns).
    procs: Option<(Processes, u64)>,
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

    /// The named workloads behind interfaces, by interface.
    pub fn iface_names(&self) -> Vec<(u32, Arc<str>)> {
        self.ifaces
            .iter()
            .filter_map(|(i, f)| Some((*i, f.workload.name.clone()?)))
            .collect()
    }

    /// Forgets interface `ifindex` (gone for the TTL, or measured from this
    /// side again).
    pub fn forget(&mut self, ifindex: u32) {
        self.ifaces.remove(&ifindex);
    }

    /// Whether interface `ifindex`'s workload should be looked for again
    /// for an attempt that began at `since_ns`: its name may still change,
    /// and it was last looked for before the attempt began (its process
    /// may have started since) or longer than [`RECHECK`] ago.
    pub fn due(&self, ifindex: u32, since_ns: u64) -> bool {
        self.ifaces.get(&ifindex).is_some_and(|f| {
            !f.workload.settled
                && (f.checked_ns < since_ns || now_ns().saturating_sub(f.checked_ns) >= RECHECK_NS)
        })
    }

    /// Finds the workload behind interface `ifindex`, whose peer is `peer`.
    /// A scan of `/proc` up to [`RECHECK`] old serves: interfaces attached
    /// together (a node's start) share one, and a name found too early is
    /// looked for again before the records that need it.
    pub async fn resolve(
        &mut self,
        handle: &Handle,
        ifindex: u32,
        peer: Peer,
        cgroups: &mut Cgroups,
    ) -> &IfaceWorkload {
        let now = now_ns();
        self.resolve_seen_after(
            handle,
            ifindex,
            peer,
            cgroups,
            now.saturating_sub(RECHECK_NS),
        )
        .await
    }

    /// [`Workloads::resolve`] from a scan of `/proc` taken after `scan_ns`.
    async fn resolve_seen_after(
        &mut self,
        handle: &Handle,
        ifindex: u32,
        peer: Peer,
        cgroups: &mut Cgroups,
        scan_ns: u64,
    ) -> &IfaceWorkload {
        let now = now_ns();
        let first_ns = match self.ifaces.get(&ifindex) {
            Some(f) if f.peer == peer => f.first_ns,
            _ => now,
        };
        let workload = self
            .find(handle, peer, cgroups, (now, scan_ns), first_ns)
            .await;
        let checked_ns = self.procs.as_ref().map_or(0, |(_, at)| *at);
        let far = Far {
            peer,
            workload,
            checked_ns,
            first_ns,
        };
        &self
            .ifaces
            .entry(ifindex)
            .insert_entry(far)
            .into_mut()
            .workload
    }

    /// Looks again for interface `ifindex`'s workload, if it is due for an
    /// attempt that began at `since_ns` (see [`Workloads::due`]).
    pub async fn recheck(
        &mut self,
        handle: &Handle,
        ifindex: u32,
        since_ns: u64,
        cgroups: &mut Cgroups,
    ) {
        if !self.due(ifindex, since_ns) {
            return;
        }
        let Some(peer) = self.ifaces.get(&ifindex).map(|f| f.peer) else {
            return;
        };
        // The process that made the attempt may have started just before
        // it: a scan from before the attempt cannot know it.
        let scan_ns = since_ns.max(now_ns().saturating_sub(RECHECK_NS));
        self.resolve_seen_after(handle, ifindex, peer, cgroups, scan_ns)
            .await;
    }

    async fn find(
        &mut self,
        handle: &Handle,
        peer: Peer,
        cgroups: &mut Cgroups,
        (now, scan_ns): (u64, u64),
        first_ns: u64,
    ) -> IfaceWorkload {
        let fresh = self.procs.as_ref().is_some_and(|(_, at)| *at >= scan_ns);
        if !fresh {
            // Nothing to name with otherwise; an error leaves the last scan.
            if let Ok(p) = Processes::scan(&self.proc_root) {
                self.procs = Some((p, now));
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
        // A pod or a container is what a namespace behind a veth is for.
        // Anything else may be a passer-by (a CNI plugin setting the pod's
        // network up from its own cgroup) or a sandbox not started yet:
        // taken as final only once it has stood for SETTLE.
        let settled = match &named.workload {
            Workload::Pod { .. } | Workload::Container { .. } => true,
            Workload::Netns(_) | Workload::PodUid(_) => false,
            Workload::Unit(_) | Workload::Cgroup(_) => {
                now.saturating_sub(first_ns) >= SETTLE.as_nanos() as u64
            }
        };
        IfaceWorkload {
            name: Some(Arc::from(named.workload.to_string())),
            cgroup_id: named.cgroup.as_deref().and_then(|c| cgroups.id_of(c)),
            settled,
        }
    }

    /// An nsfs file of the namespace whose nsid (in flowlat's namespace) is
    /// `netnsid`, to open: where an interface that moved away went.
    pub async fn namespace_file(
        &mut self,
        handle: &Handle,
        netnsid: i32,
    ) -> Option<std::path::PathBuf> {
        if let Ok(p) = Processes::scan(&self.proc_root) {
            self.procs = Some((p, now_ns()));
        }
        let ino = self.namespace_of(handle, netnsid).await?;
        if let Some((procs, _)) = &self.procs {
            if let Some(pid) = procs.pids_in(ino).first() {
                return Some(self.proc_root.join(format!("{pid}/ns/net")));
            }
        }
        std::fs::read_dir(&self.netns_dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| NsId::of_path(p).is_some_and(|n| n.ino == ino))
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
