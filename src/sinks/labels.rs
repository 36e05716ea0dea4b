//! How consumers of records name what records carry as numbers: interfaces
//! by index, cgroups by id.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::host::cgroup::Cgroups;
use crate::host::workloads::Workloads;
use crate::probe::Record;

/// Names for the numbers in a record. `cgroup` may resolve (and cache) a
/// name, hence `&mut`.
pub trait Labels {
    /// The interface's name, or `if<index>` when it is not known.
    fn iface(&self, ifindex: u32) -> Cow<'_, str>;
    /// The cgroup's path below the cgroup2 mount; `None` when it is gone or
    /// cannot be named.
    fn cgroup(&mut self, id: u64) -> Option<Arc<str>>;
    /// The workload of an attempt on interface `ifindex` whose socket (or,
    /// on a workload's interface, whose workload) is in cgroup `cgroup_id`:
    /// `pod NAMESPACE/NAME`, `container NAME`, `unit NAME.service`, ...
    fn workload(&mut self, _ifindex: u32, _cgroup_id: Option<u64>) -> Option<Arc<str>> {
        None
    }
}

/// The names of the run: the watched interfaces (renames followed), the
/// cgroup2 hierarchy, and the workloads behind interfaces and cgroups.
pub struct Names {
    ifaces: HashMap<u32, String>,
    cgroups: Cgroups,
    workloads: Workloads,
    /// Interfaces that are gone, since when (ns).
    gone: HashMap<u32, u64>,
}

impl Names {
    pub fn new(ifaces: HashMap<u32, String>, cgroups: Cgroups) -> Names {
        Names {
            ifaces,
            cgroups,
            workloads: Workloads::default(),
            gone: HashMap::new(),
        }
    }

    /// The interface was renamed under us, or attached later.
    pub fn rename(&mut self, ifindex: u32, name: String) {
        self.gone.remove(&ifindex);
        self.ifaces.insert(ifindex, name);
    }

    /// The interface is gone; its name is kept for the records still to
    /// come (the sweep's timeouts) until [`Names::expire`].
    pub fn iface_gone(&mut self, ifindex: u32, now_ns: u64) {
        self.gone.insert(ifindex, now_ns);
    }

    /// Forgets the interfaces gone for longer than `ttl`; their indexes.
    pub fn expire(&mut self, now_ns: u64, ttl: Duration) -> Vec<u32> {
        let ttl = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
        let old: Vec<u32> = self
            .gone
            .iter()
            .filter(|(_, &t)| now_ns.saturating_sub(t) >= ttl)
            .map(|(i, _)| *i)
            .collect();
        for i in &old {
            self.gone.remove(i);
            self.ifaces.remove(i);
            self.workloads.forget(*i);
        }
        old
    }

    /// The workloads behind interfaces and cgroups.
    pub fn workloads(&mut self) -> &mut Workloads {
        &mut self.workloads
    }

    /// The workloads and the cgroup hierarchy they are named through, for
    /// the run to resolve an interface's workload with.
    pub fn workloads_and_cgroups(&mut self) -> (&mut Workloads, &mut Cgroups) {
        (&mut self.workloads, &mut self.cgroups)
    }

    /// The cgroup a record is the workload's in: on a workload's interface
    /// the workload's cgroup (its sockets are in its namespace, where the
    /// classifier cannot see them); `None` otherwise (the record's own
    /// cgroup stands).
    pub fn workload_cgroup(&self, r: &Record) -> Option<u64> {
        self.workloads.iface(r.ifindex)?.cgroup_id
    }
}

/// An interface's name from a table, or `if<index>`.
fn iface_in(names: &HashMap<u32, String>, ifindex: u32) -> Cow<'_, str> {
    match names.get(&ifindex) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("if{ifindex}")),
    }
}

impl Labels for Names {
    fn iface(&self, ifindex: u32) -> Cow<'_, str> {
        iface_in(&self.ifaces, ifindex)
    }

    fn cgroup(&mut self, id: u64) -> Option<Arc<str>> {
        self.cgroups.name(id)
    }

    fn workload(&mut self, ifindex: u32, cgroup_id: Option<u64>) -> Option<Arc<str>> {
        self.workloads.name(ifindex, cgroup_id, &mut self.cgroups)
    }
}

/// Names from fixed tables, with no cgroup hierarchy behind them (tests and
/// benches).
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Clone, Default)]
pub struct FixedNames {
    pub ifaces: HashMap<u32, String>,
    pub cgroups: HashMap<u64, Arc<str>>,
}

#[cfg(any(test, feature = "testing"))]
impl Labels for FixedNames {
    fn iface(&self, ifindex: u32) -> Cow<'_, str> {
        iface_in(&self.ifaces, ifindex)
    }

    fn cgroup(&mut self, id: u64) -> Option<Arc<str>> {
        self.cgroups.get(&id).cloned()
    }
}
