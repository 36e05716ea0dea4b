//! The static drop-in: flowlat built for musl (`cargo build --release
//! --target x86_64-unknown-linux-musl`) into a target directory of its own,
//! for the tests that run it from an empty root or put it in an image.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace's root: the kit is `tests/kit` in it.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The target of the static build.
pub const TARGET: &str = "x86_64-unknown-linux-musl";

/// The directory the musl build goes to, apart from the test build's own, so
/// that the two cargo invocations never wait on each other's lock.
pub fn target_dir() -> PathBuf {
    workspace().join("target/static-musl")
}

/// The cargo that built this test: the same toolchain, whoever runs the test.
fn cargo() -> Command {
    let mut c = Command::new(env!("CARGO"));
    // Under `sudo -E` root may lack the builder's toolchain and crate cache
    // settings; they were in cargo's environment when this test was compiled.
    for (var, value) in [
        ("CARGO_HOME", option_env!("CARGO_HOME")),
        ("RUSTUP_HOME", option_env!("RUSTUP_HOME")),
        ("RUSTUP_TOOLCHAIN", option_env!("RUSTUP_TOOLCHAIN")),
    ] {
        if let (None, Some(v)) = (std::env::var_os(var), value) {
            c.env(var, v);
        }
    }
    c.env_remove("CARGO_BUILD_TARGET");
    c
}

fn rustc() -> PathBuf {
    let sibling = Path::new(env!("CARGO")).with_file_name("rustc");
    if sibling.exists() {
        sibling
    } else {
        PathBuf::from("rustc")
    }
}

/// Whether the standard library for `TARGET` is installed for this toolchain.
fn target_installed() -> bool {
    let out = Command::new(rustc())
        .args(["--print", "target-libdir", "--target", TARGET])
        .output();
    let Ok(out) = out else { return false };
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    out.status.success()
        && std::fs::read_dir(&dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
        })
}

fn rustup() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_HOME").map(PathBuf::from));
    match home.map(|h| h.join("bin/rustup")) {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("rustup"),
    }
}

/// Installs the musl target when it is missing; fails, saying so, when it cannot.
fn ensure_target() {
    if target_installed() {
        return;
    }
    let mut cmd = Command::new(rustup());
    cmd.args(["target", "add", TARGET]);
    if let (None, Some(tc)) = (
        std::env::var_os("RUSTUP_TOOLCHAIN"),
        option_env!("RUSTUP_TOOLCHAIN"),
    ) {
        cmd.args(["--toolchain", tc]);
    }
    let detail = match cmd.output() {
        Ok(o) if o.status.success() && target_installed() => return,
        Ok(o) => format!(
            "{}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("cannot run {}: {e}", rustup().display()),
    };
    panic!(
        "the Rust target {TARGET} is not installed and `rustup target add {TARGET}` failed \
         ({detail}); the static binary cannot be built without it"
    );
}

/// Builds the static binary once for all tests of a test binary (cargo does
/// nothing when it is up to date), as root, and says where it is.
pub fn static_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        crate::require_root();
        ensure_target();
        let out = cargo()
            .args(["build", "--release", "--locked", "--target", TARGET])
            .arg("--target-dir")
            .arg(target_dir())
            .current_dir(workspace())
            .output()
            .expect("run cargo");
        assert!(
            out.status.success(),
            "cargo build --release --target {TARGET} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = target_dir().join(TARGET).join("release/flowlat");
        assert!(bin.exists(), "the build left no {}", bin.display());
        bin
    })
}
