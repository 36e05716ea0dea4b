//! Processes with names of their own, in a namespace, that listen or
//! connect: what flowlat must name as the process behind an attempt. They
//! are small Python programs (Python names a process with `prctl`, threads
//! and forks as a C program would), killed on drop.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use crate::net::NetNs;

/// The program: `NAME MODE ADDR PORT`. It names itself NAME (the kernel's
/// comm), says `pid PID`, and then:
/// - `listen`: listens on ADDR:PORT, forks a worker that accepts beside it
///   (a pre-forked server: two processes hold the socket), says `ready`;
/// - `plain`, `threads`, `fork`: waits for a line on stdin, then connects
///   to ADDR:PORT from its main thread; from two threads it starts; or
///   from a child it forks and then from itself. Each connect says
///   `conn PID PORT RESULT` (RESULT: ok or the errno), then `done`.
const PROGRAM: &str = r#"
import ctypes, os, socket, sys, threading
name, mode, addr, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)
fam = socket.AF_INET6 if ':' in addr else socket.AF_INET
def say(*w):
    sys.stdout.write(' '.join(str(x) for x in w) + '\n'); sys.stdout.flush()
say('pid', os.getpid())
if mode == 'listen':
    s = socket.socket(fam); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen(128)
    if os.fork() == 0:
        while True: s.accept()[0].close()
    say('ready')
    while True: s.accept()[0].close()
sys.stdin.readline()
def connect():
    c = socket.socket(fam)
    c.bind(('::' if fam == socket.AF_INET6 else '0.0.0.0', 0))
    local = c.getsockname()[1]
    try: c.connect((addr, port)); r = 'ok'
    except OSError as e: r = 'errno%d' % e.errno
    say('conn', os.getpid(), local, r); c.close()
if mode == 'plain': connect()
elif mode == 'threads':
    ts = [threading.Thread(target=connect) for _ in range(2)]
    [t.start() for t in ts]; [t.join() for t in ts]
elif mode == 'fork':
    child = os.fork()
    if child == 0: connect(); os._exit(0)
    os.waitpid(child, 0); connect()
say('done')
"#;

/// One connect a [`Named`] client made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn {
    pub pid: u32,
    pub port: u16,
    /// `ok` or `errnoN`.
    pub result: String,
}

/// A named process in a namespace.
pub struct Named {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
    pub pid: u32,
}

impl Named {
    /// Starts `NAME MODE ADDR PORT` in `ns` (its network namespace only, so
    /// that it stays in this process's cgroup) and reads its pid; a
    /// listener also waits until it listens.
    pub fn start(ns: &NetNs, name: &str, mode: &str, addr: &str, port: u16) -> Named {
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", ns.name))
            .args(["python3", "-c", PROGRAM, name, mode, addr])
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (the named processes are Python programs)");
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().expect("piped"));
        let mut n = Named {
            child,
            stdin,
            out,
            pid: 0,
        };
        let first = n.line();
        n.pid = first
            .strip_prefix("pid ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} said {first:?}, not its pid"));
        if mode == "listen" {
            let ready = n.line();
            assert_eq!(ready.trim(), "ready", "{name} did not listen");
        }
        n
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.out
            .read_line(&mut l)
            .expect("read a named process's output");
        l
    }

    /// Lets a client connect, and returns its connects once it is done.
    pub fn go(&mut self) -> Vec<Conn> {
        if let Some(mut stdin) = self.stdin.take() {
            stdin
                .write_all(b"go\n")
                .expect("tell a named process to go");
        }
        let mut conns = Vec::new();
        loop {
            let l = self.line();
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                ["conn", pid, port, result] => conns.push(Conn {
                    pid: pid.parse().expect("a pid"),
                    port: port.parse().expect("a port"),
                    result: result.to_string(),
                }),
                ["done"] => return conns,
                _ => panic!("a named process said {l:?}"),
            }
        }
    }

    /// Moves it into the cgroup at `dir`.
    pub fn enter_cgroup(&self, dir: &std::path::Path) {
        std::fs::write(dir.join("cgroup.procs"), self.pid.to_string())
            .unwrap_or_else(|e| panic!("moving {} into {}: {e}", self.pid, dir.display()));
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        // The listener's worker is its child: the process group is not
        // ours, so it is named by its parent's children.
        let kids =
            std::fs::read_to_string(format!("/proc/{}/task/{}/children", self.pid, self.pid))
                .unwrap_or_default();
        for k in kids
            .split_whitespace()
            .filter_map(|k| k.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(k),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = crate::exit_within(&mut self.child, Duration::from_secs(5));
    }
}
