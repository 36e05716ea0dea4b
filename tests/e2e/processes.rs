//! End to end: the process behind each attempt. Named processes of a test's
//! own listen and connect across a veth pair; flowlat at each end must name
//! them, leave the attempts with no local process unnamed, keep exactly the
//! processes `--pid` and `--comm` ask for, leave other programs on the
//! cgroup hooks deciding, and leave nothing on those hooks when it ends.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flowlat::bpf::link::{
    self, Link, QueryScope, BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_INET4_POST_BIND,
    BPF_CGROUP_INET6_CONNECT, BPF_CGROUP_INET6_POST_BIND,
};
use kit::json::Rec;
use kit::net::VethPair;
use kit::procs::{Conn, Named};
use kit::run::{binary, Flowlat};

const WAIT: Duration = Duration::from_secs(10);

/// The record at `f` of the attempt from client port `port`.
fn record_of(f: &Flowlat, port: u16) -> Rec {
    let recs = f.wait_records(1, WAIT, |r| r.n("client_port") == Some(u64::from(port)));
    assert_eq!(recs.len(), 1, "one record for client port {port}: {recs:?}");
    recs.into_iter().next().expect("one")
}

fn assert_named(r: &Rec, pid: u32, comm: &str) {
    assert_eq!(r.n("pid"), Some(u64::from(pid)), "{r:?}");
    assert_eq!(r.opt_s("comm"), Some(comm), "{r:?}");
}

fn assert_unnamed(r: &Rec) {
    assert_eq!(r.n("pid"), None, "{r:?}");
    assert_eq!(r.opt_s("comm"), None, "{r:?}");
}

#[test]
fn both_ends_name_their_processes_and_a_kernel_reset_names_none() {
    let net = VethPair::new("procs");
    // Made before flowlat starts: only a scan of the host can name it. A
    // worker it forked holds the socket too; its maker has the lower pid.
    let early = Named::start(&net.b, "flt-early-lsn", "listen", "0.0.0.0", 8080);
    let at_b = Flowlat::start_net_only(&net.b, &["--json", "b"]);
    let at_a = Flowlat::start_net_only(&net.a, &["--json", "a"]);
    // Made while flowlat runs: its bind is seen.
    let late = Named::start(&net.b, "flt-late-lsn", "listen", "0.0.0.0", 8081);

    let mut threaded = Named::start(&net.a, "flt-threaded", "threads", &net.b4, 8080);
    let mut forking = Named::start(&net.a, "flt-forking", "fork", &net.b4, 8080);
    let mut plain = Named::start(&net.a, "flt-plain", "plain", &net.b4, 8081);
    let mut closed = Named::start(&net.a, "flt-closed", "plain", &net.b4, 9);

    let t = threaded.go();
    assert_eq!(t.len(), 2);
    for c in &t {
        assert_eq!(c.result, "ok");
        // Connected from threads: the process is named, not the thread.
        assert_named(&record_of(&at_a, c.port), threaded.pid, "flt-threaded");
        assert_named(&record_of(&at_b, c.port), early.pid, "flt-early-lsn");
    }
    let f = forking.go();
    assert_eq!(f.len(), 2);
    let child = f
        .iter()
        .find(|c| c.pid != forking.pid)
        .expect("the child's connect");
    let parent = f
        .iter()
        .find(|c| c.pid == forking.pid)
        .expect("the parent's");
    assert_named(&record_of(&at_a, child.port), child.pid, "flt-forking");
    assert_named(&record_of(&at_a, parent.port), forking.pid, "flt-forking");
    assert_named(&record_of(&at_b, child.port), early.pid, "flt-early-lsn");

    let p = plain.go();
    assert_named(&record_of(&at_a, p[0].port), plain.pid, "flt-plain");
    assert_named(&record_of(&at_b, p[0].port), late.pid, "flt-late-lsn");

    // Port 9 has no listener: the server's kernel resets the SYN, from no
    // process; the client's end still has the process that connected.
    let c = closed.go();
    assert_eq!(c[0].result, "errno111");
    let out = record_of(&at_a, c[0].port);
    assert_eq!(out.s("result"), "refused");
    assert_named(&out, closed.pid, "flt-closed");
    let inb = record_of(&at_b, c[0].port);
    assert_eq!(inb.s("result"), "refused");
    assert_unnamed(&inb);

    // Text shows comm[pid].
    let text = Flowlat::start_net_only(&net.a, &["a"]);
    let mut again = Named::start(&net.a, "flt-text", "plain", &net.b4, 8081);
    let a = again.go();
    let end = Instant::now() + WAIT;
    let want = format!(" flt-text[{}] ", again.pid);
    while !text.lines().iter().any(|l| l.contains(&want)) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = text.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!(":{} ", a[0].port)) && l.contains(&want)),
        "{lines:?}"
    );
}

/// Client ports of the records of a stopped flowlat.
fn ports(recs: &[Rec]) -> BTreeSet<u64> {
    recs.iter().filter_map(|r| r.n("client_port")).collect()
}

fn port_set(conns: &[&Conn]) -> BTreeSet<u64> {
    conns.iter().map(|c| u64::from(c.port)).collect()
}

#[test]
fn pid_and_comm_keep_exactly_those_processes_attempts() {
    let net = VethPair::new("procf");
    let early = Named::start(&net.b, "flt-keep-lsn", "listen", "0.0.0.0", 8080);
    let mut keep = Named::start(&net.a, "flt-keep", "plain", &net.b4, 8080);
    let mut by_pid = Named::start(&net.a, "flt-by-pid", "plain", &net.b4, 8082);
    let mut other = Named::start(&net.a, "flt-other", "plain", &net.b4, 8080);
    let pid = by_pid.pid.to_string();
    let at_a = Flowlat::start_net_only(
        &net.a,
        &["--json", "--comm", "flt-keep", "--pid", &pid, "a"],
    );
    let at_b = Flowlat::start_net_only(&net.b, &["--json", "--comm", "flt-keep-lsn", "b"]);
    // Made after flowlat started: the kernel knows it, and drops its attempts.
    let _late = Named::start(&net.b, "flt-drop-lsn", "listen", "0.0.0.0", 8082);

    let (k, p, o) = (keep.go(), by_pid.go(), other.go());
    for c in k.iter().chain(&p).chain(&o) {
        assert_eq!(c.result, "ok", "{c:?}");
    }
    // Everything has ended at both ends well before this.
    std::thread::sleep(Duration::from_millis(500));
    let (a, b) = (at_a.stop(), at_b.stop());
    assert_eq!(
        ports(&a.records),
        port_set(&[&k[0], &p[0]]),
        "{:?}",
        a.records
    );
    for r in &a.records {
        assert_eq!(r.s("dir"), "out");
    }
    // In: to the kept listener only, whoever connected.
    assert_eq!(
        ports(&b.records),
        port_set(&[&k[0], &o[0]]),
        "{:?}",
        b.records
    );
    for r in &b.records {
        assert_named(r, early.pid, "flt-keep-lsn");
    }
    // The one to the listener made later, dropped in the kernel.
    assert!(
        b.stderr.contains("1 attempts dropped by the filters"),
        "{}",
        b.stderr
    );
}

/// The ids of the programs `pid` holds BPF links of (its fds' fdinfo).
fn linked_programs(pid: i32) -> BTreeSet<u32> {
    let mut ids = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for e in dir.filter_map(|e| e.ok()) {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        if !text.lines().any(|l| l.starts_with("link_id:")) {
            continue;
        }
        ids.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|v| v.trim().parse::<u32>().ok()),
        );
    }
    ids
}

fn cgroup_root() -> PathBuf {
    kit::cgroup::mount()
}

/// The programs attached to the cgroup2 root at the hooks flowlat uses.
fn attached_at_root() -> BTreeSet<u32> {
    let root = File::open(cgroup_root()).expect("open the cgroup2 root");
    let mut ids = BTreeSet::new();
    for t in [
        BPF_CGROUP_INET4_CONNECT,
        BPF_CGROUP_INET6_CONNECT,
        BPF_CGROUP_INET4_POST_BIND,
        BPF_CGROUP_INET6_POST_BIND,
    ] {
        let q = link::prog_query(root.as_fd(), t, QueryScope::Attached)
            .unwrap_or_else(|e| panic!("{e}"));
        ids.extend(q.prog_ids);
    }
    ids
}

/// Waits until none of `ids` is attached at the root.
fn wait_detached(ids: &BTreeSet<u32>, after: &str) {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = attached_at_root().intersection(ids).copied().collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < end,
            "after {after}, still attached: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Attaches flowlat at `a` and returns it with the programs it linked to
/// the cgroup root (four: connect and bind, both families).
fn attached_flowlat(net: &VethPair, args: &[&str]) -> (Flowlat, BTreeSet<u32>) {
    let f = Flowlat::start_net_only(&net.a, args);
    let ours = linked_programs(f.pid());
    assert_eq!(ours.len(), 4, "{ours:?}");
    let at_root = attached_at_root();
    assert!(ours.is_subset(&at_root), "{ours:?} not all in {at_root:?}");
    (f, ours)
}

#[test]
fn other_cgroup_programs_still_decide_and_nothing_of_flowlat_stays_attached() {
    // Declared first, dropped last: the processes moved into it are gone by then.
    let tree = kit::cgroup::Tree::new("procs", &["refuse"]);
    let dir = File::open(tree.path("refuse")).expect("open the test cgroup");
    let prog = kit::asm::connect_program(BPF_CGROUP_INET4_CONNECT, Some(8083))
        .unwrap_or_else(|e| panic!("{e}"));
    let _theirs = Link::create(prog.as_fd(), dir.as_fd(), BPF_CGROUP_INET4_CONNECT)
        .unwrap_or_else(|e| panic!("{e}"));
    let net = VethPair::new("procl");
    let _l1 = Named::start(&net.b, "flt-lsn-open", "listen", "0.0.0.0", 8080);
    let _l2 = Named::start(&net.b, "flt-lsn-shut", "listen", "0.0.0.0", 8083);

    let (f, ours) = attached_flowlat(&net, &["--json", "a"]);
    let mut refused = Named::start(&net.a, "flt-refused", "plain", &net.b4, 8083);
    refused.enter_cgroup(&tree.path("refuse"));
    let mut allowed = Named::start(&net.a, "flt-allowed", "plain", &net.b4, 8080);
    allowed.enter_cgroup(&tree.path("refuse"));
    assert_eq!(
        refused.go()[0].result,
        "errno1",
        "the other program still refuses"
    );
    let ok = allowed.go();
    assert_eq!(ok[0].result, "ok");
    assert_named(&record_of(&f, ok[0].port), allowed.pid, "flt-allowed");
    let stopped = f.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    wait_detached(&ours, "SIGINT");

    let (f, ours) = attached_flowlat(&net, &["--json", "a"]);
    drop(f.stop_with(nix::sys::signal::Signal::SIGKILL));
    wait_detached(&ours, "SIGKILL");
    let detach = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", net.a.name))
        .args([binary(), "--detach", "a"])
        .output()
        .expect("run --detach");
    assert!(detach.status.success(), "{detach:?}");
    wait_detached(&ours, "--detach");

    // --no-process attaches nothing to the cgroup, and names no process.
    let f = Flowlat::start_net_only(&net.a, &["--json", "--no-process", "a"]);
    assert!(linked_programs(f.pid()).is_empty());
    let mut plain = Named::start(&net.a, "flt-unnamed", "plain", &net.b4, 8080);
    assert_unnamed(&record_of(&f, plain.go()[0].port));

    // The other program outlived every flowlat, and still decides.
    let mut again = Named::start(&net.a, "flt-refused", "plain", &net.b4, 8083);
    again.enter_cgroup(&tree.path("refuse"));
    assert_eq!(again.go()[0].result, "errno1");
}
