//! One measuring run: load the probe, attach, follow the rings, the sweep,
//! the interfaces and the scrapes, hand every record to the consumers, and
//! leave the interfaces as found. Printing goes through the [`Sink`] that
//! `main` gives it.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use rtnetlink::Handle;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::bpf::perf::PerfBuffers;
use crate::cli::{Output, Settings};
pub use crate::error::Error;
use crate::host::attach::{self, framing};
use crate::host::cgroup::Cgroups;
use crate::host::ifaces::{side_of, Patterns, Side};
use crate::host::owner::Owner;
use crate::host::privilege::{self, Facts};
use crate::host::process_hook::ProcessHook;
use crate::host::processes::ListenerProcesses;
use crate::netlink::link::{self, Link, LinkEvents};
use crate::netlink::tc::{self, Attachment};
use crate::probe::{Aggregation, Comm, Dir, Filter, Framing, Probe, ProbeConfig, Record, Table};
use crate::sinks::clock::{monotonic_ns, WallClock};
use crate::sinks::http::{self, Scrape};
use crate::sinks::labels::Names;
use crate::sinks::lines::Formatter;
use crate::sinks::lines::Lines;
use crate::sinks::metrics::{Gauges, Metrics, MetricsConfig};
use crate::sinks::summary::Tables;
use crate::sinks::summary::{Summary, SummaryConfig};
use crate::sinks::{Consumer, Fanout, Origin};

mod ifaces;

use ifaces::{initial_links, list_names};

/// Where a run's output goes: `main` owns stdout and stderr.
pub trait Sink {
    /// Records and tables.
    fn out(&mut self) -> &mut dyn Write;
    /// One line of news for stderr (without the `flowlat: ` prefix).
    fn note(&mut self, line: &str);
    /// Whether the reader of `out` has gone (a closed pipe, a hung-up terminal).
    fn closed(&mut self) -> bool;
}

/// What `main` resolved before the run, so that its mistakes are usage errors.
pub struct Prepared {
    /// The cgroup2 hierarchy, for names and `--cgroup`.
    pub cgroups: Cgroups,
    /// `--cgroup` resolved: (id, level below the cgroup2 root).
    pub cgroup_filter: Vec<(u64, u32)>,
}

/// How a run ended after attaching: the summary line, and whether that is a
/// failure (exit 1).
pub struct Ended {
    pub summary: String,
    pub failed: bool,
}

/// Why the main loop stopped.
enum Stop {
    Signal(&'static str),
    StdoutClosed,
    /// Every interface was deleted; their names.
    NothingLeft(Vec<String>),
    Count(u64),
    Duration(Duration),
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

/// What a user should know of the table the kernel could run: the LRU
/// fallback costs more, and says why.
fn table_note(t: Table) -> Option<&'static str> {
    match t {
        Table::Slots => None,
        Table::Lru => Some(
            "this kernel has no compare-and-exchange in BPF (Linux 5.12 has it), so attempts \
             in progress are kept in an LRU hash table, which costs the classifier about a \
             third more per handshake",
        ),
    }
}

/// Whether the classifier must send a record per attempt: for lines, tables
/// and `--count`. Without them (`--quiet`) the kernel counts on its own.
pub fn records_needed(s: &Settings) -> bool {
    !matches!(s.output, Output::Quiet) || s.count.is_some()
}

/// Measures until a signal, `--count`, `--duration`, a closed output, or
/// every interface gone.
pub async fn run(s: Settings, prep: Prepared, sink: &mut dyn Sink) -> Result<Ended, Error> {
    // Refuse before creating anything, naming exactly what is missing.
    let facts = Facts::read();
    privilege::check(&facts).map_err(Error::Other)?;
    // Bound before anything is attached: a taken address leaves nothing behind.
    let listener = match &s.metrics {
        Some(m) => Some(http::bind(m.addr).map_err(Error::Other)?),
        None => None,
    };
    run_privileged(s, prep, listener, sink)
        .await
        .map_err(|e| e.explained(&facts))
}

async fn run_privileged(
    s: Settings,
    prep: Prepared,
    listener: Option<TcpListener>,
    sink: &mut dyn Sink,
) -> Result<Ended, Error> {
    raise_memlock_limit();
    let mut signals = Signals::catch()?;
    let me = Owner::current().map_err(Error::Other)?;
    let handle = link::connect()?;
    // Subscribed before the lookups, so no change to an interface after its
    // lookup goes unseen.
    let mut events = link::watch()?;

    let patterns = Patterns::new(&s.ifaces);
    let links = initial_links(&handle, &patterns, sink).await?;
    // Patterns may match an L3 device later: its programs are loaded too.
    let l3 = patterns.any_glob() || links.iter().any(|l| framing(l) == Some(Framing::Ip));
    let sided: Vec<(Link, Side)> = links
        .iter()
        .map(|l| (l.clone(), side_of(l, s.node_view)))
        .collect();
    let mut probe = Probe::load_for(&ProbeConfig::new(s.max_pending), l3)?;
    let filter = filter_of(&s, &prep);
    probe.set_filter(&filter)?;
    // Before the interfaces, so that the first attempts seen have their
    // processes: the hooks for the sockets made from now on, a scan for the
    // listeners made before.
    let (hook, listeners) = if s.process {
        probe.set_process_attribution(true);
        let hook = match prep.cgroups.mount() {
            Some(root) => ProcessHook::attach(&probe, root),
            None => Err(prep
                .cgroups
                .why_unavailable()
                .unwrap_or_else(|| "no cgroup2 mount".to_string())),
        };
        let hook = match hook {
            Ok(h) => Some(h),
            Err(why) => {
                sink.note(&format!(
                    "{why}: out attempts are measured without their processes, in attempts \
                     named from the listening sockets"
                ));
                None
            }
        };
        let mut listeners = ListenerProcesses::new();
        if let Some(why) = listeners.take_failure() {
            sink.note(&format!(
                "{why}: in attempts to listeners made before flowlat started have no process"
            ));
        }
        (hook, Some(listeners))
    } else {
        (None, None)
    };
    let records = records_needed(&s);
    // The kernel counts whenever metrics are served, and whenever no record
    // reaches us: the exit line still needs the counts.
    let kernel_counts = s.metrics.is_some() || !records;
    probe.set_aggregation(&Aggregation {
        enabled: kernel_counts,
        no_records: !records,
        by_server_port: s.metrics.is_some_and(|m| m.by_port),
        // A workload is told by its cgroup where there is a socket.
        by_cgroup: s.metrics.is_some_and(|m| m.by_cgroup || m.by_workload),
    });
    let mut perf = probe.open_perf(s.perf_pages)?;

    let started = Instant::now();
    let (attached, cleanups) = {
        let mut note = |l: &str| sink.note(l);
        attach::attach_all(&handle, &probe, &sided, &me, &mut note).await?
    };
    let took = started.elapsed();
    let removed: Vec<String> = cleanups
        .iter()
        .filter_map(|c| Some(format!("on {}, {}", c.ifname, c.describe_removed()?)))
        .collect();
    if !removed.is_empty() {
        sink.note(&format!(
            "removed what flowlat processes no longer running left behind: {}",
            removed.join("; ")
        ));
    }
    let mut line = if links.is_empty() {
        format!(
            "attached to nothing yet: {} matches no interface; flowlat attaches to those \
             that appear",
            s.ifaces.join(", ")
        )
    } else {
        format!("attached to {} (ingress and egress)", list_names(&sided))
    };
    if took > Duration::from_millis(100) {
        line.push_str(&format!(" in {} ms", took.as_millis()));
    }
    // The bound address, not the asked one: port 0 asks the kernel for any.
    if let Some(addr) = listener.as_ref().and_then(|l| l.local_addr().ok()) {
        line.push_str(&format!("; metrics at http://{addr}/metrics"));
    }
    sink.note(&line);
    if let Some(why) = prep.cgroups.why_unavailable() {
        sink.note(&why);
    }
    if let Some(note) = table_note(probe.table()) {
        sink.note(note);
    }

    let ifnames: HashMap<u32, String> = links.iter().map(|l| (l.index, l.name.clone())).collect();
    let mut watched = Vec::new();
    for (att, (_, side)) in attached.into_iter().zip(&sided) {
        // Only to tell later whether down/up is news; an error here is not
        // worth stopping for, the link events carry the state anyway.
        let up = match link::by_index(&handle, att.ifindex).await {
            Ok(Some(state)) => state.up,
            _ => true,
        };
        watched.push(Watched {
            att,
            up,
            side: *side,
        });
    }
    let clock = WallClock::now();
    let now = monotonic_ns();
    let every = sweep_every(s.syn_timeout);
    let consumer: Option<Box<dyn Consumer>> = match &s.output {
        Output::Lines => {
            let width = ifnames.values().map(String::len).max().unwrap_or(0);
            Some(Box::new(Lines::new(Formatter::new(s.json, clock, width))))
        }
        Output::Summary(o) => {
            let cfg = SummaryConfig {
                by: o.by.clone(),
                v4_prefix: o.v4_prefix,
                v6_prefix: o.v6_prefix,
                max_groups: o.max_groups,
                hist: o.hist,
                json: s.json,
                interval: o.interval,
                // A record reaches us up to a flush after it ended, and a
                // timeout up to a sweep after it was due; the rest is room
                // for a busy host's scheduling. Later ones are counted in
                // the next table and said at exit.
                grace: every + FLUSH_EVERY * 2 + LATE_MARGIN,
            };
            Some(Box::new(Tables::new(
                Summary::new(cfg, now),
                s.json,
                o.hist,
                clock,
            )))
        }
        Output::Quiet => None,
    };
    let metrics = s.metrics.map(|m| {
        let ifaces: Vec<(u32, String)> = ifnames.iter().map(|(i, n)| (*i, n.clone())).collect();
        Metrics::new(
            MetricsConfig {
                by_port: m.by_port,
                by_cgroup: m.by_cgroup,
                by_workload: m.by_workload,
                max_series: m.max_series,
            },
            &ifaces,
        )
    });
    let (scrape_tx, scrape_rx) = mpsc::channel(16);
    let server = listener.map(|l| tokio::spawn(http::serve(l, scrape_tx)).abort_handle());
    let fanout = Fanout::new(
        consumer,
        metrics,
        Names::new(ifnames, prep.cgroups),
        s.count,
        records,
        kernel_counts,
    );
    let mut session = Session {
        probe: &mut probe,
        perf: &mut perf,
        handle: &handle,
        events: &mut events,
        watched,
        patterns: &patterns,
        node_view: s.node_view,
        me: &me,
        notes: Vec::new(),
        fanout,
        scrapes: scrape_rx,
        pending: 0,
        in_table: 0,
        listeners,
        filter,
    };
    for (l, side) in &sided {
        session.name_workload(l.index, *side, l.peer).await;
    }
    let result = session.watch(&s, &mut signals, sink).await;
    // Detached first, as the classifiers are: no process is noted for
    // attempts no one will measure.
    drop(hook);
    if let Some(server) = server {
        server.abort();
    }

    let mut detach_error = None;
    for w in &session.watched {
        if let Err(e) = tc::detach(&handle, &w.att).await {
            detach_error.get_or_insert(e);
        }
    }
    // Records sent before the filters went away are still in the rings.
    let _ = session.drain(sink.out()).await;
    let sweep = session.probe.sweep(monotonic_ns(), s.syn_timeout);
    let (mut in_progress, mut in_table) = (0, 0);
    if let Ok(sw) = &sweep {
        let mut expired = sw.expired.clone();
        let _ = session.consume(&mut expired, Origin::Sweep, sink.out());
        in_progress = sw.pending;
        in_table = sw.pending + sw.tombstones;
    }
    let _ = session.fanout.finish(monotonic_ns(), sink.out());
    let _ = sink.out().flush();
    let stop = result?;
    if let Some(e) = detach_error {
        return Err(e.into());
    }
    let summary = session.exit_line(&stop, in_progress, in_table)?;
    Ok(Ended {
        summary,
        failed: matches!(stop, Stop::NothingLeft(_)),
    })
}

/// The kernel's filters from the options.
fn filter_of(s: &Settings, prep: &Prepared) -> Filter {
    Filter {
        ports: s.filter.ports.clone(),
        nets: s.filter.nets.iter().map(|n| (n.addr, n.prefix)).collect(),
        dir: s.filter.dir,
        cgroups: prep.cgroup_filter.clone(),
        pids: s.filter.pids.clone(),
        comms: s.filter.comms.iter().map(|c| Comm::new(c)).collect(),
        min_rtt_ns: s
            .filter
            .min_rtt
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
    }
}

/// Sweep often enough that a timeout is reported within a tenth of
/// --syn-timeout of being due, but not more than 20 times a second.
fn sweep_every(syn_timeout: Duration) -> Duration {
    (syn_timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// An interface being measured.
struct Watched {
    att: Attachment,
    /// Whether it was up when last seen, to report only changes.
    up: bool,
    /// The side it is measured from.
    side: Side,
}

/// Everything the main loop reads from and writes to.
struct Session<'a> {
    probe: &'a mut Probe,
    perf: &'a mut PerfBuffers,
    handle: &'a Handle,
    events: &'a mut LinkEvents,
    watched: Vec<Watched>,
    /// The IFACE arguments, for interfaces that appear later.
    patterns: &'a Patterns,
    /// `--node-view`: every interface measured from its own side.
    node_view: bool,
    me: &'a Owner,
    /// News for stderr from where no sink is at hand.
    notes: Vec<String>,
    /// Where every record goes.
    fanout: Fanout,
    scrapes: mpsc::Receiver<Scrape>,
    /// Attempts in progress at the last sweep (the metrics gauge).
    pending: u64,
    /// Entries in the table at the last sweep: attempts in progress and the
    /// tombstones of reported ones, which the eviction count must not take
    /// for evicted attempts.
    in_table: u64,
    /// Names the listeners' processes the kernel could not (`None` with
    /// `--no-process`).
    listeners: Option<ListenerProcesses>,
    /// The filters, for the `in` attempts whose process user space names.
    filter: Filter,
}

/// How often records below the perf rings' wakeup watermark are handed on.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How much later than due an interval's table may wait on a loaded host.
const LATE_MARGIN: Duration = Duration::from_millis(400);

impl Session<'_> {
    async fn watch(
        &mut self,
        s: &Settings,
        signals: &mut Signals,
        sink: &mut dyn Sink,
    ) -> Result<Stop, Error> {
        let mut tick = tokio::time::interval(sweep_every(s.syn_timeout));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The rings wake us only when a quarter full (see PerfBuffers::open):
        // a tenth of a second is how long a record may wait to be handed on.
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let deadline = s.duration.map(|d| tokio::time::Instant::now() + d);
        let until_deadline = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(until_deadline);
        let write_failed = |e: io::Error| {
            if e.kind() == io::ErrorKind::BrokenPipe {
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
                _ = &mut until_deadline => {
                    return Ok(Stop::Duration(s.duration.unwrap_or_default()));
                }
                ready = self.perf.readable() => {
                    ready?;
                    match self.drain(sink.out()).await {
                        Ok(Some(stop)) => return Ok(stop),
                        Ok(None) => {}
                        Err(e) => return write_failed(e),
                    }
                }
                _ = flush.tick() => {
                    let drained = self.drain(sink.out()).await;
                    match drained {
                        Ok(Some(stop)) => return Ok(stop),
                        Ok(None) => {}
                        Err(e) => return write_failed(e),
                    }
                    if let Err(e) = self.fanout.tick(monotonic_ns(), sink.out()) {
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
                    if let Some(stop) = self.on_link_event(event, sink).await? {
                        return Ok(stop);
                    }
                }
                Some(scrape) = self.scrapes.recv() => {
                    let text = self.render_metrics()?;
                    // The client may have gone meanwhile: nothing to do then.
                    let _ = scrape.reply.send(text);
                }
                _ = tick.tick() => {
                    let sweep = self.probe.sweep(monotonic_ns(), s.syn_timeout)?;
                    self.pending = sweep.pending;
                    self.in_table = sweep.pending + sweep.tombstones;
                    let mut expired = sweep.expired;
                    self.recheck_workloads(&expired).await;
                    match self.consume(&mut expired, Origin::Sweep, sink.out()) {
                        Ok(Some(stop)) => return Ok(stop),
                        Ok(None) => {}
                        Err(e) => return write_failed(e),
                    }
                    if sink.closed() {
                        return Ok(Stop::StdoutClosed);
                    }
                    self.expire(s)?;
                    self.refresh_workloads().await;
                    for n in std::mem::take(&mut self.notes) {
                        sink.note(&n);
                    }
                }
            }
        }
    }

    /// Forgets the interfaces gone for longer than the TTL: names,
    /// workloads, series, and the kernel's aggregates of them. The TTL is
    /// `--series-ttl` with metrics; without, long enough for the sweep's
    /// last timeouts of a gone interface to be named.
    fn expire(&mut self, s: &Settings) -> Result<(), Error> {
        let ttl = match s.metrics {
            Some(m) => m.series_ttl,
            None => s.syn_timeout * 2 + Duration::from_secs(60),
        };
        let gone = self.fanout.expire(monotonic_ns(), ttl);
        self.probe.forget_ifaces(&gone)?;
        Ok(())
    }

    /// Hands on the records the rings and the batches hold. `Err` only for a
    /// write error.
    async fn drain(&mut self, out: &mut dyn Write) -> io::Result<Option<Stop>> {
        let mut records = Vec::new();
        self.probe.records(self.perf, &mut records);
        self.recheck_workloads(&records).await;
        self.consume(&mut records, Origin::Kernel, out)
    }

    /// Hands records to the fan-out; `Some` when `--count` is reached.
    fn consume(
        &mut self,
        records: &mut Vec<Record>,
        origin: Origin,
        out: &mut dyn Write,
    ) -> io::Result<Option<Stop>> {
        if let Some(l) = &mut self.listeners {
            l.name(records);
        }
        // The kernel kept the `in` attempts whose listener it could not
        // name; with the process named, --pid and --comm decide here.
        let before = records.len();
        let filter = &self.filter;
        records.retain(|r| r.dir == Dir::Out || filter.keeps_process(r.process.as_ref()));
        self.probe.count_filtered((before - records.len()) as u64);
        Ok(self.fanout.take(records, origin, out)?.map(Stop::Count))
    }

    fn render_metrics(&mut self) -> Result<String, Error> {
        if !self.fanout.has_metrics() {
            return Ok(String::new());
        }
        let agg = self.probe.aggregates()?;
        let ks = self.probe.kernel_stats()?;
        let ps = self.perf.stats();
        let gauges = Gauges {
            records_lost: self.probe.records_lost(&ks, &ps),
            evictions: self.probe.evicted(&ks, self.in_table),
            filtered: ks.filtered,
            pending: self.pending,
        };
        let failures = self.probe.failures()?;
        Ok(self.fanout.render_metrics(agg, failures, &gauges))
    }

    /// The line printed at exit.
    fn exit_line(&mut self, stop: &Stop, in_progress: u64, in_table: u64) -> Result<String, Error> {
        let ks = self.probe.kernel_stats()?;
        let ps = self.perf.stats();
        let lost = self.probe.records_lost(&ks, &ps);
        let tally = self
            .fanout
            .handshakes(ks.below_min_rtt, || self.probe.aggregates())?;
        let why = match stop {
            Stop::Signal(sig) => format!("stopped by {sig}"),
            Stop::StdoutClosed => "stopped: output closed".to_string(),
            Stop::NothingLeft(gone) => format!(
                "stopped: no interface is left to measure ({} gone)",
                gone.join(", ")
            ),
            Stop::Count(n) => format!("stopped after {n} attempts (--count)"),
            Stop::Duration(d) => format!("stopped after {} (--duration)", human(*d)),
        };
        let mut line = format!(
            "{why}; {}; {lost} records lost; {} table-full evictions; \
             {in_progress} in progress at exit (not reported)",
            tally.describe(),
            self.probe.evicted(&ks, in_table),
        );
        if ks.filtered > 0 {
            line.push_str(&format!(
                "; {} attempts dropped by the filters",
                ks.filtered
            ));
        }
        if ks.below_min_rtt > 0 {
            line.push_str(&format!(
                "; {} ok under --min-rtt not reported",
                ks.below_min_rtt
            ));
        }
        if self.fanout.beyond_count() > 0 {
            line.push_str(&format!(
                "; {} more ended after --count was reached (not reported)",
                self.fanout.beyond_count()
            ));
        }
        if let Some(other) = self.fanout.other_attempts() {
            if other > 0 {
                line.push_str(&format!(
                    "; {other} attempts counted in `other` (more groups than --max-groups)"
                ));
            }
        }
        if let Some(late) = self.fanout.late_attempts() {
            if late > 0 {
                line.push_str(&format!(
                    "; {late} attempts read after their interval's table was written \
                     (counted in the next)"
                ));
            }
        }
        if ks.ext_skipped > 0 {
            line.push_str(&format!(
                "; {} IPv6 packets not measured (more than 6 extension headers)",
                ks.ext_skipped
            ));
        }
        Ok(line)
    }
}

/// `90s` as `1m30s`, `1.5s` as `1.5s`: how a duration reads in the exit line.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{}s", d.as_secs_f64());
    }
    let s = ms / 1000;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it where we may.
fn raise_memlock_limit() {
    use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
    let _ = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_lru_fallback_is_worth_a_note_and_it_says_why() {
        assert_eq!(table_note(Table::Slots), None);
        let note = table_note(Table::Lru).expect("a note");
        assert!(note.contains("Linux 5.12"), "{note}");
        assert!(note.contains("LRU"), "{note}");
    }

    #[test]
    fn durations_read_as_written() {
        assert_eq!(human(Duration::from_secs(5)), "5s");
        assert_eq!(human(Duration::from_secs(120)), "2m");
        assert_eq!(human(Duration::from_secs(90)), "1m30s");
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human(Duration::from_secs(3600)), "1h00m00s");
    }

    #[test]
    fn the_sweep_runs_between_20_times_a_second_and_once_a_second() {
        assert_eq!(sweep_every(Duration::from_secs(10)), Duration::from_secs(1));
        assert_eq!(
            sweep_every(Duration::from_secs(3)),
            Duration::from_millis(300)
        );
        assert_eq!(
            sweep_every(Duration::from_millis(100)),
            Duration::from_millis(50)
        );
    }
}
