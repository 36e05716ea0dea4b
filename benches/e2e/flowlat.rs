//! A flowlat process under measurement: how long it took to attach, the CPU
//! time it used, its peak memory, and the summary it printed on exit.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kit::net::NetNs;

pub struct Flowlat {
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
    /// From just before the fork to the "attached" line on stderr.
    pub startup: Duration,
}

/// What flowlat's summary line on exit says.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub handshakes: u64,
    pub ok: u64,
    pub lost: u64,
    pub evictions: u64,
}

impl Flowlat {
    /// Starts `bin ARGS` in `ns` (without `ip netns exec`: the child inherits
    /// the namespace of the thread that forks it), output to /dev/null, and
    /// waits until it is attached.
    ///
    /// The rig's veth stands for a host's uplink, so builds that would
    /// measure it from its peer's side are asked for this side
    /// (`--node-view`, [`kit::run::HOST_VIEW`]); builds before it had no
    /// other.
    pub fn start(ns: &NetNs, bin: &Path, args: &[&str]) -> Flowlat {
        let mut all: Vec<&str> = Vec::new();
        if supports(bin, kit::run::HOST_VIEW) {
            all.push(kit::run::HOST_VIEW);
        }
        all.extend_from_slice(args);
        Flowlat::start_as_is(ns, bin, &all)
    }

    /// [`Flowlat::start`] with `args` as they are.
    pub fn start_as_is(ns: &NetNs, bin: &Path, args: &[&str]) -> Flowlat {
        let bin: PathBuf = bin.to_path_buf();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (mut child, t0) = ns.enter(move || {
            let devnull = File::create("/dev/null").expect("open /dev/null");
            let t0 = Instant::now();
            let child = Command::new(&bin)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(devnull)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
            (child, t0)
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if line.contains("attached to") {
                    let _ = tx.send(Instant::now());
                }
                let mut s = sink.lock().expect("lock");
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut f = Flowlat {
            child: Some(child),
            stderr,
            startup: Duration::ZERO,
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(t1) => f.startup = t1 - t0,
            Err(_) => panic!("flowlat did not attach within 20 s:\n{}", f.stderr()),
        }
        f
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// CPU time used so far, all threads, user and system: nanoseconds from
    /// schedstat where the kernel keeps it, else clock ticks from stat.
    pub fn cpu_ns(&self) -> u64 {
        let pid = self.pid();
        let from_schedstat = std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()
            .and_then(|d| {
                d.flatten()
                    .map(|t| {
                        let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
                        s.split_whitespace().next()?.parse::<u64>().ok()
                    })
                    .sum::<Option<u64>>()
            });
        from_schedstat.unwrap_or_else(|| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let fields: Vec<u64> = stat
                .rsplit_once(')')
                .map(|(_, r)| {
                    r.split_whitespace()
                        .filter_map(|f| f.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            // utime and stime are fields 14 and 15; after the ")" and the
            // state letter (not a number) they are the 11th and 12th numbers.
            let ticks = fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0);
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
            ticks * 1_000_000_000 / hz
        })
    }

    /// Peak resident set size (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// SIGINT, then the summary line it printed.
    pub fn stop(self) -> Summary {
        let (summary, text) = self.stop_with_stderr();
        summary.unwrap_or_else(|| panic!("no summary from flowlat:\n{text}"))
    }

    /// SIGINT; the summary line, if it printed one, and all it wrote to stderr.
    pub fn stop_with_stderr(mut self) -> (Option<Summary>, String) {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let end = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait for flowlat") {
                break st;
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                panic!("flowlat did not stop within 10 s:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        std::thread::sleep(Duration::from_millis(50));
        let text = self.stderr();
        assert!(status.success(), "flowlat failed ({status}):\n{text}");
        (parse_summary(&text), text)
    }
}

/// Whether `bin --help` lists `flag`: modes that need an option a build does
/// not have yet are skipped, with a note.
pub fn supports(bin: &Path, flag: &str) -> bool {
    Command::new(bin)
        .arg("--help")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .any(|w| w == flag)
        })
        .unwrap_or(false)
}

impl Drop for Flowlat {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `...; 3 handshakes: 2 ok, 1 refused, ...; 0 records lost; 0 table-full evictions; ...`
fn parse_summary(text: &str) -> Option<Summary> {
    let line = text.lines().rev().find(|l| l.contains(" handshakes: "))?;
    let mut s = Summary::default();
    for part in line.split([';', ',']) {
        let words: Vec<&str> = part.split_whitespace().collect();
        let n = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
        match words.as_slice() {
            [.., "handshakes:", _, "ok"] => {
                s.handshakes = n(words.len() - 4)?;
                s.ok = n(words.len() - 2)?;
            }
            [_, "records", "lost"] => s.lost = n(0)?,
            [_, "table-full", "evictions"] => s.evictions = n(0)?,
            _ => {}
        }
    }
    Some(s)
}
