//! The report: markdown tables for the terminal and the README, and the JSON.

use std::fmt::Write as _;

use crate::filters::{self, FilterResult, Setting};
use crate::frames::{Class, Dir};
use crate::kernel::{self, ClassResult, HandshakeResult};
use crate::primitives::{self, PrimitiveResult, PRIMITIVES};
use crate::stats::median;
use crate::user;
use crate::{hook, ratio, Opts, BYSTANDER_TARGET_RATIO, HANDSHAKE_OUT_TARGET_FLOOR_RATIO};
use kit::json::J;

pub fn markdown(
    o: &Opts,
    machine: &str,
    pending: usize,
    classes: &[Class],
    results: &[ClassResult],
    handshakes: &[&HandshakeResult],
    floor_ns: i64,
) -> String {
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
            if ratio(f, e) <= BYSTANDER_TARGET_RATIO {
                "ratio ≤ 1.15: met"
            } else {
                "ratio ≤ 1.15: **missed**"
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
        let net = h.net_ns();
        let limit = (floor_ns as f64 * HANDSHAKE_OUT_TARGET_FLOOR_RATIO).round() as i64;
        let target = match h.dir {
            Dir::Out => format!(
                "≤ 1.2 × floor ({floor_ns} ns, below) = {limit}: {} ({:.2} × floor)",
                if net <= limit { "met" } else { "**missed**" },
                net as f64 / floor_ns.max(1) as f64
            ),
            Dir::In => String::new(),
        };
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {net} | {target} |",
            dir_name(h.dir),
            packet_diffs(h),
            h.empty_ns(),
            h.flowlat_ns(),
        );
    }
    s
}

pub fn primitives_table(r: &[PrimitiveResult]) -> String {
    let mut s = format!(
        "\nThe operations a handshake is made of, each alone (`bpf/bench/primitives.c`): \
         `BPF_PROG_TEST_RUN`, {} repeats per run, median of {} runs, alternated with the \
         baseline (new keys come from `bpf_get_prandom_u32`, so the baseline of the table \
         operations makes the key and does nothing with it); both tables have the probe's \
         default size and hold 10,000 other attempts; the perf rings are read between runs.\n\n",
        primitives::REPEAT,
        r.first().map_or(0, |x| x.runs.len())
    );
    s.push_str(
        "| operation | what | baseline ns | with it ns | Δ ns |\n|---|---|---:|---:|---:|\n",
    );
    for (p, x) in PRIMITIVES.iter().zip(r) {
        let _ = writeln!(
            s,
            "| `{}` | {} | {} (`{}`) | {} | {:+} |",
            p.key,
            p.what,
            x.base_ns(),
            p.base,
            x.ns(),
            x.diff_ns()
        );
    }
    let _ = writeln!(
        s,
        "\nFloor of a whole `out` handshake with the {} table this kernel runs and perf rings \
         (the insert, the answer's lookup and removal, a record into its batch, two clock \
         reads): {} ns; a whole handshake may cost {HANDSHAKE_OUT_TARGET_FLOOR_RATIO} times \
         that. With a BPF ring buffer instead of the perf rings: {} ns.",
        flowlat::probe::Table::best().as_str(),
        primitives::out_floor_ns(r),
        primitives::out_floor_alternative_ns(r)
    );
    s
}

pub fn user_table(json_rate: f64, human_rate: f64, r: &user::ReaderResult) -> String {
    let mut s = String::from("\nUser space (one thread):\n\n| what | records/s |\n|---|---:|\n");
    s.push_str(&format!(
        "| decode + format, JSON | {:.0} |\n| decode + format, text | {:.0} |\n",
        json_rate, human_rate
    ));
    s.push_str(&format!(
        "| perf reader as flowlat runs it (woken through the perf event, then draining), \
         one CPU sending flat out ({:.0}/s offered, {} lost) | {:.0} |\n\
         | perf reader, draining a full {}-page ring | {:.0} |\n",
        r.offered_per_s, r.lost, r.read_per_s, r.pages, r.drain_per_s
    ));
    s
}

#[allow(clippy::too_many_arguments)]
pub fn report_json(
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
    prims: &[PrimitiveResult],
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
        .map(|(_, r)| ratio(r.flowlat_ns(), r.empty_ns()))
        .fold(0.0, f64::max);
    let floor = primitives::out_floor_ns(prims);
    let floor_ratio = hs_out.net_ns() as f64 / floor.max(1) as f64;
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
        (
            "primitives",
            J::Obj(
                PRIMITIVES
                    .iter()
                    .zip(prims)
                    .map(|(p, x)| {
                        (
                            p.key.to_string(),
                            J::obj(vec![
                                ("baseline", J::Str(p.base.into())),
                                ("baseline_ns", J::Int(x.base_ns().into())),
                                ("ns", J::Int(x.ns().into())),
                                ("diff_ns", J::Int(x.diff_ns())),
                            ]),
                        )
                    })
                    .collect(),
            ),
        ),
        (
            "handshake_out_floor_ns",
            J::Int(primitives::out_floor_ns(prims)),
        ),
        (
            "handshake_out_floor_alternative_ns",
            J::Int(primitives::out_floor_alternative_ns(prims)),
        ),
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
                ("bystander_max_ratio", J::Num(worst_bystander)),
                ("bystander_target_ratio", J::Num(BYSTANDER_TARGET_RATIO)),
                (
                    "bystander_met",
                    J::Bool(worst_bystander <= BYSTANDER_TARGET_RATIO),
                ),
                ("handshake_out_floor_ratio", J::Num(floor_ratio)),
                (
                    "handshake_out_target_floor_ratio",
                    J::Num(HANDSHAKE_OUT_TARGET_FLOOR_RATIO),
                ),
                (
                    "handshake_out_met",
                    J::Bool(floor_ratio <= HANDSHAKE_OUT_TARGET_FLOOR_RATIO),
                ),
            ]),
        ),
    ])
}

pub fn filters_table(settings: &[Setting], r: &[FilterResult], count: u32) -> String {
    let mut s = format!(
        "\nA SYN with each filter set: {count} new `out` SYNs per family and setting, each run \
         once beside one run of the empty classifier, the settings taking turns every {} SYNs; \
         flowlat − empty, median over the SYNs, and the difference from the same with no \
         filter. A SYN the filter keeps is inserted (and its attempt then answered, \
         unmeasured); one it drops takes no entry.\n\n",
        kernel::TURN
    );
    s.push_str("| filter | setting | SYN kept | IPv4 ns | vs none | IPv6 ns | vs none |\n");
    s.push_str("|---|---|---|---:|---:|---:|---:|\n");
    let (b4, b6) = r.first().map_or((0, 0), |b| (b.v4_ns(), b.v6_ns()));
    for (set, x) in settings.iter().zip(r) {
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {:+} | {} | {:+} |",
            set.key,
            set.what,
            if filters::keeps(set) { "yes" } else { "no" },
            x.v4_ns(),
            x.v4_ns() - b4,
            x.v6_ns(),
            x.v6_ns() - b6
        );
    }
    s
}

pub fn filtered_bystanders_table(
    setting: &str,
    classes: &[Class],
    results: &[ClassResult],
    with: &[(usize, ClassResult)],
) -> String {
    let mut s = format!(
        "\nSegments of established connections with the filter `{setting}` set, beside the \
         per-packet table's runs without (same classes, Δ over the empty classifier):\n\n\
         | class | hook | Δ ns without filters | Δ ns with the filter |\n|---|---|---:|---:|\n",
    );
    for (i, r) in with {
        let _ = writeln!(
            s,
            "| `{}` | {} | {:+} | {:+} |",
            classes[*i].key,
            hook(classes[*i].hook),
            results[*i].diff_ns(),
            r.diff_ns()
        );
    }
    s
}

pub fn filters_json(
    settings: &[Setting],
    r: &[FilterResult],
    classes: &[Class],
    with: &[(usize, ClassResult)],
) -> J {
    let syn = settings
        .iter()
        .zip(r)
        .map(|(set, x)| {
            (
                set.key.to_string(),
                J::obj(vec![
                    ("what", J::Str(set.what.into())),
                    ("kept", J::Bool(filters::keeps(set))),
                    ("syn_v4_ns", J::Int(x.v4_ns())),
                    ("syn_v6_ns", J::Int(x.v6_ns())),
                ]),
            )
        })
        .collect();
    let by = with
        .iter()
        .map(|(i, x)| (classes[*i].key.to_string(), J::Int(x.diff_ns())))
        .collect();
    J::obj(vec![
        ("syn", J::Obj(syn)),
        ("bystanders_all_filters_diff_ns", J::Obj(by)),
    ])
}

fn dir_name(d: Dir) -> &'static str {
    match d {
        Dir::Out => "out",
        Dir::In => "in",
    }
}

fn packet_diffs(h: &HandshakeResult) -> String {
    let packets: Vec<String> = h
        .packets
        .iter()
        .map(|(name, f, e)| format!("{name} {:+}", kernel::net(f, e)))
        .collect();
    packets.join(", ")
}

pub fn aggregation_table(aggregated: &[(&str, HandshakeResult)]) -> String {
    let mut s = format!(
        "\nPer handshake, with the classifier aggregating (keyed by interface, direction, \
         server port and cgroup), beside the record path: the handshakes of the table above, \
         measured the same way, the three modes taking turns every {} handshakes.\n\n\
         | handshake | mode | per packet: flowlat − empty, ns | flowlat's cost ns | vs records only |\n\
         |---|---|---|---:|---:|\n",
        kernel::TURN
    );
    for (mode, h) in aggregated {
        let base = aggregated
            .iter()
            .find(|(m, r)| *m == "records only" && r.dir == h.dir)
            .map_or(0, |(_, r)| r.net_ns());
        let _ = writeln!(
            s,
            "| `{}` | {mode} | {} | {} | {:+} |",
            dir_name(h.dir),
            packet_diffs(h),
            h.net_ns(),
            h.net_ns() - base
        );
    }
    s
}

pub fn aggregation_json(aggregated: &[(&str, HandshakeResult)]) -> J {
    J::Arr(
        aggregated
            .iter()
            .map(|(mode, h)| {
                J::obj(vec![
                    ("dir", J::Str(dir_name(h.dir).into())),
                    ("mode", J::Str(mode.to_string())),
                    ("net_ns", J::Int(h.net_ns())),
                    ("flowlat_ns", J::Int(h.flowlat_ns().into())),
                    ("empty_ns", J::Int(h.empty_ns().into())),
                ])
            })
            .collect(),
    )
}

/// Summary ingestion, one row per grouping.
pub fn summary_table(rates: &[(&user::SummaryCase, f64)]) -> String {
    let mut s = String::from(
        "\n`--summary` ingestion (one thread; records taken into the tables, 4096 groups at most):\n\n\
         | --by | --hist | distinct clients | records/s |\n|---|---|---:|---:|\n",
    );
    for (c, rate) in rates {
        s.push_str(&format!(
            "| `{}` | {} | {} | {:.0} |\n",
            c.by,
            if c.hist { "yes" } else { "no" },
            c.clients,
            rate
        ));
    }
    s
}

pub fn summary_json(rates: &[(&user::SummaryCase, f64)]) -> J {
    J::Arr(
        rates
            .iter()
            .map(|(c, rate)| {
                J::obj(vec![
                    ("by", J::Str(c.by.to_string())),
                    ("hist", J::Bool(c.hist)),
                    ("distinct_clients", J::Int(c.clients.into())),
                    ("records_per_s", J::Num(rate.round())),
                ])
            })
            .collect(),
    )
}
