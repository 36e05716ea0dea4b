//! The static drop-in: flowlat built for musl is one self-contained file. The
//! test builds it (once, in its own target directory), checks that nothing is
//! linked at run time, reports its size, and runs it from a root directory that
//! holds nothing but the binary and mounted /proc and /sys, attached to a veth
//! in a namespace, where it must report a real handshake.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kit::musl::{static_binary, target_dir, TARGET};
use kit::net::{listen, NetNs, VethPair};
use kit::run::Flowlat;

const MAX_STRIPPED_BYTES: u64 = 4 << 20;

/// What the ELF headers say: an interpreter, or shared libraries needed.
fn dynamic_dependencies(bin: &Path) -> Vec<String> {
    use object::elf;
    use object::read::elf::{Dyn, FileHeader, ProgramHeader};
    let data = std::fs::read(bin).expect("read the binary");
    let hdr = elf::FileHeader64::<object::Endianness>::parse(&*data).expect("an ELF64 file");
    let endian = hdr.endian().expect("endianness");
    let mut found = Vec::new();
    for ph in hdr
        .program_headers(endian, &*data)
        .expect("program headers")
    {
        if ph.p_type(endian) == elf::PT_INTERP {
            found.push("a PT_INTERP program header".to_string());
        }
        if let Some(dyns) = ph.dynamic(endian, &*data).expect("dynamic section") {
            let needed = dyns
                .iter()
                .filter(|d| d.d_tag(endian) == elf::DT_NEEDED)
                .count();
            if needed > 0 {
                found.push(format!("{needed} DT_NEEDED entries"));
            }
        }
    }
    found
}

fn tool(cmd: &str, arg: &Path) -> String {
    let out = Command::new(cmd).arg(arg).output().unwrap_or_else(|e| {
        panic!("cannot run `{cmd}` ({e}); scripts/test.sh installs it (package {cmd})")
    });
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn musl_build_is_static_and_small() {
    let bin = static_binary();

    // Current `file` calls a static PIE "static-pie linked"; older ones "statically linked".
    let file = tool("file", bin);
    assert!(
        file.contains("statically linked") || file.contains("static-pie linked"),
        "file does not call it static: {file}"
    );
    assert!(!file.contains("interpreter"), "{file}");
    let ldd = tool("ldd", bin);
    assert!(
        (ldd.contains("statically linked") || ldd.contains("not a dynamic executable"))
            && !ldd.contains("=>"),
        "ldd finds libraries: {ldd}"
    );
    assert_eq!(dynamic_dependencies(bin), Vec::<String>::new());

    let stripped = target_dir().join("flowlat.stripped");
    let out = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(bin)
        .output()
        .expect("run strip (binutils)");
    assert!(out.status.success(), "strip: {out:?}");
    let size = std::fs::metadata(&stripped).expect("stripped binary").len();
    let built = std::fs::metadata(bin).expect("binary").len();
    eprintln!(
        "static flowlat ({TARGET}): {size} bytes stripped ({:.2} MiB), {built} as built",
        size as f64 / (1 << 20) as f64
    );
    assert!(
        size < MAX_STRIPPED_BYTES,
        "the stripped static binary is {size} bytes, over the 4 MiB budget"
    );
}

/// A root directory holding only `/flowlat` and the empty mount points `/proc`
/// and `/sys`. It is removed without recursion, so a mount that somehow stayed
/// can never lead to deleting what lies under it.
struct MinimalRoot {
    dir: PathBuf,
}

impl MinimalRoot {
    fn new(bin: &Path) -> MinimalRoot {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "flowlat-root-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).expect("make the root directory");
        let root = MinimalRoot { dir };
        for sub in ["proc", "sys"] {
            std::fs::create_dir(root.dir.join(sub)).expect("make a mount point");
        }
        let dest = root.dir.join("flowlat");
        std::fs::copy(bin, &dest).expect("copy the binary");
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
            .expect("make it executable");
        root
    }

    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .expect("list the root")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for MinimalRoot {
    fn drop(&mut self) {
        let dev = std::fs::metadata(&self.dir).map(|m| m.dev()).ok();
        for sub in ["proc", "sys"] {
            let p = self.dir.join(sub);
            // The mounts live in the namespace flowlat ran in and went with it;
            // one still visible here (a different device) is unmounted first.
            if std::fs::metadata(&p).map(|m| m.dev()).ok() != dev {
                let _ = Command::new("umount").arg("-l").arg(&p).status();
            }
            let _ = std::fs::remove_dir(&p);
        }
        let _ = std::fs::remove_file(self.dir.join("flowlat"));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `flowlat ARGS` run as `/flowlat` chrooted into `root`, in `ns`. The mounts
/// are made inside the private mount namespace of `ip netns exec`, so they
/// disappear with the process, however it ends; the sysfs mounted there is
/// that of the network namespace.
fn start_in_root(ns: &NetNs, root: &MinimalRoot, args: &[&str]) -> Flowlat {
    let script = r#"set -e
mount -t proc proc "$1/proc"
mount -t sysfs sysfs "$1/sys"
root=$1
shift
exec chroot "$root" /flowlat "$@""#;
    let mut cmd = ns.command("sh");
    cmd.args(["-c", script, "sh"]).arg(&root.dir).args(args);
    let f = Flowlat::spawn(cmd);
    f.wait_stderr("attached to", Duration::from_secs(20));
    f
}

#[test]
fn static_binary_reports_a_handshake_from_an_empty_root() {
    let bin = static_binary();
    let root = MinimalRoot::new(bin);
    assert_eq!(root.entries(), ["flowlat", "proc", "sys"]);

    let net = VethPair::new("static");
    let f = start_in_root(&net.b, &root, &[kit::run::HOST_VIEW, "--json", "b"]);
    let seen_root = std::fs::read_link(format!("/proc/{}/root", f.pid())).expect("its root");
    assert_eq!(
        seen_root, root.dir,
        "flowlat runs chrooted in the minimal root"
    );

    let _listener = listen(&net.b, &net.b4, 8080);
    let sa = SocketAddr::new(net.b4.parse().expect("address"), 8080);
    let client = net
        .a
        .enter(move || TcpStream::connect_timeout(&sa, Duration::from_secs(3)))
        .expect("connect through the veth");
    let client_port = u64::from(client.local_addr().expect("local address").port());
    f.wait_records(1, Duration::from_secs(10), |r| r.s("result") == "ok");
    let stopped = f.stop();
    kit::run::assert_clean_stop(&stopped);
    assert!(
        stopped.stderr.contains("1 handshakes: 1 ok") && stopped.stderr.contains(" 0 records lost"),
        "{}",
        stopped.stderr
    );
    let recs: Vec<_> = stopped
        .records
        .iter()
        .filter(|r| r.n("client_port") == Some(client_port))
        .collect();
    assert_eq!(recs.len(), 1, "{:?}", stopped.lines);
    let r = recs[0];
    assert_eq!((r.s("iface"), r.s("dir"), r.s("result")), ("b", "in", "ok"));
    assert_eq!((r.s("client_ip"), r.s("server_ip")), (&*net.a4, &*net.b4));
    assert_eq!(r.n("server_port"), Some(8080));
    let (rtt, local, total) = (
        r.n("rtt_ns").expect("rtt"),
        r.n("local_ns").expect("local"),
        r.n("total_ns").expect("total"),
    );
    assert!(rtt > 0 && total >= rtt + local, "{r:?}");
    drop(client);
}
