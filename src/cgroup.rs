//! The local workload of a handshake, as its cgroup v2: a `--cgroup PATH`
//! becomes the id and level the kernel filters by.
//!
//! A cgroup v2 id is the kernfs node id of the cgroup's directory, which on
//! 64-bit is that directory's inode number and also the 8-byte handle that
//! `name_to_handle_at` gives for it (`FILEID_KERNFS`).
//!
//! Where the hierarchy is mounted differs between hosts (`/sys/fs/cgroup` on
//! a unified host, `/sys/fs/cgroup/unified` on a hybrid one beside the v1
//! controllers, anywhere in a container), so it is read from
//! `/proc/self/mountinfo`.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// The cgroup2 hierarchy as this process sees it.
#[derive(Debug)]
pub struct Cgroups {
    mount: Option<PathBuf>,
    /// Why there is no mount; set exactly when `mount` is `None`.
    why: Option<String>,
}

impl Cgroups {
    /// Finds the cgroup2 mount in `/proc/self/mountinfo`.
    pub fn discover() -> Cgroups {
        match fs::read_to_string("/proc/self/mountinfo") {
            Ok(text) => Cgroups::from_mountinfo(&text),
            Err(e) => Cgroups::new(
                None,
                Some(format!(
                    "cannot read /proc/self/mountinfo ({e}), so records name no cgroup \
                     and --cgroup cannot be used"
                )),
            ),
        }
    }

    /// Finds the cgroup2 mount in the text of a mountinfo file.
    pub fn from_mountinfo(text: &str) -> Cgroups {
        match cgroup2_mount(text) {
            Ok(mount) => Cgroups::new(Some(mount), None),
            Err(why) => Cgroups::new(None, Some(why)),
        }
    }

    /// A hierarchy rooted at `root` (tests use a plain directory tree).
    pub fn with_root(root: PathBuf) -> Cgroups {
        Cgroups::new(Some(root), None)
    }

    fn new(mount: Option<PathBuf>, why: Option<String>) -> Cgroups {
        Cgroups { mount, why }
    }

    /// Where the cgroup2 hierarchy is mounted, if it is.
    pub fn mount(&self) -> Option<&Path> {
        self.mount.as_deref()
    }

    /// One line for stderr saying why cgroups cannot be named; `None` when
    /// they can.
    pub fn why_unavailable(&self) -> Option<String> {
        self.why.clone()
    }

    /// The id and level (components below the mount's root, the root being 0)
    /// of the cgroup `--cgroup PATH` names: a path below the mount
    /// (`/system.slice/nginx.service` or `system.slice/nginx.service`) or an
    /// absolute path under it (`/sys/fs/cgroup/system.slice/nginx.service`).
    /// The error says what is wrong with the path and how to list cgroups.
    pub fn resolve_filter(&self, path: &str) -> Result<(u64, u32), String> {
        let Some(mount) = &self.mount else {
            let why = self.why.as_deref().unwrap_or("no cgroup2 mount");
            return Err(format!("--cgroup {path}: {why}"));
        };
        let hint = format!(
            "list the cgroups with `find {} -type d`; a process's own is the `0::` line of \
             /proc/PID/cgroup",
            mount.display()
        );
        let below =
            below_mount(mount, path).map_err(|e| format!("--cgroup {path}: {e}; {hint}"))?;
        let dir = mount.join(&below);
        let meta = match fs::metadata(&dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let outside = Path::new(path).is_absolute() && Path::new(path).exists();
                return Err(if outside {
                    format!(
                        "--cgroup {path}: outside the cgroup2 mount {} (and no cgroup {} below \
                         it); {hint}",
                        mount.display(),
                        Path::new("/").join(&below).display()
                    )
                } else {
                    format!(
                        "--cgroup {path}: no such cgroup ({} does not exist); {hint}",
                        dir.display()
                    )
                });
            }
            Err(e) => {
                return Err(format!(
                    "--cgroup {path}: cannot read {}: {e}",
                    dir.display()
                ))
            }
        };
        if !meta.is_dir() {
            return Err(format!(
                "--cgroup {path}: {} is not a directory, so not a cgroup; {hint}",
                dir.display()
            ));
        }
        let level = below.components().count();
        let level = u32::try_from(level).map_err(|_| format!("--cgroup {path}: too deep"))?;
        Ok((meta.ino(), level))
    }
}

/// The relative path below `mount` that `path` (below the mount, or absolute
/// under it) names, `..` taken lexically (cgroupfs has no symlinks); an error
/// when `..` climbs out of the mount.
fn below_mount(mount: &Path, path: &str) -> Result<PathBuf, String> {
    let given = Path::new(path);
    // An absolute path that reaches the mount through a symlink is under it
    // too; a relative one is below the mount, whatever the working directory.
    let via_link = || {
        let real = fs::canonicalize(given).ok()?;
        let rest = real.strip_prefix(fs::canonicalize(mount).ok()?).ok()?;
        Some(rest.to_path_buf())
    };
    let rest = match given.strip_prefix(mount) {
        Ok(rest) => rest.to_path_buf(),
        Err(_) => match given.is_absolute().then(via_link).flatten() {
            Some(rest) => rest,
            None => given.to_path_buf(),
        },
    };
    let mut below = PathBuf::new();
    for part in rest.components() {
        match part {
            Component::Normal(p) => below.push(p),
            Component::ParentDir if !below.pop() => {
                return Err(format!(
                    "`..` leads outside the cgroup2 mount {}",
                    mount.display()
                ))
            }
            _ => {}
        }
    }
    Ok(below)
}

/// The cgroup2 mount in mountinfo text: the first whose root is the
/// hierarchy's root, since a bind mount of a cgroup below it cannot name the
/// cgroups outside; else why there is none.
fn cgroup2_mount(text: &str) -> Result<PathBuf, String> {
    let mounts: Vec<MountEntry> = text.lines().filter_map(mount_entry).collect();
    if let Some(m) = mounts
        .iter()
        .find(|m| m.fstype == "cgroup2" && m.root == Path::new("/"))
    {
        return Ok(m.point.clone());
    }
    let effect = "so records name no cgroup and --cgroup cannot be used";
    if let Some(m) = mounts.iter().find(|m| m.fstype == "cgroup2") {
        return Err(format!(
            "the cgroup2 file system is mounted only from its cgroup {} (at {}), not from its \
             root, {effect}",
            m.root.display(),
            m.point.display()
        ));
    }
    let listed = if mounts.iter().any(|m| m.fstype == "cgroup") {
        "/proc/self/mountinfo lists only cgroup v1 hierarchies"
    } else {
        "/proc/self/mountinfo lists none"
    };
    Err(format!(
        "no cgroup2 file system is mounted ({listed}), {effect}; `mount -t cgroup2 none DIR` \
         mounts one"
    ))
}

struct MountEntry<'a> {
    root: PathBuf,
    point: PathBuf,
    fstype: &'a str,
}

/// One line of mountinfo (`proc(5)`): id, parent, major:minor, root, mount
/// point, options, optional fields up to `-`, type, source, super options.
fn mount_entry(line: &str) -> Option<MountEntry<'_>> {
    let mut fields = line.split(' ');
    let root = fields.nth(3)?;
    let point = fields.next()?;
    let fstype = fields.skip(1).skip_while(|f| *f != "-").nth(1)?;
    Some(MountEntry {
        root: unescape(root),
        point: unescape(point),
        fstype,
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for `\`).
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(u8::is_ascii_digit))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const HYBRID: &str = "\
22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime shared:9 - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:10 master:3 - cgroup2 cgroup2 rw
";

    const UNIFIED: &str = "\
26 21 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
29 26 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn finds_the_cgroup2_mount_of_a_hybrid_and_a_unified_host() {
        let hybrid = Cgroups::from_mountinfo(HYBRID);
        assert_eq!(hybrid.mount(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(hybrid.why_unavailable(), None);
        let unified = Cgroups::from_mountinfo(UNIFIED);
        assert_eq!(unified.mount(), Some(Path::new("/sys/fs/cgroup")));
    }

    #[test]
    fn without_cgroup2_says_why_in_one_line() {
        let v1_only: String = HYBRID
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .map(|l| format!("{l}\n"))
            .collect();
        let cg = Cgroups::from_mountinfo(&v1_only);
        assert_eq!(cg.mount(), None);
        let why = cg.why_unavailable().expect("a reason");
        assert!(why.contains("no cgroup2 file system is mounted"), "{why}");
        assert!(why.contains("only cgroup v1"), "{why}");
        assert!(!why.contains('\n'), "{why}");
        let e = cg.resolve_filter("/system.slice").unwrap_err();
        assert!(
            e.contains("--cgroup /system.slice") && e.contains(&why),
            "{e}"
        );

        let why = Cgroups::from_mountinfo("")
            .why_unavailable()
            .expect("a reason");
        assert!(why.contains("lists none"), "{why}");
    }

    #[test]
    fn mountinfo_escapes_and_mounts_of_a_subtree() {
        let text = "\
50 31 0:38 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw
51 31 0:38 / /mnt/my\\040cgroups\\134v2 rw shared:1 - cgroup2 cgroup2 rw
52 31 0:38 / /mnt/second rw - cgroup2 cgroup2 rw
garbage
";
        let cg = Cgroups::from_mountinfo(text);
        assert_eq!(cg.mount(), Some(Path::new("/mnt/my cgroups\\v2")));

        let subtree = Cgroups::from_mountinfo(text.lines().next().unwrap_or_default());
        assert_eq!(subtree.mount(), None);
        let why = subtree.why_unavailable().expect("a reason");
        assert!(why.contains("only from its cgroup /docker/abc"), "{why}");
    }

    #[test]
    fn unescape_leaves_what_is_not_an_octal_escape() {
        assert_eq!(unescape("a\\040b"), PathBuf::from("a b"));
        assert_eq!(unescape("a\\9b\\"), PathBuf::from("a\\9b\\"));
        assert_eq!(unescape("\\+12\\477"), PathBuf::from("\\+12\\477"));
    }

    static TREES: AtomicU32 = AtomicU32::new(0);

    /// A directory tree standing in for the cgroup2 hierarchy, removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new() -> Tree {
            let root = std::env::temp_dir().join(format!(
                "flowlat-cgroup-{}-{}",
                std::process::id(),
                TREES.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir(&root).unwrap();
            Tree(root)
        }

        /// Makes the directory `rel` (and its parents); its id.
        fn dir(&self, rel: &str) -> u64 {
            let path = self.0.join(rel);
            fs::create_dir_all(&path).unwrap();
            fs::metadata(&path).unwrap().ino()
        }

        fn cgroups(&self) -> Cgroups {
            Cgroups::with_root(self.0.clone())
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn filters_resolve_to_the_directory_inode_and_depth() {
        let tree = Tree::new();
        let nginx = tree.dir("system.slice/nginx.service");
        let root = fs::metadata(&tree.0).unwrap().ino();
        let cg = tree.cgroups();
        let absolute = format!("{}/system.slice/nginx.service", tree.0.display());
        for path in [
            "/system.slice/nginx.service",
            "system.slice/nginx.service",
            "/system.slice//nginx.service/",
            "./system.slice/nginx.service",
            "/user.slice/../system.slice/nginx.service",
            &absolute,
        ] {
            assert_eq!(cg.resolve_filter(path), Ok((nginx, 2)), "{path}");
        }
        assert_eq!(cg.resolve_filter("/"), Ok((root, 0)));
        assert_eq!(
            cg.resolve_filter(&tree.0.display().to_string()),
            Ok((root, 0))
        );
        assert_eq!(cg.resolve_filter("system.slice").map(|r| r.1), Ok(1));
    }

    #[test]
    fn filters_that_name_no_cgroup_say_so_and_how_to_list_them() {
        let tree = Tree::new();
        tree.dir("system.slice");
        fs::write(tree.0.join("system.slice/cgroup.procs"), "").unwrap();
        let cg = tree.cgroups();
        let list = format!("find {} -type d", tree.0.display());

        let e = cg
            .resolve_filter("/system.slice/nginx.service")
            .unwrap_err();
        assert!(
            e.starts_with("--cgroup /system.slice/nginx.service: no such cgroup"),
            "{e}"
        );
        assert!(
            e.contains(&format!(
                "{}/system.slice/nginx.service does not exist",
                tree.0.display()
            )),
            "{e}"
        );
        assert!(e.contains(&list) && e.contains("/proc/PID/cgroup"), "{e}");

        let e = cg.resolve_filter("system.slice/cgroup.procs").unwrap_err();
        assert!(
            e.contains("is not a directory, so not a cgroup") && e.contains(&list),
            "{e}"
        );

        let e = cg.resolve_filter("/etc").unwrap_err();
        assert!(
            e.contains("outside the cgroup2 mount") && e.contains(&list),
            "{e}"
        );

        let e = cg.resolve_filter("system.slice/../../etc").unwrap_err();
        assert!(e.contains("`..` leads outside the cgroup2 mount"), "{e}");
    }

    fn require_root() {
        if !nix::unistd::geteuid().is_root() {
            panic!(
                "this test needs root (it makes cgroups under the cgroup2 mount): run the suite \
                 with sudo, as the README says"
            );
        }
    }

    /// A cgroup made for a test under the real cgroup2 mount, removed on drop
    /// (with rmdir, which takes a cgroup's files with it).
    struct TestCgroup {
        path: PathBuf,
    }

    impl TestCgroup {
        fn new(parent: &Path) -> TestCgroup {
            let path = parent.join(format!(
                "flowlat-test-{}-{}",
                std::process::id(),
                TREES.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir(&path)
                .unwrap_or_else(|e| panic!("cannot make the cgroup {}: {e}", path.display()));
            TestCgroup { path }
        }
    }

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            let _ = fs::remove_dir(&self.path);
        }
    }

    fn real_mount() -> (Cgroups, PathBuf) {
        require_root();
        let cg = Cgroups::discover();
        let mount = cg
            .mount()
            .unwrap_or_else(|| panic!("{}", cg.why_unavailable().unwrap_or_default()))
            .to_path_buf();
        (cg, mount)
    }

    /// The handle `name_to_handle_at` gives for `path`: its type and bytes.
    fn handle_of(path: &Path) -> (libc::c_int, Vec<u8>) {
        #[repr(C)]
        struct Handle {
            handle_bytes: libc::c_uint,
            handle_type: libc::c_int,
            bytes: [u8; libc::MAX_HANDLE_SZ as usize],
        }
        let mut handle = Handle {
            handle_bytes: libc::MAX_HANDLE_SZ as libc::c_uint,
            handle_type: 0,
            bytes: [0; libc::MAX_HANDLE_SZ as usize],
        };
        let mut mount_id = 0;
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path and a `file_handle` with room for the
        // MAX_HANDLE_SZ bytes its `handle_bytes` announces, alive for the call.
        let r = unsafe {
            libc::name_to_handle_at(
                libc::AT_FDCWD,
                c_path.as_ptr(),
                (&mut handle as *mut Handle).cast(),
                &mut mount_id,
                0,
            )
        };
        assert_eq!(r, 0, "name_to_handle_at: {}", io::Error::last_os_error());
        let len = handle.handle_bytes as usize;
        (handle.handle_type, handle.bytes[..len].to_vec())
    }

    #[test]
    fn real_cgroup_ids_are_inodes_and_handles_as_root() {
        let (cg, mount) = real_mount();
        let parent = TestCgroup::new(&mount);
        let child = TestCgroup::new(&parent.path);
        let name = format!("/{}", child.path.strip_prefix(&mount).unwrap().display());

        let (id, level) = cg.resolve_filter(&name).unwrap();
        assert_eq!(level, 2);
        assert_eq!(
            cg.resolve_filter(&child.path.display().to_string()),
            Ok((id, 2))
        );
        assert_eq!(id, fs::metadata(&child.path).unwrap().ino());
        // FILEID_KERNFS: the 8 bytes are the kernfs node id.
        assert_eq!(handle_of(&child.path), (0xfe, id.to_ne_bytes().to_vec()));
        assert_eq!(
            cg.resolve_filter("/"),
            Ok((1, 0)),
            "the root cgroup's id is 1"
        );
    }
}
