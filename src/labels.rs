//! How consumers of records name what records carry as numbers: interfaces
//! by index, cgroups by id.

use std::sync::Arc;

/// Names for the numbers in a record. `cgroup` may resolve (and cache) a
/// name, hence `&mut`.
pub trait Labels {
    /// The interface's name, or `if<index>` when it is not known.
    fn iface(&self, ifindex: u32) -> String;
    /// The cgroup's path below the cgroup2 mount; `None` when it is gone or
    /// cannot be named.
    fn cgroup(&mut self, id: u64) -> Option<Arc<str>>;
}
