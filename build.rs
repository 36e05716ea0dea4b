//! Compiles the classifier (`bpf/probe.c`), the loader's test fixtures
//! (`bpf/fixtures/*.c`) and the bench's programs (`bpf/bench/*.c`) with clang
//! into `$OUT_DIR`, where `include_bytes!` embeds them.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=FLOWLAT_ABLATE");
    println!("cargo:rerun-if-changed=bpf");
    // scripts/ablate.sh builds classifiers that stop part of the way, to
    // measure what each part of a handshake costs in real traffic.
    let ablate = match env::var("FLOWLAT_ABLATE") {
        Ok(v) if ["headers", "parse", "table"].contains(&v.as_str()) => Some(v),
        Ok(v) if v.is_empty() => None,
        Ok(v) => {
            eprintln!("error: FLOWLAT_ABLATE={v}: expected headers, parse or table");
            std::process::exit(1);
        }
        Err(_) => None,
    };
    if let Some(part) = &ablate {
        // So that an ablated binary says so when it starts.
        println!("cargo:rustc-env=FLOWLAT_ABLATED={part}");
    }

    let mut sources = vec![PathBuf::from("bpf/probe.c"), PathBuf::from("bpf/layout.c")];
    for folder in ["bpf/fixtures", "bpf/bench"] {
        if let Ok(dir) = std::fs::read_dir(folder) {
            let mut more: Vec<PathBuf> = dir
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "c"))
                .collect();
            more.sort();
            sources.extend(more);
        }
    }
    for src in &sources {
        let stem = src.file_stem().and_then(|s| s.to_str()).unwrap_or("probe");
        if src != Path::new("bpf/probe.c") {
            compile(
                &clang,
                src,
                &out.join(format!("{stem}.o")),
                &["-g".to_string()],
            );
            continue;
        }
        // An ablated classifier is built in the probe's place (bpf/ablate/).
        let src = match &ablate {
            Some(part) => PathBuf::from(format!("bpf/ablate/{part}.c")),
            None => src.clone(),
        };
        // Two builds of the classifier, one for each table of attempts: the
        // slot table where the kernel has compare-and-exchange, the LRU hash
        // table before (bpf/flowlat.h).
        // Without -g: the loader reads no BTF and no DWARF, and the debug
        // sections were three quarters of the two objects the binary embeds
        // (1.6 MB of 2.1); the instructions are the same either way.
        compile(&clang, &src, &out.join("probe.o"), &[]);
        let slots = ["-DFLOWLAT_TABLE_SLOTS".to_string()];
        compile(&clang, &src, &out.join("probe_slots.o"), &slots);
    }
}

fn compile(clang: &str, src: &Path, obj: &Path, defines: &[String]) {
    let status = Command::new(clang)
        .args([
            "-O2", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror", "-Ibpf", "-c",
        ])
        .args(defines)
        .arg(src)
        .arg("-o")
        .arg(obj)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            eprintln!("error: clang failed ({s}) compiling {}", src.display());
            std::process::exit(1);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "error: `{clang}` not found; flowlat compiles its BPF probe with clang: \
                 install it (Debian/Ubuntu: `sudo apt-get install clang`) or set CLANG=/path/to/clang"
            );
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("error: running `{clang}`: {e}");
            std::process::exit(1);
        }
    }
}
