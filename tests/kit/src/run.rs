//! Runs the flowlat binary inside a namespace and collects its JSON records.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::net::NetNs;

/// A JSON value as flowlat writes them: strings, unsigned integers, null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Str(String),
    Num(u64),
    Bool(bool),
    /// An array or object, kept as its text (summary histograms).
    Raw(String),
    Null,
}

/// One record: a flat JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec(pub HashMap<String, Val>);

impl Rec {
    pub fn s(&self, k: &str) -> &str {
        match self.0.get(k) {
            Some(Val::Str(s)) => s,
            other => panic!("{k} is not a string: {other:?} in {self:?}"),
        }
    }
    /// A key that may be absent, null, or a string.
    pub fn opt_s(&self, k: &str) -> Option<&str> {
        match self.0.get(k) {
            Some(Val::Str(s)) => Some(s),
            None | Some(Val::Null) => None,
            other => panic!("{k} is not a string or null: {other:?} in {self:?}"),
        }
    }
    pub fn n(&self, k: &str) -> Option<u64> {
        match self.0.get(k) {
            Some(Val::Num(n)) => Some(*n),
            Some(Val::Null) => None,
            other => panic!("{k} is not a number or null: {other:?} in {self:?}"),
        }
    }
}

/// Parses one line of flowlat's JSON output (a flat object), strictly.
pub fn parse_json(line: &str) -> Result<Rec, String> {
    let b = line.trim().as_bytes();
    let mut i = 0;
    let err = |i: usize, what: &str| format!("{what} at byte {i} of {line}");
    let ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1
        }
    };
    let string = |i: &mut usize| -> Result<String, String> {
        if b.get(*i) != Some(&b'"') {
            return Err(err(*i, "expected a string"));
        }
        *i += 1;
        let mut out = String::new();
        while *i < b.len() {
            match b[*i] {
                b'"' => {
                    *i += 1;
                    return Ok(out);
                }
                b'\\' => {
                    *i += 1;
                    match b.get(*i) {
                        Some(b'"') => out.push('"'),
                        Some(b'\\') => out.push('\\'),
                        Some(b'u') => {
                            let hex = std::str::from_utf8(&b[*i + 1..*i + 5])
                                .map_err(|_| err(*i, "bad escape"))?;
                            let c =
                                u32::from_str_radix(hex, 16).map_err(|_| err(*i, "bad escape"))?;
                            out.push(char::from_u32(c).ok_or_else(|| err(*i, "bad escape"))?);
                            *i += 4;
                        }
                        _ => return Err(err(*i, "unknown escape")),
                    }
                    *i += 1;
                }
                _ => {
                    let start = *i;
                    while *i < b.len() && b[*i] != b'"' && b[*i] != b'\\' {
                        *i += 1;
                    }
                    out.push_str(
                        std::str::from_utf8(&b[start..*i]).map_err(|_| err(start, "not UTF-8"))?,
                    );
                }
            }
        }
        Err(err(*i, "unterminated string"))
    };
    let mut map = HashMap::new();
    ws(&mut i);
    if b.get(i) != Some(&b'{') {
        return Err(err(i, "expected {"));
    }
    i += 1;
    loop {
        ws(&mut i);
        let k = string(&mut i)?;
        ws(&mut i);
        if b.get(i) != Some(&b':') {
            return Err(err(i, "expected :"));
        }
        i += 1;
        ws(&mut i);
        let v = match b.get(i) {
            Some(b'"') => Val::Str(string(&mut i)?),
            Some(b'n') if b[i..].starts_with(b"null") => {
                i += 4;
                Val::Null
            }
            Some(b't') if b[i..].starts_with(b"true") => {
                i += 4;
                Val::Bool(true)
            }
            Some(b'f') if b[i..].starts_with(b"false") => {
                i += 5;
                Val::Bool(false)
            }
            Some(b'[' | b'{') => {
                // Nested values hold no strings with brackets in them.
                let start = i;
                let mut depth = 0i32;
                while i < b.len() {
                    match b[i] {
                        b'[' | b'{' => depth += 1,
                        b']' | b'}' => depth -= 1,
                        b'"' => {
                            string(&mut i)?;
                            continue;
                        }
                        _ => {}
                    }
                    i += 1;
                    if depth == 0 {
                        break;
                    }
                }
                if depth != 0 {
                    return Err(err(start, "unterminated array"));
                }
                Val::Raw(String::from_utf8_lossy(&b[start..i]).into_owned())
            }
            Some(c) if c.is_ascii_digit() => {
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                Val::Num(
                    std::str::from_utf8(&b[start..i])
                        .unwrap_or("x")
                        .parse()
                        .map_err(|_| err(start, "bad number"))?,
                )
            }
            _ => return Err(err(i, "expected a value")),
        };
        if map.insert(k.clone(), v).is_some() {
            return Err(format!("duplicate key {k} in {line}"));
        }
        ws(&mut i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {
                i += 1;
                ws(&mut i);
                return if i == b.len() {
                    Ok(Rec(map))
                } else {
                    Err(err(i, "trailing bytes"))
                };
            }
            _ => return Err(err(i, "expected , or }")),
        }
    }
}

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

impl Flowlat {
    /// Starts `flowlat ARGS` in `ns` and waits until it says it is attached.
    pub fn start(ns: &NetNs, args: &[&str]) -> Flowlat {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name, binary()]).args(args);
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
        let stderr = Arc::new(Mutex::new(String::new()));
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
        let se = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(e).lines() {
                let Ok(line) = line else { break };
                let mut s = se.lock().expect("lock");
                s.push_str(&line);
                s.push('\n');
            }
        });
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
                .filter_map(|l| parse_json(l).ok())
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
            .map(|l| parse_json(l).unwrap_or_else(|e| panic!("flowlat printed invalid JSON: {e}")))
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
        let end = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "flowlat did not exit within {timeout:?} {after}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
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
        let records = lines.iter().filter_map(|l| parse_json(l).ok()).collect();
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
