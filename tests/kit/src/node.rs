//! A container node as a CNI and a kubelet or Docker build one, in
//! namespaces and cgroups of the test's own: pods are network namespaces
//! behind veth pairs (the host's end in the node's namespace, `eth0` in the
//! pod's), each with a process in a cgroup laid out as the kubelet's
//! (systemd driver) or Docker's, and the kubelet's log directory or Docker's
//! config file at paths the test controls (given to flowlat through
//! `FLOWLAT_POD_LOGS` and `FLOWLAT_DOCKER_ROOT`). Everything is removed on
//! drop, even when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::net::NetNs;
use crate::Scratch;

static PODS: AtomicU32 = AtomicU32::new(0);

/// How a pod's process is laid out in the cgroup tree, and named.
#[derive(Debug, Clone)]
pub enum Layout {
    /// The kubelet with the systemd cgroup driver, a BestEffort pod:
    /// `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope`,
    /// and `<logs>/<namespace>_<name>_<uid>/` when `logged`.
    Kubelet {
        namespace: String,
        name: String,
        uid: String,
        logged: bool,
    },
    /// Docker with the systemd driver: `system.slice/docker-<id>.scope`,
    /// and `<docker root>/containers/<id>/config.v2.json` naming it.
    Docker { id: String, name: String },
    /// No process at all yet: the namespace alone.
    Empty,
}

impl Layout {
    /// A kubelet pod with a fresh uid.
    pub fn pod(namespace: &str, name: &str) -> Layout {
        let n = PODS.fetch_add(1, Ordering::Relaxed);
        Layout::Kubelet {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: format!(
                "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
                std::process::id(),
                n,
                n,
                n,
                u64::from(n) * 7919
            ),
            logged: true,
        }
    }

    /// A Docker container with a fresh id.
    pub fn docker(name: &str) -> Layout {
        let n = PODS.fetch_add(1, Ordering::Relaxed);
        Layout::Docker {
            id: format!("{:016x}{:048x}", u64::from(std::process::id()), n),
            name: name.to_string(),
        }
    }

    /// What flowlat should call it.
    pub fn workload(&self) -> Option<String> {
        match self {
            Layout::Kubelet {
                namespace,
                name,
                logged: true,
                ..
            } => Some(format!("pod {namespace}/{name}")),
            Layout::Kubelet { uid, .. } => Some(format!("pod {uid}")),
            Layout::Docker { name, .. } => Some(format!("container {name}")),
            Layout::Empty => None,
        }
    }
}

/// The node's files and cgroups: a cgroup subtree of the test's own, the
/// kubelet's log directory and Docker's root.
pub struct Node {
    /// `<cgroup2 mount>/flt-node-<pid>-<n>`: every pod's cgroups are below.
    pub cgroups: PathBuf,
    files: Scratch,
}

/// Removes the cgroup trees of nodes whose test process is gone (killed
/// before it could clean up), with the pods' processes still in them.
fn reap_stale(mount: &Path) {
    let Ok(entries) = std::fs::read_dir(mount) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("flt-node-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        kill_tree(&e.path());
        std::thread::sleep(std::time::Duration::from_millis(50));
        remove_tree(&e.path());
    }
}

/// SIGKILLs every process in a cgroup subtree.
fn kill_tree(dir: &Path) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                kill_tree(&e.path());
            }
        }
    }
}

impl Node {
    pub fn new() -> Node {
        reap_stale(&crate::cgroup::mount());
        let n = PODS.fetch_add(1, Ordering::Relaxed);
        let cgroups = crate::cgroup::mount().join(format!("flt-node-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&cgroups).unwrap_or_else(|e| panic!("{}: {e}", cgroups.display()));
        let files = Scratch::new("node");
        std::fs::create_dir_all(files.path().join("pods")).expect("pod logs");
        std::fs::create_dir_all(files.path().join("docker/containers")).expect("docker root");
        Node { cgroups, files }
    }

    /// `FLOWLAT_POD_LOGS` for flowlat.
    pub fn pod_logs(&self) -> PathBuf {
        self.files.path().join("pods")
    }

    /// `FLOWLAT_DOCKER_ROOT` for flowlat.
    pub fn docker_root(&self) -> PathBuf {
        self.files.path().join("docker")
    }

    /// The environment flowlat needs to find this node's names.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "FLOWLAT_POD_LOGS".to_string(),
                self.pod_logs().to_string_lossy().into_owned(),
            ),
            (
                "FLOWLAT_DOCKER_ROOT".to_string(),
                self.docker_root().to_string_lossy().into_owned(),
            ),
        ]
    }
}

impl Default for Node {
    fn default() -> Self {
        Node::new()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        remove_tree(&self.cgroups);
    }
}

/// Removes a cgroup subtree, deepest first (its processes must be gone).
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// A pod: its namespace, the host end of its veth in the node's namespace,
/// its address, and its process.
pub struct Pod {
    pub ns: NetNs,
    /// The host end's name in the node's namespace.
    pub veth: String,
    /// The pod's address (on its `eth0`).
    pub ip: String,
    /// The node's address on the pod's link (the pod's gateway).
    pub gateway: String,
    pub layout: Layout,
    /// The pod's cgroup: the pod's slice, or the container's scope.
    pub cgroup: Option<PathBuf>,
    process: Option<Child>,
    /// Files made for it (the log directory, the container's config).
    files: Vec<PathBuf>,
}

impl Pod {
    /// Makes pod number `i` (1..=250) on `node_ns` as a CNI does, with the
    /// host end `veth<tag>`. `moved`: made as a pair in the node's namespace
    /// whose one end is then moved into the pod's (as some plugins do),
    /// rather than made with its peer in the pod's namespace at once.
    pub fn new(node: &Node, node_ns: &NetNs, i: u8, tag: &str, layout: Layout, moved: bool) -> Pod {
        let ns = NetNs::new("pod");
        let veth = format!("veth{tag}");
        if moved {
            let tmp = format!("tmp{tag}");
            node_ns.ip(&["link", "add", &veth, "type", "veth", "peer", "name", &tmp]);
            node_ns.ip(&["link", "set", &tmp, "netns", &ns.name]);
            ns.ip(&["link", "set", &tmp, "name", "eth0"]);
        } else {
            node_ns.ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
            ]);
        }
        let (gateway, ip) = (format!("10.77.{i}.1"), format!("10.77.{i}.2"));
        node_ns.ip(&["addr", "add", &format!("{gateway}/24"), "dev", &veth]);
        node_ns.ip(&["link", "set", &veth, "up"]);
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", "default", "via", &gateway]);
        let mut pod = Pod {
            ns,
            veth,
            ip,
            gateway,
            layout: layout.clone(),
            cgroup: None,
            process: None,
            files: Vec::new(),
        };
        pod.start_process(node);
        pod
    }

    /// The pod's process, in its cgroup, with its names on disk.
    fn start_process(&mut self, node: &Node) {
        let (cgroup, leaf) = match &self.layout {
            Layout::Kubelet {
                namespace,
                name,
                uid,
                logged,
            } => {
                let slice = node
                    .cgroups
                    .join("kubepods.slice/kubepods-besteffort.slice")
                    .join(format!(
                        "kubepods-besteffort-pod{}.slice",
                        uid.replace('-', "_")
                    ));
                let scope = slice.join(format!(
                    "cri-containerd-{:064x}.scope",
                    u64::from(std::process::id())
                ));
                if *logged {
                    let dir = node.pod_logs().join(format!("{namespace}_{name}_{uid}"));
                    std::fs::create_dir_all(dir.join("app")).expect("pod log dir");
                    self.files.push(dir);
                }
                (slice, scope)
            }
            Layout::Docker { id, name } => {
                let scope = node.cgroups.join(format!("system.slice/docker-{id}.scope"));
                let dir = node.docker_root().join("containers").join(id);
                std::fs::create_dir_all(&dir).expect("container dir");
                std::fs::write(
                    dir.join("config.v2.json"),
                    format!("{{\"ID\":\"{id}\",\"Name\":\"/{name}\",\"State\":{{}}}}"),
                )
                .expect("config.v2.json");
                self.files.push(dir);
                (scope.clone(), scope)
            }
            Layout::Empty => return,
        };
        std::fs::create_dir_all(&leaf).unwrap_or_else(|e| panic!("{}: {e}", leaf.display()));
        // Into its cgroup before it enters the namespace, as a runtime
        // starts a container's process.
        let procs = leaf.join("cgroup.procs");
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#"echo $$ > "$1" && exec ip netns exec "$2" sleep 600"#)
            .arg("sh")
            .arg(&procs)
            .arg(&self.ns.name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the pod's process");
        // Ready when it is in the pod's namespace, as a pod's process is
        // before it connects anywhere.
        let pod_ns = std::fs::metadata(format!("/run/netns/{}", self.ns.name))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .expect("the pod's namespace");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::metadata(format!("/proc/{}/ns/net", child.id()))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok()
            != Some(pod_ns)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the pod's process did not enter its namespace"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        self.process = Some(child);
        self.cgroup = Some(cgroup);
    }

    /// Deletes the pod as a CNI does (the veth first, in the node's
    /// namespace), then its process and namespace.
    pub fn delete(self, node_ns: &NetNs) {
        node_ns.ip(&["link", "del", &self.veth]);
    }

    /// The pod's cgroup as flowlat names it: its path below the mount.
    pub fn cgroup_path(&self) -> Option<String> {
        let mount = crate::cgroup::mount();
        let rel = self.cgroup.as_ref()?.strip_prefix(&mount).ok()?;
        Some(format!("/{}", rel.display()))
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Some(mut c) = self.process.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for f in &self.files {
            let _ = std::fs::remove_dir_all(f);
        }
        // The namespace goes with `ns` (and the pair with it).
    }
}
