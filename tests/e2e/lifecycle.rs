//! flowlat's life on an interface it shares: other filters before, during and
//! after it; a second flowlat; a flowlat killed with SIGKILL and what the next
//! one does about it; interfaces deleted, renamed or bounced under it; start
//! and stop many times; no privileges. Every test checks what the kernel holds
//! (qdiscs, filters, programs, maps, fds), not only what flowlat says.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::process::{ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use kit::json::Rec;
use kit::kernel::{
    action_packets, add_foreign_filters, assert_bpf_objects_gone, bpf_ids_of, foreign_filters,
    link_packets, no_ipv6, open_fds, our_filters, rss_kib, tc, tc_state,
};
use kit::net::{NetNs, VethPair};
use kit::run::{binary, Flowlat};
use nix::sys::signal::Signal;

/// `n` handshakes from `ns` to `addr:port`; the client ports used.
fn connect_n(ns: &NetNs, addr: &str, port: u16, n: usize) -> Vec<u16> {
    let sa = SocketAddr::new(addr.parse().expect("address"), port);
    ns.enter(move || {
        (0..n)
            .map(|_| {
                let s = TcpStream::connect_timeout(&sa, Duration::from_secs(3)).expect("connect");
                s.local_addr().expect("local address").port()
            })
            .collect()
    })
}

/// `n` SYNs to `addr:port` that nobody answers (the socket gives up after a
/// millisecond, before any retransmission), each from a new port.
fn unanswered_n(ns: &NetNs, addr: &str, port: u16, n: usize) {
    let sa = SocketAddr::new(addr.parse().expect("address"), port);
    ns.enter(move || {
        for _ in 0..n {
            let _ = TcpStream::connect_timeout(&sa, Duration::from_millis(1));
        }
    });
}

/// Client ports of the `ok` records of direction `dir`.
fn ok_ports(recs: &[Rec], dir: &str) -> BTreeSet<u64> {
    recs.iter()
        .filter(|r| r.s("dir") == dir && r.s("result") == "ok")
        .filter_map(|r| r.n("client_port"))
        .collect()
}

/// A flowlat started by hand, killed if a failed assertion leaves it running.
struct Reaped(std::process::Child);

impl Reaped {
    /// Starts `flowlat a` in `ns` with `stdout`, and waits for its first line on
    /// stderr: that it is attached to a. Returns it and the rest of stderr.
    fn start_on_a(ns: &NetNs, stdout: Stdio) -> (Reaped, BufReader<ChildStderr>, String) {
        let mut child = Reaped(
            ns.command(binary())
                .args([kit::run::HOST_VIEW, "a"])
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(Stdio::piped())
                .spawn()
                .expect("start flowlat"),
        );
        let mut err = BufReader::new(child.0.stderr.take().expect("piped"));
        let mut line = String::new();
        err.read_line(&mut line).expect("stderr");
        (child, err, line)
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Adds, on both hooks of `dev`, a u32 filter (IPv4; pref 10 on ingress, 11 on
/// egress, since u32 lists the filters of both hooks that share a priority)
/// and a classic-BPF cls_bpf filter (pref 20, every protocol), each counting
/// the packets it sees with a mirror action (to the veth m0, whose peer drops
/// what it gets) and then letting them go on (`continue`).
fn add_counting_filters(ns: &NetNs, dev: &str) {
    ns.ip(&["link", "add", "m0", "type", "veth", "peer", "name", "m1"]);
    for m in ["m0", "m1"] {
        no_ipv6(ns, m);
        ns.ip(&["link", "set", "dev", m, "up"]);
    }
    tc(ns, &["qdisc", "add", "dev", dev, "clsact"]);
    let mirror: &[&str] = &[
        "action", "mirred", "egress", "mirror", "dev", "m0", "continue",
    ];
    for (hook, u32_pref) in [("ingress", "10"), ("egress", "11")] {
        add_foreign_filters(ns, dev, hook, (u32_pref, mirror), ("20", mirror));
    }
}

/// Sends `n` handshakes from a to b and checks that each counting filter on
/// b saw exactly the packets b received (ingress) or sent (egress).
fn assert_foreign_filters_see_every_packet(net: &VethPair, port: u16, n: usize, when: &str) {
    // received, sent, ingress u32, ingress cls_bpf, egress u32, egress cls_bpf
    let counts = || -> [u64; 6] {
        let (rx, tx) = link_packets(&net.b, "b");
        let c = |hook, pref| action_packets(&net.b, "b", hook, pref);
        [
            rx,
            tx,
            c("ingress", 10),
            c("ingress", 20),
            c("egress", 11),
            c("egress", 20),
        ]
    };
    let before = counts();
    connect_n(&net.a, &net.b4, port, n);
    // Let the closing FINs and ACKs pass too.
    std::thread::sleep(Duration::from_millis(300));
    let after = counts();
    let d: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let (rx, tx) = (d[0], d[1]);
    assert!(
        rx >= 2 * n as u64 && tx >= 2 * n as u64,
        "{when}: only {rx} packets in and {tx} out for {n} handshakes"
    );
    assert_eq!(
        &d[2..],
        &[rx, rx, tx, tx],
        "{when}: packets counted by ingress u32, ingress cls_bpf, egress u32, egress cls_bpf \
         against those received and sent"
    );
}

#[test]
fn foreign_filters_keep_their_place_and_see_every_packet() {
    const N: usize = 20;
    let net = VethPair::new("coex");
    // Silence everything but the test's own packets, so counters can be compared.
    no_ipv6(&net.a, "a");
    no_ipv6(&net.b, "b");
    let (amac, bmac) = (
        kit::net::mac_text(net.a.mac("a")),
        kit::net::mac_text(net.b.mac("b")),
    );
    net.a.neigh_permanent(&net.b4, &bmac, "a");
    net.b.neigh_permanent(&net.a4, &amac, "b");
    add_counting_filters(&net.b, "b");
    let _l = kit::net::listen(&net.b, &net.b4, 8090);
    let before = tc_state(&net.b, "b");
    let order = |ns: &NetNs| {
        (
            foreign_filters(ns, "b", "ingress"),
            foreign_filters(ns, "b", "egress"),
        )
    };
    let foreign = order(&net.b);
    assert_foreign_filters_see_every_packet(&net, 8090, N, "before flowlat");

    let f = Flowlat::start(&net.b, &["--json", "b"]);
    let ours = our_filters(&net.b, "b");
    assert_eq!(ours.len(), 2, "{ours:?}");
    assert!(
        ours.iter()
            .all(|o| o.pref < if o.hook == "ingress" { 10 } else { 11 }),
        "flowlat goes ahead of the others: {ours:?}"
    );
    assert_eq!(order(&net.b), foreign, "the other filters, in their order");
    assert_foreign_filters_see_every_packet(&net, 8090, N, "while flowlat runs");
    let recs = f.wait_records(N, Duration::from_secs(5), |r| r.s("result") == "ok");
    assert_eq!(
        recs.len(),
        N,
        "flowlat measured them all too: {:?}",
        f.lines()
    );
    kit::run::assert_clean_stop(&f.stop_with(Signal::SIGTERM));

    assert_eq!(tc_state(&net.b, "b"), before);
    assert_foreign_filters_see_every_packet(&net, 8090, N, "after flowlat");
}

#[test]
fn two_flowlats_both_measure_and_each_removes_only_its_own() {
    let net = VethPair::new("two");
    let fresh = tc_state(&net.a, "a");
    let _l = kit::net::listen(&net.b, &net.b4, 8091);
    let first = Flowlat::start(&net.a, &["--json", "a"]);
    let second = Flowlat::start(&net.a, &["--json", "a"]);
    assert!(
        !second.stderr().contains("removed"),
        "a running flowlat's filters are not leftovers: {}",
        second.stderr()
    );
    let filters = our_filters(&net.a, "a");
    assert_eq!(filters.len(), 4, "{filters:?}");
    let pids: BTreeSet<i32> = filters.iter().map(|f| f.pid().unwrap_or(0)).collect();
    assert_eq!(pids, BTreeSet::from([first.pid(), second.pid()]));

    let ports: BTreeSet<u64> = connect_n(&net.a, &net.b4, 8091, 3)
        .into_iter()
        .map(u64::from)
        .collect();
    let seen1 = first.wait_records(3, Duration::from_secs(5), |r| r.s("result") == "ok");
    let seen2 = second.wait_records(3, Duration::from_secs(5), |r| r.s("result") == "ok");
    assert_eq!(ok_ports(&seen1, "out"), ports);
    assert_eq!(ok_ports(&seen2, "out"), ports);

    // The one that created the clsact goes first; the other keeps measuring.
    let first_pid = first.pid();
    kit::run::assert_clean_stop(&first.stop());
    let left = our_filters(&net.a, "a");
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.iter().all(|f| f.pid() == Some(second.pid())),
        "{left:?}"
    );
    assert!(!left.iter().any(|f| f.pid() == Some(first_pid)));
    let port = connect_n(&net.a, &net.b4, 8091, 1)[0];
    record_of(&second, port);
    kit::run::assert_clean_stop(&second.stop());
    // The last one out removes the clsact the first one made.
    assert_eq!(tc_state(&net.a, "a"), fresh);
}

#[test]
fn a_killed_flowlat_leaves_filters_that_the_next_start_removes() {
    let net = VethPair::new("kill");
    let fresh = tc_state(&net.a, "a");
    let _l = kit::net::listen(&net.b, &net.b4, 8092);
    let dead = Flowlat::start(&net.a, &["--json", "a"]);
    let dead_pid = dead.pid();
    let (progs, maps) = bpf_ids_of(dead_pid);
    // An Ethernet interface: the two Ethernet programs, not the L3 pair;
    // and the four cgroup programs that name processes.
    assert_eq!((progs.len(), maps.len()), (6, 12), "{progs:?} {maps:?}");
    let stopped = dead.stop_with(Signal::SIGKILL);
    assert!(!stopped.status.success());

    // SIGKILL gives no chance to clean up: the filters stay, running the programs.
    let left = our_filters(&net.a, "a");
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|f| f.pid() == Some(dead_pid)), "{left:?}");
    // Two of its four programs (the Ethernet pair) run in the filters.
    let running: BTreeSet<u32> = left.iter().map(|f| f.prog_id).collect();
    assert!(
        running.len() == 2 && running.is_subset(&progs),
        "{running:?} {progs:?}"
    );

    let next = Flowlat::start(&net.a, &["--json", "a"]);
    let said: Vec<String> = next
        .stderr()
        .lines()
        .filter(|l| l.contains("removed"))
        .map(str::to_string)
        .collect();
    assert_eq!(said.len(), 1, "one line says what was removed: {said:?}");
    assert!(
        said[0].contains(&format!("2 filters of flowlat pid {dead_pid}"))
            && said[0].contains("on a")
            && said[0].contains("no longer running"),
        "{}",
        said[0]
    );
    let now = our_filters(&net.a, "a");
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now.iter().all(|f| f.pid() == Some(next.pid())), "{now:?}");
    // With the filters gone nothing holds the dead one's programs and maps.
    assert_bpf_objects_gone(&progs, &maps, Duration::from_secs(10));

    let port = connect_n(&net.a, &net.b4, 8092, 1)[0];
    record_of(&next, port);
    kit::run::assert_clean_stop(&next.stop());
    assert_eq!(tc_state(&net.a, "a"), fresh);
}

/// Attaches, from this test process, filters named `names` to both hooks of
/// `dev` in `ns` (a do-nothing program), as if another process had.
fn plant_filters(ns: &NetNs, dev: &'static str, names: Vec<String>) {
    use flowlat::bpf::insn::{Insn, BPF_EXIT};
    use flowlat::bpf::sys::{prog_load, BPF_PROG_TYPE_SCHED_CLS};
    use flowlat::netlink::{link, tc};
    // r0 = -1 (TC_ACT_UNSPEC); exit
    const PROG: [Insn; 2] = [
        Insn::new(0xb7, 0, 0, 0, -1),
        Insn::new(BPF_EXIT, 0, 0, 0, 0),
    ];
    ns.enter(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let handle = link::connect().expect("netlink");
            let l = link::resolve(&handle, dev).await.expect("resolve");
            for name in names {
                let prog =
                    prog_load(BPF_PROG_TYPE_SCHED_CLS, &PROG, "GPL", "flt_planted").expect("load");
                tc::attach(&handle, &l, prog.as_fd(), prog.as_fd(), &name)
                    .await
                    .expect("attach");
            }
        })
    });
}

#[test]
fn detach_removes_what_dead_flowlats_left_and_nothing_else() {
    let net = VethPair::new("detach");
    let _l = kit::net::listen(&net.b, &net.b4, 8093);
    let live = Flowlat::start(&net.a, &["--json", "a"]);
    let dead = Flowlat::start(&net.a, &["--json", "a"]);
    let dead_pid = dead.pid();
    dead.stop_with(Signal::SIGKILL);
    // This test process, named correctly (alive), and as a process that held
    // our PID before us (another start time: gone); and a name that is not
    // flowlat's form at all.
    let me = flowlat::host::owner::Owner::current().expect("/proc/self");
    let reused = flowlat::host::owner::Owner {
        start: me.start + 1,
        ..me
    };
    plant_filters(
        &net.a,
        "a",
        vec![
            me.filter_name(false),
            reused.filter_name(false),
            "flowlat-not-ours".to_string(),
        ],
    );
    let before = our_filters(&net.a, "a");
    assert_eq!(before.len(), 2 + 2 + 2 + 2 + 2, "{before:?}");

    let out = Command::new("ip")
        .args(["netns", "exec", &net.a.name, binary(), "--detach", "a"])
        .output()
        .expect("run --detach");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let two_pids = |x: i32, y: i32| format!("pids {}, {}", x.min(y), x.max(y));
    let me_pid = me.pid as i32;
    let removed = format!(
        "removed what flowlat processes no longer running left behind: 4 filters of flowlat {}",
        two_pids(dead_pid, me_pid)
    );
    let kept = format!(
        "kept 4 filters of flowlat {}, which are still running",
        two_pids(live.pid(), me_pid)
    );
    assert!(err.contains(&removed), "{err}");
    assert!(err.contains(&kept), "{err}");

    let after = our_filters(&net.a, "a");
    let names: BTreeSet<&str> = after.iter().map(|f| f.name.as_str()).collect();
    let expected: BTreeSet<String> = before
        .iter()
        .filter(|f| f.pid().unwrap_or(0) != dead_pid && f.name != reused.filter_name(false))
        .map(|f| f.name.clone())
        .collect();
    assert_eq!(
        names,
        expected.iter().map(String::as_str).collect(),
        "only the dead ones went"
    );
    assert_eq!(after.len(), 6, "{after:?}");

    // The live flowlat still measures.
    let port = connect_n(&net.a, &net.b4, 8093, 1)[0];
    record_of(&live, port);
    kit::run::assert_clean_stop(&live.stop());

    // Nothing left by a dead flowlat: says so, exits 0; no such interface: 1.
    let run = |args: &[&str]| {
        let out = net.a.command(binary()).args(args).output().expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--detach", "a"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("nothing was left"), "{err}");
    let (code, err) = run(&["--detach", "nosuch0"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("nosuch0"), "{err}");
}

/// Adds the veth pair c–d between the namespaces of `net`, 192.168.77.1/24
/// on c, .2 on d (namespaces do not share addresses, so no test can clash).
fn second_pair(net: &VethPair) {
    net.a.ip(&[
        "link",
        "add",
        "c",
        "type",
        "veth",
        "peer",
        "name",
        "d",
        "netns",
        &net.b.name,
    ]);
    net.a.ip(&["addr", "add", "192.168.77.1/24", "dev", "c"]);
    net.b.ip(&["addr", "add", "192.168.77.2/24", "dev", "d"]);
    net.a.ip(&["link", "set", "dev", "c", "up"]);
    net.b.ip(&["link", "set", "dev", "d", "up"]);
}

/// Waits for the record of the handshake from client port `port`.
fn record_of(f: &Flowlat, port: u16) -> Rec {
    let recs = f.wait_records(1, Duration::from_secs(5), |r| {
        r.n("client_port") == Some(u64::from(port))
    });
    assert_eq!(recs.len(), 1, "no record for port {port}: {:?}", f.lines());
    recs[0].clone()
}

#[test]
fn interfaces_bounced_renamed_and_deleted_under_flowlat() {
    let net = VethPair::new("links");
    second_pair(&net);
    let _l = kit::net::listen(&net.b, &net.b4, 8094);
    let mut f = Flowlat::start(&net.a, &["--json", "a", "c"]);
    let stderr = f.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("attached to"))
        .expect("a startup line");
    assert!(
        line.starts_with("flowlat: attached to a, c (ingress and egress)"),
        "{line}"
    );
    let (progs, maps) = bpf_ids_of(f.pid());

    // Down and up: reported, and the filters stay and measure.
    net.a.ip(&["link", "set", "dev", "a", "down"]);
    f.wait_stderr("a is down", Duration::from_secs(5));
    net.a.ip(&["link", "set", "dev", "a", "up"]);
    f.wait_stderr("a is up again", Duration::from_secs(5));
    assert_eq!(our_filters(&net.a, "a").len(), 2);
    let port = connect_n(&net.a, &net.b4, 8094, 1)[0];
    assert_eq!(record_of(&f, port).s("iface"), "a");

    // Renamed: reported, and records carry the new name.
    net.a.ip(&["link", "set", "dev", "a", "name", "ren0"]);
    f.wait_stderr("a was renamed to ren0", Duration::from_secs(5));
    assert_eq!(our_filters(&net.a, "ren0").len(), 2);
    let port = connect_n(&net.a, &net.b4, 8094, 1)[0];
    assert_eq!(record_of(&f, port).s("iface"), "ren0");

    // One of two deleted: reported; the other is still measured.
    net.a.ip(&["link", "del", "dev", "c"]);
    f.wait_stderr("c is gone", Duration::from_secs(5));
    assert!(
        f.stderr().contains("still measuring ren0"),
        "{}",
        f.stderr()
    );
    assert!(f.running(), "{}", f.stderr());
    let port = connect_n(&net.a, &net.b4, 8094, 1)[0];
    assert_eq!(record_of(&f, port).s("iface"), "ren0");

    // The last one deleted: a failure, after the usual summary.
    net.a.ip(&["link", "del", "dev", "ren0"]);
    let stopped = f.wait_exit(Duration::from_secs(10));
    assert_eq!(stopped.status.code(), Some(1), "{}", stopped.stderr);
    assert!(
        stopped
            .stderr
            .contains("no interface is left to measure (ren0 gone); 3 handshakes: 3 ok"),
        "{}",
        stopped.stderr
    );
    assert!(!stopped.stderr.contains("panicked"), "{}", stopped.stderr);
    assert!(!tc(&net.a, &["qdisc", "show"]).contains("clsact"));
    assert_bpf_objects_gone(&progs, &maps, Duration::from_secs(10));
}

#[test]
fn fifty_starts_and_stops_leave_nothing_in_the_kernel() {
    use std::io::Read;
    let net = VethPair::new("cycles");
    let fresh = tc_state(&net.a, "a");
    let (mut progs, mut maps) = (BTreeSet::new(), BTreeSet::new());
    for cycle in 0..50 {
        let (mut child, mut err, line) = Reaped::start_on_a(&net.a, Stdio::null());
        assert!(line.contains("attached to a"), "cycle {cycle}: {line}");
        let pid = child.0.id() as i32;
        let (p, m) = bpf_ids_of(pid);
        assert_eq!((p.len(), m.len()), (6, 12), "cycle {cycle}: {p:?} {m:?}");
        if cycle == 0 {
            // They are flowlat's, under the names bpftool shows; the table
            // of attempts is the one this kernel runs.
            let table_map = format!("flowlat_{}", flowlat::probe::Table::best().map_name());
            let named = |what: &str, ids: &BTreeSet<u32>| -> BTreeSet<String> {
                kit::kernel::bpftool_ids(what)
                    .into_iter()
                    .filter(|(id, _)| ids.contains(id))
                    .map(|(_, name)| name)
                    .collect()
            };
            // The kernel keeps 15 bytes of a name: both connect hooks are
            // flowlat_connect.
            assert_eq!(
                named("prog", &p),
                BTreeSet::from([
                    "flowlat_ingress".into(),
                    "flowlat_egress".into(),
                    "flowlat_connect".into(),
                    "flowlat_bind4".into(),
                    "flowlat_bind6".into()
                ])
            );
            assert_eq!(
                named("map", &m),
                BTreeSet::from([
                    table_map,
                    "flowlat_events".into(),
                    "flowlat_stats".into(),
                    "flowlat_globals".into(),
                    "flowlat_nets".into(),
                    "flowlat_agg".into(),
                    "flowlat_agg_cpu".into(),
                    "flowlat_fails".into(),
                    "flowlat_batches".into(),
                    "flowlat_conn_pr".into(),
                    "flowlat_procs".into(),
                    "flowlat_scratch".into()
                ])
            );
        }
        assert_eq!(our_filters(&net.a, "a").len(), 2, "cycle {cycle}");
        progs.extend(p);
        maps.extend(m);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGINT).expect("kill");
        let status = child.0.wait().expect("wait");
        let mut rest = String::new();
        let _ = err.read_to_string(&mut rest);
        assert!(status.success(), "cycle {cycle}: {status:?} {rest}");
        assert_eq!(tc_state(&net.a, "a"), fresh, "cycle {cycle}");
    }
    assert_eq!((progs.len(), maps.len()), (300, 600));
    assert_bpf_objects_gone(&progs, &maps, Duration::from_secs(10));
}

#[test]
fn a_long_run_keeps_its_fds_and_memory_flat() {
    let net = VethPair::new("flat");
    let _l = kit::net::listen(&net.b, &net.b4, 8095);
    let hole = net.unowned_beyond_b(false, 0x77);
    let f = Flowlat::start(&net.a, &["--json", "--syn-timeout", "200ms", "a"]);
    let pid = f.pid();
    let mut expected = 0;
    let mut round = |ok: usize, unanswered: usize| {
        connect_n(&net.a, &net.b4, 8095, ok);
        unanswered_n(&net.a, &hole, 81, unanswered);
        expected += ok + unanswered;
        let got = f.wait_records(expected, Duration::from_secs(20), |_| true);
        assert_eq!(got.len(), expected, "{}", f.stderr());
        (open_fds(pid), rss_kib(pid))
    };
    let (fds0, rss0) = round(500, 200);
    let (fds1, rss1) = round(3000, 1000);
    assert_eq!(
        fds1, fds0,
        "open fds after a warm-up and after 4000 more attempts"
    );
    // The perf rings (64 pages per CPU) become resident page by page as the
    // kernel first writes them, which is growth up to a bound, not a leak.
    let cpus = u64::from(flowlat::bpf::cpu::possible_cpus().expect("possible CPUs"));
    let rings_kib = 64 * 4 * cpus;
    assert!(
        rss1 <= rss0 + 1024 + rings_kib,
        "memory grew from {rss0} KiB to {rss1} KiB over 4000 attempts"
    );
    let stopped = f.stop();
    kit::run::assert_clean_stop(&stopped);
    // One record per attempt. A SYN the busy listener dropped is retried
    // only after a second, so it may fairly end as a timeout of 200 ms.
    assert_eq!(stopped.records.len(), 4700, "{}", stopped.stderr);
    let n = |server: &str, result: &str| {
        stopped
            .records
            .iter()
            .filter(|r| r.s("server_ip") == server && r.s("result") == result)
            .count()
    };
    // The kernel may give a new unanswered attempt the port of one it just
    // gave up on (with a new ISN) before that one timed out: the contract
    // then reports the earlier one as abandoned.
    assert_eq!(
        n(&hole, "timeout") + n(&hole, "abandoned"),
        1200,
        "{}",
        stopped.stderr
    );
    assert!(n(&net.b4, "ok") >= 3400, "{}", stopped.stderr);
}

/// Runs `flowlat a` in `ns` as user 65534 with only the capabilities `caps`
/// (setpriv syntax, e.g. `+bpf,+perfmon`; empty for none).
fn as_nobody(ns: &NetNs, caps: &str) -> Command {
    let mut cmd = ns.command("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &format!(
            "--inh-caps=-all{}{caps}",
            if caps.is_empty() { "" } else { "," }
        ),
    ]);
    if !caps.is_empty() {
        cmd.arg(format!("--ambient-caps={caps}"));
    }
    cmd.args([binary(), kit::run::HOST_VIEW, "--json", "a"]);
    cmd
}

#[test]
fn without_privileges_the_error_names_what_is_missing_and_nothing_is_attached() {
    let net = VethPair::new("priv");
    let fresh = tc_state(&net.a, "a");
    let setting = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
        .expect("kernel.unprivileged_bpf_disabled")
        .trim()
        .to_string();
    for (caps, missing, not_missing) in [
        ("", "capabilities CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON", ""),
        (
            "+net_admin,+perfmon",
            "capability CAP_BPF (",
            "CAP_NET_ADMIN",
        ),
        ("+bpf,+perfmon", "capability CAP_NET_ADMIN;", "CAP_BPF"),
        (
            "+bpf,+net_admin",
            "capability CAP_PERFMON;",
            "CAP_NET_ADMIN",
        ),
    ] {
        let out = as_nobody(&net.a, caps).output().expect("run setpriv");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "with {caps:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "with {caps:?}: {err}");
        assert!(err.contains(missing), "with {caps:?}: {err}");
        if !not_missing.is_empty() {
            assert!(!err.contains(not_missing), "with {caps:?}: {err}");
        }
        if missing.contains("CAP_BPF") && setting != "0" {
            assert!(
                err.contains(&format!("kernel.unprivileged_bpf_disabled={setting}")),
                "with {caps:?}: {err}"
            );
        }
        assert_eq!(tc_state(&net.a, "a"), fresh, "with {caps:?}");
    }
    // The three named are enough: no root needed.
    let f = Flowlat::spawn(as_nobody(&net.a, "+bpf,+net_admin,+perfmon"));
    f.wait_stderr("attached to a", Duration::from_secs(20));
    assert_eq!(our_filters(&net.a, "a").len(), 2);
    kit::run::assert_clean_stop(&f.stop());
    assert_eq!(tc_state(&net.a, "a"), fresh);
}

#[test]
fn in_a_user_namespace_the_error_says_its_capabilities_do_not_count() {
    kit::require_root();
    // A user namespace with its own network namespace: full capabilities there,
    // none for bpf(). unshare removes both when the shell exits.
    let script = format!("{} lo; echo \"exit $?\"; tc qdisc show dev lo", binary());
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "sh", "-c", &script])
        .output()
        .expect("run unshare");
    let err = String::from_utf8_lossy(&out.stderr);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("exit 1"), "{said} {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("user namespace") && err.contains("initial user namespace"),
        "{err}"
    );
    assert!(!said.contains("clsact"), "nothing attached: {said}");
}

#[test]
fn a_failure_on_the_second_interface_undoes_the_first() {
    let net = VethPair::new("order");
    second_pair(&net);
    // An `ingress` qdisc with a filter on c: it holds the slot clsact needs.
    tc(&net.a, &["qdisc", "add", "dev", "c", "ingress"]);
    tc(
        &net.a,
        &[
            "filter", "add", "dev", "c", "parent", "ffff:", "pref", "5", "protocol", "ip", "u32",
            "match", "u32", "0", "0", "flowid", "1:1",
        ],
    );
    let c_state = || {
        tc(&net.a, &["qdisc", "show", "dev", "c"])
            + &tc(&net.a, &["filter", "show", "dev", "c", "parent", "ffff:"])
    };
    let (fresh_a, before_c) = (tc_state(&net.a, "a"), c_state());
    let out = net
        .a
        .command(binary())
        .args(["a", "c"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot attach to c") && err.contains("`ingress` qdisc"),
        "{err}"
    );
    assert_eq!(tc_state(&net.a, "a"), fresh_a, "a is as it was");
    assert_eq!(c_state(), before_c, "c is as it was");
}

#[test]
fn a_runtime_error_after_attaching_still_detaches() {
    use std::io::Read;
    let net = VethPair::new("full");
    let fresh = tc_state(&net.a, "a");
    let _l = kit::net::listen(&net.b, &net.b4, 8096);
    // Every write to /dev/full fails with ENOSPC: a runtime error, not a closed pipe.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let (mut child, mut err, line) = Reaped::start_on_a(&net.a, Stdio::from(full));
    assert!(line.contains("attached to a"), "{line}");
    assert_eq!(our_filters(&net.a, "a").len(), 2);
    connect_n(&net.a, &net.b4, 8096, 1);
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.0.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > end {
            panic!("flowlat kept running though it cannot write");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    let _ = err.read_to_string(&mut rest);
    assert_eq!(status.code(), Some(1), "{rest}");
    assert!(rest.contains("cannot write to stdout"), "{rest}");
    assert_eq!(tc_state(&net.a, "a"), fresh);
}
