//! What both benches need for their reports: the machine's description,
//! where to write, and the writing of a [`J`] report.

use std::path::{Path, PathBuf};

use crate::json::J;

/// CPU model, CPU count and kernel, for the report.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cpus} CPUs, Linux {}", kernel.trim())
}

/// `target/` of this build: a bench runs from `target/<profile>/deps/`.
pub fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")))
}

/// Writes `report` as pretty JSON to `target/NAME`, or says why not and exits 1.
pub fn write_report(name: &str, report: J) {
    write_report_to(&target_dir().join(name), report)
}

/// Writes `report` as pretty JSON to `path`, or says why not and exits 1.
pub fn write_report_to(path: &Path, report: J) {
    let mut text = String::new();
    report.write(&mut text, 0);
    text.push('\n');
    match std::fs::write(path, text) {
        Ok(()) => eprintln!("wrote {}", path.display()),
        Err(e) => {
            eprintln!("cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
    }
}
