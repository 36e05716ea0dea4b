//! The parts of the end-to-end run. Each appends its markdown to `md` and
//! returns its JSON, plus what the target checks need.

use std::fmt::Write as _;

use crate::flowlat::Flowlat;
use crate::iperf;
use crate::rig::{median, paired_ratio, Rig, Step};
use crate::Opts;
use kit::json::J;

/// flowlat's memory budget.
pub const RSS_TARGET: u64 = 8 << 20;
/// Start to both filters attached.
pub const STARTUP_TARGET_MS: f64 = 50.0;
/// Bulk throughput with flowlat over without.
pub const BULK_TARGET: f64 = 0.99;

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

fn nums(v: &[f64]) -> J {
    J::Arr(v.iter().map(|&x| J::Num(x.round())).collect())
}

/// Fork to "attached" on stderr, both filters in place, for each binary.
/// Returns the JSON and the slowest median, in ms.
pub fn startup(rig: &Rig, o: &Opts, md: &mut String) -> (J, f64) {
    let _ = writeln!(
        md,
        "\nStart-up, from fork to both filters attached (veth, {} runs):\n\n\
         | binary | median ms | max ms | target |\n|---|---:|---:|---|",
        o.startups
    );
    let mut bins = vec![("release", rig.bin.clone())];
    if let Some(s) = &o.static_bin {
        bins.push(("static musl", s.clone()));
    }
    let mut slowest = 0.0f64;
    let mut json = Vec::new();
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
        slowest = slowest.max(med);
        eprintln!("  start-up {name}: median {med:.1} ms, max {max:.1} ms");
        let _ = writeln!(
            md,
            "| {name} | {med:.1} | {max:.1} | < 50: {} |",
            met(med < STARTUP_TARGET_MS)
        );
        json.push((
            name.replace(' ', "_"),
            J::obj(vec![
                ("median_ms", J::Num(med)),
                ("max_ms", J::Num(max)),
                ("runs_ms", J::Arr(ms.iter().map(|&m| J::Num(m)).collect())),
            ]),
        ));
    }
    (J::Obj(json), slowest)
}

/// What the ramp found.
pub struct Ramp {
    pub steps: Vec<Step>,
    pub max_rate: f64,
    /// The lowest rate at which records were lost, if any were.
    pub first_loss: Option<f64>,
    pub peak_rss: u64,
}

/// The storm at each rate of `o.rates`, flowlat at the server's end: every
/// handshake is an `in` one.
pub fn ramp(rig: &Rig, o: &Opts, md: &mut String) -> Ramp {
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
        let s = rig.step(rate, o, 64);
        let label = if rate == 0 {
            "flat out".to_string()
        } else {
            rate.to_string()
        };
        eprintln!(
            "  storm {label:>8}: {:.0}/s, {} records, {} lost, {:.2} µs CPU each",
            s.storm.rate(),
            s.summary.ok,
            s.summary.lost,
            s.cpu_us_per_handshake()
        );
        let _ = writeln!(
            md,
            "| {label} | {:.0} | {} | {} | {} | {:.2} | {:.2} |",
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
        .min_by(f64::total_cmp);
    let peak_rss = steps.iter().map(|s| s.peak_rss).max().unwrap_or(0);
    let _ = writeln!(
        md,
        "\nMost handshakes/s made: {max_rate:.0}. Records lost with the default ring: {}. \
         Peak RSS {:.2} MiB (target < 8: {}).",
        first_loss.map_or("none at any rate".to_string(), |r| format!(
            "from {r:.0}/s on"
        )),
        peak_rss as f64 / f64::from(1 << 20),
        met(peak_rss < RSS_TARGET)
    );
    Ramp {
        steps,
        max_rate,
        first_loss,
        peak_rss,
    }
}

/// The storm flat out, with and without flowlat, alternated.
pub fn capacity(rig: &Rig, o: &Opts, md: &mut String) -> J {
    let (mut without, mut with, mut storms) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..o.rounds {
        let mut plain = || {
            let s = rig.storm(0, o.secs, o.clients);
            storms.push(s);
            s.rate()
        };
        if round % 2 == 0 {
            without.push(plain());
            with.push(rig.step(0, o, 64).storm.rate());
        } else {
            with.push(rig.step(0, o, 64).storm.rate());
            without.push(plain());
        }
    }
    // Whether the clients' own code, rather than the kernel's work for them,
    // could be what stops the rate: their user-space share of a CPU, and how
    // busy the machine was.
    let user = median(
        &storms
            .iter()
            .map(|s| s.user_cpu_share() * 100.0)
            .collect::<Vec<_>>(),
    );
    let busy = median(
        &storms
            .iter()
            .map(|s| s.machine_busy * 100.0)
            .collect::<Vec<_>>(),
    );
    let ratio = paired_ratio(&with, &without);
    eprintln!(
        "  capacity: {:.0}/s without, {:.0}/s with flowlat",
        median(&without),
        median(&with)
    );
    let _ = writeln!(
        md,
        "\nCapacity, flat out, alternated ({} rounds): {:.0} handshakes/s without flowlat, \
         {:.0} with (median ratio of the rounds {ratio:.3}). Without flowlat the machine's \
         CPUs were {busy:.0}% busy and the client threads' own code used {user:.1}% of one \
         CPU: {}.",
        o.rounds,
        median(&without),
        median(&with),
        if busy >= 90.0 && user < 25.0 {
            "the kernel's work for the handshakes, not the storm's own code, sets the rate"
        } else {
            "the storm itself may be what limits the rate"
        }
    );
    J::obj(vec![
        ("without_per_s", nums(&without)),
        ("with_per_s", nums(&with)),
        ("ratio", J::Num(ratio)),
        ("machine_busy_percent", J::Num(busy)),
        ("client_user_cpu_percent", J::Num(user)),
    ])
}

/// Smaller perf rings at full speed: where loss starts.
pub fn rings(rig: &Rig, o: &Opts, md: &mut String) -> Vec<Step> {
    let _ = writeln!(
        md,
        "\nPerf ring size at flat out:\n\n\
         | pages per CPU | handshakes/s | records | lost |\n|---:|---:|---:|---:|"
    );
    o.ring_pages
        .iter()
        .map(|&pages| {
            let s = rig.step(0, o, pages);
            eprintln!("  ring {pages} pages: {} lost", s.summary.lost);
            let _ = writeln!(
                md,
                "| {pages} | {:.0} | {} | {} |",
                s.storm.rate(),
                s.summary.ok,
                s.summary.lost
            );
            s
        })
        .collect()
}

/// iperf3 with and without flowlat at the receiver, alternated, and a control:
/// a second run without flowlat in each round, paired with the first the same
/// way, which shows what two runs differ by with nothing changed between them.
/// Returns the JSON and the median of the rounds' with/without ratios.
pub fn bulk(rig: &Rig, o: &Opts, md: &mut String) -> (J, f64) {
    let _server = iperf::Server::start(&rig.net.b, &rig.net.b4);
    let (mut without, mut with, mut control) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..o.bulk_rounds {
        let plain = || iperf::run(&rig.net.a, &rig.net.b4, o.iperf_secs);
        let watched = || {
            let f = Flowlat::start(&rig.net.b, &rig.bin, &["--json", "b"]);
            let bps = iperf::run(&rig.net.a, &rig.net.b4, o.iperf_secs);
            f.stop();
            bps
        };
        // Each of the three takes each place in the round's order in turn.
        for run in 0..3 {
            match (run + round) % 3 {
                0 => without.push(plain()),
                1 => with.push(watched()),
                _ => control.push(plain()),
            }
        }
    }
    let ratio = paired_ratio(&with, &without);
    let control_ratio = paired_ratio(&control, &without);
    let spread = |v: &[f64]| {
        let r: Vec<f64> = v.iter().zip(&without).map(|(x, o)| x / o).collect();
        let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    };
    let ((lo, hi), (clo, chi)) = (spread(&with), spread(&control));
    eprintln!(
        "  bulk: {:.2} Gbit/s without, {:.2} with, {:.2} without again",
        median(&without) / 1e9,
        median(&with) / 1e9,
        median(&control) / 1e9
    );
    let _ = writeln!(
        md,
        "\nBulk TCP (iperf3, one stream, {} s runs, flowlat at the receiver; {} rounds of \
         three runs, without, with, and without again as a control, in rotating order): \
         {:.2} Gbit/s without, {:.2} Gbit/s with. Median ratio of the rounds, with / \
         without: {ratio:.3} (rounds from {lo:.3} to {hi:.3}; target ≥ 0.99: {}). The \
         control, without again / without, which nothing but the machine's noise \
         separates: {control_ratio:.3} (from {clo:.3} to {chi:.3}).",
        o.iperf_secs,
        with.len(),
        median(&without) / 1e9,
        median(&with) / 1e9,
        met(ratio >= BULK_TARGET)
    );
    let json = J::obj(vec![
        ("without_bps", nums(&without)),
        ("with_bps", nums(&with)),
        ("control_bps", nums(&control)),
        ("ratio", J::Num(ratio)),
        ("control_ratio", J::Num(control_ratio)),
    ]);
    (json, ratio)
}

/// The daemon mode (`--metrics --quiet`: the kernel counts, no record per
/// handshake) beside the record mode (`--json`), alternated at each rate:
/// flowlat's own CPU time per handshake, and how long scrapes take meanwhile
/// (one every 200 ms, labelled by server port and cgroup).
pub fn daemon(rig: &Rig, o: &Opts, md: &mut String) -> J {
    let _ = writeln!(
        md,
        "\nDaemon mode: the same storm, flowlat at the server's end either printing every \
         record (`--json`, to /dev/null) or serving metrics with the kernel counting \
         (`--metrics ADDR --metrics-by server-port,cgroup --quiet`) and scraped every 200 ms \
         meanwhile, {} s per step, alternated:\n\n\
         | target/s | records: handshakes/s | records: CPU µs/handshake | daemon: handshakes/s | \
         daemon: CPU µs/handshake | daemon / records | scrapes | scrape median ms | scrape max ms |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        o.secs
    );
    let addr = "127.0.0.1:9469";
    let mut rows = Vec::new();
    for &rate in &o.rates {
        let records = rig.step(rate, o, 64);
        let times = std::sync::Mutex::new(Vec::new());
        let ns = &rig.net.b;
        let daemon = rig.step_with(
            rate,
            o,
            64,
            &[
                "--metrics",
                addr,
                "--metrics-by",
                "server-port,cgroup",
                "--quiet",
                "b",
            ],
            |_| {
                let sa: std::net::SocketAddr = addr.parse().expect("address");
                let end = std::time::Instant::now() + std::time::Duration::from_secs_f64(o.secs);
                while std::time::Instant::now() < end {
                    let t = ns.enter(move || {
                        use std::io::{Read, Write};
                        let asked = std::time::Instant::now();
                        let mut s = std::net::TcpStream::connect(sa).ok()?;
                        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
                        let mut body = Vec::new();
                        s.read_to_end(&mut body).ok()?;
                        Some(asked.elapsed().as_secs_f64() * 1000.0)
                    });
                    if let Some(ms) = t {
                        times.lock().expect("lock").push(ms);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            },
        );
        let times = times.into_inner().expect("lock");
        let label = if rate == 0 {
            "flat out".to_string()
        } else {
            rate.to_string()
        };
        let (rc, dc) = (records.cpu_us_per_handshake(), daemon_cpu_us(&daemon));
        let max = times.iter().copied().fold(0.0, f64::max);
        let med = if times.is_empty() {
            0.0
        } else {
            median(&times)
        };
        eprintln!("  daemon {label:>8}: records {rc:.2} µs, daemon {dc:.2} µs per handshake, scrapes {med:.2}/{max:.2} ms");
        let _ = writeln!(
            md,
            "| {label} | {:.0} | {rc:.2} | {:.0} | {dc:.2} | {:.2} | {} | {med:.2} | {max:.2} |",
            records.storm.rate(),
            daemon.storm.rate(),
            dc / rc.max(1e-9),
            times.len()
        );
        rows.push(J::obj(vec![
            ("target_per_s", J::Int(rate.into())),
            ("records_cpu_us_per_handshake", J::Num(rc)),
            ("daemon_cpu_us_per_handshake", J::Num(dc)),
            (
                "records_handshakes_per_s",
                J::Num(records.storm.rate().round()),
            ),
            (
                "daemon_handshakes_per_s",
                J::Num(daemon.storm.rate().round()),
            ),
            ("scrapes", J::Int(times.len() as i64)),
            ("scrape_median_ms", J::Num(med)),
            ("scrape_max_ms", J::Num(max)),
        ]));
    }
    J::Arr(rows)
}

/// CPU per handshake of a daemon-mode step: the handshakes are those the
/// storm made (no record tells them), its exit line counts them too.
fn daemon_cpu_us(s: &Step) -> f64 {
    s.cpu_ns as f64 / 1000.0 / s.storm.ok.max(1) as f64
}
