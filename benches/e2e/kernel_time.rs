//! The headline figure: the kernel time flowlat's classifier adds per
//! handshake in real traffic, beyond an empty classifier attached the same
//! way in the same run. The kernel's per-program run-time statistics
//! (`BPF_ENABLE_STATS`, read from `/proc/PID/fdinfo`) are summed over a storm
//! at a fixed rate, at the clients' end (`out` handshakes) and at the
//! server's (`in`), for each way of running flowlat, the variants of a round
//! in rotating order. The statistics time every run with two clock reads,
//! which both pay; the difference is flowlat's. Unlike `cargo bench`, every
//! packet here is a real one on its way through the stack, with the caches as
//! the stack leaves them.

use std::fmt::Write as _;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use flowlat::bpf::sys;
use flowlat::netlink::{link, tc};

use crate::flowlat::{supports, Flowlat};
use crate::rig::{median, Rig};
use crate::storm::{self, Storm};
use crate::Opts;
use kit::asm;
use kit::json::J;
use kit::net::NetNs;

/// How flowlat is run for a measurement.
pub struct Mode {
    /// The name in the JSON and the tables.
    pub name: &'static str,
    /// What it is, for the table.
    pub what: &'static str,
    pub args: &'static [&'static str],
    /// The option a build must list in `--help` for the mode to run.
    pub needs: Option<&'static str>,
    /// Kernel ns per handshake beyond the empty classifier to stay under.
    pub target_ns: f64,
}

pub const MODES: [Mode; 2] = [
    Mode {
        name: "record",
        what: "a record per handshake (`--json`)",
        args: &["--json"],
        needs: None,
        target_ns: 2000.0,
    },
    Mode {
        name: "aggregate",
        what: "kernel aggregation (`--metrics 127.0.0.1:0 --quiet`)",
        args: &["--metrics", "127.0.0.1:0", "--quiet"],
        needs: Some("--metrics"),
        target_ns: 1000.0,
    },
];

/// A mode run with one build of flowlat.
struct Variant {
    label: String,
    mode: &'static Mode,
    bin: PathBuf,
}

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

/// One measurement: one variant (or the empty classifier) over one storm.
#[derive(Clone, Copy)]
struct Sample {
    /// Kernel ns and classifier runs per handshake.
    ns: f64,
    runs: f64,
    storm: Storm,
    /// flowlat's own CPU time per handshake, µs (None for the empty classifier).
    flowlat_cpu_us: Option<f64>,
    /// Records flowlat counted as lost: when the ring is full the kernel
    /// skips the copy, so the figure would be too low.
    lost: u64,
}

fn storm_sample(rig: &Rig, o: &Opts, read: impl Fn() -> (u64, u64)) -> Sample {
    let waiting = storm::waiting(&rig.net.a, &rig.silent, o.kernel_waiting);
    if !waiting.is_empty() {
        // Their first SYNs pass before the sample starts.
        std::thread::sleep(Duration::from_millis(100));
    }
    let (t0, r0) = read();
    let storm = rig.storm(o.kernel_rate, o.kernel_secs, o.clients);
    std::thread::sleep(Duration::from_millis(200));
    let (t1, r1) = read();
    drop(waiting);
    let n = storm.ok.max(1) as f64;
    Sample {
        ns: (t1 - t0) as f64 / n,
        runs: (r1 - r0) as f64 / n,
        storm,
        flowlat_cpu_us: None,
        lost: 0,
    }
}

fn with_flowlat(rig: &Rig, o: &Opts, ns: &NetNs, iface: &str, v: &Variant) -> Sample {
    let mut args = v.mode.args.to_vec();
    args.push(iface);
    let f = Flowlat::start(ns, &v.bin, &args);
    let pid = f.pid();
    let cpu0 = f.cpu_ns();
    let mut s = storm_sample(rig, o, || run_stats(pid, None));
    let cpu = f.cpu_ns().saturating_sub(cpu0);
    s.flowlat_cpu_us = Some(cpu as f64 / 1000.0 / s.storm.ok.max(1) as f64);
    s.lost = f.stop_with_stderr().0.map_or(0, |summary| summary.lost);
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

fn range(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

fn nums(v: &[f64]) -> J {
    J::Arr(v.iter().map(|&x| J::Num(x.round())).collect())
}

/// The variants to measure: every mode with the bench's own build, then
/// with each `--against` build; modes a build cannot run are skipped with a note.
fn variants(rig: &Rig, o: &Opts, notes: &mut Vec<String>) -> Vec<Variant> {
    let mut bins = vec![(String::new(), rig.bin.clone())];
    bins.extend(
        o.against
            .iter()
            .map(|b| (format!(" ({})", b.display()), b.clone())),
    );
    let mut out = Vec::new();
    for (suffix, bin) in bins {
        for mode in &MODES {
            if let Some(flag) = mode.needs {
                if !supports(&bin, flag) {
                    notes.push(format!(
                        "{}{suffix}: skipped, this build of flowlat has no {flag} yet",
                        mode.name
                    ));
                    continue;
                }
            }
            out.push(Variant {
                label: format!("{}{suffix}", mode.name),
                mode,
                bin: bin.clone(),
            });
        }
    }
    out
}

/// Both ends, every variant, `o.kernel_rounds` rounds. Appends the headline
/// table to `md` and returns the JSON.
pub fn kernel_time(rig: &Rig, o: &Opts, md: &mut String) -> J {
    let _stats = sys::enable_run_time_stats().unwrap_or_else(|e| panic!("{e}"));
    let empty =
        asm::empty_classifier().unwrap_or_else(|e| panic!("load the empty classifier: {e}"));
    let mut notes = Vec::new();
    let vars = variants(rig, o, &mut notes);
    let ends = [("out", &rig.net.a, "a"), ("in", &rig.net.b, "b")];
    let _ = writeln!(
        md,
        "Kernel time flowlat adds per handshake in real traffic, beyond an empty classifier: \
         the kernel's own run-time statistics of the classifiers (`BPF_ENABLE_STATS`) over a \
         storm of {} handshakes/s for {:.0} s per sample, {} client threads; flowlat in each \
         mode and an empty classifier attached in turn at the same hooks of one end, in \
         rotating order, {} rounds. Each connection is reset at once, so each end sees SYN, \
         SYN-ACK, ACK and RST. Δ is the median of the rounds' differences (flowlat − empty, \
         same round), with their range.\n",
        o.kernel_rate, o.kernel_secs, o.clients, o.kernel_rounds
    );
    if o.kernel_waiting > 0 {
        let _ = writeln!(
            md,
            "Beside the storm, {} connections wait for an answer that never comes (opened \
             before each sample, their SYNs dropped beyond the server's end): both ends keep \
             that many attempts in progress, as a host does that makes or answers handshakes \
             with far-away peers (attempts in flight = rate × round trip). Their SYNs' \
             retransmissions, one each a second, are run inside the samples of every variant, \
             the empty classifier's too.\n",
            o.kernel_waiting
        );
    }
    md.push_str(
        "| flowlat at | mode | Δ ns/handshake | range | empty ns | flowlat ns | runs/handshake | \
         flowlat CPU µs/handshake | target |\n|---|---|---:|---|---:|---:|---:|---:|---|\n",
    );
    let mut json = vec![
        ("rate_per_s".to_string(), J::Int(o.kernel_rate.into())),
        ("secs_per_sample".to_string(), J::Num(o.kernel_secs)),
        ("rounds".to_string(), J::Int(o.kernel_rounds as i64)),
        ("clients".to_string(), J::Int(o.clients as i64)),
        (
            "waiting_attempts".to_string(),
            J::Int(o.kernel_waiting as i64),
        ),
    ];
    let mut storms: Vec<Storm> = Vec::new();
    for (dir, ns, iface) in ends {
        // samples[0] is the empty classifier, then one per variant.
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); vars.len() + 1];
        for round in 0..o.kernel_rounds {
            for k in 0..=vars.len() {
                let i = (k + round) % (vars.len() + 1);
                let s = if i == 0 {
                    with_empty(rig, o, ns, iface, &empty)
                } else {
                    with_flowlat(rig, o, ns, iface, &vars[i - 1])
                };
                storms.push(s.storm);
                samples[i].push(s);
            }
        }
        let empty_ns: Vec<f64> = samples[0].iter().map(|s| s.ns).collect();
        let em = median(&empty_ns);
        let mut end_json = vec![("empty_ns".to_string(), nums(&empty_ns))];
        for (v, ss) in vars.iter().zip(&samples[1..]) {
            let f: Vec<f64> = ss.iter().map(|s| s.ns).collect();
            let diffs: Vec<f64> = f.iter().zip(&empty_ns).map(|(a, b)| a - b).collect();
            let (d, (lo, hi)) = (median(&diffs), range(&diffs));
            let runs = median(&ss.iter().map(|s| s.runs).collect::<Vec<_>>());
            let cpu: Vec<f64> = ss.iter().filter_map(|s| s.flowlat_cpu_us).collect();
            let fm = median(&f);
            let lost: u64 = ss.iter().map(|s| s.lost).sum();
            if lost > 0 {
                notes.push(format!(
                    "{}, {dir}: {lost} records lost, so that figure is too low",
                    v.label
                ));
            }
            let target = v.mode.target_ns;
            eprintln!(
                "  kernel time, {dir}, {}: {d:+.0} ns ({lo:+.0} to {hi:+.0}) beyond empty \
                 ({em:.0} ns)",
                v.label
            );
            let _ = writeln!(
                md,
                "| {} (`{dir}`) | {} | **{d:+.0}** | {lo:+.0} to {hi:+.0} | {em:.0} | {fm:.0} | \
                 {runs:.1} | {:.2} | < +{target:.0}: {} |",
                if dir == "out" {
                    "the clients' end"
                } else {
                    "the server's end"
                },
                if v.label == v.mode.name {
                    v.mode.what.to_string()
                } else {
                    v.label.clone()
                },
                median(&cpu),
                if d < target { "met" } else { "**missed**" }
            );
            end_json.push((
                v.label.clone(),
                J::obj(vec![
                    ("diff_ns", J::Num(d.round())),
                    ("diff_min_ns", J::Num(lo.round())),
                    ("diff_max_ns", J::Num(hi.round())),
                    ("diff_rounds_ns", nums(&diffs)),
                    ("flowlat_ns", nums(&f)),
                    ("runs_per_handshake", J::Num((runs * 10.0).round() / 10.0)),
                    ("flowlat_cpu_us_per_handshake", J::Num(median(&cpu))),
                    ("target_ns", J::Num(target)),
                    ("target_met", J::Bool(d < target)),
                    ("records_lost", J::Int(lost as i64)),
                ]),
            ));
        }
        json.push((dir.to_string(), J::Obj(end_json)));
    }
    for n in &notes {
        let _ = writeln!(md, "\n{n}.");
    }
    // What shows that the storm itself is not what limits the rate.
    let rates: Vec<f64> = storms.iter().map(Storm::rate).collect();
    let user: Vec<f64> = storms.iter().map(|s| s.user_cpu_share() * 100.0).collect();
    let cpu: Vec<f64> = storms.iter().map(Storm::cpu_us_per_handshake).collect();
    let ((rlo, rhi), (ulo, uhi)) = (range(&rates), range(&user));
    let _ = writeln!(
        md,
        "\nThe storm made {rlo:.0} to {rhi:.0} handshakes/s in every sample (asked: {}); its \
         client threads spent {ulo:.1} to {uhi:.1}% of one CPU in user space, and {:.1} µs of \
         CPU per handshake in all (median), nearly all of it the kernel's connect and packet \
         path.",
        o.kernel_rate,
        median(&cpu)
    );
    json.push((
        "notes".to_string(),
        J::Arr(notes.into_iter().map(J::Str).collect()),
    ));
    json.push((
        "storm".to_string(),
        J::obj(vec![
            ("handshakes_per_s", nums(&rates)),
            (
                "client_user_cpu_percent",
                J::Arr(user.iter().map(|&x| J::Num(x)).collect()),
            ),
            ("client_cpu_us_per_handshake", J::Num(median(&cpu))),
        ]),
    ));
    J::Obj(json)
}
