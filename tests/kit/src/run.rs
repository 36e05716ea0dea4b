//! Runs the flowlat binary inside a namespace and collects its JSON records.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::json::{record, Rec};
use crate::net::NetNs;

/// The path of the flowlat binary cargo built for these tests: cargo names it
/// in `CARGO_BIN_EXE_flowlat` when it runs an integration test; a test binary
/// run by hand finds it where cargo puts it, beside its own `deps/`.
pub fn binary() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("CARGO_BIN_EXE_flowlat") {
            return bin;
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .map(|dir| dir.join("flowlat"))
            .filter(|bin| bin.exists())
            .unwrap_or_else(|| {
                panic!(
                    "no flowlat binary beside {}: run the tests with cargo test",
                    exe.display()
                )
            });
        bin.to_string_lossy().into_owned()
    })
}

/// A flowlat process in a namespace, killed on drop if still running.
pub struct Flowlat {
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

/// What a stopped flowlat left.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    pub lines: Vec<String>,
    pub records: Vec<Rec>,
    pub stderr: String,
}

/// What the tests' veth pairs stand for: a host's uplink (its eth0), the
/// namespace at the other end being the network beyond. flowlat would see
/// a veth whose peer is in another namespace as a pod's and measure it from
/// the peer's side; the tests of a plain host ask for this side.
pub const HOST_VIEW: &str = "--node-view";

impl Flowlat {
    /// Starts `flowlat --node-view ARGS` in `ns` (see [`HOST_VIEW`]) and
    /// waits until it says it is attached.
    pub fn start(ns: &NetNs, args: &[&str]) -> Flowlat {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name, binary(), HOST_VIEW])
            .args(args);
        let f = Flowlat::spawn(cmd);
        f.wait_stderr("attached to", Duration::from_secs(20));
        f
    }

    /// Like [`Flowlat::start`], entering only `ns`'s network namespace:
    /// `ip netns exec` also gives the command a mount namespace with a fresh
    /// /sys, without the cgroup2 mount, so flowlat could name no cgroup.
    pub fn start_net_only(ns: &NetNs, args: &[&str]) -> Flowlat {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{}", ns.name))
            .arg(binary())
            .arg(HOST_VIEW)
            .args(args);
        let f = Flowlat::spawn(cmd);
        f.wait_stderr("attached to", Duration::from_secs(20));
        f
    }

    /// Spawns a prepared command with piped output (no wait).
    pub fn spawn(mut cmd: Command) -> Flowlat {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start flowlat");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (o, e) = (
            child.stdout.take().expect("piped"),
            child.stderr.take().expect("piped"),
        );
        let so = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(o).lines() {
                let Ok(line) = line else { break };
                so.lock().expect("lock").push(line);
            }
        });
        let stderr = crate::collect_text(e);
        Flowlat {
            child: Some(child),
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// Where a `--metrics ADDR` flowlat serves (the port the kernel gave,
    /// for port 0), as it says on stderr; waits for it to say so.
    pub fn metrics_at(&self) -> SocketAddr {
        self.wait_stderr("metrics at", Duration::from_secs(10));
        let err = self.stderr();
        err.split("metrics at http://")
            .nth(1)
            .and_then(|rest| rest.split("/metrics").next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no metrics address in {err:?}"))
    }

    pub fn lines(&self) -> Vec<String> {
        self.stdout.lock().expect("lock").clone()
    }

    /// Waits for `needle` on stderr; panics with what was said on timeout or exit.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.stderr().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "flowlat did not say `{needle}` within {timeout:?}; stderr:\n{}",
            self.stderr()
        );
    }

    /// Waits until `n` JSON records satisfy `pred`, returning them.
    pub fn wait_records(
        &self,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Rec) -> bool,
    ) -> Vec<Rec> {
        let end = Instant::now() + timeout;
        loop {
            let recs: Vec<Rec> = self
                .lines()
                .iter()
                .filter_map(|l| record(l).ok())
                .filter(|r| pred(r))
                .collect();
            if recs.len() >= n || Instant::now() >= end {
                return recs;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` and waits for the exit (10 s at most, then SIGKILL and panic).
    pub fn stop_with(mut self, sig: nix::sys::signal::Signal) -> Stopped {
        if let Some(child) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig);
        }
        let (status, lines) = self.reap(Duration::from_secs(10), &format!("of {sig}"));
        let records = lines
            .iter()
            .map(|l| record(l).unwrap_or_else(|e| panic!("flowlat printed invalid JSON: {e}")))
            .collect();
        Stopped {
            status,
            lines,
            records,
            stderr: self.stderr(),
        }
    }

    /// Waits for the exit (SIGKILL and panic after `timeout`, naming `after`),
    /// then for the reader threads to see the end of the pipes.
    fn reap(&mut self, timeout: Duration, after: &str) -> (ExitStatus, Vec<String>) {
        let mut child = self.child.take().expect("running");
        let status = crate::exit_within(&mut child, timeout).unwrap_or_else(|| {
            panic!(
                "flowlat did not exit within {timeout:?} {after}; stderr:\n{}",
                self.stderr()
            )
        });
        std::thread::sleep(Duration::from_millis(100));
        (status, self.lines())
    }

    /// Like [`Flowlat::stop`] for text output: lines that are not JSON are kept as lines only.
    pub fn stop_text(mut self) -> Stopped {
        if let Some(child) = &self.child {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        self.lenient(Duration::from_secs(10), "of SIGINT")
    }

    pub fn stop(self) -> Stopped {
        self.stop_with(nix::sys::signal::Signal::SIGINT)
    }

    /// Waits for flowlat to exit on its own (panics after `timeout`).
    pub fn wait_exit(mut self, timeout: Duration) -> Stopped {
        self.lenient(timeout, "on its own")
    }

    /// Reaps it; lines that are not JSON are kept as lines only.
    fn lenient(&mut self, timeout: Duration, after: &str) -> Stopped {
        let (status, lines) = self.reap(timeout, after);
        let records = lines.iter().filter_map(|l| record(l).ok()).collect();
        Stopped {
            status,
            lines,
            records,
            stderr: self.stderr(),
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Flowlat {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            std::thread::sleep(Duration::from_millis(300));
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A stop that went well: exit status 0 and the summary line on stderr.
pub fn assert_clean_stop(stopped: &Stopped) {
    assert!(
        stopped.status.success(),
        "flowlat failed: {:?}\n{}",
        stopped.status,
        stopped.stderr
    );
    assert!(
        stopped.stderr.contains("handshakes:"),
        "no summary on stderr:\n{}",
        stopped.stderr
    );
}

/// `GET /metrics` from `addr` inside `ns`: the body of a 200 answer
/// (panics on any other).
pub fn scrape(ns: &NetNs, addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    ns.enter(move || {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .expect("connect to the metrics endpoint");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .expect("send");
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        reply
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default()
    })
}

/// The samples of a Prometheus text exposition: `name{labels}` -> value.
pub fn exposition_samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}
