//! Names the workload a cgroup belongs to: the pod, container or systemd unit
//! that a person would name, rather than the cgroup path the kernel knows.
//!
//! The path alone says what kind of workload it is and where in the path the
//! workload's own cgroup is ([`classify`], no I/O):
//!
//! - A Kubernetes pod, from the pod's UID in the kubelet's cgroup names.
//!   With the systemd driver:
//!   `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`
//!   (`besteffort` alike; guaranteed pods are `kubepods-pod<uid>.slice`
//!   right under `kubepods.slice`; the UID's `-` are written `_`). With the
//!   cgroupfs driver: `/kubepods/burstable/pod<uid>/<id>`, `/kubepods/pod<uid>/<id>`.
//!   A kubelet with another cgroup root (kind's `kubelet-kubepods-…`) is
//!   recognised too. The pod's cgroup is its slice or directory, which also
//!   holds the sandbox (`pause`) and every container of the pod.
//! - A container: Docker's `docker-<id>.scope` (systemd driver) or
//!   `/docker/<id>` (cgroupfs), containerd's `cri-containerd-<id>.scope`,
//!   CRI-O's `crio-<id>.scope` and its monitor's `crio-conmon-<id>.scope`,
//!   podman's `libpod-<id>.scope` and `libpod-conmon-<id>.scope`. Its cgroup
//!   is that scope or directory.
//! - A systemd unit: the deepest `.service` or `.scope` component
//!   (`/system.slice/nginx.service`, `/user.slice/user-1000.slice/session-4.scope`,
//!   an application's scope below `user@1000.service`), except an
//!   `init.scope` below another unit, which is that unit's own manager
//!   (`user@1000.service/init.scope` is `user@1000.service`). Its cgroup is
//!   the unit's, whatever the unit delegated below it.
//! - Anything else is its cgroup path.
//!
//! A pod or container anywhere in the path wins over what is around or
//! below it: a pod over the container scope inside it, a pod of a kubelet
//! that itself runs in a container (kind) over that container, a container
//! over the units of its own systemd. Of two containers, the outer one (the
//! one the host runs) names the workload.
//!
//! Paths read from `/proc/PID/cgroup` by a process in a cgroup namespace
//! climb out of it first for cgroups outside it
//! (`/../../kubepods-pod<uid>.slice/cri-containerd-<id>.scope`): the rules
//! apply to the components after the `..`s, which the workload's cgroup path
//! keeps, so that [`super::cgroup::Cgroups::id_of`] can find its directory.
//! A pod directory of the cgroupfs driver is recognised after `..` only when
//! its UID has the UUID shape, since its parents, which say it is the
//! kubelet's, are not in the path.
//!
//! Then a [`Namer`] gives the names that are not in the path: a pod's
//! namespace and name from the kubelet's log directories
//! (`/var/log/pods/<namespace>_<name>_<uid>/`), a Docker container's name
//! from Docker's `containers/<id>/config.v2.json`. It reads the host only
//! when asked to name a cgroup; its memory of what it read is bounded.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cache::Bounded;
use super::cgroup::{climbs_and_rest, container_id, SHORT_ID};
use super::netns::{self, NsId, Processes};

/// How many container names a [`Namer`] remembers (found or not); the
/// oldest is forgotten first.
const CONTAINER_NAMES: usize = 4096;
/// The most pods one listing of the kubelet's log directory indexes: a node
/// runs a few hundred at once, and the directories of deleted pods are
/// removed with them.
const MAX_PODS: usize = 65_536;
/// A stream of unknown pod UIDs lists the log directory at most this often:
/// one `readdir` of a few hundred entries, while a pod's first connects may
/// come within milliseconds of its directory.
const LIST_EVERY: Duration = Duration::from_millis(100);
/// The most of a `config.v2.json` that is read (they are a few KiB).
const CONFIG_BYTES: u64 = 1 << 20;

/// Where the host keeps what names its workloads.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The kubelet's pod log directories: `/var/log/pods`.
    pub pods_log: PathBuf,
    /// Docker's data root (`data-root` in `daemon.json`): `/var/lib/docker`.
    pub docker_root: PathBuf,
    /// Where `ip netns` names network namespaces: `/run/netns`.
    pub netns_dir: PathBuf,
    /// The procfs mount: `/proc`.
    pub proc: PathBuf,
}

impl Sources {
    /// The usual places on the host flowlat runs on.
    pub fn system() -> Sources {
        Sources::under(Path::new("/"))
    }

    /// The usual places below `root`: the host's file system mounted
    /// elsewhere (`/host` in a container), or a test's tree.
    pub fn under(root: &Path) -> Sources {
        Sources {
            pods_log: root.join("var/log/pods"),
            docker_root: root.join("var/lib/docker"),
            netns_dir: root.join("run/netns"),
            proc: root.join("proc"),
        }
    }
}

/// A container runtime, as its cgroup names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    Docker,
    Containerd,
    Crio,
    Podman,
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::Crio => "cri-o",
            Runtime::Podman => "podman",
        })
    }
}

/// What kind of workload a cgroup path is, from the path alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A Kubernetes pod, by its UID (with `-`, as the API writes it).
    Pod { uid: String },
    /// A container, by its runtime and full id (64 hex digits).
    Container { runtime: Runtime, id: String },
    /// A systemd unit: `nginx.service`, `session-4.scope`.
    Unit(String),
    /// None of those: the path is all there is.
    Cgroup,
}

impl Kind {
    /// How well this kind names a workload, higher being better: pod,
    /// container, unit, plain cgroup.
    pub fn rank(&self) -> u8 {
        match self {
            Kind::Pod { .. } => 3,
            Kind::Container { .. } => 2,
            Kind::Unit(_) => 1,
            Kind::Cgroup => 0,
        }
    }
}

/// A cgroup path classified: what it is, and the path of the workload's own
/// cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// What kind of workload the path belongs to.
    pub kind: Kind,
    /// The leading part of the path that is the workload's cgroup (the pod's
    /// slice, the container's scope, the unit; the whole path otherwise),
    /// with the `/..` components it started with and without empty or `.`
    /// ones; `/` for the root.
    pub prefix: String,
}

/// A workload, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    /// `pod NAMESPACE/NAME`.
    Pod {
        namespace: String,
        name: String,
        uid: String,
    },
    /// `pod UID`: a pod whose log directory was not found.
    PodUid(String),
    /// `container NAME`, or `container SHORTID` (12 hex digits) without one.
    Container {
        runtime: Runtime,
        id: String,
        name: Option<String>,
    },
    /// `unit NAME`.
    Unit(String),
    /// The cgroup path itself.
    Cgroup(String),
    /// `netns NAME`: a named network namespace that no process is in.
    Netns(String),
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Pod {
                namespace, name, ..
            } => write!(f, "pod {namespace}/{name}"),
            Workload::PodUid(uid) => write!(f, "pod {uid}"),
            Workload::Container {
                name: Some(name), ..
            } => write!(f, "container {name}"),
            Workload::Container { id, .. } => {
                write!(f, "container {}", id.get(..SHORT_ID).unwrap_or(id))
            }
            Workload::Unit(unit) => write!(f, "unit {unit}"),
            Workload::Cgroup(path) => f.write_str(path),
            Workload::Netns(name) => write!(f, "netns {name}"),
        }
    }
}

/// A workload and its cgroup's path (as in [`Classified::prefix`]), which
/// a named network namespace without processes does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub workload: Workload,
    pub cgroup: Option<String>,
}

/// What kind of workload the cgroup at `path` (as `/proc/PID/cgroup` writes
/// it) belongs to, and its cgroup, by the rules of this module's
/// documentation.
pub fn classify(path: &str) -> Classified {
    let (climbs, parts) = climbs_and_rest(path);
    let prefix = |end: usize| {
        let mut prefix = "/..".repeat(climbs);
        for part in &parts[..end] {
            prefix.push('/');
            prefix.push_str(part);
        }
        if prefix.is_empty() {
            prefix.push('/');
        }
        prefix
    };
    // The component before each one, `..` before the first when the path
    // climbed (so its parents are unknown), none at the root.
    let parent = |at: usize| match at.checked_sub(1) {
        Some(before) => Some(parts[before]),
        None => (climbs > 0).then_some(".."),
    };
    let found = |at: usize, kind: Kind| Classified {
        kind,
        prefix: prefix(at + 1),
    };
    for (at, part) in parts.iter().enumerate() {
        if let Some(uid) = pod_uid(part, parent(at)) {
            return found(at, Kind::Pod { uid });
        }
    }
    for (at, part) in parts.iter().enumerate() {
        if let Some((runtime, id)) = container(part, parent(at)) {
            return found(at, Kind::Container { runtime, id });
        }
    }
    let mut unit = None;
    for (at, part) in parts.iter().enumerate() {
        let is_unit = part.ends_with(".service") || part.ends_with(".scope");
        if is_unit && !(*part == "init.scope" && unit.is_some()) {
            unit = Some(at);
        }
    }
    match unit {
        Some(at) => found(at, Kind::Unit(parts[at].to_string())),
        None => Classified {
            kind: Kind::Cgroup,
            prefix: prefix(parts.len()),
        },
    }
}

/// The pod UID a component names, with `-`: `kubepods-…-pod<uid>.slice`
/// (systemd driver, `_` for `-`), or `pod<uid>` below `kubepods` or a QoS
/// class directory (cgroupfs driver), or right after `..` if UUID-shaped.
fn pod_uid(part: &str, parent: Option<&str>) -> Option<String> {
    if let Some(stem) = part.strip_suffix(".slice") {
        let (head, pod) = stem.rsplit_once('-')?;
        let uid = pod.strip_prefix("pod")?;
        let kubelets = head.split('-').any(|word| word == "kubepods");
        return (kubelets && is_uid(uid)).then(|| uid.replace('_', "-"));
    }
    let uid = part.strip_prefix("pod")?;
    let known_parent = matches!(parent, Some("kubepods" | "burstable" | "besteffort"));
    let alone = parent == Some("..") && is_uuid(uid);
    ((known_parent && is_uid(uid)) || alone).then(|| uid.to_string())
}

/// A pod UID: a UUID, or the 32 hex digits of a static pod's hash.
fn is_uid(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_')
}

/// `8-4-4-4-12` hex digits.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The runtime and id of a container's cgroup component.
fn container(part: &str, parent: Option<&str>) -> Option<(Runtime, String)> {
    let (prefix, id) = container_id(part)?;
    let runtime = match (prefix, parent) {
        (Some("docker"), _) | (None, Some("docker")) => Runtime::Docker,
        (Some("cri-containerd"), _) => Runtime::Containerd,
        (Some("crio" | "crio-conmon"), _) => Runtime::Crio,
        (Some("libpod" | "libpod-conmon"), _) => Runtime::Podman,
        _ => return None,
    };
    Some((runtime, id.to_string()))
}

/// Names workloads from their cgroup paths, remembering what it read of the
/// host: the kubelet's pods (one listing of the log directory, replaced
/// whole by the next, so no larger than the directory) and Docker's
/// container names (at most 4096, the oldest forgotten first). It reads the
/// host only in [`Namer::name`] and [`Namer::name_netns`], which are for
/// the moments a cgroup or an interface is first seen, not for every record.
#[derive(Debug)]
pub struct Namer {
    sources: Sources,
    /// Pod UID (with `-`) to its namespace and name, from the last listing.
    pods: HashMap<String, (String, String)>,
    last_list: Option<Instant>,
    list_every: Duration,
    max_pods: usize,
    /// Container id to its name; `None` remembers that it has none known.
    containers: Bounded<String, Option<String>>,
    /// UIDs the log directory was listed for since they were first asked
    /// about: a new UID lists it at once (a pod's first connects may come
    /// within milliseconds of its directory), one asked about before only
    /// when a listing is due.
    listed_for: Bounded<String, ()>,
}

impl Namer {
    /// A namer that reads `sources`.
    pub fn new(sources: Sources) -> Namer {
        Namer {
            sources,
            pods: HashMap::new(),
            last_list: None,
            list_every: LIST_EVERY,
            max_pods: MAX_PODS,
            containers: Bounded::new(CONTAINER_NAMES),
            listed_for: Bounded::new(CONTAINER_NAMES),
        }
    }

    /// The workload of the cgroup at `path` (as `/proc/PID/cgroup` writes
    /// it) and the path of the workload's own cgroup. A pod not in the last
    /// listing of the log directory lists it again, at most every 100 ms;
    /// until then, or when it has no directory, it is named by its UID, and
    /// asking again later may find its name.
    pub fn name(&mut self, path: &str) -> Named {
        let classified = classify(path);
        let workload = match classified.kind {
            Kind::Pod { uid } => self.pod(uid),
            Kind::Container { runtime, id } => {
                let name = match runtime {
                    Runtime::Docker => self.docker_name(&id),
                    _ => None,
                };
                Workload::Container { runtime, id, name }
            }
            Kind::Unit(unit) => Workload::Unit(unit),
            Kind::Cgroup => Workload::Cgroup(classified.prefix.clone()),
        };
        Named {
            workload,
            cgroup: Some(classified.prefix),
        }
    }

    /// The workload at the other end of a veth whose peer is in the network
    /// namespace `ns`: that of its best-named process in `procs` (see
    /// [`Processes::representative`]), else, while no process is in it, its
    /// name in the netns directory. `None` when neither is known.
    pub fn name_netns(&mut self, procs: &Processes, ns: NsId) -> Option<Named> {
        if let Some((_, path)) = procs.representative(&self.sources.proc, ns.ino) {
            return Some(self.name(&path));
        }
        let name = netns::netns_name(&self.sources.netns_dir, ns)?;
        Some(Named {
            workload: Workload::Netns(name),
            cgroup: None,
        })
    }

    fn pod(&mut self, uid: String) -> Workload {
        let due = self
            .last_list
            .is_none_or(|t| t.elapsed() >= self.list_every);
        let new = self.listed_for.get(&uid).is_none();
        if !self.pods.contains_key(&uid) && (due || new) {
            self.listed_for.insert(uid.clone(), ());
            self.list_pods();
        }
        match self.pods.get(&uid) {
            Some((namespace, name)) => Workload::Pod {
                namespace: namespace.clone(),
                name: name.clone(),
                uid,
            },
            None => Workload::PodUid(uid),
        }
    }

    /// Indexes the log directory's `<namespace>_<name>_<uid>` entries by UID,
    /// at most `max_pods` of them, in place of the last listing.
    fn list_pods(&mut self) {
        self.last_list = Some(Instant::now());
        let mut pods = HashMap::new();
        if let Ok(entries) = fs::read_dir(&self.sources.pods_log) {
            for entry in entries.flatten() {
                if pods.len() >= self.max_pods {
                    break;
                }
                let Ok(dir) = entry.file_name().into_string() else {
                    continue;
                };
                if let Some((namespace, name, uid)) = pod_dir(&dir) {
                    pods.insert(uid.to_string(), (namespace.to_string(), name.to_string()));
                }
            }
        }
        self.pods = pods;
    }

    fn docker_name(&mut self, id: &str) -> Option<String> {
        if let Some(known) = self.containers.get(id) {
            return known.clone();
        }
        let config = self
            .sources
            .docker_root
            .join("containers")
            .join(id)
            .join("config.v2.json");
        let name = docker_config_name(&config);
        self.containers.insert(id.to_string(), name.clone());
        name
    }
}

/// Namespace, name and UID of a pod log directory's name. Neither a
/// namespace nor a pod name may hold `_` (they are DNS labels and
/// subdomains), nor may a UID.
fn pod_dir(dir: &str) -> Option<(&str, &str, &str)> {
    let (namespace, rest) = dir.split_once('_')?;
    let (name, uid) = rest.rsplit_once('_')?;
    let filled = !namespace.is_empty() && !name.is_empty() && is_uid(uid);
    filled.then_some((namespace, name, uid))
}

/// The container name in a Docker `config.v2.json` (`"Name": "/web"`), without
/// its leading `/`; `None` when the file cannot be read or has no name.
fn docker_config_name(config: &Path) -> Option<String> {
    let mut text = String::new();
    File::open(config)
        .ok()?
        .take(CONFIG_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    let name = top_level_string(&text, "Name")?;
    let name = name.strip_prefix('/').unwrap_or(&name);
    (!name.is_empty()).then(|| name.to_string())
}

/// The string value of `key` in the outermost object of JSON `text`. Keys
/// of nested objects are passed over (a `config.v2.json` has volumes with a
/// `"Name"` of their own), as is anything inside strings. `None` when the
/// key is absent, its value not a string, or the text not well formed up to
/// it.
fn top_level_string(text: &str, key: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut at = skip_space(b, 0);
    if b.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    loop {
        at = skip_space(b, at);
        match b.get(at)? {
            b',' => {
                at += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let (name, after) = json_string(b, at)?;
        at = skip_space(b, after);
        if b.get(at) != Some(&b':') {
            return None;
        }
        at = skip_space(b, at + 1);
        if name == key {
            return (b.get(at) == Some(&b'"')).then(|| json_string(b, at).map(|s| s.0))?;
        }
        at = skip_value(b, at)?;
    }
}

fn skip_space(b: &[u8], mut at: usize) -> usize {
    while b.get(at).is_some_and(|c| c.is_ascii_whitespace()) {
        at += 1;
    }
    at
}

/// The string starting with the `"` at `at`, unescaped, and where it ends.
fn json_string(b: &[u8], at: usize) -> Option<(String, usize)> {
    let mut out = Vec::new();
    let mut i = at + 1;
    loop {
        match *b.get(i)? {
            b'"' => return Some((String::from_utf8(out).ok()?, i + 1)),
            b'\\' => {
                let c = match *b.get(i + 1)? {
                    b'u' => {
                        let (c, len) = json_escape_u(b, i)?;
                        i += len;
                        let mut buf = [0; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        continue;
                    }
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'r' => b'\r',
                    b'b' => 8,
                    b'f' => 12,
                    c @ (b'"' | b'\\' | b'/') => c,
                    _ => return None,
                };
                out.push(c);
                i += 2;
            }
            // Bytes of the (valid UTF-8) text, copied whole, so the output
            // stays valid.
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
}

/// The character of the `\uXXXX` escape at `at` (or of the surrogate pair
/// `\uD8xx\uDCxx` there) and the bytes it takes.
fn json_escape_u(b: &[u8], at: usize) -> Option<(char, usize)> {
    let hex4 = |from: usize| {
        let digits = std::str::from_utf8(b.get(from..from + 4)?).ok()?;
        u32::from_str_radix(digits, 16).ok()
    };
    let first = hex4(at + 2)?;
    if (0xD800..0xDC00).contains(&first) {
        if b.get(at + 6..at + 8) != Some(b"\\u") {
            return None;
        }
        let second = hex4(at + 8)?;
        if !(0xDC00..0xE000).contains(&second) {
            return None;
        }
        let c = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
        return Some((char::from_u32(c)?, 12));
    }
    Some((char::from_u32(first)?, 6))
}

/// Where the JSON value starting at `at` ends.
fn skip_value(b: &[u8], at: usize) -> Option<usize> {
    match *b.get(at)? {
        b'"' => skip_string(b, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match *b.get(i)? {
                    b'"' => {
                        i = skip_string(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        // A number, `true`, `false` or `null`.
        _ => {
            let end = b[at..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']') || c.is_ascii_whitespace())
                .map_or(b.len(), |n| at + n);
            (end > at).then_some(end)
        }
    }
}

/// Where the string starting with the `"` at `at` ends, past its closing `"`.
fn skip_string(b: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        match *b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::scratch::TempDir;

    const UID: &str = "1c2d3e4f-5a6b-7c8d-9e0f-1a2b3c4d5e6f";
    const UID_: &str = "1c2d3e4f_5a6b_7c8d_9e0f_1a2b3c4d5e6f";
    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn pod(uid: &str) -> Kind {
        Kind::Pod {
            uid: uid.to_string(),
        }
    }

    fn container_kind(runtime: Runtime) -> Kind {
        Kind::Container {
            runtime,
            id: ID.to_string(),
        }
    }

    fn classified(kind: Kind, prefix: &str) -> Classified {
        Classified {
            kind,
            prefix: prefix.to_string(),
        }
    }

    #[test]
    fn pods_of_the_systemd_driver_are_their_slices() {
        for qos in ["burstable", "besteffort"] {
            let slice =
                format!("/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{UID_}.slice");
            assert_eq!(
                classify(&format!("{slice}/cri-containerd-{ID}.scope")),
                classified(pod(UID), &slice)
            );
            assert_eq!(classify(&slice), classified(pod(UID), &slice));
        }
        let guaranteed = format!("/kubepods.slice/kubepods-pod{UID_}.slice");
        assert_eq!(
            classify(&format!("{guaranteed}/crio-{ID}.scope")),
            classified(pod(UID), &guaranteed)
        );
        let kind = format!(
            "/system.slice/docker-{ID}.scope/kubelet.slice/kubelet-kubepods.slice/\
             kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice"
        );
        assert_eq!(
            classify(&format!("{kind}/cri-containerd-{ID}.scope")),
            classified(pod(UID), &kind),
            "a kubelet in a container: the pod, not the node's container"
        );
        let static_pod = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5b6b6f3b1e9a0f1c2d3e4f5a6b7c8d9e.slice";
        assert_eq!(
            classify(static_pod).kind,
            pod("5b6b6f3b1e9a0f1c2d3e4f5a6b7c8d9e")
        );
    }

    #[test]
    fn pods_of_the_cgroupfs_driver_are_their_directories() {
        let burstable = format!("/kubepods/burstable/pod{UID}");
        assert_eq!(
            classify(&format!("{burstable}/{ID}")),
            classified(pod(UID), &burstable)
        );
        let guaranteed = format!("/kubepods/pod{UID}");
        assert_eq!(
            classify(&format!("{guaranteed}/{ID}")),
            classified(pod(UID), &guaranteed)
        );
        assert_eq!(
            classify(&format!("/elsewhere/pod{UID}")).kind,
            Kind::Cgroup,
            "not below the kubelet's directories"
        );
    }

    #[test]
    fn slices_that_are_not_pods() {
        for path in [
            "/kubepods.slice",
            "/kubepods.slice/kubepods-burstable.slice",
            "/system.slice/pod-manager.slice",
            "/kubepods.slice/kubepods-podzz.slice",
            "/my-pod1234.slice",
        ] {
            assert_eq!(classify(path).kind, Kind::Cgroup, "{path}");
        }
    }

    #[test]
    fn containers_are_their_scopes() {
        let docker = format!("/system.slice/docker-{ID}.scope");
        assert_eq!(
            classify(&docker),
            classified(container_kind(Runtime::Docker), &docker)
        );
        assert_eq!(
            classify(&format!("{docker}/system.slice/cron.service")),
            classified(container_kind(Runtime::Docker), &docker),
            "a container's own units are the container"
        );
        let cgroupfs = format!("/docker/{ID}");
        assert_eq!(
            classify(&cgroupfs),
            classified(container_kind(Runtime::Docker), &cgroupfs)
        );
        let containerd = format!("/system.slice/cri-containerd-{ID}.scope");
        assert_eq!(
            classify(&containerd),
            classified(container_kind(Runtime::Containerd), &containerd)
        );
        for scope in [
            format!("crio-{ID}.scope"),
            format!("crio-conmon-{ID}.scope"),
        ] {
            let path = format!("/machine.slice/{scope}");
            assert_eq!(
                classify(&path),
                classified(container_kind(Runtime::Crio), &path)
            );
        }
        let podman = format!("/machine.slice/libpod-{ID}.scope");
        assert_eq!(
            classify(&format!("{podman}/container")),
            classified(container_kind(Runtime::Podman), &podman)
        );
        let nested = format!("/docker/{ID}/docker/{}", "f".repeat(64));
        assert_eq!(
            classify(&nested),
            classified(container_kind(Runtime::Docker), &format!("/docker/{ID}")),
            "the outer container is the host's workload"
        );
        assert_eq!(classify(&format!("/other/{ID}")).kind, Kind::Cgroup);
        assert_eq!(
            classify(&format!("/system.slice/runc-{ID}.scope")).kind,
            Kind::Unit(format!("runc-{ID}.scope")),
            "an unknown runtime"
        );
    }

    #[test]
    fn units_are_the_deepest_service_or_scope() {
        let unit = |name: &str| Kind::Unit(name.to_string());
        assert_eq!(
            classify("/system.slice/nginx.service"),
            classified(unit("nginx.service"), "/system.slice/nginx.service")
        );
        assert_eq!(
            classify("/system.slice/containerd.service/subgroup"),
            classified(
                unit("containerd.service"),
                "/system.slice/containerd.service"
            ),
            "what a unit delegates is the unit's"
        );
        assert_eq!(
            classify("/user.slice/user-1000.slice/session-4.scope"),
            classified(
                unit("session-4.scope"),
                "/user.slice/user-1000.slice/session-4.scope"
            )
        );
        let manager = "/user.slice/user-1000.slice/user@1000.service";
        assert_eq!(
            classify(&format!("{manager}/init.scope")),
            classified(unit("user@1000.service"), manager)
        );
        assert_eq!(
            classify(&format!("{manager}/app.slice/app-firefox-1234.scope")),
            classified(
                unit("app-firefox-1234.scope"),
                &format!("{manager}/app.slice/app-firefox-1234.scope")
            )
        );
        assert_eq!(
            classify(&format!("{manager}/app.slice/pipewire.service")).kind,
            unit("pipewire.service")
        );
        assert_eq!(classify("/init.scope").kind, unit("init.scope"));
    }

    #[test]
    fn other_paths_are_themselves() {
        assert_eq!(classify("/"), classified(Kind::Cgroup, "/"));
        assert_eq!(classify(""), classified(Kind::Cgroup, "/"));
        assert_eq!(
            classify("/user.slice//./a b/"),
            classified(Kind::Cgroup, "/user.slice/a b")
        );
        assert_eq!(classify("/system.slice").kind, Kind::Cgroup);
    }

    #[test]
    fn paths_from_another_cgroup_namespace_keep_their_climb() {
        assert_eq!(
            classify(&format!(
                "/../../kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"
            )),
            classified(pod(UID), &format!("/../../kubepods-pod{UID_}.slice"))
        );
        assert_eq!(
            classify(&format!("/../pod{UID}/{ID}")),
            classified(pod(UID), &format!("/../pod{UID}")),
            "a UUID right after the climb"
        );
        assert_eq!(
            classify("/../pod5b6b6f3b1e9a0f1c2d3e4f5a6b7c8d9e/x").kind,
            Kind::Cgroup,
            "a hash after the climb could be anything"
        );
        assert_eq!(
            classify(&format!("/../cri-containerd-{ID}.scope")),
            classified(
                container_kind(Runtime::Containerd),
                &format!("/../cri-containerd-{ID}.scope")
            )
        );
        assert_eq!(
            classify("/../../system.slice/nginx.service/x"),
            classified(
                Kind::Unit("nginx.service".to_string()),
                "/../../system.slice/nginx.service"
            )
        );
        assert_eq!(classify("/../.."), classified(Kind::Cgroup, "/../.."));
    }

    #[test]
    fn workloads_read_as_the_issue_names_them() {
        let named = |w: Workload| w.to_string();
        assert_eq!(
            named(Workload::Pod {
                namespace: "shop".into(),
                name: "web-0".into(),
                uid: UID.into()
            }),
            "pod shop/web-0"
        );
        assert_eq!(named(Workload::PodUid(UID.into())), format!("pod {UID}"));
        assert_eq!(
            named(Workload::Container {
                runtime: Runtime::Docker,
                id: ID.into(),
                name: Some("web".into())
            }),
            "container web"
        );
        assert_eq!(
            named(Workload::Container {
                runtime: Runtime::Crio,
                id: ID.into(),
                name: None
            }),
            "container 0123456789ab"
        );
        assert_eq!(
            named(Workload::Unit("nginx.service".into())),
            "unit nginx.service"
        );
        assert_eq!(named(Workload::Cgroup("/user.slice".into())), "/user.slice");
        assert_eq!(named(Workload::Netns("red".into())), "netns red");
        assert_eq!(Runtime::Crio.to_string(), "cri-o");
    }

    /// A host's tree: pod log directories and Docker configs.
    struct Host(TempDir);

    impl Host {
        fn new() -> Host {
            let host = Host(TempDir::new("workload"));
            let sources = host.sources();
            fs::create_dir_all(&sources.pods_log).unwrap();
            fs::create_dir_all(sources.docker_root.join("containers")).unwrap();
            host
        }

        fn sources(&self) -> Sources {
            Sources::under(&self.0 .0)
        }

        fn pod_dir(&self, dir: &str) {
            fs::create_dir_all(self.sources().pods_log.join(dir)).unwrap();
        }

        fn docker_config(&self, id: &str, json: &str) {
            let dir = self.sources().docker_root.join("containers").join(id);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("config.v2.json"), json).unwrap();
        }

        fn namer(&self) -> Namer {
            Namer::new(self.sources())
        }
    }

    /// Pretends the last listing of pods was long ago.
    fn list_due(namer: &mut Namer) {
        namer.last_list = namer
            .last_list
            .and_then(|t| t.checked_sub(Duration::from_secs(10)));
    }

    #[test]
    fn pods_are_named_from_their_log_directories() {
        let host = Host::new();
        host.pod_dir(&format!("shop_web-0_{UID}"));
        host.pod_dir("kube-system_coredns-5d78c9869d-abcde_0f0e0d0c-0b0a-0908-0706-050403020100");
        host.pod_dir("not-a-pod");
        let mut namer = host.namer();
        let slice =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        let named = namer.name(&format!("{slice}/cri-containerd-{ID}.scope"));
        assert_eq!(named.workload.to_string(), "pod shop/web-0");
        assert_eq!(named.cgroup.as_deref(), Some(slice.as_str()));
        assert_eq!(
            named.workload,
            Workload::Pod {
                namespace: "shop".into(),
                name: "web-0".into(),
                uid: UID.into()
            }
        );
        let coredns = namer.name("/kubepods/burstable/pod0f0e0d0c-0b0a-0908-0706-050403020100/x");
        assert_eq!(
            coredns.workload.to_string(),
            "pod kube-system/coredns-5d78c9869d-abcde"
        );
    }

    #[test]
    fn a_pod_without_a_log_directory_is_its_uid_until_one_appears() {
        let host = Host::new();
        let mut namer = host.namer();
        let path = format!("/kubepods/pod{UID}/{ID}");
        assert_eq!(namer.name(&path).workload, Workload::PodUid(UID.into()));
        host.pod_dir(&format!("shop_web-0_{UID}"));
        assert_eq!(
            namer.name(&path).workload,
            Workload::PodUid(UID.into()),
            "listed less than a second ago"
        );
        list_due(&mut namer);
        assert_eq!(namer.name(&path).workload.to_string(), "pod shop/web-0");

        let absent = Namer::new(Sources::under(&host.0 .0.join("absent")));
        let mut absent = absent;
        assert_eq!(absent.name(&path).workload, Workload::PodUid(UID.into()));
    }

    #[test]
    fn the_pod_index_is_bounded_and_replaced_by_each_listing() {
        let host = Host::new();
        for n in 0..300 {
            host.pod_dir(&format!("ns_pod-{n}_00000000-0000-0000-0000-{n:012}"));
        }
        let mut namer = host.namer();
        namer.max_pods = 100;
        namer.list_every = Duration::ZERO;
        for n in 0..1_000u64 {
            let uid = format!("ffffffff_0000_0000_0000_{n:012}");
            let named = namer.name(&format!("/kubepods.slice/kubepods-pod{uid}.slice"));
            assert!(matches!(named.workload, Workload::PodUid(_)));
            assert!(namer.pods.len() <= 100, "{}", namer.pods.len());
        }
        assert_eq!(namer.pods.len(), 100);
    }

    #[test]
    fn pod_directory_names_split_at_their_first_and_last_underscore() {
        assert_eq!(
            pod_dir(&format!("default_web-0_{UID}")),
            Some(("default", "web-0", UID))
        );
        assert_eq!(pod_dir("ns_web_not-a-uid"), None);
        assert_eq!(pod_dir(&format!("_web_{UID}")), None);
        assert_eq!(pod_dir(&format!("ns__{UID}")), None);
        assert_eq!(pod_dir("ns_web"), None);
    }

    #[test]
    fn docker_containers_are_named_from_their_config() {
        let host = Host::new();
        host.docker_config(
            ID,
            r#"{"StreamConfig":{},"State":{"Running":true,"Pid":42},"ID":"0123","MountPoints":{"/data":{"Source":"","Name":"volume"}},"Name":"/web","Driver":"overlay2"}"#,
        );
        let mut namer = host.namer();
        let scope = format!("/system.slice/docker-{ID}.scope");
        let named = namer.name(&scope);
        assert_eq!(named.workload.to_string(), "container web");
        assert_eq!(named.cgroup.as_deref(), Some(scope.as_str()));
        assert_eq!(
            namer.name(&format!("/docker/{ID}")).workload.to_string(),
            "container web"
        );
        let other = "f".repeat(64);
        let named = namer.name(&format!("/docker/{other}"));
        assert_eq!(named.workload.to_string(), "container ffffffffffff");
        assert_eq!(
            named.workload,
            Workload::Container {
                runtime: Runtime::Docker,
                id: other,
                name: None
            }
        );
    }

    #[test]
    fn other_runtimes_are_named_by_short_id() {
        let host = Host::new();
        // A config for the id, which only Docker's containers may use.
        host.docker_config(ID, r#"{"Name":"/web"}"#);
        let mut namer = host.namer();
        for scope in [
            format!("/system.slice/cri-containerd-{ID}.scope"),
            format!("/machine.slice/crio-{ID}.scope"),
            format!("/machine.slice/crio-conmon-{ID}.scope"),
        ] {
            let named = namer.name(&scope);
            assert_eq!(named.workload.to_string(), "container 0123456789ab");
            assert_eq!(named.cgroup.as_deref(), Some(scope.as_str()));
        }
    }

    #[test]
    fn units_and_paths_are_named_without_the_host() {
        let host = Host::new();
        let mut namer = host.namer();
        let named = namer.name("/system.slice/nginx.service");
        assert_eq!(named.workload.to_string(), "unit nginx.service");
        assert_eq!(named.cgroup.as_deref(), Some("/system.slice/nginx.service"));
        let named = namer.name("/user.slice");
        assert_eq!(named.workload.to_string(), "/user.slice");
        assert_eq!(named.cgroup.as_deref(), Some("/user.slice"));
    }

    #[test]
    fn container_names_are_remembered_within_a_bound() {
        let host = Host::new();
        host.docker_config(ID, r#"{"Name":"/web"}"#);
        let mut namer = host.namer();
        let scope = format!("/system.slice/docker-{ID}.scope");
        assert_eq!(namer.name(&scope).workload.to_string(), "container web");
        host.docker_config(ID, r#"{"Name":"/renamed"}"#);
        assert_eq!(
            namer.name(&scope).workload.to_string(),
            "container web",
            "remembered, not read again"
        );
        for n in 0..10_000u64 {
            namer.name(&format!("/docker/{n:064x}"));
        }
        assert_eq!(namer.containers.len(), CONTAINER_NAMES);
        assert_eq!(
            namer.name(&scope).workload.to_string(),
            "container renamed",
            "forgotten, so read again"
        );
    }

    #[test]
    fn the_name_is_the_top_level_key() {
        let name = |json: &str| top_level_string(json, "Name");
        assert_eq!(name(r#"{"Name":"/web"}"#).as_deref(), Some("/web"));
        assert_eq!(
            name(r#" { "A" : [1, {"Name":"no"}, "]"] , "B":{"Name":{"Name":"no"}},"N":null,"T":true,"F":-1.5e3, "Name" : "/yes" } "#)
                .as_deref(),
            Some("/yes")
        );
        assert_eq!(
            name(r#"{"Path":"\"Name\":\"/no\"","Name":"/yes"}"#).as_deref(),
            Some("/yes"),
            "a key inside a string is no key"
        );
        assert_eq!(
            name(r#"{"Name":"/we\"ird\\ \/ \u00e9\ud83d\ude00\n"}"#).as_deref(),
            Some("/we\"ird\\ / \u{e9}\u{1f600}\n")
        );
        assert_eq!(name(r#"{"Names":"/no"}"#), None);
        assert_eq!(name(r#"{"Name":42}"#), None);
        assert_eq!(name(r#"{"Name":"/cut"#), None);
        assert_eq!(name(r#"{"A":{"Name":"/no"}"#), None);
        assert_eq!(name(r#"["Name","/no"]"#), None);
        assert_eq!(name(r#"{"Name":"\ud83d"}"#), None, "half a pair");
        assert_eq!(name(r#"{"Name":"\x"}"#), None);
        assert_eq!(name(""), None);
    }

    #[test]
    fn a_config_name_loses_its_slash_and_an_empty_one_is_none() {
        let host = Host::new();
        let config = |id: &str| {
            host.sources()
                .docker_root
                .join("containers")
                .join(id)
                .join("config.v2.json")
        };
        host.docker_config("a", r#"{"Name":"/we\"b"}"#);
        assert_eq!(docker_config_name(&config("a")).as_deref(), Some("we\"b"));
        host.docker_config("b", r#"{"Name":"/"}"#);
        assert_eq!(docker_config_name(&config("b")), None);
        host.docker_config("c", "\u{0}\u{ff}garbage");
        assert_eq!(docker_config_name(&config("c")), None);
        assert_eq!(docker_config_name(&config("absent")), None);
    }

    /// A fake /proc with one process per (pid, netns inode, cgroup path).
    fn fake_proc(host: &Host, procs: &[(u32, u64, &str)]) {
        for &(pid, ino, cgroup) in procs {
            let dir = host.sources().proc.join(pid.to_string());
            fs::create_dir_all(dir.join("ns")).unwrap();
            std::os::unix::fs::symlink(format!("net:[{ino}]"), dir.join("ns/net")).unwrap();
            fs::write(dir.join("cgroup"), format!("0::{cgroup}\n")).unwrap();
        }
    }

    #[test]
    fn a_network_namespace_is_named_by_its_processes_or_its_name() {
        let host = Host::new();
        host.pod_dir(&format!("shop_web-0_{UID}"));
        let slice = format!("/kubepods.slice/kubepods-pod{UID_}.slice");
        fake_proc(
            &host,
            &[
                (1, 4026531840, "/init.scope"),
                (
                    300,
                    4026532000,
                    &format!("{slice}/cri-containerd-{ID}.scope"),
                ),
                (
                    301,
                    4026532000,
                    &format!("{slice}/cri-containerd-{}.scope", "e".repeat(64)),
                ),
            ],
        );
        let netns_dir = host.sources().netns_dir;
        fs::create_dir_all(&netns_dir).unwrap();
        fs::write(netns_dir.join("empty"), "").unwrap();
        let empty = NsId::of_path(&netns_dir.join("empty")).unwrap();

        let procs = Processes::scan(&host.sources().proc).unwrap();
        let mut namer = host.namer();
        let pod_ns = NsId {
            dev: 0,
            ino: 4026532000,
        };
        let named = namer.name_netns(&procs, pod_ns).unwrap();
        assert_eq!(named.workload.to_string(), "pod shop/web-0");
        assert_eq!(named.cgroup.as_deref(), Some(slice.as_str()));

        let named = namer.name_netns(&procs, empty).unwrap();
        assert_eq!(named.workload.to_string(), "netns empty");
        assert_eq!(named.cgroup, None);

        assert_eq!(namer.name_netns(&procs, NsId { dev: 0, ino: 7 }), None);
    }
}
