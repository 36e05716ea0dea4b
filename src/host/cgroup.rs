//! Names the local workload of a handshake: the cgroup v2 id the classifier
//! reads (`bpf_skb_cgroup_id`) becomes the cgroup's path below the cgroup2
//! mount, and a `--cgroup PATH` becomes the id and level the kernel filters by.
//!
//! A cgroup v2 id is the kernfs node id of the cgroup's directory, which on
//! 64-bit is that directory's inode number and also the 8-byte handle that
//! `name_to_handle_at` gives for it (`FILEID_KERNFS`). So an id is named either
//! by `open_by_handle_at` on the mount (which needs `CAP_DAC_READ_SEARCH`) and
//! reading the opened directory's path back, or, without that capability, by
//! walking the tree once and indexing every directory's inode number.
//!
//! Where the hierarchy is mounted differs between hosts (`/sys/fs/cgroup` on
//! a unified host, `/sys/fs/cgroup/unified` on a hybrid one beside the v1
//! controllers, anywhere in a container), so it is read from
//! `/proc/self/mountinfo`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::cache::Bounded;

/// How many ids are remembered, named or not; the oldest is forgotten first.
const CACHE_ENTRIES: usize = 4096;
/// A walk indexes at most this many directories: reading a cgroup directory
/// takes about 25 µs, so one walk holds up the reading of records for a
/// quarter of a second at the most. Hosts with more cgroups are named fully
/// only by handle.
const WALK_DIRS: usize = 10_000;
/// A stream of unknown ids walks the tree at most this often.
const WALK_EVERY: Duration = Duration::from_secs(1);
/// `FILEID_KERNFS` (`include/linux/exportfs.h`): a kernfs handle whose 8
/// bytes are the node id, which for a cgroup is its id.
const FILEID_KERNFS: libc::c_int = 0xfe;

/// How ids are opened by handle: not tried yet, through an open descriptor
/// of the mount's root, or not at all (no mount, or the kernel refused).
#[derive(Debug)]
enum Handles {
    Untried,
    Mount(OwnedFd),
    Off,
}

/// What resolving one id found.
enum Lookup {
    Found(Arc<str>),
    /// No cgroup has the id (any more): remembered, so it costs nothing again.
    Gone,
    /// Cannot tell now (a walk was not due): asked again next time.
    Unknown,
}

/// The cgroup2 hierarchy as this process sees it, and the names of the ids
/// asked for so far.
#[derive(Debug)]
pub struct Cgroups {
    mount: Option<PathBuf>,
    /// Why there is no mount; set exactly when `mount` is `None`.
    why: Option<String>,
    handles: Handles,
    /// Ids to names; `None` remembers an id that names no cgroup.
    cache: Bounded<u64, Option<Arc<str>>>,
    /// Every directory the last walk found, by inode number (at most
    /// `walk_dirs`).
    walked: HashMap<u64, Arc<str>>,
    last_walk: Option<Instant>,
    walk_dirs: usize,
    walk_every: Duration,
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

    /// A hierarchy rooted at `root`, named by walking it only (tests use a
    /// plain directory tree, whose handles are not cgroup ids).
    #[cfg(test)]
    pub fn with_root(root: PathBuf) -> Cgroups {
        let mut cgroups = Cgroups::new(Some(root), None);
        cgroups.handles = Handles::Off;
        cgroups
    }

    fn new(mount: Option<PathBuf>, why: Option<String>) -> Cgroups {
        Cgroups {
            handles: if mount.is_some() {
                Handles::Untried
            } else {
                Handles::Off
            },
            mount,
            why,
            cache: Bounded::new(CACHE_ENTRIES),
            walked: HashMap::new(),
            last_walk: None,
            walk_dirs: WALK_DIRS,
            walk_every: WALK_EVERY,
        }
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
        if path.is_empty() {
            return Err(format!(
                "--cgroup needs a path, such as /system.slice/nginx.service (`/` is the root); \
                 {hint}"
            ));
        }
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

    /// The path below the mount (`/system.slice/nginx.service`, the root
    /// being `/`) of the cgroup with this id; `None` when there is none (it
    /// was removed, or there is no cgroup2 mount). A name asked before costs
    /// a map lookup and no syscall; a new id is resolved once, by handle or
    /// from the last walk of the tree, and its answer, found or not, is
    /// remembered (up to 4096 ids). While a walk is not due (they are at most
    /// a second apart), an id the last walk did not see is `None` without
    /// being remembered, so it is looked for again.
    pub fn name(&mut self, id: u64) -> Option<Arc<str>> {
        if let Some(known) = self.cache.get(&id) {
            return known.clone();
        }
        let found = match self.resolve(id) {
            Lookup::Found(name) => Some(name),
            Lookup::Gone => None,
            Lookup::Unknown => return None,
        };
        self.cache.insert(id, found.clone());
        found
    }

    fn resolve(&mut self, id: u64) -> Lookup {
        if self.mount.is_none() {
            return Lookup::Unknown;
        }
        if let Some(name) = self.walked.get(&id) {
            return Lookup::Found(name.clone());
        }
        if let Some(found) = self.by_handle(id) {
            return found;
        }
        if self
            .last_walk
            .is_some_and(|t| t.elapsed() < self.walk_every)
        {
            return Lookup::Unknown;
        }
        self.walk();
        match self.walked.get(&id) {
            Some(name) => Lookup::Found(name.clone()),
            None => Lookup::Gone,
        }
    }

    /// The id opened by handle and its path read back; `None` when handles
    /// cannot tell (then the tree is walked).
    fn by_handle(&mut self, id: u64) -> Option<Lookup> {
        if let Handles::Untried = self.handles {
            self.handles = self.mount.as_deref().map_or(Handles::Off, handles_on);
        }
        let Handles::Mount(mount_fd) = &self.handles else {
            return None;
        };
        let fd = match open_by_cgroup_id(mount_fd.as_fd(), id) {
            Ok(fd) => fd,
            // ENOTDIR: the id of a file, such as cgroup.procs, not of a cgroup.
            Err(Errno::ESTALE | Errno::ENOTDIR) => return Some(Lookup::Gone),
            // The capability dropped since the check: asking again would
            // fail the same way.
            Err(
                Errno::EPERM | Errno::EACCES | Errno::EINVAL | Errno::EOPNOTSUPP | Errno::ENOSYS,
            ) => {
                self.handles = Handles::Off;
                return None;
            }
            Err(_) => return None,
        };
        let link =
            nix::fcntl::readlink(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str()).ok()?;
        let link = PathBuf::from(link);
        // Removed between the open and the readlink.
        if link.as_os_str().as_bytes().ends_with(b" (deleted)") {
            return Some(Lookup::Gone);
        }
        let below = link.strip_prefix(self.mount.as_ref()?).ok()?;
        Some(Lookup::Found(name_below(below)))
    }

    /// The id of the cgroup at `path`, as the `0::` line of `/proc/PID/cgroup`
    /// gives it: a path below the mount (`/system.slice/nginx.service`), or,
    /// for a cgroup outside this process's cgroup namespace, one that climbs
    /// out of the namespace's root first (`/../../kubepods-pod<uid>.slice`).
    /// `None` when there is no such directory (or no mount).
    ///
    /// A climbing path does not say where the namespace's root is, so its
    /// cgroup is the one directory whose path ends with the components after
    /// the `..`s, found in the index of the last walk, or of a new one when a
    /// walk is due (at most once a second, as for [`Cgroups::name`]); none,
    /// or more than one, is `None`. The leaf names of workloads (pod slices,
    /// container scopes) hold their uid or id, so one match is the rule; a
    /// tree larger than a walk indexes may not be searched whole.
    pub fn id_of(&mut self, path: &str) -> Option<u64> {
        let mount = self.mount.as_ref()?;
        let (climbs, rest) = climbs_and_rest(path);
        // The kernel writes `..` only first; one later is no path it made.
        if rest.contains(&"..") {
            return None;
        }
        if climbs == 0 {
            let meta = fs::metadata(mount.join(rest.join("/"))).ok()?;
            return meta.is_dir().then(|| meta.ino());
        }
        // Only ancestors of the namespace's root: nothing names them.
        if rest.is_empty() {
            return None;
        }
        let tail = format!("/{}", rest.join("/"));
        let due = self
            .last_walk
            .is_none_or(|t| t.elapsed() >= self.walk_every);
        match self.ending_with(&tail) {
            Some(id) => Some(id),
            None if due => {
                self.walk();
                self.ending_with(&tail)
            }
            None => None,
        }
    }

    /// The one walked directory whose path ends with `tail` (which starts with
    /// `/`, so that only whole components match).
    fn ending_with(&self, tail: &str) -> Option<u64> {
        let mut found = self
            .walked
            .iter()
            .filter(|(_, name)| name.ends_with(tail))
            .map(|(&id, _)| id);
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }

    /// Indexes every directory of the tree (up to `walk_dirs` of them) by
    /// inode number, replacing the last walk's index.
    fn walk(&mut self) {
        self.last_walk = Some(Instant::now());
        let Some(mount) = &self.mount else {
            return;
        };
        let mut index = HashMap::new();
        if let Ok(meta) = fs::metadata(mount) {
            index.insert(meta.ino(), Arc::from("/"));
        }
        let mut todo = vec![(mount.clone(), String::new())];
        'walk: while let Some((dir, name)) = todo.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if index.len() >= self.walk_dirs {
                    break 'walk;
                }
                let child = format!("{name}/{}", entry.file_name().to_string_lossy());
                // d_ino from readdir, which kernfs fills with the node id:
                // no stat per directory.
                index.insert(entry.ino(), Arc::from(child.as_str()));
                todo.push((entry.path(), child));
            }
        }
        self.walked = index;
    }
}

/// Handles on the mount if the mount's root opens by its own inode number: a
/// kernel that refuses (no `CAP_DAC_READ_SEARCH`) or whose handles are not
/// cgroup ids would fail every id, or call live cgroups gone.
fn handles_on(mount: &Path) -> Handles {
    let Ok(dir) = File::open(mount) else {
        return Handles::Off;
    };
    let Ok(root) = dir.metadata() else {
        return Handles::Off;
    };
    match open_by_cgroup_id(dir.as_fd(), root.ino()) {
        Ok(_) => Handles::Mount(dir.into()),
        Err(_) => Handles::Off,
    }
}

/// `struct file_handle` with the 8 bytes of a kernfs handle.
#[repr(C)]
struct KernfsHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    id: u64,
}

/// Opens the cgroup with this id (`O_PATH`) below the mount `mount_fd` is on.
fn open_by_cgroup_id(mount_fd: BorrowedFd<'_>, id: u64) -> Result<OwnedFd, Errno> {
    let mut handle = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id,
    };
    // SAFETY: `handle` is a `file_handle` header followed by the 8 bytes its
    // `handle_bytes` announces, alive for the call; the kernel only reads it.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount_fd.as_raw_fd(),
            (&mut handle as *mut KernfsHandle).cast(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    let fd = Errno::result(fd)?;
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `/a/b` for the relative path `a/b`, `/` for the root.
fn name_below(below: &Path) -> Arc<str> {
    let mut name = String::new();
    for part in below.components() {
        name.push('/');
        name.push_str(&part.as_os_str().to_string_lossy());
    }
    if name.is_empty() {
        name.push('/');
    }
    Arc::from(name.as_str())
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
    cgroup2_mount_with(text, |point| {
        let cgroup2 = nix::sys::statfs::statfs(point)
            .is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
        cgroup2 && fs::metadata(point).is_ok_and(|m| m.ino() == HIERARCHY_ROOT_INO)
    })
}

/// The inode of a cgroup2 hierarchy's root directory: kernfs numbers its
/// root 1, whatever cgroup namespace looks at it.
const HIERARCHY_ROOT_INO: u64 = 1;

/// [`cgroup2_mount`], told by `whole` whether a mount point shows the
/// hierarchy's root. That mount is taken first: in a container with a
/// cgroup namespace of its own (a pod), the host's hierarchy mounted in
/// reads as rooted at `/../..` (mountinfo's root is relative to the
/// namespace) while the container's own mount reads as `/` and shows only
/// the container's cgroup. Failing that, a mount rooted at `/`.
fn cgroup2_mount_with(text: &str, whole: impl Fn(&Path) -> bool) -> Result<PathBuf, String> {
    let mounts: Vec<MountEntry> = text.lines().filter_map(mount_entry).collect();
    if let Some(m) = mounts
        .iter()
        .find(|m| m.fstype == "cgroup2" && whole(&m.point))
    {
        return Ok(m.point.clone());
    }
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

/// The widest [`shorten`] makes a path, in characters.
pub const SHORT_WIDTH: usize = 40;
const ELLIPSIS: &str = "...";
/// Characters a cut component keeps, at the least, however long the rest.
const MIN_KEPT: usize = 12;
/// Hex digits of a short container id, as `docker ps` shows it.
pub(crate) const SHORT_ID: usize = 12;

/// A cgroup path for text output, at most [`SHORT_WIDTH`] characters wide
/// (a few more only where what follows a container's id would otherwise be
/// cut below 12 characters):
///
/// - A container is shown by its short id, from its cgroup on:
///   `/system.slice/docker-<64 hex>.scope` is `docker-0123456789ab`,
///   `/kubepods.slice/…/cri-containerd-<64 hex>.scope/init` is
///   `cri-containerd-0123456789ab/init` (any `<runtime>-<64 hex>.scope`, as
///   systemd names them: docker, cri-containerd, crio, libpod); a cgroup named
///   by a bare 64-hex id (the cgroupfs drivers) is shown after its parent when
///   that fits, `docker/0123456789ab`, else alone.
/// - Any other path that fits is shown as it is: `/system.slice/nginx.service`.
/// - A longer one keeps as many of its last components as fit after `/...`:
///   `/.../user-1000.slice/session-4.scope`; a last component too long by
///   itself keeps its start and end around `...`. What follows a container's
///   id is cut the same way, in the room the id leaves.
/// - Control characters are written in octal (`\012`), as mountinfo does, so
///   that a record stays on one line.
pub fn shorten(path: &str) -> String {
    let path = escape_controls(path);
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let container = parts
        .iter()
        .enumerate()
        .rev()
        .find_map(|(at, p)| Some((at, container_id(p)?)));
    if let Some((at, (runtime, id))) = container {
        let short = short_container(runtime, id, at.checked_sub(1).map(|p| parts[p]));
        let rest = &parts[at + 1..];
        if rest.is_empty() {
            return short;
        }
        let room = SHORT_WIDTH.saturating_sub(width(&short));
        return short + &within(rest, room);
    }
    if parts.is_empty() {
        return "/".to_string();
    }
    within(&parts, SHORT_WIDTH)
}

/// A cgroup path as `/proc/PID/cgroup` writes it, in components: how many
/// `..` it starts with (the cgroup lies outside the reader's cgroup
/// namespace, whose root the kernel writes as `/`), then the rest. Empty
/// and `.` components are dropped.
pub(crate) fn climbs_and_rest(path: &str) -> (usize, Vec<&str>) {
    let mut parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let climbs = parts.iter().take_while(|p| **p == "..").count();
    parts.drain(..climbs);
    (climbs, parts)
}

/// The runtime prefix (if any) and the 64 hex digits of a container's cgroup.
pub(crate) fn container_id(part: &str) -> Option<(Option<&str>, &str)> {
    let is_id = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if is_id(part) {
        return Some((None, part));
    }
    let (runtime, id) = part.strip_suffix(".scope")?.rsplit_once('-')?;
    (!runtime.is_empty() && is_id(id)).then_some((Some(runtime), id))
}

/// `docker-0123456789ab`, `docker/0123456789ab` or `0123456789ab`.
fn short_container(runtime: Option<&str>, id: &str, parent: Option<&str>) -> String {
    let id = &id[..SHORT_ID];
    match (runtime, parent) {
        (Some(runtime), _) => format!("{runtime}-{id}"),
        (None, Some(parent)) if width(parent) + 1 + SHORT_ID <= SHORT_WIDTH => {
            format!("{parent}/{id}")
        }
        _ => id.to_string(),
    }
}

/// `/a/b/c` in at most `room` characters: whole when it fits, else `/...`
/// and the last components that fit, else the last component cut in the
/// middle.
fn within(parts: &[&str], room: usize) -> String {
    let joined = |parts: &[&str]| parts.iter().map(|p| format!("/{p}")).collect::<String>();
    let elided = format!("/{ELLIPSIS}");
    let whole: usize = parts.iter().map(|p| 1 + width(p)).sum();
    if whole <= room {
        return joined(parts);
    }
    let mut first = parts.len();
    let mut used = width(&elided);
    while first > 0 && used + 1 + width(parts[first - 1]) <= room {
        first -= 1;
        used += 1 + width(parts[first]);
    }
    if first < parts.len() {
        return elided + &joined(&parts[first..]);
    }
    let Some((last, before)) = parts.split_last() else {
        return String::new();
    };
    let lead = if before.is_empty() {
        "/".to_string()
    } else {
        elided + "/"
    };
    let keep = room
        .saturating_sub(width(&lead) + ELLIPSIS.len())
        .max(MIN_KEPT);
    let chars: Vec<char> = last.chars().collect();
    if chars.len() <= keep {
        return lead + last;
    }
    let head: String = chars[..keep / 2].iter().collect();
    let tail: String = chars[chars.len() - (keep - keep / 2)..].iter().collect();
    format!("{lead}{head}{ELLIPSIS}{tail}")
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// `s` with its control characters written as `\NNN` (octal), as the
/// kernel writes them in `mountinfo`: for names read from the host (paths,
/// container names) in one-line text output.
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_control() {
            out.push_str(&format!("\\{:03o}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
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
        let mut cg = Cgroups::from_mountinfo(&v1_only);
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
        assert_eq!(cg.name(1), None);

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
    fn in_a_pod_the_hosts_hierarchy_is_taken_over_the_containers_own() {
        // A pod with a cgroup namespace of its own and the host's
        // /sys/fs/cgroup mounted at /host/cgroup: mountinfo roots are
        // relative to the namespace.
        let text = "\
60 40 0:38 / /sys/fs/cgroup ro - cgroup2 cgroup2 rw
61 40 0:38 /../.. /host/cgroup ro - cgroup2 cgroup2 rw
";
        let whole = |p: &Path| p == Path::new("/host/cgroup");
        assert_eq!(
            cgroup2_mount_with(text, whole),
            Ok(PathBuf::from("/host/cgroup"))
        );
        // Without it, the container's own (all it may see).
        let own = text.lines().next().unwrap_or_default();
        assert_eq!(
            cgroup2_mount_with(own, |_| false),
            Ok(PathBuf::from("/sys/fs/cgroup"))
        );
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

    /// Pretends the last walk was long ago, so the next miss may walk.
    fn walk_due(cg: &mut Cgroups) {
        cg.last_walk = cg
            .last_walk
            .and_then(|t| t.checked_sub(Duration::from_secs(10)));
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

        let e = cg.resolve_filter("").unwrap_err();
        assert!(
            e.starts_with("--cgroup needs a path") && e.contains(&list),
            "{e}"
        );

        let e = cg.resolve_filter("system.slice/../../etc").unwrap_err();
        assert!(e.contains("`..` leads outside the cgroup2 mount"), "{e}");
    }

    #[test]
    fn names_are_paths_below_the_mount() {
        let tree = Tree::new();
        let nginx = tree.dir("system.slice/nginx.service");
        let slice = tree.dir("system.slice");
        let spaced = tree.dir("user.slice/a b");
        let root = fs::metadata(&tree.0).unwrap().ino();
        let mut cg = tree.cgroups();
        assert_eq!(
            cg.name(nginx).as_deref(),
            Some("/system.slice/nginx.service")
        );
        assert_eq!(cg.name(slice).as_deref(), Some("/system.slice"));
        assert_eq!(cg.name(spaced).as_deref(), Some("/user.slice/a b"));
        assert_eq!(cg.name(root).as_deref(), Some("/"));
    }

    #[test]
    fn a_removed_cgroup_has_no_name_and_is_not_looked_for_again() {
        let tree = Tree::new();
        let gone = tree.dir("gone");
        fs::remove_dir(tree.0.join("gone")).unwrap();
        let mut cg = tree.cgroups();
        assert_eq!(cg.name(gone), None);
        let walked = cg.last_walk;
        assert!(walked.is_some());
        walk_due(&mut cg);
        let due = cg.last_walk;
        assert_eq!(cg.name(gone), None);
        assert_eq!(cg.last_walk, due, "a known miss walked the tree again");
    }

    #[test]
    fn unknown_ids_walk_at_most_once_a_second() {
        let tree = Tree::new();
        let first = tree.dir("first");
        let mut cg = tree.cgroups();
        assert_eq!(cg.name(first).as_deref(), Some("/first"));
        let walked = cg.last_walk;
        let later = tree.dir("later");
        for id in u64::MAX - 10_000..u64::MAX {
            assert_eq!(cg.name(id), None);
        }
        assert_eq!(
            cg.name(later),
            None,
            "made after the walk, and no walk was due"
        );
        assert_eq!(cg.last_walk, walked, "a stream of unknown ids walked again");
        walk_due(&mut cg);
        assert_eq!(
            cg.name(later).as_deref(),
            Some("/later"),
            "not remembered as missing"
        );
    }

    #[test]
    fn a_walk_indexes_a_bounded_number_of_directories() {
        let tree = Tree::new();
        let ids: Vec<u64> = (0..5).map(|i| tree.dir(&format!("d{i}"))).collect();
        let mut cg = tree.cgroups();
        cg.walk_dirs = 3;
        let named = ids.iter().filter(|&&id| cg.name(id).is_some()).count();
        assert_eq!(named, 2, "the root and two directories");
    }

    #[test]
    fn ids_of_paths_below_the_mount_are_their_inodes() {
        let tree = Tree::new();
        let nginx = tree.dir("system.slice/nginx.service");
        fs::write(tree.0.join("system.slice/cgroup.procs"), "").unwrap();
        let root = fs::metadata(&tree.0).unwrap().ino();
        let mut cg = tree.cgroups();
        assert_eq!(cg.id_of("/system.slice/nginx.service"), Some(nginx));
        assert_eq!(cg.id_of("/system.slice/./nginx.service/"), Some(nginx));
        assert_eq!(cg.id_of("/"), Some(root));
        assert_eq!(cg.id_of("/system.slice/absent.service"), None);
        assert_eq!(cg.id_of("/system.slice/cgroup.procs"), None, "a file");
        assert_eq!(cg.id_of("/system.slice/../system.slice"), None);
        assert!(cg.last_walk.is_none(), "a plain path is one stat");
        assert_eq!(Cgroups::from_mountinfo("").id_of("/"), None);
    }

    #[test]
    fn ids_of_paths_from_another_cgroup_namespace_are_found_by_their_tail() {
        let tree = Tree::new();
        let pod = "kubepods.slice/kubepods-pod1c2d3e4f_5a6b_7c8d_9e0f_1a2b3c4d5e6f.slice";
        let pod_id = tree.dir(pod);
        let scope = tree.dir(&format!("{pod}/cri-containerd-abc.scope"));
        tree.dir("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podX.slice");
        tree.dir("a/init.scope");
        tree.dir("b/init.scope");
        let mut cg = tree.cgroups();
        assert_eq!(
            cg.id_of("/../../kubepods-pod1c2d3e4f_5a6b_7c8d_9e0f_1a2b3c4d5e6f.slice"),
            Some(pod_id)
        );
        assert_eq!(
            cg.id_of(
                "/../../kubepods-pod1c2d3e4f_5a6b_7c8d_9e0f_1a2b3c4d5e6f.slice/cri-containerd-abc.scope"
            ),
            Some(scope)
        );
        assert_eq!(
            cg.id_of("/../kubepods.slice"),
            Some(tree.dir("kubepods.slice")),
            "a tail that is the whole path"
        );
        assert_eq!(cg.id_of("/../init.scope"), None, "two match");
        assert_eq!(cg.id_of("/../../.."), None, "no component to look for");
        assert_eq!(cg.id_of("/../podX.slice"), None, "not a whole component");
        assert_eq!(cg.id_of("/../a/../b"), None);

        let later = tree.dir("c/later.scope");
        assert_eq!(cg.id_of("/../later.scope"), None, "no walk due yet");
        walk_due(&mut cg);
        assert_eq!(cg.id_of("/../later.scope"), Some(later));
    }

    #[test]
    fn an_evicted_name_is_resolved_again() {
        let tree = Tree::new();
        let ids: Vec<u64> = (0..4).map(|i| tree.dir(&format!("d{i}"))).collect();
        let mut cg = tree.cgroups();
        cg.cache = Bounded::new(2);
        for &id in &ids {
            assert!(cg.name(id).is_some());
        }
        for i in 0..4 {
            fs::remove_dir(tree.0.join(format!("d{i}"))).unwrap();
        }
        walk_due(&mut cg);
        assert_eq!(
            cg.name(u64::MAX),
            None,
            "an unknown id walks the emptied tree"
        );
        assert_eq!(cg.name(ids[0]), None, "evicted, and gone from the tree");
        assert_eq!(cg.name(ids[3]).as_deref(), Some("/d3"), "still cached");
    }

    #[test]
    fn short_paths_stay_as_they_are() {
        assert_eq!(shorten("/"), "/");
        assert_eq!(shorten(""), "/");
        assert_eq!(
            shorten("/system.slice/nginx.service"),
            "/system.slice/nginx.service"
        );
        let fits = "/system.slice/systemd-journald.service";
        assert_eq!(width(fits), SHORT_WIDTH - 2);
        assert_eq!(shorten(fits), fits);
    }

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn containers_are_shown_by_their_short_id() {
        let pod = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1c2d3e4f_5a6b_7c8d_9e0f_1a2b3c4d5e6f.slice";
        assert_eq!(
            shorten(&format!("{pod}/cri-containerd-{ID}.scope")),
            "cri-containerd-0123456789ab"
        );
        assert_eq!(
            shorten(&format!("/system.slice/docker-{ID}.scope")),
            "docker-0123456789ab"
        );
        assert_eq!(
            shorten(&format!("/machine.slice/libpod-{ID}.scope/container")),
            "libpod-0123456789ab/container"
        );
        assert_eq!(shorten(&format!("/docker/{ID}")), "docker/0123456789ab");
        assert_eq!(
            shorten(&format!(
                "/kubepods/besteffort/pod1c2d3e4f-5a6b-7c8d-9e0f-1a2b3c4d5e6f/{ID}"
            )),
            "0123456789ab"
        );
        assert_eq!(shorten(&format!("/{ID}")), "0123456789ab");
        assert_eq!(
            shorten(&format!(
                "/system.slice/docker-{ID}.scope/system.slice/cron.service"
            )),
            "docker-0123456789ab/.../cron.service"
        );
        let nested = shorten(&format!(
            "/system.slice/docker-{ID}.scope/system.slice/a-long-service-name.service"
        ));
        assert_eq!(nested, "docker-0123456789ab/.../a-long...service");
        assert_eq!(width(&nested), SHORT_WIDTH);
    }

    #[test]
    fn not_every_scope_is_a_container() {
        assert_eq!(
            shorten("/system.slice/docker-0123.scope"),
            "/system.slice/docker-0123.scope"
        );
        assert_eq!(
            shorten(&format!("/system.slice/-{ID}.scope")).len(),
            SHORT_WIDTH
        );
    }

    #[test]
    fn long_paths_keep_their_last_components_within_the_width() {
        let long =
            "/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-firefox-1234.scope";
        assert_eq!(shorten(long), "/.../app-gnome-firefox-1234.scope");
        assert_eq!(
            shorten("/user.slice/user-1000.slice/session-4.scope"),
            "/.../user-1000.slice/session-4.scope"
        );
        let one = format!("/kubepods-burstable-pod{ID}.slice");
        let s = shorten(&one);
        assert_eq!(s, "/kubepods-burstable...456789abcdef.slice");
        assert_eq!(width(&s), SHORT_WIDTH);
        let two = shorten(&format!("/a{one}"));
        assert!(
            two.starts_with("/.../kubepods-burs") && two.ends_with("ef.slice"),
            "{two}"
        );
        assert_eq!(width(&two), SHORT_WIDTH);
    }

    #[test]
    fn control_characters_do_not_break_the_line() {
        assert_eq!(shorten("/a\nb\tc"), "/a\\012b\\011c");
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
    fn real_cgroup_ids_are_inodes_and_handles_and_are_named_as_root() {
        let (mut cg, mount) = real_mount();
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
        assert_eq!(
            handle_of(&child.path),
            (FILEID_KERNFS, id.to_ne_bytes().to_vec())
        );
        assert_eq!(
            cg.resolve_filter("/"),
            Ok((1, 0)),
            "the root cgroup's id is 1"
        );

        assert_eq!(cg.name(id).as_deref(), Some(name.as_str()));
        assert_eq!(cg.name(1).as_deref(), Some("/"));
        assert!(cg.last_walk.is_none(), "named by handle, without a walk");

        let mut walker = Cgroups::discover();
        walker.handles = Handles::Off;
        assert_eq!(walker.name(id).as_deref(), Some(name.as_str()));
        assert!(walker.last_walk.is_some(), "named by walking");

        drop(child);
        let mut by_handle = Cgroups::discover();
        assert_eq!(by_handle.name(id), None);
        assert!(by_handle.last_walk.is_none(), "the handle said it is gone");
        let mut by_walk = Cgroups::discover();
        by_walk.handles = Handles::Off;
        assert_eq!(by_walk.name(id), None);
    }

    const CAP_DAC_READ_SEARCH: u32 = 2;

    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: libc::c_int,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }

    /// `_LINUX_CAPABILITY_VERSION_3`: two `CapData`, for capabilities 0-63.
    const CAP_VERSION_3: u32 = 0x2008_0522;

    fn capget() -> [CapData; 2] {
        let mut header = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        // SAFETY: a version-3 header and the two data structs it announces,
        // alive for the call.
        let r = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
        assert_eq!(r, 0, "capget: {}", io::Error::last_os_error());
        data
    }

    fn capset(data: &[CapData; 2]) {
        let mut header = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        // SAFETY: as in `capget`; the kernel only reads `data`.
        let r = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
        assert_eq!(r, 0, "capset: {}", io::Error::last_os_error());
    }

    /// Takes a capability out of this thread's effective set (capabilities
    /// are per thread) until dropped; it stays permitted, so it comes back.
    struct WithoutCap {
        saved: [CapData; 2],
    }

    impl WithoutCap {
        fn new(cap: u32) -> WithoutCap {
            let saved = capget();
            let mut data = saved;
            data[(cap / 32) as usize].effective &= !(1 << (cap % 32));
            capset(&data);
            WithoutCap { saved }
        }
    }

    impl Drop for WithoutCap {
        fn drop(&mut self) {
            capset(&self.saved);
        }
    }

    #[test]
    fn without_cap_dac_read_search_real_cgroups_are_named_by_walking_as_root() {
        let (_, mount) = real_mount();
        let cgroup = TestCgroup::new(&mount);
        let id = fs::metadata(&cgroup.path).unwrap().ino();
        let name = format!("/{}", cgroup.path.strip_prefix(&mount).unwrap().display());
        let _without = WithoutCap::new(CAP_DAC_READ_SEARCH);
        let mut cg = Cgroups::discover();
        assert_eq!(cg.name(id).as_deref(), Some(name.as_str()));
        assert!(matches!(cg.handles, Handles::Off), "{:?}", cg.handles);
        assert!(cg.last_walk.is_some(), "named by walking");
    }
}
