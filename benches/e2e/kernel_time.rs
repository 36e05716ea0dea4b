//! The classifier's own time per handshake in real traffic: the kernel's
//! per-program run-time statistics (`BPF_ENABLE_STATS`), read from
//! `/proc/PID/fdinfo`, over a storm at a fixed rate, with flowlat attached and
//! then an empty classifier attached the same way, alternated. The statistics
//! time every run with two clock reads, which both pay; the difference is
//! flowlat's. Unlike `cargo bench`, every packet here is a real one on its way
//! through the stack, with the caches as the stack leaves them.

use std::fmt::Write as _;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use flowlat::bpf::sys;
use flowlat::netlink::{link, tc};

use crate::asm;
use crate::common::NetNs;
use crate::flowlat::Flowlat;
use crate::rig::{median, Rig};
use crate::shared::json::J;
use crate::Opts;

/// Handshakes per second during a measurement: well within what the machine
/// makes, so that each handshake's packets meet an otherwise idle path.
const RATE: u32 = 5_000;

/// The summed `run_time_ns` and `run_cnt` of the BPF programs among `pid`'s fds
/// (`fd` None) or of one fd of this process.
fn run_stats(pid: u32, fd: Option<i32>) -> (u64, u64) {
    let dir = format!("/proc/{pid}/fdinfo");
    let names: Vec<String> = match fd {
        Some(fd) => vec![fd.to_string()],
        None => std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect(),
    };
    let (mut time, mut runs) = (0, 0);
    for name in names {
        let Ok(text) = std::fs::read_to_string(format!("{dir}/{name}")) else {
            continue;
        };
        if !text.contains("prog_id:") {
            continue;
        }
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        time += field("run_time_ns:");
        runs += field("run_cnt:");
    }
    (time, runs)
}

/// One measurement: (kernel ns, classifier runs) per handshake.
struct Sample {
    ns: f64,
    runs: f64,
}

fn storm_sample(rig: &Rig, o: &Opts, read: impl Fn() -> (u64, u64)) -> Sample {
    let (t0, r0) = read();
    let storm = rig.storm(RATE, o.secs.min(3.0), o.clients);
    std::thread::sleep(Duration::from_millis(200));
    let (t1, r1) = read();
    let n = storm.ok.max(1) as f64;
    Sample {
        ns: (t1 - t0) as f64 / n,
        runs: (r1 - r0) as f64 / n,
    }
}

fn with_flowlat(rig: &Rig, o: &Opts, ns: &NetNs, iface: &str) -> Sample {
    let f = Flowlat::start(ns, &rig.bin, &["--json", iface]);
    let pid = f.pid();
    let s = storm_sample(rig, o, || run_stats(pid, None));
    let summary = f.stop();
    assert_eq!(summary.lost, 0, "no record may be lost while measuring");
    s
}

fn with_empty(rig: &Rig, o: &Opts, ns: &NetNs, iface: &str, prog: &OwnedFd) -> Sample {
    let fd = prog.as_raw_fd();
    let dup = || prog.try_clone().expect("dup the program fd");
    let (ingress, egress) = (dup(), dup());
    let name = iface.to_string();
    let att = ns.netlink(move |h| async move {
        let link = link::resolve(&h, &name).await.expect("the interface");
        tc::attach(&h, &link, ingress.as_fd(), egress.as_fd(), "bench-empty")
            .await
            .expect("attach the empty classifier")
    });
    let s = storm_sample(rig, o, || run_stats(std::process::id(), Some(fd)));
    ns.netlink(move |h| async move {
        tc::detach(&h, &att)
            .await
            .expect("detach the empty classifier")
    });
    s
}

/// Both ends: flowlat at the clients' interface (every handshake `out`) and
/// at the server's (`in`). Returns the JSON.
pub fn kernel_time(rig: &Rig, o: &Opts, md: &mut String) -> J {
    let _stats = sys::enable_run_time_stats().unwrap_or_else(|e| panic!("{e}"));
    let empty =
        asm::empty_classifier().unwrap_or_else(|e| panic!("load the empty classifier: {e}"));
    let ends = [("out", &rig.net.a, "a"), ("in", &rig.net.b, "b")];
    let _ = writeln!(
        md,
        "\nKernel time per handshake in real traffic: the kernel's own run-time \
         statistics of the classifiers (`BPF_ENABLE_STATS`), over a storm of {RATE} \
         handshakes/s for {:.0} s, flowlat and an empty classifier attached in turn at the \
         same hooks, {} rounds each (medians); each connection is reset at once, so the \
         client's end sees SYN, SYN-ACK, ACK and RST, and the server's the same. The \
         statistics add two clock reads to every run of either classifier; the \
         difference is flowlat's own time.\n",
        o.secs.min(3.0),
        o.rounds
    );
    md.push_str(
        "| flowlat at | runs per handshake | empty ns/handshake | flowlat ns/handshake | \
         flowlat − empty ns |\n|---|---:|---:|---:|---:|\n",
    );
    let mut json = Vec::new();
    for (dir, ns, iface) in ends {
        let (mut f, mut e, mut runs) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..o.rounds {
            let (a, b) = if round % 2 == 0 {
                let b = with_empty(rig, o, ns, iface, &empty);
                (with_flowlat(rig, o, ns, iface), b)
            } else {
                let a = with_flowlat(rig, o, ns, iface);
                (a, with_empty(rig, o, ns, iface, &empty))
            };
            runs.push(a.runs);
            f.push(a.ns);
            e.push(b.ns);
        }
        let (fm, em) = (median(&f), median(&e));
        let diffs: Vec<f64> = f.iter().zip(&e).map(|(a, b)| a - b).collect();
        let d = median(&diffs);
        eprintln!("  kernel time, {dir}: flowlat {fm:.0} ns, empty {em:.0} ns per handshake");
        let _ = writeln!(
            md,
            "| {} (`{dir}` handshakes) | {:.1} | {em:.0} | {fm:.0} | {d:+.0} |",
            if dir == "out" {
                "the clients' end"
            } else {
                "the server's end"
            },
            median(&runs)
        );
        json.push((
            dir.to_string(),
            J::obj(vec![
                ("flowlat_ns", J::Num(fm.round())),
                ("empty_ns", J::Num(em.round())),
                ("diff_ns", J::Num(d.round())),
                (
                    "runs_per_handshake",
                    J::Num((median(&runs) * 10.0).round() / 10.0),
                ),
            ]),
        ));
    }
    J::Obj(json)
}
