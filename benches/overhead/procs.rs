//! What naming the process behind each attempt costs: the connect hook on
//! every connect() of the host, measured against the same connects without
//! it in the same run; the classifier's copy at a SYN, against the same SYN
//! with the copy off; and the memory a storm of connects leaves behind.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use flowlat::bpf::link::{Link, BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_INET6_CONNECT};
use flowlat::bpf::map::{Map, MapAttr, Update};
use flowlat::bpf::sys;
use flowlat::probe::{Comm, Hook, Probe, ProbeConfig};
use kit::json::J;

use crate::frames::syn;
use crate::stats::median_f64;

/// Connects per round, timed as one.
const CONNECTS: usize = 2_000;

pub struct ProcsResult {
    /// Median ns per connect() (socket, connect, close) without and with
    /// the hooks, rounds alternating.
    pub connect_without_ns: f64,
    pub connect_with_ns: f64,
    /// The same with an empty program (return 1) on each connect hook in
    /// flowlat's place: what the kernel's call of any cgroup program costs.
    pub connect_empty_ns: f64,
    /// The connect program's own time per run, from the kernel's run-time
    /// statistics, and the empty program's.
    pub hook_run_ns: f64,
    pub empty_run_ns: f64,
    /// The SYN class (a SYN whose socket has a process, through a classifier
    /// that gives it one and tail-calls flowlat's) with the copy off and on.
    pub syn_off_ns: f64,
    pub syn_on_ns: f64,
    /// The kernel's unreclaimable slab and this process's RSS (kB) before
    /// the storms and after each.
    pub slab_kib: Vec<u64>,
    pub rss_kib: Vec<u64>,
}

fn meminfo(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A loopback port nobody listens on: each connect() there is refused at
/// once by the kernel's RST, with no accept queue to fill or TIME_WAIT to
/// leave, so that a round times connect() and the hooks, not a listener
/// that falls behind on a busy machine.
fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free port on loopback");
    l.local_addr().expect("address")
}

/// ns per connect() over `n` connects (socket, connect, close).
fn connects(at: SocketAddr, n: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        assert!(TcpStream::connect(at).is_err(), "{at} has no listener");
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn fdinfo(fd: &impl AsRawFd, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// What is measured inside a network namespace of the bench's own, so that
/// no socket state of the host's (or of an earlier run) gets in the way.
struct Connects {
    without: Vec<f64>,
    with: Vec<f64>,
    empty: Vec<f64>,
    hook_run_ns: f64,
    empty_run_ns: f64,
    slab_kib: Vec<u64>,
    rss_kib: Vec<u64>,
}

/// Storms, each of `STORM` connects and `STORM_PROCESSES` short-lived
/// processes that connect once, hooks on: a million connects in all, and
/// the memory after each storm, to show it flat.
const STORMS: usize = 10;
const STORM: usize = 100_000;
const STORM_PROCESSES: usize = 1_000;

fn connects_in_namespace(progs: Vec<(u32, OwnedFd)>, rounds: usize) -> Connects {
    let own = std::fs::File::open(kit::cgroup::own()).expect("open this process's cgroup");
    let link = |progs: &[(u32, OwnedFd)]| -> Vec<Link> {
        progs
            .iter()
            .map(|(t, p)| {
                Link::create(p.as_fd(), own.as_fd(), *t).unwrap_or_else(|e| panic!("{e}"))
            })
            .collect()
    };
    let link_all = || link(&progs);
    let empties: Vec<(u32, OwnedFd)> = [BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_INET6_CONNECT]
        .into_iter()
        .map(|t| {
            let p = kit::asm::connect_program(t, None)
                .unwrap_or_else(|e| panic!("an empty connect program: {e}"));
            (t, p)
        })
        .collect();
    let at = closed_port();
    connects(at, CONNECTS); // warm up
    let (mut without, mut with, mut empty) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds.max(3) * 3 {
        match i % 3 {
            0 => without.push(connects(at, CONNECTS)),
            1 => {
                let links = link(&empties);
                empty.push(connects(at, CONNECTS));
                drop(links);
            }
            _ => {
                let links = link_all();
                with.push(connects(at, CONNECTS));
                drop(links);
            }
        }
    }
    // A connect program's own time, with the kernel's statistics on: the
    // empty one's is what the statistics themselves read.
    let stats = sys::enable_run_time_stats().expect("run-time statistics");
    let own_run = |progs: &[(u32, OwnedFd)]| {
        let links = link(progs);
        let connect4 = &progs[0].1;
        let (t0, c0) = (
            fdinfo(connect4, "run_time_ns:"),
            fdinfo(connect4, "run_cnt:"),
        );
        connects(at, CONNECTS * 5);
        let (t1, c1) = (
            fdinfo(connect4, "run_time_ns:"),
            fdinfo(connect4, "run_cnt:"),
        );
        drop(links);
        (t1 - t0) as f64 / (c1 - c0).max(1) as f64
    };
    let empty_run_ns = own_run(&empties);
    let hook_run_ns = own_run(&progs);
    drop(stats);
    let links = link_all();
    let pid = std::process::id() as i32;
    let (mut slab_kib, mut rss_kib) = (
        vec![meminfo("SUnreclaim:")],
        vec![kit::kernel::rss_kib(pid)],
    );
    for _ in 0..STORMS {
        connects(at, STORM);
        for _ in 0..STORM_PROCESSES {
            // bash's /dev/tcp connects; refused, it exits with a failure.
            let status = std::process::Command::new("bash")
                .args(["-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{}", at.port())])
                .stderr(std::process::Stdio::null())
                .status()
                .expect("a short-lived process");
            assert!(!status.success(), "{at} has no listener");
        }
        // Closed sockets are freed after an RCU grace period.
        std::thread::sleep(Duration::from_secs(1));
        slab_kib.push(meminfo("SUnreclaim:"));
        rss_kib.push(kit::kernel::rss_kib(pid));
    }
    drop(links);
    Connects {
        without,
        with,
        empty,
        hook_run_ns,
        empty_run_ns,
        slab_kib,
        rss_kib,
    }
}

pub fn measure(rounds: usize, repeat: u32) -> ProcsResult {
    let mut probe = Probe::load(&ProbeConfig::new(65_536)).expect("load flowlat's classifier");
    let progs: Vec<(u32, OwnedFd)> = probe
        .proc_programs()
        .unwrap_or_else(|e| panic!("the process programs: {e}"))
        .each()
        .map(|(t, p)| (t, p.try_clone_to_owned().expect("dup a program fd")))
        .collect();
    let ns = kit::net::NetNs::new("procbench");
    let c = ns.enter(move || connects_in_namespace(progs, rounds));

    // The SYN with the copy off and on.
    let progs = Map::create(
        &MapAttr {
            map_type: 3, // BPF_MAP_TYPE_PROG_ARRAY
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            map_flags: 0,
        },
        "bench_progs",
    )
    .expect("a program array");
    let egress = probe.program(Hook::Egress).as_raw_fd() as u32;
    progs
        .update(&0u32.to_ne_bytes(), &egress.to_ne_bytes(), Update::Any)
        .expect("put the classifier in the program array");
    let namer: OwnedFd = kit::asm::socket_namer(
        probe.conn_procs_map(),
        progs.as_fd(),
        4242,
        Comm::new("bench-client").bytes(),
    )
    .expect("the namer");
    let frame = syn("10.0.0.5", 40100, "93.184.216.34", 3000);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for i in 0..rounds.max(3) * 2 {
        let copy = i % 2 == 1;
        probe.set_process_attribution(copy);
        let r = sys::prog_test_run(namer.as_fd(), &frame, None, repeat).expect("test run");
        if copy { &mut on } else { &mut off }.push(f64::from(r.duration_ns));
    }
    probe.set_process_attribution(false);
    ProcsResult {
        connect_without_ns: median_f64(&c.without),
        connect_with_ns: median_f64(&c.with),
        connect_empty_ns: median_f64(&c.empty),
        hook_run_ns: c.hook_run_ns,
        empty_run_ns: c.empty_run_ns,
        syn_off_ns: median_f64(&off),
        syn_on_ns: median_f64(&on),
        slab_kib: c.slab_kib,
        rss_kib: c.rss_kib,
    }
}

fn kib_list(v: &[u64]) -> String {
    v.iter()
        .map(|k| k.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn table(r: &ProcsResult) -> String {
    format!(
        "\n### Naming processes\n\n\
         | what | without | with | added | target |\n\
         |---|---:|---:|---:|---|\n\
         | connect() on loopback, refused (socket, connect, close; median of rounds, {CONNECTS} each) | {:.0} ns | {:.0} ns | {:+.0} ns | ≤ 150 ns |\n\
         | the same with an empty program on each connect hook instead (the kernel's call of one) | {:.0} ns | {:.0} ns | {:+.0} ns | |\n\
         | the connect hook's own run (kernel run-time statistics; an empty program's: {:.0} ns) | | | {:.0} ns | |\n\
         | SYN whose socket has a process (copy off / on, test run) | {:.0} ns | {:.0} ns | {:+.0} ns | ≤ 20 ns |\n\
         \n{STORMS} storms, each of {STORM} connects and {STORM_PROCESSES} short-lived processes \
         connecting once, hooks on: the kernel's unreclaimable slab before and after each, \
         {} kB; this process's RSS {} kB.\n",
        r.connect_without_ns,
        r.connect_with_ns,
        r.connect_with_ns - r.connect_without_ns,
        r.connect_without_ns,
        r.connect_empty_ns,
        r.connect_empty_ns - r.connect_without_ns,
        r.empty_run_ns,
        r.hook_run_ns,
        r.syn_off_ns,
        r.syn_on_ns,
        r.syn_on_ns - r.syn_off_ns,
        kib_list(&r.slab_kib),
        kib_list(&r.rss_kib),
    )
}

pub fn json(r: &ProcsResult) -> J {
    let ints = |v: &[u64]| J::Arr(v.iter().map(|&k| J::Int(k as i64)).collect());
    J::obj(vec![
        ("connect_without_ns", J::Num(r.connect_without_ns)),
        ("connect_with_ns", J::Num(r.connect_with_ns)),
        ("connect_empty_program_ns", J::Num(r.connect_empty_ns)),
        ("hook_run_ns", J::Num(r.hook_run_ns)),
        ("empty_program_run_ns", J::Num(r.empty_run_ns)),
        ("syn_copy_off_ns", J::Num(r.syn_off_ns)),
        ("syn_copy_on_ns", J::Num(r.syn_on_ns)),
        ("storm_slab_kib", ints(&r.slab_kib)),
        ("storm_rss_kib", ints(&r.rss_kib)),
    ])
}
