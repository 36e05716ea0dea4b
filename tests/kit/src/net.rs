//! Network namespaces and veth pairs that are removed even when a test fails,
//! and listeners in them.

use std::fs::File;
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{require_root, run_cmd};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace named `flt-<tag>-<pid>-<n>`, deleted on drop.
/// Namespaces left by a test process that was killed are removed when the next
/// one is made (their pid is no longer alive).
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> NetNs {
        require_root();
        reap_stale();
        let name = format!(
            "flt-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run_cmd("ip", &["netns", "add", &name]);
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        // A plain host, whatever the host running the tests does: a new
        // namespace takes IPv4 forwarding from the initial one (a host with
        // containers forwards), and a forwarding namespace answers a packet
        // for an address nobody has with an ICMP error after its ARP
        // attempts, where the tests expect silence. Routers turn it on.
        ns.exec(
            "sysctl",
            &[
                "-qw",
                "net.ipv4.ip_forward=0",
                "net.ipv6.conf.all.forwarding=0",
            ],
        );
        ns
    }

    /// `ip -n NAME args...`
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_cmd("ip", &full)
    }

    /// A permanent neighbour entry: frames to `addr` go to `mac` on `dev`
    /// with no ARP or neighbour discovery, whoever holds the address.
    pub fn neigh_permanent(&self, addr: &str, mac: &str, dev: &str) {
        self.ip(&[
            "neigh",
            "replace",
            addr,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ]);
    }

    /// `ip netns exec NAME cmd args...`, checked.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", self.name.as_str(), cmd];
        full.extend_from_slice(args);
        run_cmd("ip", &full)
    }

    /// A `Command` that runs `cmd` inside the namespace (not started).
    pub fn command(&self, cmd: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.name.as_str(), cmd]);
        c
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns its result.
    pub fn enter<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        self.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Runs `f` with an rtnetlink handle opened inside this namespace, on a
    /// fresh tokio runtime there.
    pub fn netlink<R, F, Fut>(&self, f: F) -> R
    where
        R: Send + 'static,
        F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = R>,
    {
        self.enter(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(async move {
                    let handle = flowlat::netlink::link::connect().expect("netlink connection");
                    f(handle).await
                })
        })
    }

    /// Starts `f` on a new thread that has entered this namespace.
    pub fn spawn<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> std::thread::JoinHandle<R> {
        let path = format!("/var/run/netns/{}", self.name);
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        std::thread::spawn(move || {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("setns into the test namespace");
            f()
        })
    }

    /// The MAC address of `dev` in this namespace.
    pub fn mac(&self, dev: &str) -> [u8; 6] {
        let out = self.ip(&["-o", "link", "show", "dev", dev]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let hex = text
            .split("link/ether ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no MAC in {text}"));
        let mut mac = [0u8; 6];
        for (m, h) in mac.iter_mut().zip(hex.split(':')) {
            *m = u8::from_str_radix(h, 16).expect("hex");
        }
        mac
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Two namespaces joined by a veth pair `a`–`b`, with addresses
/// 10.X.0.1/24 + fd00:X::1/64 on `a` and .2 / ::2 on `b` (X from the counter).
pub struct VethPair {
    pub a: NetNs,
    pub b: NetNs,
    pub a4: String,
    pub b4: String,
    pub a6: String,
    pub b6: String,
}

impl VethPair {
    pub fn new(tag: &str) -> VethPair {
        let a = NetNs::new(&format!("{tag}a"));
        let b = NetNs::new(&format!("{tag}b"));
        let n = (COUNTER.fetch_add(1, Ordering::Relaxed) % 250) + 1;
        let pid = std::process::id() % 200 + 20;
        a.ip(&[
            "link", "add", "name", "a", "type", "veth", "peer", "name", "b", "netns", &b.name,
        ]);
        let a4 = format!("10.{pid}.{n}.1");
        let b4 = format!("10.{pid}.{n}.2");
        let a6 = format!("fd00:{pid}:{n}::1");
        let b6 = format!("fd00:{pid}:{n}::2");
        a.ip(&["addr", "add", &format!("{a4}/24"), "dev", "a"]);
        b.ip(&["addr", "add", &format!("{b4}/24"), "dev", "b"]);
        a.ip(&["addr", "add", &format!("{a6}/64"), "dev", "a", "nodad"]);
        b.ip(&["addr", "add", &format!("{b6}/64"), "dev", "b", "nodad"]);
        a.ip(&["link", "set", "dev", "a", "up"]);
        b.ip(&["link", "set", "dev", "b", "up"]);
        VethPair {
            a,
            b,
            a4,
            b4,
            a6,
            b6,
        }
    }
}

/// A listener on `addr:port` in `ns` that accepts (and closes) connections on a
/// thread of its own for as long as the test runs.
pub fn listen(ns: &NetNs, addr: &str, port: u16) -> std::net::TcpListener {
    let sa = std::net::SocketAddr::new(addr.parse().expect("address"), port);
    let l = ns.enter(move || std::net::TcpListener::bind(sa).expect("listen"));
    let l2 = l.try_clone().expect("clone listener");
    std::thread::spawn(move || {
        for conn in l2.incoming() {
            let Ok(c) = conn else { break };
            drop(c);
        }
    });
    l
}

/// `02:00:..` text of a MAC address, as `ip` takes it.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl VethPair {
    /// An address in `b`'s subnet that nobody owns (last byte `last`), which `a`
    /// reaches through a static neighbour entry pointing at `b`: packets to it
    /// cross the veth and are dropped there, unless a raw-socket peer answers.
    pub fn unowned_beyond_b(&self, v6: bool, last: u8) -> String {
        let addr = if v6 {
            format!("{}{:x}", self.b6.trim_end_matches('2'), last)
        } else {
            let mut parts: Vec<String> = self.b4.split('.').map(str::to_string).collect();
            parts[3] = last.to_string();
            parts.join(".")
        };
        let mac = mac_text(self.b.mac("b"));
        self.a.neigh_permanent(&addr, &mac, "a");
        addr
    }
}

/// Deletes `flt-*-PID-*` namespaces whose PID is gone (left by a killed run).
fn reap_stale() {
    let Ok(dir) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut parts = name.split('-');
        if parts.next() != Some("flt") {
            continue;
        }
        let Some(pid) = parts.nth(1).and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid as u32 != std::process::id()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}
