//! `flowlat`: the only place that prints, handles signals and exits.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::os::fd::BorrowedFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use flowlat::bpf::perf::PerfBuffers;
use flowlat::bpf::BpfError;
use flowlat::cli::{self, Command, Settings};
use flowlat::netlink::link::{self, Link, LinkEvent, LinkEvents, LinkLayer, LinkState};
use flowlat::netlink::tc::{self, Attachment};
use flowlat::netlink::NetlinkError;
use flowlat::output::{monotonic_ns, Formatter, WallClock};
use flowlat::owner::{self, Cleanup, Owner};
use flowlat::privilege::{self, Facts};
use flowlat::probe::{Framing, Hook, Outcome, Probe, ProbeConfig, Record};
use rtnetlink::Handle;
use tokio::signal::unix::{signal, SignalKind};

/// A failure of the run, from whichever layer; each carries its own advice.
enum Error {
    Bpf(BpfError),
    Netlink(NetlinkError),
    Other(String),
    /// The kernel refused a privileged operation although the capabilities
    /// are there; the text says which setting may be why.
    Refused(Box<Error>, String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bpf(e) => e.fmt(f),
            Error::Netlink(e) => e.fmt(f),
            Error::Other(s) => f.write_str(s),
            Error::Refused(e, why) => write!(f, "{e}; {why}"),
        }
    }
}

impl From<BpfError> for Error {
    fn from(e: BpfError) -> Self {
        Error::Bpf(e)
    }
}

impl From<NetlinkError> for Error {
    fn from(e: NetlinkError) -> Self {
        Error::Netlink(e)
    }
}

impl Error {
    /// Adds why the kernel may have refused, when it answered EPERM or EACCES.
    /// A verifier's EACCES is its verdict on the program, not a privilege matter.
    fn explained(self, facts: &Facts) -> Error {
        use std::error::Error as _;
        let errno = match &self {
            Error::Bpf(e @ BpfError::Sys { .. }) => e
                .source()
                .and_then(|s| s.downcast_ref::<io::Error>())
                .and_then(io::Error::raw_os_error),
            Error::Bpf(BpfError::Verifier { source, .. }) => {
                source.raw_os_error().filter(|&e| e == libc::EPERM)
            }
            Error::Netlink(e) => e.errno(),
            _ => None,
        };
        match errno {
            Some(libc::EPERM | libc::EACCES) => {
                let why = privilege::explain_refusal(facts);
                Error::Refused(Box::new(self), why)
            }
            _ => self,
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(Command::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(c) => c,
        Err(msg) => {
            eprintln!("flowlat: {msg}");
            return ExitCode::from(2);
        }
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
        Command::Run(settings) => match rt.block_on(run(settings)) {
            Ok(Ended { summary, failed }) => {
                eprintln!("flowlat: {summary}");
                if failed {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                eprintln!("flowlat: {e}");
                ExitCode::from(1)
            }
        },
        Command::Detach(ifaces) => {
            if rt.block_on(detach_left(&ifaces)) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Print(_) => ExitCode::SUCCESS,
    }
}

/// Counts for the summary line.
#[derive(Default)]
struct Tally {
    by_outcome: HashMap<&'static str, u64>,
    malformed: u64,
}

impl Tally {
    fn add(&mut self, r: &Record) {
        *self.by_outcome.entry(r.outcome.as_str()).or_default() += 1;
    }
}

/// Why the main loop stopped.
enum Stop {
    Signal(&'static str),
    StdoutClosed,
    /// Every interface was deleted; their names.
    NothingLeft(Vec<String>),
}

/// How a run ended after attaching: the summary line, and whether that is a
/// failure (exit 1).
struct Ended {
    summary: String,
    failed: bool,
}

/// SIGINT, SIGTERM and SIGHUP, caught from before the first attach so that a
/// signal during start-up still ends in a clean detach.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn catch() -> Result<Signals, Error> {
        let sig = |k: SignalKind, name: &str| {
            signal(k).map_err(|e| Error::Other(format!("cannot catch {name}: {e}")))
        };
        Ok(Signals {
            int: sig(SignalKind::interrupt(), "SIGINT")?,
            term: sig(SignalKind::terminate(), "SIGTERM")?,
            hup: sig(SignalKind::hangup(), "SIGHUP")?,
        })
    }
}

async fn run(s: Settings) -> Result<Ended, Error> {
    // Refuse before creating anything, naming exactly what is missing.
    let facts = Facts::read();
    privilege::check(&facts).map_err(Error::Other)?;
    run_privileged(s).await.map_err(|e| e.explained(&facts))
}

async fn run_privileged(s: Settings) -> Result<Ended, Error> {
    raise_memlock_limit();
    let mut signals = Signals::catch()?;
    let me = Owner::current().map_err(Error::Other)?;
    let handle = link::connect()?;
    // Subscribed before the lookups, so no change to an interface after its
    // lookup goes unseen.
    let mut events = link::watch()?;

    let mut links = Vec::new();
    for name in &s.ifaces {
        let l = link::resolve(&handle, name).await?;
        if let (None, LinkLayer::Other(t)) = (framing(&l), l.link_layer) {
            return Err(Error::Other(format!(
                "{} has link type {t} (see `ip -d link show {}`); flowlat reads Ethernet \
                 interfaces, lo, and L3 devices without a link header (tun, WireGuard)",
                l.name, l.name
            )));
        }
        links.push(l);
    }
    let l3 = links.iter().any(|l| framing(l) == Some(Framing::Ip));
    let mut probe = Probe::load_for(
        &ProbeConfig {
            max_pending: s.max_pending,
        },
        l3,
    )?;
    let mut perf = probe.open_perf(s.perf_pages)?;

    let started = Instant::now();
    let (attached, cleanups) = attach_all(&handle, &probe, &links, &me).await?;
    let took = started.elapsed();
    let removed: Vec<String> = cleanups
        .iter()
        .filter_map(|c| Some(format!("on {}, {}", c.ifname, c.describe_removed()?)))
        .collect();
    if !removed.is_empty() {
        eprintln!(
            "flowlat: removed what flowlat processes no longer running left behind: {}",
            removed.join("; ")
        );
    }
    let list: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
    let mut line = format!("attached to {} (ingress and egress)", list.join(", "));
    if took > Duration::from_millis(100) {
        line.push_str(&format!(" in {} ms", took.as_millis()));
    }
    eprintln!("flowlat: {line}");

    let names: HashMap<u32, String> = links.iter().map(|l| (l.index, l.name.clone())).collect();
    let mut watched = Vec::new();
    for att in attached {
        // Only to tell later whether down/up is news; an error here is not
        // worth stopping for, the link events carry the state anyway.
        let up = match link::by_index(&handle, att.ifindex).await {
            Ok(Some(state)) => state.up,
            _ => true,
        };
        watched.push(Watched { att, up });
    }
    let mut session = Session {
        probe: &mut probe,
        perf: &mut perf,
        fmt: Formatter::new(s.json, WallClock::now(), names),
        tally: Tally::default(),
        handle: &handle,
        events: &mut events,
        watched,
    };
    let result = session.watch(&s, &mut signals).await;

    let mut detach_error = None;
    for w in &session.watched {
        if let Err(e) = tc::detach(&handle, &w.att).await {
            detach_error.get_or_insert(e);
        }
    }
    let Session {
        probe,
        perf,
        fmt,
        mut tally,
        ..
    } = session;
    // Records sent before the filters went away are still in the rings.
    let mut out = io::stdout().lock();
    let _ = emit_ready(perf, &fmt, &mut tally, &mut out);
    let sweep = probe.sweep(monotonic_ns(), s.syn_timeout);
    let (mut in_progress, mut in_table) = (0, 0);
    if let Ok(sw) = &sweep {
        let _ = print_all(&sw.expired, &fmt, &mut tally, &mut out);
        in_progress = sw.pending;
        in_table = sw.pending + sw.tombstones;
    }
    let stop = result?;
    if let Some(e) = detach_error {
        return Err(e.into());
    }

    let ks = probe.kernel_stats()?;
    let ps = perf.stats();
    let lost = ks.send_failed.max(ps.lost) + ps.wrong_size + tally.malformed;
    let n = |o: Outcome| tally.by_outcome.get(o.as_str()).copied().unwrap_or(0);
    let total: u64 = tally.by_outcome.values().sum();
    let (why, failed) = match stop {
        Stop::Signal(sig) => (format!("stopped by {sig}"), false),
        Stop::StdoutClosed => ("stopped: output closed".to_string(), false),
        Stop::NothingLeft(gone) => (
            format!(
                "stopped: no interface is left to measure ({} gone)",
                gone.join(", ")
            ),
            true,
        ),
    };
    let mut summary = format!(
        "{why}; {total} handshakes: {} ok, {} refused, {} timeout, {} abandoned; \
         {lost} records lost; {} table-full evictions; {in_progress} in progress at exit (not reported)",
        n(Outcome::Ok),
        n(Outcome::Refused),
        n(Outcome::Timeout),
        n(Outcome::Abandoned),
        probe.evicted(&ks, in_table),
    );
    if ks.ext_skipped > 0 {
        summary.push_str(&format!(
            "; {} IPv6 packets not measured (more than 6 extension headers)",
            ks.ext_skipped
        ));
    }
    Ok(Ended { summary, failed })
}

/// Attaches the probe to every interface in `links`, or to none: a failure
/// undoes the interfaces already attached. Before attaching to an interface,
/// removes what flowlat processes that died left on it.
async fn attach_all(
    handle: &Handle,
    probe: &Probe,
    links: &[Link],
    me: &Owner,
) -> Result<(Vec<Attachment>, Vec<Cleanup>), Error> {
    let mut attached = Vec::new();
    let mut cleanups = Vec::new();
    for l in links {
        // Checked when the interface was resolved, and loaded for it.
        let fr = framing(l).unwrap_or(Framing::Ethernet);
        let result = match (
            probe.program_for(Hook::Ingress, fr),
            probe.program_for(Hook::Egress, fr),
        ) {
            (Some(ingress), Some(egress)) => attach_one(handle, (ingress, egress), l, me)
                .await
                .map_err(Error::from),
            _ => Err(Error::Other(format!(
                "no program was loaded for {}'s link type (a flowlat bug: please report it)",
                l.name
            ))),
        };
        match result {
            Ok((a, c)) => {
                attached.push(a);
                cleanups.push(c);
            }
            Err(e) => {
                for a in attached.iter().rev() {
                    if let Err(d) = tc::detach(handle, a).await {
                        eprintln!("flowlat: {d}");
                    }
                }
                return Err(e);
            }
        }
    }
    Ok((attached, cleanups))
}

/// Hands one interface's programs to tc, after removing what dead flowlat
/// processes left there.
async fn attach_one(
    handle: &Handle,
    (ingress, egress): (BorrowedFd<'_>, BorrowedFd<'_>),
    link: &Link,
    me: &Owner,
) -> Result<(Attachment, Cleanup), NetlinkError> {
    let found = owner::scan(handle, link, me).await?;
    let cleanup = owner::remove_left(handle, link, &found).await?;
    // A clsact that some flowlat created may be deleted by whichever flowlat
    // leaves it empty; otherwise it would outlive them all when its creator
    // is not the last to go.
    let adopt = found.iter().any(|f| f.owns_qdisc);
    let attachment = tc::attach_with(handle, link, ingress, egress, adopt, |owns_qdisc| {
        me.filter_name(owns_qdisc)
    })
    .await?;
    Ok((attachment, cleanup))
}

/// `flowlat --detach`: removes what dead flowlat processes left on each
/// interface and says what it did. Returns whether all went well.
async fn detach_left(ifaces: &[String]) -> bool {
    let me = match Owner::current() {
        Ok(me) => me,
        Err(e) => {
            eprintln!("flowlat: {e}");
            return false;
        }
    };
    let handle = match link::connect() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("flowlat: {e}");
            return false;
        }
    };
    let mut ok = true;
    for name in ifaces {
        let result = async {
            let link = link::resolve(&handle, name).await?;
            let found = owner::scan(&handle, &link, &me).await?;
            owner::remove_left(&handle, &link, &found).await
        }
        .await;
        match result {
            Ok(c) => {
                let mut line = match c.describe_removed() {
                    Some(r) => format!("on {name}, removed what flowlat processes no longer running left behind: {r}"),
                    None => format!("on {name}, nothing was left by a flowlat no longer running"),
                };
                if let Some(k) = c.describe_kept() {
                    line.push_str(&format!("; kept {k}"));
                }
                eprintln!("flowlat: {line}");
            }
            Err(e) => {
                eprintln!("flowlat: {e}");
                ok = false;
            }
        }
    }
    ok
}

/// An interface being measured.
struct Watched {
    att: Attachment,
    /// Whether it was up when last seen, to report only changes.
    up: bool,
}

/// Everything the main loop reads from and writes to.
struct Session<'a> {
    probe: &'a mut Probe,
    perf: &'a mut PerfBuffers,
    fmt: Formatter,
    tally: Tally,
    handle: &'a Handle,
    events: &'a mut LinkEvents,
    watched: Vec<Watched>,
}

/// How often records below the perf rings' wakeup watermark are printed.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

impl Session<'_> {
    fn print_ready(&mut self) -> io::Result<()> {
        emit_ready(
            self.perf,
            &self.fmt,
            &mut self.tally,
            &mut io::stdout().lock(),
        )
    }

    async fn watch(&mut self, s: &Settings, signals: &mut Signals) -> Result<Stop, Error> {
        // Sweep often enough that a timeout is reported within a tenth of
        // --syn-timeout of being due, but not more than 20 times a second.
        let every = (s.syn_timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The rings wake us only when a quarter full (see PerfBuffers::open):
        // a tenth of a second is how long a record may wait to be printed.
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let write_failed = |e: io::Error| {
            if is_broken_pipe(&e) {
                Ok(Stop::StdoutClosed)
            } else {
                Err(Error::Other(format!("cannot write to stdout: {e}")))
            }
        };
        loop {
            tokio::select! {
                _ = signals.int.recv() => return Ok(Stop::Signal("SIGINT")),
                _ = signals.term.recv() => return Ok(Stop::Signal("SIGTERM")),
                _ = signals.hup.recv() => return Ok(Stop::Signal("SIGHUP")),
                ready = self.perf.readable() => {
                    ready?;
                    if let Err(e) = self.print_ready() {
                        return write_failed(e);
                    }
                }
                _ = flush.tick() => {
                    if let Err(e) = self.print_ready() {
                        return write_failed(e);
                    }
                }
                event = self.events.next() => {
                    let Some(event) = event else {
                        return Err(Error::Other(
                            "the kernel's interface notifications stopped (the netlink socket \
                             closed), so deleted or renamed interfaces could go unnoticed"
                                .to_string(),
                        ));
                    };
                    if let Some(stop) = self.on_link_event(event).await? {
                        return Ok(stop);
                    }
                }
                _ = tick.tick() => {
                    let sweep = self.probe.sweep(monotonic_ns(), s.syn_timeout)?;
                    let mut out = io::stdout().lock();
                    if let Err(e) = print_all(&sweep.expired, &self.fmt, &mut self.tally, &mut out) {
                        return write_failed(e);
                    }
                    if stdout_closed() {
                        return Ok(Stop::StdoutClosed);
                    }
                }
            }
        }
    }

    /// Follows a change to one of our interfaces; `Some` when none is left.
    async fn on_link_event(&mut self, event: LinkEvent) -> Result<Option<Stop>, Error> {
        match event {
            LinkEvent::Changed(state) => self.changed(&state),
            LinkEvent::Removed { index, .. } => return Ok(self.removed(index)),
            LinkEvent::Missed => {
                // Some events were dropped: ask for each interface instead.
                let indexes: Vec<u32> = self.watched.iter().map(|w| w.att.ifindex).collect();
                for index in indexes {
                    match link::by_index(self.handle, index).await? {
                        Some(state) => self.changed(&state),
                        None => {
                            if let Some(stop) = self.removed(index) {
                                return Ok(Some(stop));
                            }
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    fn changed(&mut self, state: &LinkState) {
        let Some(w) = self
            .watched
            .iter_mut()
            .find(|w| w.att.ifindex == state.index)
        else {
            return;
        };
        if !state.name.is_empty() && state.name != w.att.ifname {
            eprintln!(
                "flowlat: {} was renamed to {}; still measuring it",
                w.att.ifname, state.name
            );
            w.att.ifname = state.name.clone();
            self.fmt.rename(state.index, state.name.clone());
        }
        if state.up != w.up {
            w.up = state.up;
            if state.up {
                eprintln!("flowlat: {} is up again; still measuring it", w.att.ifname);
            } else {
                eprintln!(
                    "flowlat: {} is down; flowlat stays attached and measures again when it is up",
                    w.att.ifname
                );
            }
        }
    }

    /// Stops measuring a deleted interface: its filters and qdisc went with it.
    fn removed(&mut self, index: u32) -> Option<Stop> {
        let pos = self.watched.iter().position(|w| w.att.ifindex == index)?;
        let gone = self.watched.remove(pos);
        if self.watched.is_empty() {
            eprintln!(
                "flowlat: {} is gone (deleted, or moved to another network namespace)",
                gone.att.ifname
            );
            return Some(Stop::NothingLeft(vec![gone.att.ifname]));
        }
        let left: Vec<&str> = self.watched.iter().map(|w| w.att.ifname.as_str()).collect();
        eprintln!(
            "flowlat: {} is gone (deleted, or moved to another network namespace); still measuring {}",
            gone.att.ifname,
            left.join(", ")
        );
        None
    }
}

/// Counts and prints records, then flushes. Every record is counted even when
/// a write fails, so the summary stays right; `Err` is the first write error.
fn print_all<'r>(
    records: impl IntoIterator<Item = &'r Record>,
    fmt: &Formatter,
    tally: &mut Tally,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut result = Ok(());
    for r in records {
        tally.add(r);
        if result.is_ok() {
            result = writeln!(out, "{}", fmt.format(r));
        }
    }
    result?;
    out.flush()
}

/// Prints what the rings hold. `Err` only for a write error.
fn emit_ready(
    perf: &mut PerfBuffers,
    fmt: &Formatter,
    tally: &mut Tally,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut records = Vec::new();
    perf.drain(|_cpu, bytes| {
        match flowlat::probe::Event::decode(bytes).and_then(|ev| Record::from_event(&ev)) {
            Some(r) => records.push(r),
            None => tally.malformed += 1,
        }
    });
    print_all(&records, fmt, tally, out)
}

/// True when stdout's reader has gone (a closed pipe) or its terminal hung up.
fn stdout_closed() -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let stdout = io::stdout();
    let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(n) if n > 0 => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)),
        _ => false,
    }
}

fn is_broken_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

/// `ARPHRD_RAWIP`: L3 devices such as some cellular modems.
const ARPHRD_RAWIP: u16 = 519;

/// How the interface's packets start, from its link type; `None` for link
/// types flowlat cannot read.
fn framing(l: &Link) -> Option<Framing> {
    match l.link_layer {
        LinkLayer::Ethernet | LinkLayer::Loopback => Some(Framing::Ethernet),
        LinkLayer::None | LinkLayer::Other(ARPHRD_RAWIP) => Some(Framing::Ip),
        LinkLayer::Other(_) => None,
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it where we may.
fn raise_memlock_limit() {
    use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
    let _ = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY);
}
