//! How consumers of records name what records carry as numbers: interfaces
//! by index, cgroups by id.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// Names for the numbers in a record. `cgroup` may resolve (and cache) a
/// name, hence `&mut`.
pub trait Labels {
    /// The interface's name, or `if<index>` when it is not known.
    fn iface(&self, ifindex: u32) -> Cow<'_, str>;
    /// The cgroup's path below the cgroup2 mount; `None` when it is gone or
    /// cannot be named.
    fn cgroup(&mut self, id: u64) -> Option<Arc<str>>;
}

/// The names of the run: the watched interfaces (renames followed) and the
/// cgroup2 hierarchy.
pub struct Names {
    ifaces: HashMap<u32, String>,
    cgroups: crate::host::cgroup::Cgroups,
}

impl Names {
    pub fn new(ifaces: HashMap<u32, String>, cgroups: crate::host::cgroup::Cgroups) -> Names {
        Names { ifaces, cgroups }
    }

    /// The interface was renamed under us.
    pub fn rename(&mut self, ifindex: u32, name: String) {
        self.ifaces.insert(ifindex, name);
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
