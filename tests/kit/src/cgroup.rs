//! cgroup v2 for the program tests and the overhead bench: where the
//! hierarchy is mounted, which cgroup this process is in, and temporary
//! cgroups to move it into.
//!
//! `BPF_PROG_TEST_RUN` runs a classifier on an skb that carries a dummy
//! socket, made by the kernel for each run in the caller's cgroup (sk_alloc
//! charges the socket to the current task's cgroup), so the cgroup a
//! classifier sees in a test run is this process's.
//!
//! Moving moves the whole process, with every test running beside the one
//! that moves it: a [`Tree`] holds a lock exclusively from before it moves
//! this process until it has moved it back, and a test whose records must
//! carry this process's own cgroup holds it shared, through [`stay`].

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Taken exclusively while a [`Tree`] may have moved this process, shared by
/// the tests that must see it in its own cgroup.
static MOVES: RwLock<()> = RwLock::new(());

/// Keeps this process in its own cgroup until the guard is dropped: no
/// [`Tree`] moves it meanwhile.
pub fn stay() -> RwLockReadGuard<'static, ()> {
    MOVES.read().unwrap_or_else(PoisonError::into_inner)
}

/// Where cgroup2 is mounted: from /proc/self/mountinfo, the mount point of
/// the first entry whose file system type (after the " - ") is cgroup2.
pub fn try_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let at = pre.split_whitespace().nth(4)?;
        (post.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(at))
    })
}

/// [`try_mount`], for tests that need cgroup v2.
pub fn mount() -> PathBuf {
    try_mount().expect("a cgroup2 mount: these tests need cgroup v2")
}

/// The cgroup v2 id of a cgroup directory: its inode number.
pub fn id_of(dir: &Path) -> u64 {
    std::fs::metadata(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .ino()
}

/// The directory of this process's cgroup v2 (the "0::" line of /proc/self/cgroup).
pub fn own() -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line in /proc/self/cgroup");
    mount().join(rel.trim_start_matches('/'))
}

/// How many path components below the mount a cgroup lies (the root is 0).
pub fn level_of(dir: &Path) -> u32 {
    dir.strip_prefix(mount())
        .expect("a cgroup below the mount")
        .components()
        .count() as u32
}

/// Moves this whole process into the cgroup at `dir`.
pub fn enter(dir: &Path) {
    let procs = dir.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .unwrap_or_else(|e| panic!("moving into {}: {e}", procs.display()));
}

/// A tree of cgroups made for one test, removed when dropped (after moving
/// this process back to where it was). No test holds [`stay`] while it lives.
pub struct Tree {
    pub root: PathBuf,
    home: PathBuf,
    _moves: RwLockWriteGuard<'static, ()>,
}

impl Tree {
    /// Makes `<mount>/flowlat-test-<pid>-<tag>` and the given paths below it,
    /// once no test holds [`stay`].
    pub fn new(tag: &str, below: &[&str]) -> Tree {
        let moves = MOVES.write().unwrap_or_else(PoisonError::into_inner);
        let root = mount().join(format!("flowlat-test-{}-{tag}", std::process::id()));
        let tree = Tree {
            root,
            home: own(),
            _moves: moves,
        };
        std::fs::create_dir(&tree.root)
            .unwrap_or_else(|e| panic!("creating {}: {e}", tree.root.display()));
        for rel in below {
            let dir = tree.root.join(rel);
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        }
        tree
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::write(
            self.home.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        // Deepest first: a cgroup with children cannot be removed.
        let mut dirs = vec![self.root.clone()];
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(rd) = std::fs::read_dir(&dirs[i]) {
                dirs.extend(
                    rd.filter_map(|e| e.ok())
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
            i += 1;
        }
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}
