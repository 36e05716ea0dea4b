//! `cargo bench`: what flowlat costs per packet and per handshake in the kernel,
//! and how fast user space turns records into lines.
//!
//! Kernel figures come from `BPF_PROG_TEST_RUN`, which times its own loop; the
//! same loop around an empty classifier, run alternately in the same rounds,
//! is the baseline. Prints markdown tables (the README's "Performance" section
//! is a paste of them) and writes every figure to `target/flowlat-bench.json`.
//!
//! Options (after `--`): `--quick`, `--repeat N`, `--rounds N`, `--pending N`,
//! `--handshakes N`, `--out PATH`, `--procs` (only what naming processes
//! costs). Needs root, like the test suite.

mod filters;
mod frames;
mod kernel;
mod primitives;
mod procs;
mod report;
mod stats;
mod user;

use std::path::PathBuf;

use flowlat::probe::{Aggregation, Hook};
use frames::Dir;
use kernel::Rig;
use kit::json::J;

/// A packet that is no part of a handshake may take this many times what the
/// empty classifier takes in the same run (a ratio holds across machines
/// where a figure in ns does not).
const BYSTANDER_TARGET_RATIO: f64 = 1.15;
/// A whole `out` handshake may cost this many times the floor of the kernel
/// operations it is made of, measured in the same run.
const HANDSHAKE_OUT_TARGET_FLOOR_RATIO: f64 = 1.2;

struct Opts {
    repeat: u32,
    rounds: usize,
    pending: u32,
    handshakes: u32,
    format_records: usize,
    reader_secs: f64,
    out: Option<PathBuf>,
    procs_only: bool,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        repeat: 500_000,
        rounds: 61,
        pending: 10_000,
        handshakes: 20_000,
        format_records: 500_000,
        reader_secs: 2.0,
        out: None,
        procs_only: false,
    };
    let mut args = std::env::args().skip(1);
    let num = |v: Option<String>, name: &str| -> u64 {
        v.and_then(|s| s.replace('_', "").parse().ok())
            .unwrap_or_else(|| panic!("{name} takes a number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => {
                o.repeat = 200_000;
                o.rounds = 3;
                o.handshakes = 2_000;
                o.format_records = 100_000;
                o.reader_secs = 0.5;
            }
            "--repeat" => o.repeat = num(args.next(), "--repeat") as u32,
            "--rounds" => o.rounds = (num(args.next(), "--rounds") as usize).max(1),
            "--pending" => o.pending = num(args.next(), "--pending") as u32,
            "--handshakes" => o.handshakes = (num(args.next(), "--handshakes") as u32).max(1),
            "--out" => o.out = args.next().map(PathBuf::from),
            "--procs" => o.procs_only = true,
            // `cargo bench` adds --bench, and passes on any filter: neither applies here.
            _ => {}
        }
    }
    o
}

fn hook(h: Hook) -> &'static str {
    match h {
        Hook::Ingress => "ingress",
        Hook::Egress => "egress",
    }
}

fn ratio(f: u32, e: u32) -> f64 {
    f64::from(f) / f64::from(e.max(1))
}

fn main() {
    kit::exit_unless_root(
        "the overhead bench loads BPF programs and needs root: run cargo bench as root, or \
         as you with CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER='sudo -E'",
    );
    let o = parse_opts();
    let machine = kit::report::machine();
    eprintln!("flowlat overhead bench on {machine}");
    if o.procs_only {
        println!("{}", procs::table(&procs::measure(o.rounds, o.repeat)));
        return;
    }
    let mut rig = Rig::new(65_536, 64);
    rig.prefill(o.pending);
    let pending = rig.pending();
    eprintln!("table prefilled with {pending} attempts in progress");

    let classes = frames::classes();
    let mut results = Vec::new();
    for c in &classes {
        let r = rig.measure(c, o.repeat, o.rounds);
        eprintln!(
            "  {:<20} empty {:>4} ns  flowlat {:>4} ns",
            c.key,
            r.empty_ns(),
            r.flowlat_ns()
        );
        results.push(r);
    }
    let hs_out = rig.handshakes(Dir::Out, o.handshakes);
    eprintln!("  handshake out        {} ns", hs_out.net_ns());
    let hs_in = rig.handshakes(Dir::In, o.handshakes);
    eprintln!("  handshake in         {} ns", hs_in.net_ns());
    // The same handshakes with the classifier aggregating: only (the daemon
    // mode, no record sent), and beside the records; all three in turns.
    let modes = [
        ("records only", Aggregation::default()),
        (
            "aggregates only",
            Aggregation {
                enabled: true,
                no_records: true,
                by_server_port: true,
                by_cgroup: true,
            },
        ),
        (
            "aggregates and records",
            Aggregation {
                enabled: true,
                no_records: false,
                by_server_port: true,
                by_cgroup: true,
            },
        ),
    ];
    let settings_of: Vec<Aggregation> = modes.iter().map(|(_, a)| *a).collect();
    let mut aggregated = Vec::new();
    for dir in [Dir::Out, Dir::In] {
        let results = rig.handshakes_in_turns(dir, o.handshakes, &settings_of);
        for ((mode, _), h) in modes.iter().zip(results) {
            eprintln!("  handshake {dir:?}, {mode}: {} ns", h.net_ns());
            aggregated.push((*mode, h));
        }
    }
    let (settings, filtered) = filters::in_nested_cgroup(|cg| {
        let settings = filters::settings(cg);
        let r = filters::measure(&mut rig, &settings, o.handshakes);
        (settings, r)
    });
    for (s, r) in settings.iter().zip(&filtered) {
        eprintln!(
            "  SYN, filter {:<14} v4 {:>4} ns  v6 {:>4} ns",
            s.key,
            r.v4_ns(),
            r.v6_ns()
        );
    }
    // Packets that are no SYN, with the last (broadest) filter set: the
    // filters must not touch them.
    let all = &settings[settings.len() - 1].filter;
    rig.set_filter(all);
    let bystanders: Vec<(usize, kernel::ClassResult)> = classes
        .iter()
        .enumerate()
        .filter(|(_, c)| c.bystander && c.needs_parser.is_none() && c.key.starts_with("tcp_"))
        .map(|(i, c)| (i, rig.measure(c, o.repeat, o.rounds)))
        .collect();
    rig.set_filter(&Default::default());
    let prims = primitives::measure(o.rounds);
    eprintln!(
        "  primitives: out handshake floor {} ns",
        primitives::out_floor_ns(&prims)
    );
    let json_rate = user::format_rate(true, o.format_records, 5);
    let human_rate = user::format_rate(false, o.format_records, 5);
    let reader = user::perf_reader(64, o.reader_secs);
    let summary_rates: Vec<(&user::SummaryCase, f64)> = user::SUMMARY_CASES
        .iter()
        .map(|c| (c, user::summary_rate(c, o.format_records, 5)))
        .collect();
    let (scrape_ms, scrape_bytes) = user::scrape_render(21);
    let named = procs::measure(o.rounds.min(11), o.repeat);

    let md = report::markdown(
        &o,
        &machine,
        pending,
        &classes,
        &results,
        &[&hs_out, &hs_in],
        primitives::out_floor_ns(&prims),
    );
    let md =
        md + &report::aggregation_table(&aggregated)
            + &report::filters_table(&settings, &filtered, o.handshakes)
            + &report::filtered_bystanders_table(
                settings[settings.len() - 1].key,
                &classes,
                &results,
                &bystanders,
            )
            + &report::primitives_table(&prims)
            + &report::user_table(json_rate, human_rate, &reader)
            + &report::summary_table(&summary_rates)
            + &format!(
            "\nA scrape with the largest default label set (`--metrics-by server-port`: 256 ports \
             and `other`, both directions, one interface): {scrape_ms:.2} ms to sum and render \
             {scrape_bytes} bytes (median of 21).\n"
        ) + &procs::table(&named);
    println!("{md}");

    let mut report = report::report_json(
        &o, &machine, pending, &classes, &results, &hs_out, &hs_in, json_rate, human_rate, &reader,
        &prims,
    );
    if let J::Obj(fields) = &mut report {
        fields.push((
            "aggregation".to_string(),
            report::aggregation_json(&aggregated),
        ));
        fields.push((
            "filters".to_string(),
            report::filters_json(&settings, &filtered, &classes, &bystanders),
        ));
        fields.push(("processes".to_string(), procs::json(&named)));
        fields.push((
            "summary_ingestion".to_string(),
            report::summary_json(&summary_rates),
        ));
        fields.push((
            "scrape_render".to_string(),
            J::obj(vec![
                ("ms", J::Num(scrape_ms)),
                ("bytes", J::Int(scrape_bytes as i64)),
            ]),
        ));
    }
    match &o.out {
        Some(path) => kit::report::write_report_to(path, report),
        None => kit::report::write_report("flowlat-bench.json", report),
    }
}
