//! Temporary directories for the unit tests of `host`, which lay out fake
//! `/proc`, `/var/log/pods` and such trees.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A directory of its own under the system's temporary directory, removed
/// with what it holds on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    /// A new empty directory whose name starts with `flowlat-WHAT-`.
    pub(crate) fn new(what: &str) -> TempDir {
        let root = std::env::temp_dir().join(format!(
            "flowlat-{what}-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&root).unwrap();
        TempDir(root)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
