//! `flowlat`: arguments, wiring, printing and exit codes. The run itself is
//! `flowlat::run`.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use flowlat::cli::{self, Command, Settings};
use flowlat::host::cgroup::Cgroups;
use flowlat::host::{attach, mounts, privilege};
use flowlat::run::{self, Prepared, Sink};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(Command::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(c) => c,
        Err(msg) => return usage(&msg),
    };
    // Before any thread starts: a private mount namespace needs a process of
    // one thread. A failure is said where cgroups would be named.
    // Without the privilege to mount, the run refuses anyway (or names no
    // cgroup, and says so then).
    let cgroup_mount = match &command {
        Command::Run(_) if privilege::Facts::read().may_mount() => {
            std::fs::read_to_string("/proc/self/mountinfo")
                .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))
                .and_then(|m| mounts::ensure_cgroup2(&m))
        }
        _ => Ok(false),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flowlat: cannot start the event loop: {e}");
            return ExitCode::from(1);
        }
    };
    match command {
        Command::Run(settings) => {
            if let Some(part) = option_env!("FLOWLAT_ABLATED") {
                eprintln!(
                    "flowlat: this build's classifier is cut short \
                     (FLOWLAT_ABLATE={part}, for scripts/ablate.sh): it measures nothing"
                );
            }
            if let Err(why) = &cgroup_mount {
                eprintln!("flowlat: {why}; cgroups will not be named");
            }
            let prep = match prepare(&settings) {
                Ok(p) => p,
                Err(msg) => return usage(&msg),
            };
            let mut sink = Terminal {
                out: BufWriter::with_capacity(OUT_BUFFER, io::stdout().lock()),
            };
            match rt.block_on(run::run(*settings, prep, &mut sink)) {
                Ok(ended) => {
                    eprintln!("flowlat: {}", ended.summary);
                    if ended.failed {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("flowlat: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Detach(ifaces) => {
            let mut note = |line: &str| eprintln!("flowlat: {line}");
            if rt.block_on(attach::detach_left(&ifaces, &mut note)) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Print(_) => ExitCode::SUCCESS,
    }
}

fn usage(msg: &str) -> ExitCode {
    const HINT: &str = "Run `flowlat --help` for usage.";
    if msg.contains(HINT) {
        eprintln!("flowlat: {msg}");
    } else {
        eprintln!("flowlat: {msg}\n{HINT}");
    }
    ExitCode::from(2)
}

/// What must hold before a run, so that a mistake in it is bad usage (exit
/// 2): the cgroups that `--cgroup` names exist.
fn prepare(s: &Settings) -> Result<Prepared, String> {
    let cgroups = Cgroups::discover();
    let mut cgroup_filter = Vec::new();
    for path in &s.filter.cgroups {
        if cgroups.mount().is_none() {
            return Err(format!(
                "--cgroup {path}: {}",
                cgroups
                    .why_unavailable()
                    .unwrap_or_else(|| "no cgroup2 hierarchy is mounted".to_string())
            ));
        }
        cgroup_filter.push(cgroups.resolve_filter(path)?);
    }
    Ok(Prepared {
        cgroups,
        cgroup_filter,
    })
}

/// How much output is gathered before it is written: the run flushes after
/// each drain of the rings, so that a drain's records leave in one `write`
/// (stdout alone writes every line on its own), and they still leave within
/// that drain.
const OUT_BUFFER: usize = 256 * 1024;

/// stdout for records and tables, stderr for news.
struct Terminal {
    out: BufWriter<io::StdoutLock<'static>>,
}

impl Sink for Terminal {
    fn out(&mut self) -> &mut dyn Write {
        &mut self.out
    }

    fn note(&mut self, line: &str) {
        eprintln!("flowlat: {line}");
    }

    /// True when stdout's reader has gone (a closed pipe) or its terminal hung up.
    fn closed(&mut self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.out.get_ref().as_fd(), PollFlags::empty())];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(n) if n > 0 => fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)),
            _ => false,
        }
    }
}
