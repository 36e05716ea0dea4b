//! The end-to-end benchmark, run by `scripts/bench-e2e.sh` (as root; not part
//! of `cargo bench` or of the tests): flowlat on a veth between two
//! namespaces, under a ramp of handshake storms, beside bulk TCP throughput
//! with and without it, its start-up time, and the kernel time its
//! classifier takes per handshake in that traffic. Prints markdown tables and
//! writes `target/flowlat-e2e.json`.
//!
//! Runs only when given `--run` (the script passes it), so that a plain
//! `cargo bench` skips it. Other options: `--quick`, `--secs N` (per storm
//! step), `--rates 2000,5000,...` (0 = flat out), `--clients N`, `--static PATH`.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../shared/mod.rs"]
mod shared;
// The empty classifier the kernel-time section compares flowlat with.
#[path = "../overhead/asm.rs"]
#[allow(dead_code)]
mod asm;

mod flowlat;
mod iperf;
mod kernel_time;
mod rig;
mod sections;
mod storm;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::VethPair;
use rig::{Rig, Step};
use sections::{BULK_TARGET, RSS_TARGET, STARTUP_TARGET_MS};
use shared::json::J;

struct Opts {
    secs: f64,
    rates: Vec<u32>,
    clients: usize,
    rounds: usize,
    bulk_rounds: usize,
    startups: usize,
    iperf_secs: u32,
    ring_pages: Vec<u32>,
    static_bin: Option<PathBuf>,
}

fn parse_opts() -> Opts {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let default_static =
        manifest.join("target/static-musl/x86_64-unknown-linux-musl/release/flowlat");
    let mut o = Opts {
        secs: 5.0,
        rates: vec![2_000, 5_000, 10_000, 15_000, 20_000, 30_000, 0],
        clients: 4,
        rounds: 3,
        bulk_rounds: 9,
        startups: 15,
        iperf_secs: 2,
        ring_pages: vec![1, 4, 16],
        static_bin: default_static.exists().then_some(default_static),
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
            }
            "--secs" => o.secs = val().parse().expect("--secs takes seconds"),
            "--rates" => {
                o.rates = val()
                    .split(',')
                    .map(|r| r.trim().parse().expect("--rates takes numbers"))
                    .collect()
            }
            "--clients" => o.clients = val().parse().expect("--clients takes a number"),
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
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "the end-to-end bench makes namespaces and attaches filters and needs root: \
             run scripts/bench-e2e.sh, which uses sudo when it is not root"
        );
        std::process::exit(1);
    }
    let o = parse_opts();
    let machine = shared::machine();
    let load_before = loadavg();
    eprintln!("flowlat end-to-end bench on {machine} (load average {load_before})");
    let net = VethPair::new("e2e");
    let server = SocketAddr::new(net.b4.parse().expect("address"), 8080);
    storm::serve(&net.b, server, 2);
    let rig = Rig {
        server,
        bin: PathBuf::from(env!("CARGO_BIN_EXE_flowlat")),
        net,
    };

    let mut md = String::new();
    let (startup, slowest_startup) = sections::startup(&rig, &o, &mut md);
    let ramp = sections::ramp(&rig, &o, &mut md);
    let capacity = sections::capacity(&rig, &o, &mut md);
    let rings = sections::rings(&rig, &o, &mut md);
    let (bulk, bulk_ratio) = sections::bulk(&rig, &o, &mut md);
    let kernel = kernel_time::kernel_time(&rig, &o, &mut md);
    let load_after = loadavg();
    let _ = writeln!(
        md,
        "\n{machine}; load average {load_before} before, {load_after} after."
    );
    println!("{md}");

    let report = J::obj(vec![
        ("machine", J::Str(machine)),
        ("load_average_before", J::Str(load_before)),
        ("load_average_after", J::Str(load_after)),
        ("startup", startup),
        (
            "storm",
            J::obj(vec![
                ("clients", J::Int(o.clients as i64)),
                ("target_rates_per_s", J::ints(&o.rates)),
                ("secs_per_step", J::Num(o.secs)),
                ("flowlat_end", J::Str("server (in handshakes)".into())),
                ("steps", J::Arr(ramp.steps.iter().map(Step::json).collect())),
                ("max_handshakes_per_s", J::Num(ramp.max_rate.round())),
                (
                    "loss_from_per_s",
                    ramp.first_loss
                        .map_or(J::Str("none".into()), |r| J::Num(r.round())),
                ),
                ("peak_rss_bytes", J::Int(ramp.peak_rss as i64)),
                ("capacity", capacity),
                ("ring", J::Arr(rings.iter().map(Step::json).collect())),
            ]),
        ),
        ("bulk", bulk),
        ("kernel_time_per_handshake", kernel),
        (
            "targets",
            J::obj(vec![
                ("startup_met", J::Bool(slowest_startup < STARTUP_TARGET_MS)),
                ("no_loss_met", J::Bool(ramp.first_loss.is_none())),
                ("peak_rss_met", J::Bool(ramp.peak_rss < RSS_TARGET)),
                ("bulk_met", J::Bool(bulk_ratio >= BULK_TARGET)),
            ]),
        ),
    ]);
    shared::write_report("flowlat-e2e.json", report);
}
