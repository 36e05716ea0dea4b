//! `cargo bench`: what flowlat costs per packet and per handshake in the kernel,
//! and how fast user space turns records into lines.
//!
//! Kernel figures come from `BPF_PROG_TEST_RUN`, which times its own loop; the
//! same loop around an empty classifier, run alternately in the same rounds,
//! is the baseline. Prints markdown tables (the README's "Performance" section
//! is a paste of them) and writes every figure to `target/flowlat-bench.json`.
//!
//! Options (after `--`): `--quick`, `--repeat N`, `--rounds N`, `--pending N`,
//! `--handshakes N`, `--out PATH`. Needs root, like the test suite.

#[path = "../../tests/common/packet.rs"]
mod packet;

#[path = "../shared/mod.rs"]
mod shared;

mod asm;
mod frames;
mod kernel;
mod stats;
mod user;

use std::path::PathBuf;

use flowlat::probe::Hook;
use frames::{Class, Dir};
use kernel::{ClassResult, HandshakeResult, Rig};
use shared::json::J;
use stats::median;

/// A packet that is no part of a handshake may cost this much over the empty classifier.
const BYSTANDER_TARGET_NS: i64 = 5;
/// A whole `out` handshake (SYN and SYN-ACK) may cost flowlat this much.
const HANDSHAKE_OUT_TARGET_NS: i64 = 160;

struct Opts {
    repeat: u32,
    rounds: usize,
    pending: u32,
    handshakes: u32,
    format_records: usize,
    reader_secs: f64,
    out: Option<PathBuf>,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        repeat: 2_000_000,
        rounds: 9,
        pending: 10_000,
        handshakes: 20_000,
        format_records: 500_000,
        reader_secs: 2.0,
        out: None,
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
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "the overhead bench loads BPF programs and needs root: run cargo bench as root, or \
             as you with CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER='sudo -E'"
        );
        std::process::exit(1);
    }
    let o = parse_opts();
    let machine = shared::machine();
    eprintln!("flowlat overhead bench on {machine}");
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
    let json_rate = user::format_rate(true, o.format_records, 5);
    let human_rate = user::format_rate(false, o.format_records, 5);
    let reader = user::perf_reader(64, o.reader_secs);

    let md = markdown(
        &o,
        &machine,
        pending,
        &classes,
        &results,
        &[&hs_out, &hs_in],
    );
    let md = md + &user_table(json_rate, human_rate, &reader);
    println!("{md}");

    let report = report_json(
        &o, &machine, pending, &classes, &results, &hs_out, &hs_in, json_rate, human_rate, &reader,
    );
    match &o.out {
        Some(path) => shared::write_report_to(path, report),
        None => shared::write_report("flowlat-bench.json", report),
    }
}

fn markdown(
    o: &Opts,
    machine: &str,
    pending: usize,
    classes: &[Class],
    results: &[ClassResult],
    handshakes: &[&HandshakeResult],
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Per packet: `BPF_PROG_TEST_RUN`, {} repeats per run, median of {} runs of each \
         classifier, alternated (Δ: median of the per-round differences); the table holds \
         {pending} other attempts in progress. {machine}.\n",
        o.repeat, o.rounds
    );
    s.push_str("| class | hook | table state | empty ns | flowlat ns | Δ ns | ratio | Go flowlat ns | target |\n");
    s.push_str("|---|---|---|---:|---:|---:|---:|---:|---|\n");
    for (c, r) in classes.iter().zip(results) {
        let (e, f, d) = (r.empty_ns(), r.flowlat_ns(), r.diff_ns());
        let target = if c.bystander {
            if d <= BYSTANDER_TARGET_NS {
                "Δ ≤ 5: met"
            } else {
                "Δ ≤ 5: **missed**"
            }
        } else {
            ""
        };
        let mut state = c.state.to_string();
        if let Some(parsed) = r.parsed {
            state.push_str(if parsed {
                " (parsed)"
            } else {
                " (**not parsed yet**: skipped as non-TCP)"
            });
        }
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {e} | {f} | {d:+} | {:.2} | {} | {target} |",
            c.key,
            hook(c.hook),
            state,
            ratio(f, e),
            c.go_ns.map_or("".to_string(), |g| g.to_string()),
        );
    }
    let _ = writeln!(
        s,
        "\nPer handshake: {} handshakes each way, one new connection each; every packet \
         run once (repeat 1) beside one run of the empty classifier on the same packet. \
         flowlat's cost is the median over handshakes of (flowlat − empty), the harness's \
         own time taken out; the record is sent and read.\n",
        handshakes.first().map_or(0, |h| h.count)
    );
    s.push_str("| handshake | per packet: flowlat − empty, ns | empty ns | flowlat ns | flowlat's cost ns | target |\n");
    s.push_str("|---|---|---:|---:|---:|---|\n");
    for h in handshakes {
        let packets: Vec<String> = h
            .packets
            .iter()
            .map(|(name, f, e)| format!("{name} {:+}", kernel::net(f, e)))
            .collect();
        let net = h.net_ns();
        let target = match h.dir {
            Dir::Out if net <= HANDSHAKE_OUT_TARGET_NS => "≤ 160 (Go: about 200): met",
            Dir::Out => "≤ 160 (Go: about 200): **missed**",
            Dir::In => "",
        };
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {net} | {target} |",
            match h.dir {
                Dir::Out => "out",
                Dir::In => "in",
            },
            packets.join(", "),
            h.empty_ns(),
            h.flowlat_ns(),
        );
    }
    s
}

fn user_table(json_rate: f64, human_rate: f64, r: &user::ReaderResult) -> String {
    let mut s = String::from("\nUser space (one thread):\n\n| what | records/s |\n|---|---:|\n");
    s.push_str(&format!(
        "| decode + format, JSON | {:.0} |\n| decode + format, text | {:.0} |\n",
        json_rate, human_rate
    ));
    s.push_str(&format!(
        "| perf reader, woken per record as flowlat runs it, one CPU sending flat out \
         ({:.0}/s offered, {} lost) | {:.0} |\n\
         | perf reader, draining a full {}-page ring | {:.0} |\n",
        r.offered_per_s, r.lost, r.read_per_s, r.pages, r.drain_per_s
    ));
    s
}

#[allow(clippy::too_many_arguments)]
fn report_json(
    o: &Opts,
    machine: &str,
    pending: usize,
    classes: &[Class],
    results: &[ClassResult],
    hs_out: &HandshakeResult,
    hs_in: &HandshakeResult,
    json_rate: f64,
    human_rate: f64,
    reader: &user::ReaderResult,
) -> J {
    let class_objs = classes
        .iter()
        .zip(results)
        .map(|(c, r)| {
            let (e, f) = (r.empty_ns(), r.flowlat_ns());
            let mut fields = vec![
                ("hook", J::Str(hook(c.hook).into())),
                ("state", J::Str(c.state.into())),
                ("empty_ns", J::Int(e.into())),
                ("flowlat_ns", J::Int(f.into())),
                ("diff_ns", J::Int(r.diff_ns())),
                ("ratio", J::Num(ratio(f, e))),
                ("bystander", J::Bool(c.bystander)),
                ("empty_runs", J::ints(&r.empty_runs)),
                ("flowlat_runs", J::ints(&r.flowlat_runs)),
            ];
            if let Some(p) = r.parsed {
                fields.push(("parsed", J::Bool(p)));
            }
            if let Some(g) = c.go_ns {
                fields.push(("go_flowlat_ns", J::Int(g.into())));
            }
            (c.key.to_string(), J::obj(fields))
        })
        .collect();
    let worst_bystander = classes
        .iter()
        .zip(results)
        .filter(|(c, _)| c.bystander)
        .map(|(_, r)| r.diff_ns())
        .max()
        .unwrap_or(0);
    let packets = |h: &HandshakeResult| {
        J::Obj(
            h.packets
                .iter()
                .map(|(name, f, e)| {
                    (
                        name.to_string(),
                        J::obj(vec![
                            ("net_ns", J::Int(kernel::net(f, e))),
                            ("flowlat_ns", J::Int(median(f).into())),
                            ("empty_ns", J::Int(median(e).into())),
                        ]),
                    )
                })
                .collect(),
        )
    };
    J::obj(vec![
        ("machine", J::Str(machine.into())),
        ("repeat", J::Int(o.repeat.into())),
        ("rounds", J::Int(o.rounds as i64)),
        ("pending_entries", J::Int(pending as i64)),
        ("classes", J::Obj(class_objs)),
        ("handshakes", J::Int(hs_out.count as i64)),
        ("handshake_out_ns", J::Int(hs_out.net_ns())),
        ("handshake_out_raw_ns", J::Int(hs_out.flowlat_ns().into())),
        ("handshake_out_empty_ns", J::Int(hs_out.empty_ns().into())),
        ("handshake_out_packets", packets(hs_out)),
        ("handshake_in_ns", J::Int(hs_in.net_ns())),
        ("handshake_in_raw_ns", J::Int(hs_in.flowlat_ns().into())),
        ("handshake_in_empty_ns", J::Int(hs_in.empty_ns().into())),
        ("handshake_in_packets", packets(hs_in)),
        ("records_per_s_json", J::Num(json_rate.round())),
        ("records_per_s_human", J::Num(human_rate.round())),
        (
            "perf_reader",
            J::obj(vec![
                ("records_per_s", J::Num(reader.read_per_s.round())),
                ("offered_per_s", J::Num(reader.offered_per_s.round())),
                ("lost", J::Int(reader.lost as i64)),
                ("drain_per_s", J::Num(reader.drain_per_s.round())),
                ("pages_per_cpu", J::Int(reader.pages as i64)),
            ]),
        ),
        (
            "targets",
            J::obj(vec![
                ("bystander_max_diff_ns", J::Int(worst_bystander)),
                ("bystander_target_ns", J::Int(BYSTANDER_TARGET_NS)),
                (
                    "bystander_met",
                    J::Bool(worst_bystander <= BYSTANDER_TARGET_NS),
                ),
                ("handshake_out_target_ns", J::Int(HANDSHAKE_OUT_TARGET_NS)),
                (
                    "handshake_out_met",
                    J::Bool(hs_out.net_ns() <= HANDSHAKE_OUT_TARGET_NS),
                ),
            ]),
        ),
    ])
}
