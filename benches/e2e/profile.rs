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
            data: crate::shared::target_dir().join("flowlat-profile.data"),
            end: "in".into(),
            mode: "record".into(),
            secs: 10.0,
        }
    }
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
    if let Some(flag) = mode.needs {
        if !supports(&rig.bin, flag) {
            eprintln!(
                "this build of flowlat has no {flag} yet: no {} profile",
                mode.name
            );
            std::process::exit(1);
        }
    }
    let mut args = mode.args.to_vec();
    args.push(iface);
    let f = Flowlat::start(ns, &rig.bin, &args);
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
    let summary = f.stop_with_stderr().0;
    eprintln!(
        "storm: {:.0} handshakes/s; flowlat lost {} records; profile in {}",
        storm.rate(),
        summary.map_or(0, |s| s.lost),
        p.data.display()
    );
}
