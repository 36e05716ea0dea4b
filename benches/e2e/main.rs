//! The end-to-end benchmark, run by `scripts/bench-e2e.sh` (as root; not part
//! of `cargo bench` or of the tests): flowlat on a veth between two
//! namespaces. First the headline, the kernel time its classifier adds per
//! handshake in real traffic beyond an empty classifier, at both ends and in
//! each mode; then a ramp of handshake storms, bulk TCP throughput with and
//! without it, and its start-up time. Prints markdown tables and writes
//! `target/flowlat-e2e.json`.
//!
//! Runs only when given `--run` (the script passes it), so that a plain
//! `cargo bench` skips it. Other options: `--quick`, `--only
//! kernel,startup,ramp,daemon,capacity,rings,bulk,node` (sections to run), `--secs N`
//! (per storm step), `--rates 2000,5000,...` (0 = flat out), `--clients N`,
//! `--static PATH`, `--pods N` (the container-node section), `--kernel-rounds N`, `--kernel-secs N`, `--kernel-rate N`,
//! `--kernel-waiting N` (attempts kept waiting for an answer beside the storm),
//! `--against PATH` (another flowlat build measured beside this one in the
//! kernel-time section, repeatable), and `--profile FILE` with
//! `--profile-end`, `--profile-mode`, `--profile-secs` (see `profile.rs`).

mod flowlat;
mod iperf;
mod kernel_time;
mod node;
mod profile;
mod rig;
mod sections;
mod storm;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kit::json::J;
use kit::net::VethPair;
use rig::{Rig, Step};
use sections::{BULK_TARGET, RSS_TARGET, STARTUP_TARGET_MS};

/// The sections, in the order they run.
const SECTIONS: [&str; 8] = [
    "kernel", "startup", "ramp", "daemon", "capacity", "rings", "bulk", "node",
];

struct Opts {
    only: Vec<String>,
    secs: f64,
    rates: Vec<u32>,
    clients: usize,
    rounds: usize,
    bulk_rounds: usize,
    startups: usize,
    iperf_secs: u32,
    ring_pages: Vec<u32>,
    static_bin: Option<PathBuf>,
    kernel_rounds: usize,
    kernel_secs: f64,
    kernel_rate: u32,
    kernel_waiting: usize,
    against: Vec<PathBuf>,
    profile: Option<profile::Opts>,
    /// Pods of the container-node section.
    pods: usize,
}

impl Opts {
    fn runs(&self, section: &str) -> bool {
        self.only.iter().any(|s| s == section)
    }
}

fn parse_opts() -> Opts {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let default_static =
        manifest.join("target/static-musl/x86_64-unknown-linux-musl/release/flowlat");
    let mut o = Opts {
        only: SECTIONS.iter().map(|s| s.to_string()).collect(),
        secs: 5.0,
        rates: vec![2_000, 5_000, 10_000, 15_000, 20_000, 30_000, 0],
        clients: 4,
        rounds: 3,
        bulk_rounds: 9,
        startups: 15,
        iperf_secs: 2,
        ring_pages: vec![1, 4, 16],
        static_bin: default_static.exists().then_some(default_static),
        kernel_rounds: 5,
        kernel_secs: 2.0,
        kernel_rate: 5_000,
        kernel_waiting: 0,
        against: Vec::new(),
        profile: None,
        pods: 200,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} takes a value"));
        match a.as_str() {
            "--quick" => {
                o.secs = 2.0;
                o.rates = vec![5_000, 0];
                o.rounds = 1;
                o.bulk_rounds = 3;
                o.startups = 5;
                o.iperf_secs = 2;
                o.ring_pages = vec![1];
                o.kernel_rounds = 3;
                o.kernel_secs = 1.0;
            }
            "--only" => {
                o.only = val().split(',').map(|s| s.trim().to_string()).collect();
                if let Some(bad) = o.only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                    panic!(
                        "--only: no section {bad}; the sections: {}",
                        SECTIONS.join(",")
                    );
                }
            }
            "--kernel-rounds" => {
                o.kernel_rounds = val().parse().expect("--kernel-rounds takes a number")
            }
            "--kernel-secs" => o.kernel_secs = val().parse().expect("--kernel-secs takes seconds"),
            "--kernel-rate" => {
                o.kernel_rate = val().parse().expect("--kernel-rate takes handshakes/s")
            }
            "--kernel-waiting" => {
                o.kernel_waiting = val().parse().expect("--kernel-waiting takes a number")
            }
            "--against" => o.against.push(PathBuf::from(val())),
            "--profile" => {
                o.profile.get_or_insert_with(profile::Opts::default).data = PathBuf::from(val())
            }
            "--profile-end" => o.profile.get_or_insert_with(profile::Opts::default).end = val(),
            "--profile-mode" => o.profile.get_or_insert_with(profile::Opts::default).mode = val(),
            "--profile-secs" => {
                o.profile.get_or_insert_with(profile::Opts::default).secs =
                    val().parse().expect("--profile-secs takes seconds")
            }
            "--secs" => o.secs = val().parse().expect("--secs takes seconds"),
            "--rates" => {
                o.rates = val()
                    .split(',')
                    .map(|r| r.trim().parse().expect("--rates takes numbers"))
                    .collect()
            }
            "--clients" => o.clients = val().parse().expect("--clients takes a number"),
            "--pods" => o.pods = val().parse().expect("--pods takes a number"),
            "--static" => o.static_bin = Some(PathBuf::from(val())),
            // `cargo bench` adds --bench.
            _ => {}
        }
    }
    o
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    if !std::env::args().any(|a| a == "--run") {
        eprintln!(
            "end-to-end bench skipped: scripts/bench-e2e.sh runs it (as root, about 5 minutes)"
        );
        return;
    }
    kit::exit_unless_root(
        "the end-to-end bench makes namespaces and attaches filters and needs root: \
         run scripts/bench-e2e.sh, which uses sudo when it is not root",
    );
    let o = parse_opts();
    let machine = kit::report::machine();
    let load_before = loadavg();
    eprintln!("flowlat end-to-end bench on {machine} (load average {load_before})");
    let net = VethPair::new("e2e");
    let server = SocketAddr::new(net.b4.parse().expect("address"), 8080);
    storm::serve(&net.b, server, 2);
    let silent = (200..216)
        .map(|last| {
            SocketAddr::new(
                net.unowned_beyond_b(false, last).parse().expect("address"),
                9,
            )
        })
        .collect();
    let rig = Rig {
        server,
        silent,
        bin: PathBuf::from(env!("CARGO_BIN_EXE_flowlat")),
        net,
    };

    if let Some(p) = &o.profile {
        profile::profile(&rig, &o, p);
        return;
    }

    let mut md = String::new();
    let mut report = vec![
        ("machine", J::Str(machine.clone())),
        ("load_average_before", J::Str(load_before.clone())),
    ];
    let mut targets = Vec::new();
    // The headline first: its table leads the output.
    if o.runs("kernel") {
        report.push((
            "kernel_time_per_handshake",
            kernel_time::kernel_time(&rig, &o, &mut md),
        ));
    }
    if o.runs("startup") {
        let (startup, slowest) = sections::startup(&rig, &o, &mut md);
        report.push(("startup", startup));
        targets.push(("startup_met", J::Bool(slowest < STARTUP_TARGET_MS)));
    }
    let mut storm = vec![
        ("clients", J::Int(o.clients as i64)),
        ("flowlat_end", J::Str("server (in handshakes)".into())),
    ];
    if o.runs("ramp") {
        let ramp = sections::ramp(&rig, &o, &mut md);
        storm.extend([
            ("target_rates_per_s", J::ints(&o.rates)),
            ("secs_per_step", J::Num(o.secs)),
            ("steps", J::Arr(ramp.steps.iter().map(Step::json).collect())),
            ("max_handshakes_per_s", J::Num(ramp.max_rate.round())),
            (
                "loss_from_per_s",
                ramp.first_loss
                    .map_or(J::Str("none".into()), |r| J::Num(r.round())),
            ),
            ("peak_rss_bytes", J::Int(ramp.peak_rss as i64)),
        ]);
        targets.push(("no_loss_met", J::Bool(ramp.first_loss.is_none())));
        targets.push(("peak_rss_met", J::Bool(ramp.peak_rss < RSS_TARGET)));
    }
    if o.runs("daemon") {
        storm.push(("daemon", sections::daemon(&rig, &o, &mut md)));
    }
    if o.runs("capacity") {
        storm.push(("capacity", sections::capacity(&rig, &o, &mut md)));
    }
    if o.runs("rings") {
        let rings = sections::rings(&rig, &o, &mut md);
        storm.push(("ring", J::Arr(rings.iter().map(Step::json).collect())));
    }
    if storm.len() > 2 {
        report.push(("storm", J::obj(storm)));
    }
    if o.runs("bulk") {
        let (bulk, ratio) = sections::bulk(&rig, &o, &mut md);
        report.push(("bulk", bulk));
        targets.push(("bulk_met", J::Bool(ratio >= BULK_TARGET)));
    }
    if o.runs("node") {
        report.push(("node", node::node(&rig.bin, &o, &mut md)));
    }
    let load_after = loadavg();
    let _ = writeln!(
        md,
        "\n{machine}; load average {load_before} before, {load_after} after."
    );
    println!("{md}");
    report.push(("load_average_after", J::Str(load_after)));
    report.push(("targets", J::obj(targets)));
    let report = J::obj(report);
    kit::report::write_report("flowlat-e2e.json", report);
}
