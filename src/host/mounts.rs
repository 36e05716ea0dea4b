//! The cgroup2 hierarchy where the mount namespace flowlat was started in
//! has none: `ip netns exec` gives its command a mount namespace of its own
//! with `/sys` remounted for the network namespace, and no cgroup2 mount
//! in it. flowlat then mounts the hierarchy itself, in a mount namespace of
//! its own, so that nothing outside it changes and the mount ends with the
//! process.

use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Where the hierarchy is mounted: present in every sysfs, and where tools
/// look for it.
const TARGET: &str = "/sys/fs/cgroup";

/// Mounts cgroup2 at `/sys/fs/cgroup` in a private mount namespace when
/// `mountinfo` lists no cgroup2 mount. Must run while the process has one
/// thread (`unshare(CLONE_NEWNS)` refuses otherwise). `Ok(true)` when it
/// mounted; `Err` says why it could not, for the note that cgroups cannot
/// be named.
pub fn ensure_cgroup2(mountinfo: &str) -> Result<bool, String> {
    if has_cgroup2(mountinfo) {
        return Ok(false);
    }
    if !Path::new(TARGET).is_dir() {
        return Err(format!("no cgroup2 mount, and no {TARGET} to mount one on"));
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| {
        format!("no cgroup2 mount, and a private mount namespace to add one was refused: {e}")
    })?;
    // Our mount must not leave this namespace, while later mounts of the
    // one we came from (a new `/run/netns` entry) must still reach us: a
    // slave.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| format!("no cgroup2 mount, and making the mounts one-way failed: {e}"))?;
    mount(
        Some("cgroup2"),
        TARGET,
        Some("cgroup2"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("no cgroup2 mount, and mounting one on {TARGET} failed: {e}"))?;
    Ok(true)
}

/// Whether a `/proc/self/mountinfo` text lists a cgroup2 mount (its
/// filesystem type, after the ` - ` separator).
fn has_cgroup2(mountinfo: &str) -> bool {
    mountinfo.lines().any(|l| {
        l.split_once(" - ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            == Some("cgroup2")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup2_mount_is_found_by_its_type_not_its_place() {
        let hybrid =
            "35 25 0:30 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw\n\
                      36 25 0:31 / /sys/fs/cgroup/cpu rw shared:10 - cgroup cgroup rw,cpu\n";
        assert!(has_cgroup2(hybrid));
        let netns_exec = "300 299 0:22 / /sys rw,nosuid - sysfs flowlat rw\n\
                          301 299 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert!(!has_cgroup2(netns_exec));
        // A mount point named like the type is not the type.
        assert!(!has_cgroup2("40 1 0:5 / /cgroup2 rw - tmpfs tmpfs rw\n"));
    }
}
