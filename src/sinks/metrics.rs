//! Prometheus metrics: flowlat's registry and its text exposition (format 0.0.4).
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `flowlat_handshakes_total` | counter | `iface`, `dir`, `result` | handshake attempts by how they ended: `ok`, `refused`, `timeout`, `abandoned`, `unreachable` |
//! | `flowlat_handshake_failures_total` | counter | `iface`, `dir`, `reason` | attempts that did not complete, by reason: `rst`, `new-isn`, `client-reset`, `no-answer`, `no-ack`, or the ICMP error's name (`port-unreachable`, `admin-prohibited`, `no-route`, ...): a bounded set |
//! | `flowlat_handshake_rtt_seconds` | histogram | `iface`, `dir` | `rtt` of `ok` attempts: the round trip beyond the interface |
//! | `flowlat_handshake_local_seconds` | histogram | `iface` | `local` of `ok` `in` attempts: how long this host took to answer a SYN |
//! | `flowlat_syn_retransmits_total` | counter | `iface`, `dir` | client SYNs beyond the first of each attempt |
//! | `flowlat_records_lost_total` | counter | | records the perf ring had no room for (raise `--perf-pages`) |
//! | `flowlat_pending_evictions_total` | counter | | attempts evicted unreported from a full table, or a full bucket of the slot table (raise `--max-pending`) |
//! | `flowlat_filtered_total` | counter | | attempts the filters dropped (`--port`, `--net`, `--dir`, `--cgroup`) |
//! | `flowlat_pending_attempts` | gauge | | attempts in progress in the kernel's table |
//! | `flowlat_build_info` | gauge | `version` | always 1 |
//!
//! `--metrics-by server-port` adds a `server_port` label, `--metrics-by cgroup`
//! a `cgroup` label (the path below the cgroup2 mount; empty when the attempt
//! had no local socket; `id:N` for a cgroup that was gone before it was named,
//! which is decided after two seconds, meanwhile its counts wait),
//! to every metric above that has `iface`. Each such dimension gives a label
//! value of its own to at most `max_series` distinct values and counts the rest
//! under `other`.
//!
//! Every watched interface has its series from the start, zeros included, so
//! that rates and ratios are defined before the first attempt: with optional
//! dimensions those are the `other` series.
//!
//! The histograms' buckets are [`HIST_BOUNDS_NS`] (1-2-5 per decade, 5 µs to
//! 50 s) in seconds, the same for the kernel's aggregation and for records.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::probe::{Dir, Failure, Outcome, Record};

// ---- agg_shim: BEGIN ------------------------------------------------------
use crate::probe::{AggKey, AggValue, Hist, HIST_BOUNDS_NS};

/// `--max-series` when not given.
pub const DEFAULT_MAX_SERIES: usize = 256;

/// Cgroup ids whose label is remembered beyond those the kernel's totals
/// still hold: enough for a host's cgroups between two scrapes.
const CGROUP_LABELS_KEPT: usize = 4096;

/// How long a cgroup id may go unnamed before it is labelled `id:N` for good.
/// The namer may answer `None` for a cgroup it has not seen yet while a walk
/// of the tree is not due (they are a second apart), so one `None` is not
/// final; meanwhile the id's counts wait, since they could not move to
/// another label later without a counter going down.
const NAME_GRACE: Duration = Duration::from_secs(2);

/// Records of cgroups not yet named that wait for the next scrape, by key;
/// beyond it, a new key is counted under `other` (this takes thousands of
/// new cgroups between two scrapes).
const UNRESOLVED_MAX: usize = 4096;

/// Which optional dimensions the metrics have, and how many values each may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// A `server_port` label.
    pub by_port: bool,
    /// A `cgroup` label.
    pub by_cgroup: bool,
    /// A `workload` label.
    pub by_workload: bool,
    /// Distinct label values per dimension; the rest are `other`.
    pub max_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            by_port: false,
            by_cgroup: false,
            by_workload: false,
            max_series: DEFAULT_MAX_SERIES,
        }
    }
}

/// The process-wide numbers of a scrape, read by the run loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Records lost, cumulative.
    pub records_lost: u64,
    /// Table-full evictions, cumulative.
    pub evictions: u64,
    /// Attempts the filters (`--port`, `--net`, `--dir`, `--cgroup`) dropped, cumulative.
    pub filtered: u64,
    /// Attempts in progress now.
    pub pending: u64,
}

/// One optional dimension: which values have a label of their own. Slots are
/// never given back, so a value that went to `other` once stays there and one
/// that got its own label keeps it: every series only ever grows.
struct Bounded<K> {
    max: usize,
    own: HashMap<K, Arc<str>>,
    other: Arc<str>,
}

impl<K: Hash + Eq> Bounded<K> {
    fn new(max: usize) -> Self {
        Bounded {
            max,
            own: HashMap::new(),
            other: Arc::from("other"),
        }
    }

    fn label(&mut self, value: K, name: impl FnOnce(&K) -> Arc<str>) -> Arc<str> {
        if let Some(l) = self.own.get(&value) {
            return l.clone();
        }
        if self.own.len() >= self.max {
            return self.other.clone();
        }
        let l = name(&value);
        self.own.insert(value, l.clone());
        l
    }
}

/// A series as user space accumulates it; `None` where a dimension is off.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Series {
    ifindex: u32,
    dir: Dir,
    port: Option<Arc<str>>,
    cgroup: Option<Arc<str>>,
    workload: Option<Arc<str>>,
}

/// A record whose cgroup has no label yet: (ifindex, dir, port label,
/// cgroup id, workload label).
type Unresolved = (u32, Dir, Option<Arc<str>>, u64, Option<Arc<str>>);

/// A row of the exposition, in the order rows are written: interface name,
/// `out` before `in`, ports by number, cgroups by path, `other` last.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    iface: String,
    dir: (u8, &'static str),
    port: Option<(bool, u16, Arc<str>)>,
    cgroup: Option<(bool, Arc<str>)>,
    workload: Option<(bool, Arc<str>)>,
}

impl Row {
    /// The label pairs, `dir` included or not, ready to go between braces.
    fn labels(&self, with_dir: bool) -> String {
        let mut s = String::new();
        label(&mut s, "iface", &self.iface);
        if with_dir {
            label(&mut s, "dir", self.dir.1);
        }
        if let Some((_, _, p)) = &self.port {
            label(&mut s, "server_port", p);
        }
        if let Some((_, c)) = &self.cgroup {
            label(&mut s, "cgroup", c);
        }
        if let Some((_, w)) = &self.workload {
            label(&mut s, "workload", w);
        }
        s
    }
}

/// The registry: cumulative totals by series, from the kernel and from user space.
pub struct Metrics {
    cfg: MetricsConfig,
    names: HashMap<u32, String>,
    watched: Vec<u32>,
    ports: Bounded<u16>,
    cgroups: Bounded<Arc<str>>,
    workloads: Bounded<Arc<str>>,
    /// The workload label of each (interface, cgroup) of the kernel's
    /// totals, as the run named them for this scrape.
    kernel_workloads: HashMap<(u32, Option<u64>), Arc<str>>,
    /// The workload behind each interface measured from its peer's side:
    /// its series from the start carry it.
    iface_workloads: HashMap<u32, Arc<str>>,
    /// A cgroup id's label, fixed when first named, so that the counts filed
    /// under it stay there when the cgroup is removed.
    cgroup_labels: HashMap<u64, Arc<str>>,
    /// Ids the namer had no name for yet, since when; each is asked again at
    /// every scrape until named or labelled `id:N`, so this holds only the
    /// ids of the current kernel totals and of `unresolved`.
    unnamed: HashMap<u64, Instant>,
    name_grace: Duration,
    no_cgroup: Arc<str>,
    kernel: Vec<(AggKey, AggValue)>,
    user: HashMap<Series, AggValue>,
    unresolved: HashMap<Unresolved, AggValue>,
    /// Failures by reason: the kernel's totals as last read, and user space's.
    kernel_fails: Vec<(Failure, u64)>,
    user_fails: HashMap<Failure, u64>,
}

fn zero_hist() -> Hist {
    Hist {
        buckets: [0; HIST_BOUNDS_NS.len() + 1],
        sum_ns: 0,
    }
}

fn zero() -> AggValue {
    AggValue {
        results: [0; crate::probe::RESULTS],
        retrans: 0,
        rtt: zero_hist(),
        local: zero_hist(),
    }
}

fn merge_hist(into: &mut Hist, h: &Hist) {
    for (a, b) in into.buckets.iter_mut().zip(h.buckets.iter()) {
        *a += b;
    }
    into.sum_ns = into.sum_ns.wrapping_add(h.sum_ns);
}

fn merge(into: &mut AggValue, v: &AggValue) {
    for (a, b) in into.results.iter_mut().zip(v.results.iter()) {
        *a += b;
    }
    into.retrans += v.retrans;
    merge_hist(&mut into.rtt, &v.rtt);
    merge_hist(&mut into.local, &v.local);
}

fn attempts(v: &AggValue) -> u64 {
    v.results.iter().sum()
}

impl Metrics {
    /// A registry for the watched interfaces, `(ifindex, name)`.
    pub fn new(cfg: MetricsConfig, ifaces: &[(u32, String)]) -> Metrics {
        Metrics {
            cfg,
            names: ifaces.iter().cloned().collect(),
            watched: ifaces.iter().map(|(i, _)| *i).collect(),
            ports: Bounded::new(cfg.max_series),
            cgroups: Bounded::new(cfg.max_series),
            workloads: Bounded::new(cfg.max_series),
            kernel_workloads: HashMap::new(),
            iface_workloads: HashMap::new(),
            cgroup_labels: HashMap::new(),
            unnamed: HashMap::new(),
            name_grace: NAME_GRACE,
            no_cgroup: Arc::from(""),
            kernel: Vec::new(),
            user: HashMap::new(),
            unresolved: HashMap::new(),
            kernel_fails: Vec::new(),
            user_fails: HashMap::new(),
        }
    }

    /// The interface was renamed: its series carry the new name from now on.
    pub fn rename_iface(&mut self, ifindex: u32, name: String) {
        self.names.insert(ifindex, name);
    }

    /// Whether the series have a `workload` label.
    pub fn by_workload(&self) -> bool {
        self.cfg.by_workload
    }

    /// An interface attached later: it has its series from now on.
    pub fn add_iface(&mut self, ifindex: u32, name: String) {
        self.names.insert(ifindex, name);
        if !self.watched.contains(&ifindex) {
            self.watched.push(ifindex);
        }
    }

    /// An interface is gone: no zero series for it any more; what it
    /// counted is served until [`Metrics::forget_ifaces`].
    pub fn iface_gone(&mut self, ifindex: u32) {
        self.watched.retain(|i| *i != ifindex);
    }

    /// Drops every series of these interfaces (gone for the TTL), and the
    /// label values only they used, so that a node whose pods come and go
    /// serves about the live ones. Prometheus marks the series stale.
    pub fn forget_ifaces(&mut self, ifindexes: &[u32]) {
        if ifindexes.is_empty() {
            return;
        }
        let dead = |i: &u32| ifindexes.contains(i);
        self.user.retain(|s, _| !dead(&s.ifindex));
        self.unresolved.retain(|k, _| !dead(&k.0));
        self.kernel.retain(|(k, _)| !dead(&k.ifindex));
        self.kernel_fails.retain(|(f, _)| !dead(&f.0));
        self.user_fails.retain(|f, _| !dead(&f.0));
        for i in ifindexes {
            self.names.remove(i);
        }
        self.watched.retain(|i| !dead(i));
        self.kernel_workloads.retain(|(i, _), _| !dead(i));
        self.iface_workloads.retain(|i, _| !dead(i));
        // A workload label that no series uses any more gives its slot back.
        let used: HashSet<Arc<str>> = self
            .user
            .keys()
            .filter_map(|s| s.workload.clone())
            .chain(self.kernel_workloads.values().cloned())
            .chain(self.iface_workloads.values().cloned())
            .collect();
        self.workloads.own.retain(|k, _| used.contains(k));
    }

    /// The workloads behind interfaces measured from their peer's side.
    pub fn set_iface_workloads(&mut self, w: HashMap<u32, Arc<str>>) {
        self.iface_workloads = w;
    }

    /// The workload labels of the kernel's keys, by (interface, cgroup).
    pub fn set_kernel_workloads(&mut self, w: HashMap<(u32, Option<u64>), Arc<str>>) {
        self.kernel_workloads = w;
    }

    /// The kernel's cumulative totals, as read at this scrape; they replace the
    /// previous ones (each key's totals only grow, and keys are never removed).
    pub fn set_kernel(&mut self, totals: Vec<(AggKey, AggValue)>) {
        self.kernel = totals;
    }

    /// The kernel's cumulative failures by reason, as read at this scrape.
    pub fn set_kernel_failures(&mut self, totals: Vec<(Failure, u64)>) {
        self.kernel_fails = totals;
    }

    /// Counts a record user space has and the kernel did not aggregate: the
    /// sweep's timeouts, or every record when the kernel does not aggregate.
    pub fn add(&mut self, r: &Record) {
        self.add_of(r, None);
    }

    /// [`Metrics::add`] for an attempt of `workload` (its label, when the
    /// metrics have one).
    pub fn add_of(&mut self, r: &Record, workload: Option<Arc<str>>) {
        if let Some(reason) = r.reason {
            *self
                .user_fails
                .entry((r.ifindex, r.dir, reason))
                .or_insert(0) += 1;
        }
        self.add_in(r, r.cgroup_id, workload);
    }

    fn workload_label(&mut self, w: Option<Arc<str>>) -> Option<Arc<str>> {
        self.cfg.by_workload.then(|| match w {
            Some(w) => self.workloads.label(w, Arc::clone),
            None => self.no_cgroup.clone(),
        })
    }

    fn add_in(&mut self, r: &Record, cgroup_id: Option<u64>, workload: Option<Arc<str>>) {
        let workload = self.workload_label(workload);
        let port = self
            .cfg
            .by_port
            .then(|| self.ports.label(r.server_port, |p| p.to_string().into()));
        let cgroup = match (self.cfg.by_cgroup, cgroup_id) {
            (false, _) => None,
            (true, None) => Some(self.no_cgroup.clone()),
            (true, Some(id)) => match self.cgroup_labels.get(&id) {
                Some(name) => Some(self.cgroups.label(name.clone(), Arc::clone)),
                None => {
                    let key = (r.ifindex, r.dir, port.clone(), id, workload.clone());
                    if self.unresolved.len() < UNRESOLVED_MAX || self.unresolved.contains_key(&key)
                    {
                        self.unresolved
                            .entry(key)
                            .or_insert_with(zero)
                            .add_record(r);
                        return;
                    }
                    Some(self.cgroups.other.clone())
                }
            },
        };
        let series = Series {
            ifindex: r.ifindex,
            dir: r.dir,
            port,
            cgroup,
            workload,
        };
        self.user.entry(series).or_insert_with(zero).add_record(r);
    }

    /// The label of a cgroup id, named once and then fixed; `None` while
    /// it waits for a name.
    fn cgroup_label(
        &mut self,
        id: u64,
        name: &mut dyn FnMut(u64) -> Option<Arc<str>>,
    ) -> Option<Arc<str>> {
        let label = match self.cgroup_labels.get(&id) {
            Some(l) => l.clone(),
            None => {
                let label = match name(id) {
                    Some(path) => path,
                    None => {
                        let since = *self.unnamed.entry(id).or_insert_with(Instant::now);
                        if since.elapsed() < self.name_grace {
                            return None;
                        }
                        format!("id:{id}").into()
                    }
                };
                self.unnamed.remove(&id);
                self.cgroup_labels.insert(id, label.clone());
                label
            }
        };
        Some(self.cgroups.label(label, Arc::clone))
    }

    /// The series a kernel key is counted in; `None` while its cgroup waits
    /// for a name.
    fn kernel_series(
        &mut self,
        k: &AggKey,
        name: &mut dyn FnMut(u64) -> Option<Arc<str>>,
    ) -> Option<Series> {
        let port = self.cfg.by_port.then(|| match (k.other, k.server_port) {
            (false, Some(p)) => self.ports.label(p, |p| p.to_string().into()),
            // The kernel's overflow entry, or a key without the port: no
            // value of its own can be told.
            _ => self.ports.other.clone(),
        });
        let cgroup = match (self.cfg.by_cgroup, k.other, k.cgroup_id) {
            (false, _, _) => None,
            (true, true, _) => Some(self.cgroups.other.clone()),
            (true, false, None) => Some(self.no_cgroup.clone()),
            (true, false, Some(id)) => Some(self.cgroup_label(id, name)?),
        };
        let workload = match (self.cfg.by_workload, k.other) {
            (false, _) => None,
            (true, true) => Some(self.workloads.other.clone()),
            (true, false) => {
                let w = self
                    .kernel_workloads
                    .get(&(k.ifindex, k.cgroup_id))
                    .cloned();
                self.workload_label(w)
            }
        };
        Some(Series {
            ifindex: k.ifindex,
            dir: k.dir,
            port,
            cgroup,
            workload,
        })
    }

    /// Everything to write, summed by row. Kernel keys are placed busiest
    /// first, so that when slots run out it is the quieter values that go
    /// to `other`.
    fn rows(&mut self, name: &mut dyn FnMut(u64) -> Option<Arc<str>>) -> BTreeMap<Row, AggValue> {
        let mut rows = BTreeMap::new();
        for ifindex in self.watched.clone() {
            for dir in [Dir::Out, Dir::In] {
                let s = Series {
                    ifindex,
                    dir,
                    port: self.cfg.by_port.then(|| self.ports.other.clone()),
                    cgroup: self.cfg.by_cgroup.then(|| self.cgroups.other.clone()),
                    workload: match self.iface_workloads.get(&ifindex).cloned() {
                        Some(w) => self.workload_label(Some(w)),
                        None => self.cfg.by_workload.then(|| self.workloads.other.clone()),
                    },
                };
                rows.insert(self.row(s), zero());
            }
        }
        let kernel = std::mem::take(&mut self.kernel);
        let mut order: Vec<&(AggKey, AggValue)> = kernel.iter().collect();
        order.sort_by_key(|(_, v)| Reverse(attempts(v)));
        for (k, v) in order {
            if let Some(series) = self.kernel_series(k, name) {
                let row = self.row(series);
                merge(rows.entry(row).or_insert_with(zero), v);
            }
        }
        for ((ifindex, dir, port, id, workload), v) in std::mem::take(&mut self.unresolved) {
            let Some(cgroup) = self.cgroup_label(id, name) else {
                self.unresolved
                    .insert((ifindex, dir, port, id, workload), v);
                continue;
            };
            let s = Series {
                ifindex,
                dir,
                port,
                cgroup: Some(cgroup),
                workload,
            };
            merge(self.user.entry(s).or_insert_with(zero), &v);
        }
        for (s, v) in &self.user {
            merge(rows.entry(self.row(s.clone())).or_insert_with(zero), v);
        }
        if self.cgroup_labels.len() > CGROUP_LABELS_KEPT {
            let live: HashSet<u64> = kernel.iter().filter_map(|(k, _)| k.cgroup_id).collect();
            self.cgroup_labels.retain(|id, _| live.contains(id));
        }
        self.kernel = kernel;
        rows
    }

    fn row(&self, s: Series) -> Row {
        Row {
            iface: self
                .names
                .get(&s.ifindex)
                .cloned()
                .unwrap_or_else(|| format!("if{}", s.ifindex)),
            dir: match s.dir {
                Dir::Out => (0, "out"),
                Dir::In => (1, "in"),
            },
            port: s.port.map(|p| match p.parse::<u16>() {
                Ok(n) => (false, n, p),
                Err(_) => (true, 0, p),
            }),
            cgroup: s.cgroup.map(|c| (c == self.cgroups.other, c)),
            workload: s.workload.map(|w| (w == self.workloads.other, w)),
        }
    }

    /// The exposition of everything counted so far. `cgroup_name` names a
    /// cgroup id (its path below the cgroup2 mount), `None` when it is gone or
    /// not known yet. Once it has named an id it is not asked again; an id
    /// still without a name two seconds after the first `None` is labelled
    /// `id:N`, and until then its counts are not shown.
    pub fn render(
        &mut self,
        cgroup_name: &mut dyn FnMut(u64) -> Option<Arc<str>>,
        gauges: &Gauges,
    ) -> String {
        let rows = self.rows(cgroup_name);
        let mut out = String::with_capacity(1024 + rows.len() * 2048);
        family(
            &mut out,
            "flowlat_handshakes_total",
            "counter",
            "TCP handshake attempts by how they ended (ok, refused, timeout, abandoned, unreachable).",
        );
        for (row, v) in &rows {
            let labels = row.labels(true);
            for o in Outcome::ALL {
                let mut l = labels.clone();
                label(&mut l, "result", o.as_str());
                sample(
                    &mut out,
                    "flowlat_handshakes_total",
                    &l,
                    v.results[o.index()],
                );
            }
        }
        family(
            &mut out,
            "flowlat_handshake_failures_total",
            "counter",
            "Handshake attempts that did not complete, by reason: rst, new-isn, client-reset, \
             no-answer, no-ack, or the ICMP error's name.",
        );
        for ((iface, dir, reason), n) in self.failures() {
            let mut l = String::new();
            label(&mut l, "iface", &iface);
            label(&mut l, "dir", dir);
            label(&mut l, "reason", reason);
            sample(&mut out, "flowlat_handshake_failures_total", &l, n);
        }
        family(
            &mut out,
            "flowlat_handshake_rtt_seconds",
            "histogram",
            "Round trip beyond the interface of ok handshakes: SYN to SYN-ACK (out), SYN-ACK to ACK (in).",
        );
        for (row, v) in &rows {
            histogram(
                &mut out,
                "flowlat_handshake_rtt_seconds",
                &row.labels(true),
                &v.rtt,
            );
        }
        family(
            &mut out,
            "flowlat_handshake_local_seconds",
            "histogram",
            "Time this host took to answer the SYN of ok inbound handshakes.",
        );
        for (row, v) in rows.iter().filter(|(r, _)| r.dir.1 == "in") {
            histogram(
                &mut out,
                "flowlat_handshake_local_seconds",
                &row.labels(false),
                &v.local,
            );
        }
        family(
            &mut out,
            "flowlat_syn_retransmits_total",
            "counter",
            "Client SYNs beyond the first of each handshake attempt.",
        );
        for (row, v) in &rows {
            sample(
                &mut out,
                "flowlat_syn_retransmits_total",
                &row.labels(true),
                v.retrans,
            );
        }
        let singles: [(&str, &str, &str, u64); 4] = [
            (
                "flowlat_records_lost_total",
                "counter",
                "Handshake records the perf ring had no room for; raise --perf-pages.",
                gauges.records_lost,
            ),
            (
                "flowlat_pending_evictions_total",
                "counter",
                "Attempts evicted unreported from a full table of attempts in progress, or a full bucket of it; raise --max-pending.",
                gauges.evictions,
            ),
            (
                "flowlat_filtered_total",
                "counter",
                "Handshake attempts the kernel left out because of --cgroup.",
                gauges.filtered,
            ),
            (
                "flowlat_pending_attempts",
                "gauge",
                "Handshake attempts in progress in the kernel's table.",
                gauges.pending,
            ),
        ];
        for (name, kind, help, v) in singles {
            family(&mut out, name, kind, help);
            sample(&mut out, name, "", v);
        }
        family(
            &mut out,
            "flowlat_build_info",
            "gauge",
            "The running flowlat's version; always 1.",
        );
        let mut l = String::new();
        label(&mut l, "version", env!("CARGO_PKG_VERSION"));
        sample(&mut out, "flowlat_build_info", &l, 1);
        out
    }
}

impl Metrics {
    /// Failures by interface name, direction and reason name, the kernel's
    /// and user space's together: one series per name (an IPv4 and an IPv6
    /// error of the same name are one), in a stable order.
    fn failures(&self) -> BTreeMap<(String, &'static str, &'static str), u64> {
        let mut out = BTreeMap::new();
        let user = self.user_fails.iter().map(|(f, n)| (f, *n));
        for (&(ifindex, dir, reason), n) in
            self.kernel_fails.iter().map(|(f, n)| (f, *n)).chain(user)
        {
            let iface = self
                .names
                .get(&ifindex)
                .cloned()
                .unwrap_or_else(|| format!("if{ifindex}"));
            *out.entry((iface, dir.as_str(), reason.as_str()))
                .or_insert(0) += n;
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Appends `name="value"` to a label list, the value escaped as the format
/// asks (backslash, double quote and line feed).
fn label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// Nanoseconds as decimal seconds, exactly: `0.000005`, `1`, `12.3456789`.
fn seconds(ns: u64) -> String {
    let (s, frac) = (ns / 1_000_000_000, ns % 1_000_000_000);
    if frac == 0 {
        return s.to_string();
    }
    let digits = format!("{frac:09}");
    format!("{s}.{}", digits.trim_end_matches('0'))
}

/// A histogram's `_bucket` lines (cumulative, `+Inf` last), `_sum` and `_count`.
fn histogram(out: &mut String, name: &str, labels: &str, h: &Hist) {
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0u64;
    for (i, n) in h.buckets.iter().enumerate() {
        cumulative += n;
        let le = HIST_BOUNDS_NS
            .get(i)
            .map_or_else(|| "+Inf".to_string(), |&b| seconds(b));
        let mut l = labels.to_string();
        label(&mut l, "le", &le);
        sample(out, &bucket, &l, cumulative);
    }
    sample(out, &format!("{name}_sum"), labels, seconds(h.sum_ns));
    sample(out, &format!("{name}_count"), labels, cumulative);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Outcome;
    use crate::probe::Reason;

    fn record(ifindex: u32, dir: Dir, outcome: Outcome, port: u16) -> Record {
        Record {
            ifindex,
            dir,
            outcome,
            client: "10.0.0.5".parse().expect("literal"),
            client_port: 40000,
            server: "10.0.0.7".parse().expect("literal"),
            server_port: port,
            end_ns: 1,
            rtt_ns: (outcome == Outcome::Ok).then_some(1_500_000),
            local_ns: (dir == Dir::In).then_some(40_000),
            total_ns: None,
            retrans: 0,
            synack_retrans: None,
            cgroup_id: None,
            process: None,
            reason: None,
            reason_from: None,
        }
    }

    fn ok_rtt(ns: u64) -> Record {
        let mut r = record(2, Dir::Out, Outcome::Ok, 443);
        r.rtt_ns = Some(ns);
        r
    }

    fn key(dir: Dir, port: Option<u16>, cgroup_id: Option<u64>) -> AggKey {
        AggKey {
            ifindex: 2,
            dir,
            server_port: port,
            cgroup_id,
            other: false,
        }
    }

    /// Totals of `n` ok attempts, each with a 1 ms rtt.
    fn oks(n: u64) -> AggValue {
        let mut v = zero();
        v.results[0] = n;
        v.rtt.buckets[7] = n;
        v.rtt.sum_ns = n * 1_000_000;
        v
    }

    fn eth0() -> Vec<(u32, String)> {
        vec![(2, "eth0".to_string())]
    }

    fn by_port(max_series: usize) -> MetricsConfig {
        MetricsConfig {
            by_port: true,
            max_series,
            ..MetricsConfig::default()
        }
    }

    fn render(m: &mut Metrics) -> String {
        m.render(&mut |_| None, &Gauges::default())
    }

    /// The value of the sample with exactly this name and these labels.
    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_string)
    }

    fn lines_of<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn every_watched_interface_has_all_results_from_the_start() {
        let ifaces = [(2, "eth0".to_string()), (3, "eth1".to_string())];
        let text = render(&mut Metrics::new(MetricsConfig::default(), &ifaces));
        let handshakes: Vec<&str> = lines_of(&text, "flowlat_handshakes_total{");
        assert_eq!(handshakes.len(), 2 * 2 * 5, "{text}");
        assert_eq!(
            handshakes[..5],
            [
                r#"flowlat_handshakes_total{iface="eth0",dir="out",result="ok"} 0"#,
                r#"flowlat_handshakes_total{iface="eth0",dir="out",result="refused"} 0"#,
                r#"flowlat_handshakes_total{iface="eth0",dir="out",result="timeout"} 0"#,
                r#"flowlat_handshakes_total{iface="eth0",dir="out",result="abandoned"} 0"#,
                r#"flowlat_handshakes_total{iface="eth0",dir="out",result="unreachable"} 0"#,
            ]
        );
        assert_eq!(
            value(
                &text,
                r#"flowlat_handshake_rtt_seconds_count{iface="eth1",dir="in"}"#
            ),
            Some("0".into())
        );
        assert_eq!(
            value(
                &text,
                r#"flowlat_handshake_local_seconds_count{iface="eth1"}"#
            ),
            Some("0".into())
        );
        assert_eq!(
            value(
                &text,
                r#"flowlat_syn_retransmits_total{iface="eth0",dir="out"}"#
            ),
            Some("0".into())
        );
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let mut m = Metrics::new(by_port(4), &eth0());
        m.add(&record(2, Dir::In, Outcome::Ok, 22));
        let text = render(&mut m);
        let mut seen = Vec::new();
        let mut current = "";
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().expect("name");
                assert!(rest.len() > name.len() + 10, "thin help: {l}");
                seen.push(name.to_string());
                current = "";
            } else if let Some(rest) = l.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("kind");
                assert_eq!(Some(name), seen.last().map(String::as_str), "{l}");
                current = kind;
            } else {
                let name = l.split(['{', ' ']).next().expect("name");
                let family = seen.last().expect("a family first");
                let ok = name == family
                    || (current == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| name.strip_suffix(s) == Some(family)));
                assert!(ok, "{name} under {family}");
            }
        }
        assert_eq!(
            seen,
            [
                "flowlat_handshakes_total",
                "flowlat_handshake_failures_total",
                "flowlat_handshake_rtt_seconds",
                "flowlat_handshake_local_seconds",
                "flowlat_syn_retransmits_total",
                "flowlat_records_lost_total",
                "flowlat_pending_evictions_total",
                "flowlat_filtered_total",
                "flowlat_pending_attempts",
                "flowlat_build_info",
            ]
        );
        assert!(text.contains("# TYPE flowlat_handshake_rtt_seconds histogram\n"));
        assert!(text.contains("# TYPE flowlat_pending_attempts gauge\n"));
        assert!(text.ends_with(&format!(
            "flowlat_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn buckets_are_cumulative_in_seconds_and_inf_equals_count() {
        let mut m = Metrics::new(MetricsConfig::default(), &eth0());
        // On a bound, just above it, the last bound, and beyond every bound.
        for ns in [4_000, 5_000, 5_001, 50_000_000_000, 60_000_000_000] {
            m.add(&ok_rtt(ns));
        }
        let text = render(&mut m);
        let buckets = lines_of(
            &text,
            r#"flowlat_handshake_rtt_seconds_bucket{iface="eth0",dir="out","#,
        );
        assert_eq!(buckets.len(), HIST_BOUNDS_NS.len() + 1);
        let le = |i: usize| {
            let l = buckets[i];
            let (_, rest) = l.split_once("le=\"").expect("le");
            let (le, value) = rest.split_once("\"} ").expect("value");
            (le.to_string(), value.parse::<u64>().expect("count"))
        };
        assert_eq!(le(0), ("0.000005".into(), 2));
        assert_eq!(le(1), ("0.00001".into(), 3));
        assert_eq!(le(7), ("0.001".into(), 3));
        assert_eq!(le(16), ("1".into(), 3));
        assert_eq!(le(21), ("50".into(), 4));
        assert_eq!(le(22), ("+Inf".into(), 5));
        let counts: Vec<u64> = (0..buckets.len()).map(|i| le(i).1).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        let prefix = r#"{iface="eth0",dir="out"}"#;
        assert_eq!(
            value(
                &text,
                &format!("flowlat_handshake_rtt_seconds_count{prefix}")
            ),
            Some("5".into())
        );
        assert_eq!(
            value(&text, &format!("flowlat_handshake_rtt_seconds_sum{prefix}")),
            Some("110.000014001".into())
        );
    }

    #[test]
    fn bounds_are_one_two_five_per_decade_from_5us_to_50s() {
        assert_eq!(HIST_BOUNDS_NS.first(), Some(&5_000));
        assert_eq!(HIST_BOUNDS_NS.last(), Some(&50_000_000_000));
        for w in HIST_BOUNDS_NS.windows(2) {
            let ratio = w[1] as f64 / w[0] as f64;
            assert!([2.0, 2.5].contains(&ratio), "{} -> {}", w[0], w[1]);
        }
        let le: Vec<String> = HIST_BOUNDS_NS[..4].iter().map(|&b| seconds(b)).collect();
        assert_eq!(le, ["0.000005", "0.00001", "0.00002", "0.00005"]);
    }

    #[test]
    fn only_ok_attempts_are_timed_and_local_only_for_in() {
        let mut m = Metrics::new(MetricsConfig::default(), &eth0());
        let mut refused = record(2, Dir::In, Outcome::Refused, 22);
        refused.rtt_ns = Some(7_000);
        refused.retrans = 2;
        m.add(&refused);
        m.add(&record(2, Dir::In, Outcome::Ok, 22));
        m.add(&record(2, Dir::Out, Outcome::Timeout, 22));
        let text = render(&mut m);
        let v = |s: &str| value(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
        assert_eq!(
            v(r#"flowlat_handshakes_total{iface="eth0",dir="in",result="refused"}"#),
            "1"
        );
        assert_eq!(
            v(r#"flowlat_handshakes_total{iface="eth0",dir="in",result="ok"}"#),
            "1"
        );
        assert_eq!(
            v(r#"flowlat_handshakes_total{iface="eth0",dir="out",result="timeout"}"#),
            "1"
        );
        assert_eq!(
            v(r#"flowlat_handshake_rtt_seconds_count{iface="eth0",dir="in"}"#),
            "1"
        );
        assert_eq!(
            v(r#"flowlat_handshake_rtt_seconds_sum{iface="eth0",dir="in"}"#),
            "0.0015"
        );
        assert_eq!(
            v(r#"flowlat_handshake_rtt_seconds_count{iface="eth0",dir="out"}"#),
            "0"
        );
        assert_eq!(
            v(r#"flowlat_handshake_local_seconds_count{iface="eth0"}"#),
            "1"
        );
        assert_eq!(
            v(r#"flowlat_handshake_local_seconds_sum{iface="eth0"}"#),
            "0.00004"
        );
        assert_eq!(
            v(r#"flowlat_syn_retransmits_total{iface="eth0",dir="in"}"#),
            "2"
        );
    }

    #[test]
    fn kernel_totals_are_replaced_and_user_counts_add_to_them() {
        let mut m = Metrics::new(MetricsConfig::default(), &eth0());
        let ok = r#"flowlat_handshakes_total{iface="eth0",dir="out",result="ok"}"#;
        let timeout = r#"flowlat_handshakes_total{iface="eth0",dir="out",result="timeout"}"#;
        m.set_kernel(vec![(key(Dir::Out, None, None), oks(10))]);
        m.add(&record(2, Dir::Out, Outcome::Timeout, 443));
        let first = render(&mut m);
        assert_eq!(value(&first, ok), Some("10".into()));
        assert_eq!(value(&first, timeout), Some("1".into()));
        m.set_kernel(vec![(key(Dir::Out, None, None), oks(12))]);
        m.add(&ok_rtt(1_000_000));
        let second = render(&mut m);
        assert_eq!(value(&second, ok), Some("13".into()), "{second}");
        assert_eq!(value(&second, timeout), Some("1".into()));
        let count = r#"flowlat_handshake_rtt_seconds_count{iface="eth0",dir="out"}"#;
        let sum = r#"flowlat_handshake_rtt_seconds_sum{iface="eth0",dir="out"}"#;
        assert_eq!(value(&second, count), Some("13".into()));
        assert_eq!(value(&second, sum), Some("0.013".into()));
        // Nothing new: the same text again.
        m.set_kernel(vec![(key(Dir::Out, None, None), oks(12))]);
        assert_eq!(render(&mut m), second);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut m = Metrics::new(MetricsConfig::default(), &[(2, "a\\b\"c\nd".to_string())]);
        let text = render(&mut m);
        assert!(
            text.contains(r#"flowlat_syn_retransmits_total{iface="a\\b\"c\nd",dir="out"} 0"#),
            "{text}"
        );
        assert!(text.lines().all(|l| !l.contains("c\nd")));
    }

    #[test]
    fn rows_are_ordered_by_interface_direction_and_port() {
        let ifaces = [(2, "eth1".to_string()), (3, "eth0".to_string())];
        let mut m = Metrics::new(by_port(8), &ifaces);
        for port in [8080, 22, 443] {
            m.add(&record(3, Dir::In, Outcome::Ok, port));
        }
        m.add(&record(3, Dir::Out, Outcome::Ok, 5432));
        let text = render(&mut m);
        let rows: Vec<&str> = lines_of(&text, "flowlat_syn_retransmits_total{")
            .into_iter()
            .map(|l| l.trim_start_matches("flowlat_syn_retransmits_total"))
            .collect();
        assert_eq!(
            rows,
            [
                r#"{iface="eth0",dir="out",server_port="5432"} 0"#,
                r#"{iface="eth0",dir="out",server_port="other"} 0"#,
                r#"{iface="eth0",dir="in",server_port="22"} 0"#,
                r#"{iface="eth0",dir="in",server_port="443"} 0"#,
                r#"{iface="eth0",dir="in",server_port="8080"} 0"#,
                r#"{iface="eth0",dir="in",server_port="other"} 0"#,
                r#"{iface="eth1",dir="out",server_port="other"} 0"#,
                r#"{iface="eth1",dir="in",server_port="other"} 0"#,
            ]
        );
    }

    #[test]
    fn ports_beyond_max_series_go_to_other_and_keep_their_place() {
        let mut m = Metrics::new(by_port(2), &eth0());
        let port_ok = |p: &str| {
            format!(
                r#"flowlat_handshakes_total{{iface="eth0",dir="out",server_port="{p}",result="ok"}}"#
            )
        };
        m.set_kernel(vec![
            (key(Dir::Out, Some(22), None), oks(1)),
            (key(Dir::Out, Some(443), None), oks(50)),
            (key(Dir::Out, Some(80), None), oks(20)),
        ]);
        let first = render(&mut m);
        // The two busiest got labels of their own.
        assert_eq!(value(&first, &port_ok("443")), Some("50".into()));
        assert_eq!(value(&first, &port_ok("80")), Some("20".into()));
        assert_eq!(value(&first, &port_ok("22")), None);
        assert_eq!(value(&first, &port_ok("other")), Some("1".into()));
        // Port 22 becoming the busiest does not take a label from the others,
        // and a new port joins `other`: every counter only grows.
        m.set_kernel(vec![
            (key(Dir::Out, Some(22), None), oks(500)),
            (key(Dir::Out, Some(443), None), oks(51)),
            (key(Dir::Out, Some(80), None), oks(20)),
            (key(Dir::Out, Some(9999), None), oks(3)),
        ]);
        m.add(&record(2, Dir::Out, Outcome::Ok, 80));
        m.add(&record(2, Dir::Out, Outcome::Ok, 7));
        let second = render(&mut m);
        assert_eq!(value(&second, &port_ok("443")), Some("51".into()));
        assert_eq!(value(&second, &port_ok("80")), Some("21".into()));
        assert_eq!(value(&second, &port_ok("other")), Some("504".into()));
        let ports: std::collections::BTreeSet<&str> =
            lines_of(&second, "flowlat_handshakes_total{")
                .iter()
                .filter_map(|l| l.split("server_port=\"").nth(1)?.split('"').next())
                .collect();
        assert_eq!(
            ports.into_iter().collect::<Vec<_>>(),
            ["443", "80", "other"]
        );
    }

    #[test]
    fn the_kernels_overflow_entry_is_other_in_every_dimension() {
        let cfg = MetricsConfig {
            by_port: true,
            by_cgroup: true,
            by_workload: false,
            max_series: 8,
        };
        let mut m = Metrics::new(cfg, &eth0());
        let mut overflow = key(Dir::In, None, None);
        overflow.other = true;
        m.set_kernel(vec![(overflow, oks(7))]);
        let text = render(&mut m);
        assert_eq!(
            value(
                &text,
                r#"flowlat_handshakes_total{iface="eth0",dir="in",server_port="other",cgroup="other",result="ok"}"#
            ),
            Some("7".into()),
            "{text}"
        );
    }

    #[test]
    fn cgroups_are_named_once_and_keep_their_label() {
        let cfg = MetricsConfig {
            by_cgroup: true,
            max_series: 2,
            ..MetricsConfig::default()
        };
        let mut m = Metrics::new(cfg, &eth0());
        m.name_grace = Duration::ZERO;
        let mut asked = Vec::new();
        let mut alive: HashMap<u64, &str> = [
            (100, "/system.slice/nginx.service"),
            (101, "/system.slice/nginx.service"),
            (200, "/system.slice/db.service"),
        ]
        .into_iter()
        .collect();
        m.set_kernel(vec![
            (key(Dir::In, None, Some(100)), oks(5)),
            (key(Dir::In, None, None), oks(1)),
            (key(Dir::In, None, Some(300)), oks(2)),
        ]);
        let mut name = |id: u64| {
            asked.push(id);
            alive.get(&id).map(|&p| Arc::from(p))
        };
        let first = m.render(&mut name, &Gauges::default());
        let ok = |c: &str| {
            format!(r#"flowlat_handshakes_total{{iface="eth0",dir="in",cgroup="{c}",result="ok"}}"#)
        };
        assert_eq!(
            value(&first, &ok("/system.slice/nginx.service")),
            Some("5".into())
        );
        assert_eq!(value(&first, &ok("")), Some("1".into()), "no local socket");
        assert_eq!(
            value(&first, &ok("id:300")),
            Some("2".into()),
            "gone before named"
        );
        // nginx restarted (a new cgroup id, the same path), and its old
        // cgroup is gone: both ids count under the one path. db.service
        // finds no free label.
        alive.remove(&100);
        m.set_kernel(vec![
            (key(Dir::In, None, Some(100)), oks(5)),
            (key(Dir::In, None, Some(101)), oks(3)),
            (key(Dir::In, None, None), oks(1)),
            (key(Dir::In, None, Some(300)), oks(2)),
            (key(Dir::In, None, Some(200)), oks(4)),
        ]);
        let mut name = |id: u64| {
            asked.push(id);
            alive.get(&id).map(|&p| Arc::from(p))
        };
        let second = m.render(&mut name, &Gauges::default());
        assert_eq!(
            value(&second, &ok("/system.slice/nginx.service")),
            Some("8".into())
        );
        assert_eq!(value(&second, &ok("id:300")), Some("2".into()));
        assert_eq!(value(&second, &ok("other")), Some("4".into()));
        assert_eq!(value(&second, &ok("/system.slice/db.service")), None);
        asked.sort_unstable();
        assert_eq!(asked, [100, 101, 200, 300], "each id named once");
    }

    #[test]
    fn records_are_filed_under_their_cgroup_at_the_next_scrape() {
        let cfg = MetricsConfig {
            by_cgroup: true,
            ..MetricsConfig::default()
        };
        let mut m = Metrics::new(cfg, &eth0());
        let r = record(2, Dir::Out, Outcome::Timeout, 5432);
        m.add_in(&r, Some(7), None);
        m.add_in(&r, Some(7), None);
        m.add_in(&r, None, None);
        let mut asked = 0;
        let mut name = |id: u64| {
            asked += 1;
            (id == 7).then(|| Arc::from("/app.slice/worker.service"))
        };
        let first = m.render(&mut name, &Gauges::default());
        let timeout = |c: &str| {
            format!(
                r#"flowlat_handshakes_total{{iface="eth0",dir="out",cgroup="{c}",result="timeout"}}"#
            )
        };
        assert_eq!(
            value(&first, &timeout("/app.slice/worker.service")),
            Some("2".into())
        );
        assert_eq!(value(&first, &timeout("")), Some("1".into()));
        m.add_in(&r, Some(7), None);
        let second = m.render(&mut |_| panic!("named again"), &Gauges::default());
        assert_eq!(
            value(&second, &timeout("/app.slice/worker.service")),
            Some("3".into())
        );
        assert_eq!(asked, 1);
    }

    #[test]
    fn a_cgroup_not_named_yet_waits_and_loses_no_count() {
        let cfg = MetricsConfig {
            by_cgroup: true,
            ..MetricsConfig::default()
        };
        let mut m = Metrics::new(cfg, &eth0());
        m.name_grace = Duration::from_secs(3600);
        let r = record(2, Dir::In, Outcome::Abandoned, 80);
        m.set_kernel(vec![(key(Dir::In, None, Some(5)), oks(3))]);
        m.add_in(&r, Some(5), None);
        m.add_in(&r, Some(6), None);
        let mut known = false;
        let mut asked = Vec::new();
        let mut name = |id: u64| {
            asked.push(id);
            (known && id == 5).then(|| Arc::from("/new.scope"))
        };
        let first = m.render(&mut name, &Gauges::default());
        assert!(
            !first.contains("/new.scope") && !first.contains("id:"),
            "{first}"
        );
        let in_ok = r#"flowlat_handshakes_total{iface="eth0",dir="in",cgroup="other",result="ok"}"#;
        assert_eq!(
            value(&first, in_ok),
            Some("0".into()),
            "nothing filed under other"
        );
        // Named at the next scrape: every count shows up under the name.
        known = true;
        let mut name = |id: u64| {
            asked.push(id);
            (known && id == 5).then(|| Arc::from("/new.scope"))
        };
        let second = m.render(&mut name, &Gauges::default());
        let named = |result: &str| {
            format!(
                r#"flowlat_handshakes_total{{iface="eth0",dir="in",cgroup="/new.scope",result="{result}"}}"#
            )
        };
        assert_eq!(value(&second, &named("ok")), Some("3".into()), "{second}");
        assert_eq!(value(&second, &named("abandoned")), Some("1".into()));
        assert!(!second.contains("id:6"), "still within its grace");
        // Past the grace, the one never named gets its id as its label.
        m.name_grace = Duration::ZERO;
        let third = m.render(
            &mut |id| (id == 5).then(|| Arc::from("/new.scope")),
            &Gauges::default(),
        );
        let by_id =
            r#"flowlat_handshakes_total{iface="eth0",dir="in",cgroup="id:6",result="abandoned"}"#;
        assert_eq!(value(&third, by_id), Some("1".into()), "{third}");
        assert_eq!(value(&third, &named("ok")), Some("3".into()));
        // Asked at each scrape until named (5 for its kernel totals and for
        // its records at the first), never after.
        asked.sort_unstable();
        assert_eq!(asked, [5, 5, 5, 6, 6]);
    }

    #[test]
    fn a_renamed_interface_is_labelled_by_its_new_name() {
        let mut m = Metrics::new(MetricsConfig::default(), &eth0());
        m.add(&record(2, Dir::Out, Outcome::Refused, 80));
        m.add(&record(9, Dir::Out, Outcome::Refused, 80));
        m.rename_iface(2, "uplink".to_string());
        let text = render(&mut m);
        let refused = |i: &str| {
            format!(r#"flowlat_handshakes_total{{iface="{i}",dir="out",result="refused"}}"#)
        };
        assert_eq!(value(&text, &refused("uplink")), Some("1".into()));
        assert_eq!(value(&text, &refused("eth0")), None);
        assert_eq!(
            value(&text, &refused("if9")),
            Some("1".into()),
            "unknown index"
        );
    }

    #[test]
    fn workloads_label_their_series_and_gone_interfaces_leave_after_forgetting() {
        let cfg = MetricsConfig {
            by_workload: true,
            ..MetricsConfig::default()
        };
        let ifaces = [(2, "eth0".to_string()), (7, "vethweb".to_string())];
        let mut m = Metrics::new(cfg, &ifaces);
        m.set_iface_workloads([(7, Arc::from("pod shop/web"))].into_iter().collect());
        m.add_of(
            &record(7, Dir::Out, Outcome::Refused, 80),
            Some(Arc::from("pod shop/web")),
        );
        m.add_of(
            &record(2, Dir::Out, Outcome::Ok, 80),
            Some(Arc::from("unit nginx.service")),
        );
        m.set_kernel_workloads(
            [((7, None), Arc::from("pod shop/web"))]
                .into_iter()
                .collect(),
        );
        m.set_kernel(vec![(key(Dir::In, None, None), oks(1))]);
        let text = render(&mut m);
        let series = |i: &str, d: &str, w: &str, r: &str| {
            format!(
                r#"flowlat_handshakes_total{{iface="{i}",dir="{d}",workload="{w}",result="{r}"}}"#
            )
        };
        assert_eq!(
            value(&text, &series("vethweb", "out", "pod shop/web", "refused")),
            Some("1".into()),
            "{text}"
        );
        // From the start, an interface's series carry its workload.
        assert_eq!(
            value(&text, &series("vethweb", "in", "pod shop/web", "ok")),
            Some("0".into()),
            "{text}"
        );
        assert_eq!(
            value(&text, &series("eth0", "out", "unit nginx.service", "ok")),
            Some("1".into()),
            "{text}"
        );
        // Gone, then forgotten after the TTL: no series of it is left.
        m.iface_gone(7);
        assert!(render(&mut m).contains("vethweb"));
        m.forget_ifaces(&[7]);
        m.set_iface_workloads(HashMap::new());
        m.set_kernel_workloads(HashMap::new());
        let text = render(&mut m);
        assert!(!text.contains("vethweb"), "{text}");
        assert!(!text.contains("pod shop/web"), "{text}");
        assert_eq!(m.workloads.own.len(), 1, "the gone workload's slot is free");
    }

    #[test]
    fn process_wide_numbers_are_single_samples() {
        let mut m = Metrics::new(MetricsConfig::default(), &eth0());
        let g = Gauges {
            records_lost: 3,
            evictions: 4,
            filtered: 5,
            pending: 6,
        };
        let text = m.render(&mut |_| None, &g);
        assert_eq!(value(&text, "flowlat_records_lost_total"), Some("3".into()));
        assert_eq!(
            value(&text, "flowlat_pending_evictions_total"),
            Some("4".into())
        );
        assert_eq!(value(&text, "flowlat_filtered_total"), Some("5".into()));
        assert_eq!(value(&text, "flowlat_pending_attempts"), Some("6".into()));
    }

    /// Two interfaces, both dimensions, kernel and user counts, awkward names.
    fn rich() -> String {
        let cfg = MetricsConfig {
            by_port: true,
            by_cgroup: true,
            by_workload: false,
            max_series: 2,
        };
        let ifaces = [(2, "eth0".to_string()), (3, "we\"ird\\".to_string())];
        let mut m = Metrics::new(cfg, &ifaces);
        m.name_grace = Duration::ZERO;
        m.set_kernel(vec![
            (key(Dir::In, Some(22), Some(1)), oks(4)),
            (key(Dir::Out, Some(443), Some(2)), oks(9)),
            (key(Dir::Out, Some(80), None), oks(1)),
        ]);
        m.set_kernel_failures(vec![
            ((2, Dir::Out, Reason::RST), 5),
            ((3, Dir::In, Reason::NO_ACK), 1),
        ]);
        for p in [22, 443, 5432] {
            m.add_in(&record(3, Dir::In, Outcome::Ok, p), Some(1), None);
            let mut timeout = record(2, Dir::Out, Outcome::Timeout, p);
            timeout.reason = Some(Reason::NO_ANSWER);
            m.add(&timeout);
        }
        let g = Gauges {
            records_lost: 1,
            evictions: 2,
            filtered: 0,
            pending: 3,
        };
        m.render(
            &mut |id| (id == 1).then(|| Arc::from("/system.slice/ssh.service")),
            &g,
        )
    }

    /// Runs Debian's `promtool` with `input` on stdin: whether it succeeded,
    /// and what it said.
    fn promtool(args: &[&str], input: &str) -> (bool, String) {
        use std::io::Write as _;
        use std::process::{Command, Stdio};
        let mut child = Command::new("promtool")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run promtool ({e}); it comes with Prometheus: apt-get install -y prometheus")
            });
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write to promtool");
        let out = child.wait_with_output().expect("promtool");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), said)
    }

    #[test]
    fn promtool_accepts_the_exposition() {
        let text = rich();
        let (ok, said) = promtool(&["check", "metrics"], &text);
        assert!(ok && said.trim().is_empty(), "promtool: {said}\n{text}");
    }

    #[test]
    fn the_contrib_rules_and_scrape_config_pass_promtool() {
        for args in [
            ["check", "rules", "contrib/flowlat-alerts.yml"],
            ["test", "rules", "contrib/flowlat-alerts.test.yml"],
            ["check", "config", "contrib/prometheus.yml"],
        ] {
            let (ok, said) = promtool(&args, "");
            assert!(ok, "promtool {}: {said}", args.join(" "));
        }
        // The rules ask for metrics by the names flowlat gives them.
        let rules = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/contrib/flowlat-alerts.yml"
        ))
        .expect("rules");
        let text = rich();
        let mut names: Vec<&str> = rules
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("flowlat_"))
            .collect();
        names.sort_unstable();
        names.dedup();
        assert!(names.len() >= 4, "{names:?}");
        for name in names {
            assert!(
                text.contains(&format!("\n{name}{{")) || text.contains(&format!("\n{name} ")),
                "{name}"
            );
        }
    }

    #[test]
    fn failures_are_counted_by_reason_the_kernels_and_the_sweeps_together() {
        let mut m = Metrics::new(MetricsConfig::default(), &eth0());
        m.set_kernel_failures(vec![((2, Dir::Out, Reason::RST), 5)]);
        let mut t = record(2, Dir::Out, Outcome::Timeout, 443);
        t.reason = Some(Reason::NO_ANSWER);
        m.add(&t);
        m.add(&t);
        let text = render(&mut m);
        let fails = lines_of(&text, "flowlat_handshake_failures_total{");
        assert_eq!(
            fails,
            [
                r#"flowlat_handshake_failures_total{iface="eth0",dir="out",reason="no-answer"} 2"#,
                r#"flowlat_handshake_failures_total{iface="eth0",dir="out",reason="rst"} 5"#,
            ]
        );
        // A scrape replaces the kernel's totals; user space's keep adding up.
        m.set_kernel_failures(vec![((2, Dir::Out, Reason::RST), 7)]);
        let text = render(&mut m);
        assert!(text.contains(r#"reason="rst"} 7"#), "{text}");
        assert!(text.contains(r#"reason="no-answer"} 2"#), "{text}");
    }
}
