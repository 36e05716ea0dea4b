//! The end-to-end benchmark, run by `scripts/bench-e2e.sh` (as root; not part
//! of `cargo bench` or of the tests): flowlat on a veth between two
//! namespaces, under a ramp of handshake storms, beside bulk TCP throughput
//! with and without it, and its start-up time. Prints markdown tables and
//! writes `target/flowlat-e2e.json`.
//!
//! Runs only when given `--run` (the script passes it), so that a plain
//! `cargo bench` skips it. Other options: `--quick`, `--secs N` (per storm
//! step), `--rates 2000,5000,...` (0 = flat out), `--clients N`, `--static PATH`.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../shared/mod.rs"]
mod shared;

mod flowlat;
mod iperf;
mod storm;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::VethPair;
use flowlat::Flowlat;
use shared::json::J;

/// flowlat's memory budget.
const RSS_TARGET: u64 = 8 << 20;
/// Start to both filters attached.
const STARTUP_TARGET_MS: f64 = 50.0;
/// Bulk throughput with flowlat over without.
const BULK_TARGET: f64 = 0.99;

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
        bulk_rounds: 7,
        startups: 15,
        iperf_secs: 3,
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

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The median of each round's with/without ratio: the two runs of a round
/// are back to back, so a busy spell of the machine weighs on both.
fn paired_ratio(with: &[f64], without: &[f64]) -> f64 {
    let r: Vec<f64> = with.iter().zip(without).map(|(w, o)| w / o).collect();
    median(&r)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One step of the ramp.
struct Step {
    target: u32,
    storm: storm::Storm,
    summary: flowlat::Summary,
    cpu_ns: u64,
    peak_rss: u64,
    pages: u32,
}

impl Step {
    fn cpu_us_per_handshake(&self) -> f64 {
        self.cpu_ns as f64 / 1000.0 / self.summary.ok.max(1) as f64
    }

    fn json(&self) -> J {
        J::obj(vec![
            ("target_per_s", J::Int(self.target.into())),
            ("handshakes_per_s", J::Num(self.storm.rate().round())),
            ("connects_ok", J::Int(self.storm.ok as i64)),
            ("connects_failed", J::Int(self.storm.failed as i64)),
            ("records_ok", J::Int(self.summary.ok as i64)),
            ("records_lost", J::Int(self.summary.lost as i64)),
            (
                "records_missing",
                J::Int(self.storm.ok as i64 - self.summary.ok as i64),
            ),
            ("cpu_us_per_handshake", J::Num(self.cpu_us_per_handshake())),
            ("peak_rss_bytes", J::Int(self.peak_rss as i64)),
            ("perf_pages", J::Int(self.pages.into())),
        ])
    }
}

struct Rig {
    net: VethPair,
    server: SocketAddr,
    bin: PathBuf,
}

impl Rig {
    fn storm(&self, rate: u32, secs: f64, clients: usize) -> storm::Storm {
        let rate = (rate > 0).then_some(rate);
        storm::run(
            &self.net.a,
            self.server,
            rate,
            clients,
            Duration::from_secs_f64(secs),
        )
    }

    /// A storm at `rate` with flowlat (perf rings of `pages` pages) attached at the server's end.
    fn step(&self, rate: u32, o: &Opts, pages: u32) -> Step {
        let pages_arg = pages.to_string();
        let f = Flowlat::start(
            &self.net.b,
            &self.bin,
            &["--json", "--perf-pages", &pages_arg, "b"],
        );
        let cpu0 = f.cpu_ns();
        let storm = self.storm(rate, o.secs, o.clients);
        // Let the reader catch up with what is still in the rings.
        std::thread::sleep(Duration::from_millis(300));
        let cpu_ns = f.cpu_ns().saturating_sub(cpu0);
        let peak_rss = f.peak_rss();
        let summary = f.stop();
        Step {
            target: rate,
            storm,
            summary,
            cpu_ns,
            peak_rss,
            pages,
        }
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--run") {
        eprintln!(
            "end-to-end bench skipped: scripts/bench-e2e.sh runs it (as root, about 3 minutes)"
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
    let mut report = vec![("machine", J::Str(machine.clone()))];

    // Start-up: fork to "attached" on stderr, both filters in place.
    let mut startup_json = Vec::new();
    let _ = writeln!(
        md,
        "Start-up, from fork to both filters attached (veth, {} runs):\n\n\
         | binary | median ms | max ms | target |\n|---|---:|---:|---|",
        o.startups
    );
    let mut slowest_startup = 0.0f64;
    let mut bins = vec![("release", rig.bin.clone())];
    if let Some(s) = &o.static_bin {
        bins.push(("static musl", s.clone()));
    }
    for (name, bin) in &bins {
        let ms: Vec<f64> = (0..o.startups)
            .map(|_| {
                let f = Flowlat::start(&rig.net.b, bin, &["b"]);
                let t = f.startup.as_secs_f64() * 1000.0;
                f.stop();
                t
            })
            .collect();
        let (med, max) = (median(&ms), ms.iter().copied().fold(0.0, f64::max));
        slowest_startup = slowest_startup.max(med);
        eprintln!("  start-up {name}: median {med:.1} ms, max {max:.1} ms");
        let _ = writeln!(
            md,
            "| {name} | {med:.1} | {max:.1} | < 50: {} |",
            if med < STARTUP_TARGET_MS {
                "met"
            } else {
                "**missed**"
            }
        );
        startup_json.push((
            name.replace(' ', "_"),
            J::obj(vec![
                ("median_ms", J::Num(med)),
                ("max_ms", J::Num(max)),
                ("runs_ms", J::Arr(ms.iter().map(|&m| J::Num(m)).collect())),
            ]),
        ));
    }
    report.push(("startup", J::Obj(startup_json)));

    // The ramp, flowlat at the server's end: every handshake is an "in" one.
    let _ = writeln!(
        md,
        "\nHandshake storm: {} client threads in one namespace, a server in the other, \
         each connection reset at once (SO_LINGER 0); flowlat --json attached at the \
         server's veth (every handshake an `in` one), output to /dev/null, {} s per step, \
         default perf ring (64 pages per CPU):\n\n\
         | target/s | handshakes/s | records | lost | missing | flowlat CPU µs/handshake | flowlat peak RSS MiB |\n\
         |---:|---:|---:|---:|---:|---:|---:|",
        o.clients, o.secs
    );
    let mut steps = Vec::new();
    for &rate in &o.rates {
        let s = rig.step(rate, &o, 64);
        eprintln!(
            "  storm {:>6}/s: {:.0}/s, {} records, {} lost, {:.2} µs CPU each",
            if rate == 0 {
                "max".into()
            } else {
                rate.to_string()
            },
            s.storm.rate(),
            s.summary.ok,
            s.summary.lost,
            s.cpu_us_per_handshake()
        );
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {} | {} | {:.2} | {:.2} |",
            if rate == 0 {
                "flat out".into()
            } else {
                rate.to_string()
            },
            s.storm.rate(),
            s.summary.ok,
            s.summary.lost,
            s.storm.ok as i64 - s.summary.ok as i64,
            s.cpu_us_per_handshake(),
            s.peak_rss as f64 / f64::from(1 << 20)
        );
        steps.push(s);
    }
    let max_rate = steps.iter().map(|s| s.storm.rate()).fold(0.0, f64::max);
    let first_loss = steps
        .iter()
        .filter(|s| s.summary.lost > 0)
        .map(|s| s.storm.rate())
        .fold(f64::INFINITY, f64::min);
    let peak_rss = steps.iter().map(|s| s.peak_rss).max().unwrap_or(0);
    let _ = writeln!(
        md,
        "\nMost handshakes/s made: {max_rate:.0}. Records lost with the default ring: {}. \
         Peak RSS {:.2} MiB (target < 8: {}).",
        if first_loss.is_finite() {
            format!("from {first_loss:.0}/s on")
        } else {
            "none at any rate".into()
        },
        peak_rss as f64 / f64::from(1 << 20),
        if peak_rss < RSS_TARGET {
            "met"
        } else {
            "**missed**"
        }
    );

    // Capacity with and without flowlat, flat out, alternated.
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for round in 0..o.rounds {
        let plain = || rig.storm(0, o.secs, o.clients).rate();
        let watched = || rig.step(0, &o, 64).storm.rate();
        if round % 2 == 0 {
            without.push(plain());
            with.push(watched());
        } else {
            with.push(watched());
            without.push(plain());
        }
    }
    let cap_ratio = paired_ratio(&with, &without);
    eprintln!(
        "  capacity: {:.0}/s without, {:.0}/s with flowlat",
        median(&without),
        median(&with)
    );
    let _ = writeln!(
        md,
        "\nCapacity, flat out, alternated ({} rounds): {:.0} handshakes/s without flowlat, \
         {:.0} with (median ratio of the rounds {cap_ratio:.3}).",
        o.rounds,
        median(&without),
        median(&with)
    );

    // Smaller rings at full speed: where loss starts.
    let mut ring = Vec::new();
    let _ = writeln!(
        md,
        "\nPerf ring size at flat out:\n\n| pages per CPU | handshakes/s | records | lost |\n|---:|---:|---:|---:|"
    );
    for &pages in &o.ring_pages {
        let s = rig.step(0, &o, pages);
        eprintln!("  ring {pages} pages: {} lost", s.summary.lost);
        let _ = writeln!(
            md,
            "| {pages} | {:.0} | {} | {} |",
            s.storm.rate(),
            s.summary.ok,
            s.summary.lost
        );
        ring.push(s);
    }

    report.push((
        "storm",
        J::obj(vec![
            ("clients", J::Int(o.clients as i64)),
            ("target_rates_per_s", J::ints(&o.rates)),
            ("secs_per_step", J::Num(o.secs)),
            ("flowlat_end", J::Str("server (in handshakes)".into())),
            ("steps", J::Arr(steps.iter().map(Step::json).collect())),
            ("max_handshakes_per_s", J::Num(max_rate.round())),
            (
                "loss_from_per_s",
                if first_loss.is_finite() {
                    J::Num(first_loss.round())
                } else {
                    J::Str("none".into())
                },
            ),
            ("peak_rss_bytes", J::Int(peak_rss as i64)),
            (
                "capacity",
                J::obj(vec![
                    (
                        "without_per_s",
                        J::Arr(without.iter().map(|&v| J::Num(v.round())).collect()),
                    ),
                    (
                        "with_per_s",
                        J::Arr(with.iter().map(|&v| J::Num(v.round())).collect()),
                    ),
                    ("ratio", J::Num(cap_ratio)),
                ]),
            ),
            ("ring", J::Arr(ring.iter().map(Step::json).collect())),
        ]),
    ));

    // Bulk throughput with and without flowlat at the receiver, alternated.
    let _iperf = iperf::Server::start(&rig.net.b, &rig.net.b4);
    let (mut bulk_without, mut bulk_with) = (Vec::new(), Vec::new());
    for round in 0..o.bulk_rounds {
        let plain = || iperf::run(&rig.net.a, &rig.net.b4, o.iperf_secs);
        let watched = || {
            let f = Flowlat::start(&rig.net.b, &rig.bin, &["--json", "b"]);
            let bps = iperf::run(&rig.net.a, &rig.net.b4, o.iperf_secs);
            f.stop();
            bps
        };
        if round % 2 == 0 {
            bulk_without.push(plain());
            bulk_with.push(watched());
        } else {
            bulk_with.push(watched());
            bulk_without.push(plain());
        }
    }
    let bulk_ratio = paired_ratio(&bulk_with, &bulk_without);
    eprintln!(
        "  bulk: {:.2} Gbit/s without, {:.2} with",
        median(&bulk_without) / 1e9,
        median(&bulk_with) / 1e9
    );
    let _ = writeln!(
        md,
        "\nBulk TCP (iperf3, one stream, {} s runs, {} alternated rounds, flowlat at the \
         receiver): {:.2} Gbit/s without, {:.2} Gbit/s with; median ratio of the rounds {bulk_ratio:.3} \
         (target ≥ 0.99: {}).",
        o.iperf_secs,
        bulk_with.len(),
        median(&bulk_without) / 1e9,
        median(&bulk_with) / 1e9,
        if bulk_ratio >= BULK_TARGET {
            "met"
        } else {
            "**missed**"
        }
    );
    report.push((
        "bulk",
        J::obj(vec![
            (
                "without_bps",
                J::Arr(bulk_without.iter().map(|&v| J::Num(v.round())).collect()),
            ),
            (
                "with_bps",
                J::Arr(bulk_with.iter().map(|&v| J::Num(v.round())).collect()),
            ),
            ("ratio", J::Num(bulk_ratio)),
        ]),
    ));

    report.push((
        "targets",
        J::obj(vec![
            ("startup_met", J::Bool(slowest_startup < STARTUP_TARGET_MS)),
            ("no_loss_met", J::Bool(!first_loss.is_finite())),
            ("peak_rss_met", J::Bool(peak_rss < RSS_TARGET)),
            ("bulk_met", J::Bool(bulk_ratio >= BULK_TARGET)),
        ]),
    ));

    let load_after = loadavg();
    let _ = writeln!(
        md,
        "\n{machine}; load average {load_before} before, {load_after} after."
    );
    report.push(("load_average_before", J::Str(load_before)));
    report.push(("load_average_after", J::Str(load_after)));

    println!("{md}");
    shared::write_report("flowlat-e2e.json", J::obj(report));
}
