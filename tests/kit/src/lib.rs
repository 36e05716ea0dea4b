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
//! - [`probe`]: the embedded classifier under `BPF_PROG_TEST_RUN`;
//! - [`cgroup`]: cgroup v2 and cgroups of a test's own to move this process into;
//! - [`asm`]: hand-assembled classifiers the benches compare flowlat with;
//! - [`report`]: the machine the benches ran on, and where they write reports;
//! - the root check below, and [`run_cmd`].

pub mod asm;
pub mod cgroup;
pub mod icmp;
pub mod json;
pub mod kernel;
pub mod net;
pub mod packet;
pub mod peer;
pub mod probe;
pub mod report;
pub mod router;
pub mod run;

use std::process::{Command, Output};

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
