//! A sampling profile of the storm with flowlat attached (`scripts/profile.sh`
//! runs it and prints where flowlat's time goes): `perf record -a -g` over the
//! whole machine while the storm runs at the kernel-time section's rate.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::flowlat::{supports, Flowlat};
use crate::kernel_time::MODES;
use crate::rig::Rig;

/// `--profile FILE`, `--profile-end in|out`, `--profile-mode record|aggregate`,
/// `--profile-secs N`.
pub struct Opts {
    /// Where `perf record` writes its data.
    pub data: PathBuf,
    pub end: String,
    pub mode: String,
    pub secs: f64,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            data: kit::report::target_dir().join("flowlat-profile.data"),
            end: "in".into(),
            mode: "record".into(),
            secs: 10.0,
        }
    }
}

/// The BPF programs among `pid`'s fds: (tag, id), by tag.
fn programs(pid: u32) -> Vec<(String, u32)> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut progs: Vec<(String, u32)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|text| {
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
            };
            Some((field("prog_tag:")?, field("prog_id:")?.parse().ok()?))
        })
        .collect();
    progs.sort();
    progs.dedup();
    progs
}

pub fn profile(rig: &Rig, o: &crate::Opts, p: &Opts) {
    let (ns, iface) = match p.end.as_str() {
        "out" => (&rig.net.a, "a"),
        "in" => (&rig.net.b, "b"),
        other => panic!("--profile-end: {other} is neither in nor out"),
    };
    let mode = MODES.iter().find(|m| m.name == p.mode).unwrap_or_else(|| {
        let names: Vec<&str> = MODES.iter().map(|m| m.name).collect();
        panic!(
            "--profile-mode: no mode {}; the modes: {}",
            p.mode,
            names.join(", ")
        )
    });
    // `--against PATH` profiles that build instead of this one.
    let bin = o.against.first().unwrap_or(&rig.bin);
    if let Some(flag) = mode.needs {
        if !supports(bin, flag) {
            eprintln!(
                "this build of flowlat has no {flag} yet: no {} profile",
                mode.name
            );
            std::process::exit(1);
        }
    }
    let mut args = mode.args.to_vec();
    args.push(iface);
    let f = Flowlat::start(ns, bin, &args);
    // Other flowlat processes on the machine (tests, say) run programs of the
    // same names: the report keeps the samples of this one's programs, by
    // their tags (the JIT symbol is bpf_prog_TAG_NAME).
    let progs = programs(f.pid());
    let tags: Vec<&str> = progs.iter().map(|(tag, _)| tag.as_str()).collect();
    let tags_file = p.data.with_extension("tags");
    std::fs::write(&tags_file, tags.join("\n") + "\n")
        .unwrap_or_else(|e| panic!("{}: {e}", tags_file.display()));
    // Each program's machine code, for the report to show the instructions
    // its samples landed on (they go with the programs when flowlat exits).
    for (tag, id) in &progs {
        let file = p.data.with_extension(format!("{tag}.jit"));
        match flowlat::bpf::sys::prog_jited_image(*id) {
            Ok(image) => {
                std::fs::write(&file, image).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            }
            Err(e) => eprintln!("no instructions in the report: {e}"),
        }
    }
    eprintln!(
        "profiling {} s of a storm of {} handshakes/s, flowlat ({}) at the {} end",
        p.secs, o.kernel_rate, mode.name, p.end
    );
    let storm = std::thread::scope(|s| {
        let storm = s.spawn(|| rig.storm(o.kernel_rate, p.secs + 2.0, o.clients));
        // Let the storm settle before sampling it.
        std::thread::sleep(Duration::from_secs(1));
        let status = Command::new("perf")
            .args(["record", "-a", "-g", "-q", "-F", "10000", "-o"])
            .arg(&p.data)
            .args(["--", "sleep", &format!("{}", p.secs)])
            .status()
            .unwrap_or_else(|e| panic!("cannot run perf ({e}): scripts/profile.sh installs it"));
        assert!(status.success(), "perf record failed ({status})");
        storm.join().expect("the storm")
    });
    let (_, stderr) = f.stop_with_stderr();
    let summary = stderr.lines().rev().find(|l| l.contains(" handshakes: "));
    eprintln!(
        "storm: {:.0} handshakes/s; {}; profile in {}",
        storm.rate(),
        summary.unwrap_or("no summary from flowlat"),
        p.data.display()
    );
}
