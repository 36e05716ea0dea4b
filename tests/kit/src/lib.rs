//! What flowlat's integration tests and benches share, as one library (known
//! to them as `kit`):
//! - [`net`]: network namespaces and veth pairs that are removed even when a
//!   test fails, and listeners in them;
//! - [`packet`]: Ethernet frames with IPv4/IPv6 and TCP/UDP/ICMP, checksummed;
//! - [`icmp`]: ICMP and ICMPv6 errors quoting a TCP segment, and what the
//!   contract makes of each type and code;
//! - [`peer`]: a raw-socket TCP peer that answers or completes handshakes late;
//! - [`router`]: client, router and server namespaces on a routed path, and
//!   nftables rulesets in them;
//! - [`run`]: the flowlat binary run in a namespace, its records collected;
//! - [`json`]: the one JSON reader, of flowlat's records and of what other
//!   programs answer, and the benches' report values;
//! - [`kernel`]: what the kernel holds, read the way an administrator would;
//! - [`musl`]: the static binary, built once for the tests that need it;
//! - [`probe`]: the embedded classifier under `BPF_PROG_TEST_RUN`;
//! - [`cgroup`]: cgroup v2 and cgroups of a test's own to move this process into;
//! - [`asm`]: hand-assembled classifiers the benches compare flowlat with;
//! - [`report`]: the machine the benches ran on, and where they write reports;
//! - [`capture`]: tcpdump captures in a namespace, read back with tshark;
//! - [`nginx`]: a real HTTP server in a namespace;
//! - [`node`]: a container node: pods behind veths, in kubelet- or
//!   Docker-style cgroups, with their names on disk;
//! - [`procs`]: processes with names of their own that listen or connect;
//! - the root check below, [`run_cmd`], [`collect_text`], [`exit_within`] and
//!   [`Scratch`] directories.

pub mod asm;
pub mod capture;
pub mod cgroup;
pub mod icmp;
pub mod json;
pub mod kernel;
pub mod musl;
pub mod net;
pub mod nginx;
pub mod node;
pub mod packet;
pub mod peer;
pub mod probe;
pub mod procs;
pub mod report;
pub mod router;
pub mod run;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whether this process runs as root: the tests and benches load BPF
/// programs, make network namespaces and attach filters.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Fails the test (never skips it) when not run as root.
pub fn require_root() {
    if !is_root() {
        panic!(
            "this test needs root (it loads BPF programs and makes network namespaces): \
             run the suite with sudo, as the README says"
        );
    }
}

/// For a bench: says `why` it needs root and exits 1 when not run as root.
pub fn exit_unless_root(why: &str) {
    if !is_root() {
        eprintln!("{why}");
        std::process::exit(1);
    }
}

/// Runs a command and panics with its output when it fails.
pub fn run_cmd(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    if !out.status.success() {
        panic!(
            "`{cmd} {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// A directory of a test's own under the temporary directory
/// (`flowlat-TAG-PID-N`), removed with what it holds on drop unless the
/// test failed.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "flowlat-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    /// Kept when the test fails, for a look at what it holds.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} (the test failed)", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// What `r` says (a child's stderr), collected line by line on a thread of
/// its own until its end.
pub fn collect_text(r: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let t = text.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            let mut s = t.lock().expect("lock");
            s.push_str(&line);
            s.push('\n');
        }
    });
    text
}

/// Waits up to `timeout` for `child` to exit; kills it (and reaps it) if it
/// does not, and then says None.
pub fn exit_within(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return Some(st);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
