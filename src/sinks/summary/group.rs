//! Attempts grouped (`--by`) and counted into the tables of one interval.

use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::host::cgroup::shorten;
use crate::probe::{Comm, Dir, Outcome, Record};
use crate::sinks::histogram::{Log2Hist, Sketch};
use crate::sinks::labels::Labels;

/// One thing attempts can be grouped by (`--by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupKey {
    /// The interface.
    Iface,
    /// `in` or `out`.
    Dir,
    /// The server's address and port.
    Server,
    /// The server's address.
    ServerIp,
    /// The server's port.
    ServerPort,
    /// The client's address.
    ClientIp,
    /// The client's network: its address cut to the `--client-prefix` length.
    ClientNet,
    /// The cgroup of the local socket.
    Cgroup,
    /// The workload: a pod, a container, a unit.
    Workload,
    /// The name of the process behind the local socket.
    Comm,
}

pub const ALL_KEYS: [GroupKey; 10] = [
    GroupKey::Iface,
    GroupKey::Dir,
    GroupKey::Server,
    GroupKey::ServerIp,
    GroupKey::ServerPort,
    GroupKey::ClientIp,
    GroupKey::ClientNet,
    GroupKey::Cgroup,
    GroupKey::Workload,
    GroupKey::Comm,
];

pub const KEYS_HELP: &str = "iface, dir, server (address and port), server-ip, server-port, \
                         client-ip, client-net, cgroup, workload, comm";

impl GroupKey {
    /// The word of `--by`, also the key's column header in text.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupKey::Iface => "iface",
            GroupKey::Dir => "dir",
            GroupKey::Server => "server",
            GroupKey::ServerIp => "server-ip",
            GroupKey::ServerPort => "server-port",
            GroupKey::ClientIp => "client-ip",
            GroupKey::ClientNet => "client-net",
            GroupKey::Cgroup => "cgroup",
            GroupKey::Workload => "workload",
            GroupKey::Comm => "comm",
        }
    }

    /// The key that already determines this one, so that listing both can
    /// only be a mistake.
    pub fn part_of(self) -> Option<GroupKey> {
        match self {
            GroupKey::ServerIp | GroupKey::ServerPort => Some(GroupKey::Server),
            GroupKey::ClientNet => Some(GroupKey::ClientIp),
            _ => None,
        }
    }
}

/// `addr` with its host bits cleared: the network of that prefix length
/// (a length beyond the family's is taken as the whole address).
pub fn network(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v) => {
            let keep = u32::from(prefix.min(32));
            let mask = u32::MAX.checked_shl(32 - keep).unwrap_or(0);
            IpAddr::V4((u32::from(v) & mask).into())
        }
        IpAddr::V6(v) => {
            let keep = u32::from(prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
            IpAddr::V6((u128::from(v) & mask).into())
        }
    }
}

/// What shapes the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryConfig {
    /// The grouping, in column order.
    pub by: Vec<GroupKey>,
    /// `client-net` prefix length for IPv4 clients.
    pub v4_prefix: u8,
    /// `client-net` prefix length for IPv6 clients.
    pub v6_prefix: u8,
    /// Groups per table beyond which attempts go to the `other` row.
    pub max_groups: usize,
    /// Collect log2 histograms (needed for `render_*(.., hist: true)`).
    pub hist: bool,
    /// JSON output (the caller picks `render_json`; kept for it).
    pub json: bool,
    /// A table every this long; `None`: one table at finish for the whole run.
    pub interval: Option<Duration>,
    /// How long after an interval's end its table waits for late records
    /// (read from the ring late, or timeouts found by the next sweep).
    pub grace: Duration,
}

/// A group's identity: the fields `by` names, the others left at their
/// default (and never shown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub(super) ifindex: u32,
    pub(super) dir: Option<Dir>,
    pub(super) server: Option<IpAddr>,
    pub(super) server_port: Option<u16>,
    pub(super) client: Option<IpAddr>,
    pub(super) client_net: Option<IpAddr>,
    pub(super) cgroup: Option<u64>,
    /// The workload's name, by [`name_key`].
    pub(super) workload: Option<u64>,
    pub(super) comm: Option<Comm>,
}

/// A workload's name as a key: a 64-bit hash, since keys are copied and
/// compared by value (two names colliding is a 1 in 2^64 chance per pair).
pub(super) fn name_key(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// Names of workload keys remembered for the tables; beyond it, new
/// workloads of the run are shown by their key (a table shows at most
/// `--max-groups` anyway).
const WORKLOAD_NAMES_KEPT: usize = 65536;

/// Key order for ties, field by field in `by`'s order.
pub(super) fn cmp_keys(by: &[GroupKey], a: &Key, b: &Key) -> Ordering {
    let inbound = |k: &Key| k.dir.map(|d| d == Dir::In);
    by.iter()
        .map(|g| match g {
            GroupKey::Iface => a.ifindex.cmp(&b.ifindex),
            GroupKey::Dir => inbound(a).cmp(&inbound(b)),
            GroupKey::Server => (a.server, a.server_port).cmp(&(b.server, b.server_port)),
            GroupKey::ServerIp => a.server.cmp(&b.server),
            GroupKey::ServerPort => a.server_port.cmp(&b.server_port),
            GroupKey::ClientIp => a.client.cmp(&b.client),
            GroupKey::ClientNet => a.client_net.cmp(&b.client_net),
            GroupKey::Cgroup => a.cgroup.cmp(&b.cgroup),
            GroupKey::Workload => a.workload.cmp(&b.workload),
            GroupKey::Comm => a.comm.cmp(&b.comm),
        })
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// One group's numbers.
#[derive(Debug, Clone, Default)]
pub(super) struct Stats {
    pub(super) attempts: u64,
    pub(super) ok: u64,
    pub(super) refused: u64,
    pub(super) unreachable: u64,
    pub(super) timeout: u64,
    pub(super) abandoned: u64,
    pub(super) retrans: u64,
    pub(super) inbound: u64,
    pub(super) rtt: Sketch,
    pub(super) local: Sketch,
    pub(super) rtt_hist: Log2Hist,
    pub(super) local_hist: Log2Hist,
}

impl Stats {
    pub(super) fn add(&mut self, r: &Record, hist: bool) {
        self.attempts += 1;
        match r.outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Refused => self.refused += 1,
            Outcome::Timeout => self.timeout += 1,
            Outcome::Abandoned => self.abandoned += 1,
            Outcome::Unreachable => self.unreachable += 1,
        }
        self.retrans += u64::from(r.retrans);
        self.inbound += u64::from(r.dir == Dir::In);
        if let Some(v) = r.rtt_ns {
            self.rtt.add(v);
            if hist {
                self.rtt_hist.add(v);
            }
        }
        if let Some(v) = r.local_ns {
            self.local.add(v);
            if hist {
                self.local_hist.add(v);
            }
        }
    }

    pub(super) fn merge(&mut self, o: &Stats) {
        self.attempts += o.attempts;
        self.ok += o.ok;
        self.refused += o.refused;
        self.unreachable += o.unreachable;
        self.timeout += o.timeout;
        self.abandoned += o.abandoned;
        self.retrans += o.retrans;
        self.inbound += o.inbound;
        self.rtt.merge(&o.rtt);
        self.local.merge(&o.local);
        self.rtt_hist.merge(&o.rtt_hist);
        self.local_hist.merge(&o.local_hist);
    }
}

/// The groups of one interval, at most `max` of them plus `other`.
#[derive(Debug, Default)]
pub(super) struct Groups {
    pub(super) map: HashMap<Key, Stats>,
    pub(super) other: Option<Stats>,
}

impl Groups {
    /// The group's stats, or `other`'s (then `true`) when the table is full.
    pub(super) fn stats(&mut self, key: Key, max: usize) -> (&mut Stats, bool) {
        let full = self.map.len() >= max;
        match self.map.entry(key) {
            Entry::Occupied(e) => (e.into_mut(), false),
            Entry::Vacant(e) if !full => (e.insert(Stats::default()), false),
            Entry::Vacant(_) => (self.other.get_or_insert_with(Stats::default), true),
        }
    }

    /// Adds `o`'s groups; returns the attempts that had to go to `other`.
    pub(super) fn absorb(&mut self, o: Groups, max: usize) -> u64 {
        let mut overflow = 0;
        for (k, s) in o.map {
            let (into, other) = self.stats(k, max);
            into.merge(&s);
            if other {
                overflow += s.attempts;
            }
        }
        if let Some(s) = o.other {
            self.other.get_or_insert_with(Stats::default).merge(&s);
        }
        overflow
    }

    pub(super) fn len(&self) -> usize {
        self.map.len() + usize::from(self.other.is_some())
    }
}

/// Groups attempts into tables: one per `--interval`, or one for the run.
#[derive(Debug)]
pub struct Summary {
    pub(super) cfg: SummaryConfig,
    pub(super) start_ns: u64,
    pub(super) every_ns: Option<u64>,
    pub(super) grace_ns: u64,
    /// The oldest interval whose table has not been handed out.
    pub(super) next: u64,
    pub(super) open: BTreeMap<u64, Groups>,
    pub(super) other_attempts: u64,
    pub(super) late_attempts: u64,
    /// The names behind workload keys.
    pub(super) workload_names: HashMap<u64, Arc<str>>,
}

pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Summary {
    /// Intervals start at `start_ns` (`CLOCK_MONOTONIC`, as records' `end_ns`).
    pub fn new(cfg: SummaryConfig, start_ns: u64) -> Summary {
        Summary {
            every_ns: cfg.interval.map(|d| nanos(d).max(1)),
            grace_ns: nanos(cfg.grace),
            cfg,
            start_ns,
            next: 0,
            open: BTreeMap::new(),
            other_attempts: 0,
            late_attempts: 0,
            workload_names: HashMap::new(),
        }
    }

    pub(super) fn interval_start(&self, k: u64) -> u64 {
        let every = self.every_ns.unwrap_or(0);
        self.start_ns.saturating_add(k.saturating_mul(every))
    }

    pub(super) fn key_of(&self, r: &Record) -> Key {
        let mut k = Key::default();
        for g in &self.cfg.by {
            match g {
                GroupKey::Iface => k.ifindex = r.ifindex,
                GroupKey::Dir => k.dir = Some(r.dir),
                GroupKey::Server => {
                    k.server = Some(r.server);
                    k.server_port = Some(r.server_port);
                }
                GroupKey::ServerIp => k.server = Some(r.server),
                GroupKey::ServerPort => k.server_port = Some(r.server_port),
                GroupKey::ClientIp => k.client = Some(r.client),
                GroupKey::ClientNet => {
                    let len = match r.client {
                        IpAddr::V4(_) => self.cfg.v4_prefix,
                        IpAddr::V6(_) => self.cfg.v6_prefix,
                    };
                    k.client_net = Some(network(r.client, len));
                }
                GroupKey::Cgroup => k.cgroup = r.cgroup_id,
                // Set by the caller, who knows the name.
                GroupKey::Workload => {}
                GroupKey::Comm => k.comm = r.process.map(|p| p.comm),
            }
        }
        k
    }

    /// Whether tables are grouped by workload (the caller names it).
    pub fn by_workload(&self) -> bool {
        self.cfg.by.contains(&GroupKey::Workload)
    }

    /// [`Summary::add`] for an attempt of a named workload (`None`: none).
    pub fn add_of(&mut self, r: &Record, workload: Option<Arc<str>>) {
        let w = workload.map(|name| {
            let k = name_key(&name);
            if self.workload_names.len() < WORKLOAD_NAMES_KEPT {
                self.workload_names.entry(k).or_insert(name);
            }
            k
        });
        self.add_keyed(r, w);
    }

    /// Counts one attempt, in the interval in which it ended (`r.end_ns`).
    /// An attempt whose interval's table was already handed out counts in
    /// the oldest one still open (see [`Summary::late_attempts`]).
    pub fn add(&mut self, r: &Record) {
        self.add_keyed(r, None);
    }

    fn add_keyed(&mut self, r: &Record, workload: Option<u64>) {
        let k = match self.every_ns {
            None => 0,
            Some(every) => {
                let k = r.end_ns.saturating_sub(self.start_ns) / every;
                if k < self.next {
                    self.late_attempts += 1;
                }
                k.max(self.next)
            }
        };
        let mut key = self.key_of(r);
        if self.by_workload() {
            key.workload = workload;
        }
        let (max, hist) = (self.cfg.max_groups, self.cfg.hist);
        let (stats, other) = self.open.entry(k).or_default().stats(key, max);
        stats.add(r, hist);
        self.other_attempts += u64::from(other);
    }

    pub(super) fn table(&mut self, start_ns: u64, end_ns: u64, groups: Groups) -> Table {
        let by = self.cfg.by.clone();
        let mut rows: Vec<(Key, Stats)> = groups.map.into_iter().collect();
        rows.sort_by(|a, b| {
            b.1.attempts
                .cmp(&a.1.attempts)
                .then_with(|| cmp_keys(&by, &a.0, &b.0))
        });
        let workload_names = rows
            .iter()
            .filter_map(|(k, _)| k.workload)
            .filter_map(|w| Some((w, self.workload_names.get(&w)?.clone())))
            .collect();
        Table {
            start_ns,
            end_ns,
            by,
            v4_prefix: self.cfg.v4_prefix,
            v6_prefix: self.cfg.v6_prefix,
            max_groups: self.cfg.max_groups,
            hist: self.cfg.hist,
            rows,
            workload_names,
            other: groups.other,
        }
    }

    /// The tables of the intervals that are over, oldest first: those whose
    /// end plus the grace time is at most `now_ns`. Intervals with no
    /// attempts give empty tables. Nothing without `--interval`.
    pub fn due(&mut self, now_ns: u64) -> Vec<Table> {
        self.take_until(now_ns, self.grace_ns)
    }

    pub(super) fn take_until(&mut self, now_ns: u64, grace_ns: u64) -> Vec<Table> {
        let mut out = Vec::new();
        if self.every_ns.is_none() {
            return out;
        }
        loop {
            let (start, end) = (
                self.interval_start(self.next),
                self.interval_start(self.next + 1),
            );
            if end == start || end.saturating_add(grace_ns) > now_ns {
                return out;
            }
            let groups = self.open.remove(&self.next).unwrap_or_default();
            out.push(self.table(start, end, groups));
            self.next += 1;
        }
    }

    /// Every table left: the intervals not yet handed out, the last one
    /// ending at `now_ns`; without `--interval`, the one table of the run.
    pub fn finish(&mut self, now_ns: u64) -> Vec<Table> {
        let mut out = self.take_until(now_ns, 0);
        let start = self.interval_start(self.next);
        let mut rest = Groups::default();
        for (_, g) in std::mem::take(&mut self.open) {
            self.other_attempts += rest.absorb(g, self.cfg.max_groups);
        }
        if self.every_ns.is_none() || now_ns > start || rest.len() > 0 {
            out.push(self.table(start, now_ns.max(start), rest));
            self.next += 1;
        }
        out
    }

    /// Attempts counted in an `other` row so far, over all tables.
    pub fn other_attempts(&self) -> u64 {
        self.other_attempts
    }

    /// Attempts that arrived after their interval's table was handed out,
    /// and were counted in a later one (the grace time was too short).
    pub fn late_attempts(&self) -> u64 {
        self.late_attempts
    }

    /// Groups held now over all open intervals, `other` rows included: what
    /// memory grows with.
    pub fn groups_held(&self) -> usize {
        self.open.values().map(Groups::len).sum()
    }
}

/// One summary table: the groups of the attempts that ended in
/// `[start_ns, end_ns)` (`CLOCK_MONOTONIC`), most attempts first.
#[derive(Debug)]
pub struct Table {
    /// Where the table's time span starts (inclusive).
    pub start_ns: u64,
    /// Where it ends (exclusive): the interval's end, or the time of finish.
    pub end_ns: u64,
    pub(super) by: Vec<GroupKey>,
    pub(super) v4_prefix: u8,
    pub(super) v6_prefix: u8,
    pub(super) max_groups: usize,
    pub(super) hist: bool,
    pub(super) rows: Vec<(Key, Stats)>,
    pub(super) other: Option<Stats>,
    /// The names of the rows' workloads.
    pub(super) workload_names: HashMap<u64, Arc<str>>,
}

impl Table {
    /// Groups in the table, not counting `other`.
    pub fn groups(&self) -> usize {
        self.rows.len()
    }

    /// Attempts in the table, `other` included.
    pub fn attempts(&self) -> u64 {
        self.rows.iter().map(|r| r.1.attempts).sum::<u64>() + self.other_attempts()
    }

    /// Attempts in the `other` row.
    pub fn other_attempts(&self) -> u64 {
        self.other.as_ref().map_or(0, |s| s.attempts)
    }

    /// Every row with its key, the `other` row (key `None`) last.
    pub(super) fn all_rows(&self) -> impl Iterator<Item = (Option<&Key>, &Stats)> {
        self.rows
            .iter()
            .map(|(k, s)| (Some(k), s))
            .chain(self.other.iter().map(|s| (None, s)))
    }

    pub(super) fn net_text(&self, net: IpAddr) -> String {
        let len = if net.is_ipv4() {
            self.v4_prefix
        } else {
            self.v6_prefix
        };
        format!("{net}/{len}")
    }
}

/// A duration's five figures, named by [`FIVE`]: min, p50, p90, p99, max.
pub(super) fn five(s: &Sketch) -> [Option<u64>; 5] {
    let p = |p| s.percentile(p);
    [s.min(), p(50.0), p(90.0), p(99.0), s.max()]
}

/// The columns of each duration, in order (see [`five`]).
pub(super) const FIVE: [&str; 5] = ["min", "p50", "p90", "p99", "max"];

/// A key's value in text, for one key column.
pub(super) fn key_text(t: &Table, g: GroupKey, k: &Key, labels: &mut dyn Labels) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    match g {
        GroupKey::Iface => labels.iface(k.ifindex).into_owned(),
        GroupKey::Dir => opt(k.dir.map(|d| d.as_str().to_string())),
        GroupKey::Server => match (k.server, k.server_port) {
            (Some(IpAddr::V6(a)), Some(p)) => format!("[{a}]:{p}"),
            (Some(a), Some(p)) => format!("{a}:{p}"),
            _ => "-".to_string(),
        },
        GroupKey::ServerIp => opt(k.server.map(|a| a.to_string())),
        GroupKey::ServerPort => opt(k.server_port.map(|p| p.to_string())),
        GroupKey::ClientIp => opt(k.client.map(|a| a.to_string())),
        GroupKey::ClientNet => opt(k.client_net.map(|n| t.net_text(n))),
        // Shortened as in record lines (JSON has the full path); a cgroup
        // that cannot be named shows its id.
        GroupKey::Cgroup => opt(k.cgroup.map(|id| {
            labels
                .cgroup(id)
                .map_or_else(|| id.to_string(), |p| shorten(&p))
        })),
        GroupKey::Workload => opt(k.workload.map(|w| {
            t.workload_names.get(&w).map_or_else(
                || format!("workload#{w:016x}"),
                |n| crate::host::cgroup::escape_controls(n),
            )
        })),
        GroupKey::Comm => opt(k.comm.map(|c| c.text())),
    }
}

pub(super) fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The label that stands for the key columns of the `other` row.
pub(super) const OTHER: &str = "(other)";

#[cfg(test)]
mod tests {
    use super::super::json::render_json;
    use super::super::text::render_text_at;
    use super::*;
    use crate::cli::parse_by;
    use crate::sinks::clock::WallClock;
    use crate::sinks::histogram::tests::Rng;
    use std::sync::Arc;

    use crate::sinks::labels::FixedNames as Names;

    fn names() -> Names {
        Names {
            ifaces: [(2, "eth0".to_string()), (3, "wlan0".to_string())].into(),
            cgroups: [
                (7, Arc::from("/system.slice/nginx.service")),
                (8, Arc::from(CONTAINER)),
            ]
            .into(),
        }
    }

    const CONTAINER: &str = "/system.slice/docker-\
        0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope";

    /// Monotonic time at which the summaries start.
    const START: u64 = 1_000_000_000_000;
    const SEC: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    /// START is 2026-11-27T12:00:00Z.
    fn clock() -> WallClock {
        WallClock::with_offset(1_795_780_800_000_000_000 - i128::from(START))
    }

    /// The one place a Record is built: an `out` attempt that worked.
    fn rec(end_ns: u64) -> Record {
        Record {
            ifindex: 2,
            dir: Dir::Out,
            outcome: Outcome::Ok,
            client: "10.0.0.5".parse().expect("literal"),
            client_port: 51234,
            server: "93.184.216.34".parse().expect("literal"),
            server_port: 443,
            end_ns,
            rtt_ns: Some(12 * MS),
            local_ns: None,
            total_ns: Some(12 * MS),
            retrans: 0,
            synack_retrans: None,
            cgroup_id: None,
            process: None,
            reason: None,
            reason_from: None,
        }
    }

    /// An `in` attempt that worked, from `client` to 10.0.0.5:22.
    fn inbound(end_ns: u64, client: &str, rtt: u64, local: u64) -> Record {
        let mut r = rec(end_ns);
        r.dir = Dir::In;
        r.client = client.parse().expect("literal");
        r.server = "10.0.0.5".parse().expect("literal");
        r.server_port = 22;
        r.rtt_ns = Some(rtt);
        r.local_ns = Some(local);
        r.synack_retrans = Some(0);
        r
    }

    fn cfg(by: &str) -> SummaryConfig {
        SummaryConfig {
            by: parse_by(by).expect("keys"),
            v4_prefix: 24,
            v6_prefix: 48,
            max_groups: 4096,
            hist: false,
            json: false,
            interval: None,
            grace: Duration::ZERO,
        }
    }

    fn one_table(cfg: SummaryConfig, records: &[Record]) -> Table {
        let mut s = Summary::new(cfg, START);
        for r in records {
            s.add(r);
        }
        let mut t = s.finish(START + 60 * SEC);
        assert_eq!(t.len(), 1);
        t.remove(0)
    }

    /// A JSON value, parsed strictly, to check what render_json writes.
    #[derive(Debug, Clone, PartialEq)]
    enum J {
        Null,
        Bool(bool),
        Num(u64),
        Str(String),
        Arr(Vec<J>),
        Obj(Vec<(String, J)>),
    }

    impl J {
        fn get(&self, key: &str) -> &J {
            match self {
                J::Obj(fields) => fields
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v)
                    .unwrap_or_else(|| panic!("no {key} in {self:?}")),
                _ => panic!("{self:?} is not an object"),
            }
        }
        fn n(&self, key: &str) -> Option<u64> {
            match self.get(key) {
                J::Num(n) => Some(*n),
                J::Null => None,
                v => panic!("{key} is {v:?}"),
            }
        }
        fn s(&self, key: &str) -> Option<&str> {
            match self.get(key) {
                J::Str(s) => Some(s),
                J::Null => None,
                v => panic!("{key} is {v:?}"),
            }
        }
    }

    /// Parses one JSON text (flowlat writes only unsigned integers), rejecting
    /// trailing bytes and repeated keys.
    fn parse_json(text: &str) -> Result<J, String> {
        fn value(b: &[u8], i: &mut usize) -> Result<J, String> {
            let lit = |i: &mut usize, word: &str, v: J| {
                if b[*i..].starts_with(word.as_bytes()) {
                    *i += word.len();
                    Ok(v)
                } else {
                    Err(format!("bad literal at {i}"))
                }
            };
            match b.get(*i) {
                Some(b'n') => lit(i, "null", J::Null),
                Some(b't') => lit(i, "true", J::Bool(true)),
                Some(b'f') => lit(i, "false", J::Bool(false)),
                Some(b'"') => string(b, i).map(J::Str),
                Some(b'[') => {
                    *i += 1;
                    let mut items = Vec::new();
                    if b.get(*i) == Some(&b']') {
                        *i += 1;
                        return Ok(J::Arr(items));
                    }
                    loop {
                        items.push(value(b, i)?);
                        match b.get(*i) {
                            Some(b',') => *i += 1,
                            Some(b']') => {
                                *i += 1;
                                return Ok(J::Arr(items));
                            }
                            _ => return Err(format!("expected , or ] at {i}")),
                        }
                    }
                }
                Some(b'{') => {
                    *i += 1;
                    let mut fields: Vec<(String, J)> = Vec::new();
                    loop {
                        let k = string(b, i)?;
                        if fields.iter().any(|(f, _)| *f == k) {
                            return Err(format!("{k} twice"));
                        }
                        if b.get(*i) != Some(&b':') {
                            return Err(format!("expected : at {i}"));
                        }
                        *i += 1;
                        fields.push((k, value(b, i)?));
                        match b.get(*i) {
                            Some(b',') => *i += 1,
                            Some(b'}') => {
                                *i += 1;
                                return Ok(J::Obj(fields));
                            }
                            _ => return Err(format!("expected , or }} at {i}")),
                        }
                    }
                }
                Some(c) if c.is_ascii_digit() => {
                    let start = *i;
                    while b.get(*i).is_some_and(u8::is_ascii_digit) {
                        *i += 1;
                    }
                    let digits = std::str::from_utf8(&b[start..*i]).map_err(|e| e.to_string())?;
                    digits.parse().map(J::Num).map_err(|e| e.to_string())
                }
                _ => Err(format!("unexpected byte at {i}")),
            }
        }
        fn string(b: &[u8], i: &mut usize) -> Result<String, String> {
            if b.get(*i) != Some(&b'"') {
                return Err(format!("expected a string at {i}"));
            }
            *i += 1;
            let mut out = String::new();
            loop {
                let c = *b.get(*i).ok_or("unterminated string")?;
                *i += 1;
                match c {
                    b'"' => return Ok(out),
                    b'\\' => {
                        let e = *b.get(*i).ok_or("unterminated escape")?;
                        *i += 1;
                        match e {
                            b'"' | b'\\' | b'/' => out.push(e as char),
                            b'u' => {
                                let hex =
                                    std::str::from_utf8(b.get(*i..*i + 4).ok_or("short \\u")?)
                                        .map_err(|e| e.to_string())?;
                                let n = u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
                                out.push(char::from_u32(n).ok_or("bad \\u")?);
                                *i += 4;
                            }
                            _ => return Err(format!("unknown escape at {i}")),
                        }
                    }
                    c if c < 0x20 => return Err(format!("raw control byte at {i}")),
                    _ => {
                        // Copy a whole UTF-8 sequence starting at this byte.
                        let start = *i - 1;
                        while b.get(*i).is_some_and(|&c| c & 0xc0 == 0x80) {
                            *i += 1;
                        }
                        out.push_str(
                            std::str::from_utf8(&b[start..*i]).map_err(|e| e.to_string())?,
                        );
                    }
                }
            }
        }
        let b = text.as_bytes();
        let mut i = 0;
        let v = value(b, &mut i)?;
        if i != b.len() {
            return Err(format!("trailing bytes at {i}"));
        }
        Ok(v)
    }

    /// The table's JSON lines, each parsed.
    fn rows(t: &Table) -> Vec<J> {
        let text = render_json(t, &mut names(), &clock(), true);
        assert!(text.is_empty() || text.ends_with('\n'), "{text}");
        text.lines()
            .map(|l| parse_json(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// The groups of `records` by `by`: per JSON row, the values of `fields`
    /// (strings, numbers as text, "null") and the handshakes.
    fn groups(c: SummaryConfig, records: &[Record], fields: &[&str]) -> Vec<(Vec<String>, u64)> {
        rows(&one_table(c, records))
            .iter()
            .map(|row| {
                let keys = fields
                    .iter()
                    .map(|f| match row.get(f) {
                        J::Str(s) => s.clone(),
                        J::Num(n) => n.to_string(),
                        J::Null => "null".to_string(),
                        v => panic!("{f} is {v:?}"),
                    })
                    .collect();
                (keys, row.n("handshakes").expect("a count"))
            })
            .collect()
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn network_clears_host_bits_in_both_families() {
        let net = |a: &str, p| network(a.parse().expect("literal"), p).to_string();
        assert_eq!(net("10.1.2.3", 24), "10.1.2.0");
        assert_eq!(net("10.1.2.3", 0), "0.0.0.0");
        assert_eq!(net("10.1.2.3", 32), "10.1.2.3");
        assert_eq!(net("10.1.2.3", 9), "10.0.0.0");
        assert_eq!(net("2001:db8:aaaa:bbbb::1", 48), "2001:db8:aaaa::");
        assert_eq!(net("2001:db8:aaaa:bbbb::1", 0), "::");
        assert_eq!(net("2001:db8:aaaa:bbbb::1", 128), "2001:db8:aaaa:bbbb::1");
        assert_eq!(net("2001:db8:aaaa:bbbb::1", 52), "2001:db8:aaaa:b000::");
    }

    #[test]
    fn iface_dir_and_client_ip_keys_split_by_their_field_only() {
        let mut b = rec(START);
        b.ifindex = 3;
        b.client_port = 1;
        assert_eq!(
            groups(
                cfg("iface"),
                &[rec(START), rec(START), b.clone()],
                &["iface"]
            ),
            [(strs(&["eth0"]), 2), (strs(&["wlan0"]), 1)]
        );
        let mut d = rec(START);
        d.dir = Dir::In;
        assert_eq!(
            groups(cfg("dir"), &[d.clone(), rec(START), d], &["dir"]),
            [(strs(&["in"]), 2), (strs(&["out"]), 1)]
        );
        let mut c = rec(START);
        c.client = "2001:db8::5".parse().expect("literal");
        assert_eq!(
            groups(cfg("client-ip"), &[rec(START), c, b], &["client_ip"]),
            [(strs(&["10.0.0.5"]), 2), (strs(&["2001:db8::5"]), 1)]
        );
    }

    #[test]
    fn comm_groups_by_the_process_name_across_pids_and_none_is_null() {
        let of = |pid: u32, comm: &str| {
            let mut r = rec(START);
            r.process = Some(crate::probe::Process {
                pid,
                comm: Comm::new(comm),
            });
            r
        };
        let got = groups(
            cfg("comm"),
            &[of(10, "curl"), of(11, "curl"), of(12, "wget"), rec(START)],
            &["comm"],
        );
        assert_eq!(
            got,
            [
                (strs(&["curl"]), 2),
                (strs(&["null"]), 1),
                (strs(&["wget"]), 1)
            ]
        );
    }

    #[test]
    fn server_groups_by_address_and_port_server_ip_and_server_port_by_one() {
        let at = |ip: &str, port| {
            let mut r = rec(START);
            r.server = ip.parse().expect("literal");
            r.server_port = port;
            r
        };
        let rs = [
            at("192.0.2.1", 443),
            at("192.0.2.1", 80),
            at("192.0.2.2", 443),
            at("192.0.2.1", 443),
        ];
        assert_eq!(
            groups(cfg("server"), &rs, &["server_ip", "server_port"]),
            [
                (strs(&["192.0.2.1", "443"]), 2),
                (strs(&["192.0.2.1", "80"]), 1),
                (strs(&["192.0.2.2", "443"]), 1)
            ]
        );
        assert_eq!(
            groups(cfg("server-ip"), &rs, &["server_ip"]),
            [(strs(&["192.0.2.1"]), 3), (strs(&["192.0.2.2"]), 1)]
        );
        assert_eq!(
            groups(cfg("server-port"), &rs, &["server_port"]),
            [(strs(&["443"]), 3), (strs(&["80"]), 1)]
        );
        let row = &rows(&one_table(cfg("server-port"), &rs))[0];
        assert!(
            matches!(row, J::Obj(f) if !f.iter().any(|(k, _)| k == "server_ip")),
            "{row:?}"
        );
    }

    #[test]
    fn client_net_cuts_each_family_to_its_prefix() {
        let from = |ip: &str| {
            let mut r = rec(START);
            r.client = ip.parse().expect("literal");
            r
        };
        let rs: Vec<Record> = [
            "10.1.2.3",
            "10.1.2.200",
            "10.1.3.1",
            "2001:db8:1:2::1",
            "2001:db8:1:ffff::1",
            "2001:db8:2::1",
        ]
        .into_iter()
        .map(from)
        .collect();
        assert_eq!(
            groups(cfg("client-net"), &rs, &["client_net"]),
            [
                (strs(&["10.1.2.0/24"]), 2),
                (strs(&["2001:db8:1::/48"]), 2),
                (strs(&["10.1.3.0/24"]), 1),
                (strs(&["2001:db8:2::/48"]), 1)
            ]
        );
        let mut c = cfg("client-net");
        (c.v4_prefix, c.v6_prefix) = (16, 64);
        assert_eq!(
            groups(c, &rs, &["client_net"]),
            [
                (strs(&["10.1.0.0/16"]), 3),
                (strs(&["2001:db8:1:2::/64"]), 1),
                (strs(&["2001:db8:1:ffff::/64"]), 1),
                (strs(&["2001:db8:2::/64"]), 1)
            ]
        );
    }

    #[test]
    fn workloads_group_by_name_across_their_cgroups_and_interfaces() {
        let mut s = Summary::new(cfg("workload,dir"), START);
        let of = |ifindex, cgroup| {
            let mut r = rec(START);
            r.ifindex = ifindex;
            r.cgroup_id = cgroup;
            r
        };
        // One pod seen on its veth and through two of its containers'
        // cgroups, a unit, and an attempt with no workload.
        let web: Option<Arc<str>> = Some(Arc::from("pod shop/web"));
        s.add_of(&of(7, Some(70)), web.clone());
        s.add_of(&of(2, Some(71)), web.clone());
        s.add_of(&of(2, Some(72)), web);
        s.add_of(&of(2, Some(9)), Some(Arc::from("unit nginx.service")));
        s.add_of(&of(2, None), None);
        let mut t = s.finish(START + 60 * SEC);
        let t = t.remove(0);
        let got: Vec<(String, u64)> = rows(&t)
            .iter()
            .map(|row| {
                let w = match row.get("workload") {
                    J::Str(w) => w.clone(),
                    J::Null => "null".to_string(),
                    v => panic!("{v:?}"),
                };
                (w, row.n("handshakes").expect("a count"))
            })
            .collect();
        assert_eq!(
            got,
            [
                ("pod shop/web".to_string(), 3),
                ("null".to_string(), 1),
                ("unit nginx.service".to_string(), 1),
            ]
        );
        let text = render_text_at(&t, &mut names(), &clock(), false, Some(0));
        assert!(text.contains("pod shop/web"), "{text}");
    }

    #[test]
    fn cgroup_groups_by_id_named_when_it_can_be() {
        let of = |id| {
            let mut r = rec(START);
            r.cgroup_id = id;
            r
        };
        let rs = [of(Some(7)), of(None), of(Some(8)), of(Some(7)), of(Some(9))];
        assert_eq!(
            groups(cfg("cgroup"), &rs, &["cgroup_id", "cgroup"]),
            [
                (strs(&["7", "/system.slice/nginx.service"]), 2),
                (strs(&["null", "null"]), 1),
                (strs(&["8", CONTAINER]), 1),
                (strs(&["9", "null"]), 1)
            ]
        );
        let text = render_text_at(
            &one_table(cfg("cgroup"), &rs),
            &mut names(),
            &clock(),
            false,
            Some(0),
        );
        let cells: Vec<&str> = text
            .lines()
            .skip(3)
            .map(|l| l.split_whitespace().next().expect("a cell"))
            .collect();
        // Text shortens a container's path as record lines do.
        assert_eq!(
            cells,
            [
                "/system.slice/nginx.service",
                "-",
                "docker-0123456789ab",
                "9"
            ],
            "{text}"
        );
    }

    #[test]
    fn a_group_counts_results_retransmissions_and_durations_where_defined() {
        let mut rs = vec![rec(START), rec(START)];
        let mut refused = rec(START);
        refused.outcome = Outcome::Refused;
        refused.rtt_ns = Some(2 * MS);
        let mut timeout = rec(START);
        timeout.outcome = Outcome::Timeout;
        timeout.rtt_ns = None;
        timeout.retrans = 5;
        let mut abandoned = timeout.clone();
        abandoned.outcome = Outcome::Abandoned;
        abandoned.retrans = 1;
        rs.extend([refused, timeout, abandoned]);
        let row = &rows(&one_table(cfg("iface"), &rs))[0];
        let counts = [
            "handshakes",
            "ok",
            "refused",
            "timeout",
            "abandoned",
            "retrans",
        ]
        .map(|k| row.n(k));
        assert_eq!(counts, [5, 2, 1, 1, 1, 6].map(Some));
        // The rtt is over the three attempts that have one, the refused one included.
        assert_eq!(row.n("rtt_min_ns"), Some(2 * MS));
        assert_eq!(row.n("rtt_max_ns"), Some(12 * MS));
        // 8.6666667 ms, rounded to the nanosecond.
        assert_eq!(row.n("rtt_mean_ns"), Some(8_666_667));
        assert_eq!(row.n("local_p50_ns"), None);
        assert_eq!(row.get("other"), &J::Bool(false));
        let both = [inbound(START, "192.0.2.9", 30 * MS, 40_000), rec(START)];
        let row = &rows(&one_table(cfg("iface"), &both))[0];
        assert_eq!(row.n("local_min_ns"), Some(40_000));
        assert_eq!(row.n("local_mean_ns"), Some(40_000));
        assert_eq!(row.n("rtt_p99_ns"), Some(30 * MS));
    }

    #[test]
    fn rows_are_sorted_by_attempts_then_by_key() {
        let port = |p| {
            let mut r = rec(START);
            r.server_port = p;
            r
        };
        let rs = [
            port(9),
            port(3),
            port(7),
            port(7),
            port(1),
            port(3),
            port(3),
        ];
        assert_eq!(
            groups(cfg("server-port"), &rs, &["server_port"]),
            [
                (strs(&["3"]), 3),
                (strs(&["7"]), 2),
                (strs(&["1"]), 1),
                (strs(&["9"]), 1)
            ]
        );
    }

    fn every(secs: u64, grace_secs: u64) -> SummaryConfig {
        let mut c = cfg("server-port");
        c.interval = Some(Duration::from_secs(secs));
        c.grace = Duration::from_secs(grace_secs);
        c
    }

    fn spans(tables: &[Table]) -> Vec<(u64, u64, u64)> {
        tables
            .iter()
            .map(|t| {
                (
                    (t.start_ns - START) / MS,
                    (t.end_ns - START) / MS,
                    t.attempts(),
                )
            })
            .collect()
    }

    #[test]
    fn an_attempt_counts_in_the_interval_in_which_it_ended() {
        let mut s = Summary::new(every(10, 2), START);
        s.add(&rec(START));
        s.add(&rec(START + 10 * SEC - 1));
        // Exactly at the end of the first interval: the second one's.
        s.add(&rec(START + 10 * SEC));
        s.add(&rec(START + 19 * SEC));
        assert!(
            s.due(START + 12 * SEC - 1).is_empty(),
            "not before end + grace"
        );
        // A record of the first interval, read late but within the grace time.
        s.add(&rec(START + 9 * SEC));
        let first = s.due(START + 12 * SEC);
        assert_eq!(spans(&first), [(0, 10_000, 3)]);
        assert!(s.due(START + 12 * SEC).is_empty());
        // Too late for the first interval: counted in the oldest open one.
        s.add(&rec(START + 5 * SEC));
        assert_eq!(s.late_attempts(), 1);
        s.add(&rec(START + 25 * SEC));
        // Nothing ended in the third interval, nor between 30 s and 40 s.
        let due = s.due(START + 42 * SEC);
        assert_eq!(
            spans(&due),
            [
                (10_000, 20_000, 3),
                (20_000, 30_000, 1),
                (30_000, 40_000, 0)
            ]
        );
        assert_eq!(due[2].groups(), 0);
        s.add(&rec(START + 41 * SEC));
        s.add(&rec(START + 45 * SEC));
        // finish hands out the rest: the interval that is over, then the part
        // of the current one up to now.
        let rest = s.finish(START + 53 * SEC);
        assert_eq!(spans(&rest), [(40_000, 50_000, 2), (50_000, 53_000, 0)]);
        assert_eq!(s.other_attempts(), 0);
    }

    #[test]
    fn finish_at_an_interval_boundary_adds_no_empty_remainder() {
        let mut s = Summary::new(every(10, 1), START);
        s.add(&rec(START + 3 * SEC));
        assert_eq!(
            spans(&s.finish(START + 20 * SEC)),
            [(0, 10_000, 1), (10_000, 20_000, 0)]
        );
        let mut s = Summary::new(every(10, 0), START);
        s.add(&rec(START + 3 * SEC));
        assert_eq!(spans(&s.due(START + 10 * SEC)), [(0, 10_000, 1)]);
        assert!(s.finish(START + 10 * SEC).is_empty());
    }

    #[test]
    fn without_an_interval_one_table_covers_the_run() {
        let mut s = Summary::new(cfg("iface"), START);
        for i in 0..100 {
            s.add(&rec(START + i * 3 * SEC));
        }
        assert!(s.due(START + 1_000 * SEC).is_empty());
        assert_eq!(spans(&s.finish(START + 400 * SEC)), [(0, 400_000, 100)]);
        // Even an empty run gets its table, saying so.
        let mut s = Summary::new(cfg("iface"), START);
        let t = s.finish(START + 5 * SEC);
        assert_eq!(spans(&t), [(0, 5_000, 0)]);
        let text = render_text_at(&t[0], &mut names(), &clock(), false, Some(0));
        assert_eq!(
            text,
            "12:00:00.000000 to 12:00:05.000000 (5.000 s): no handshakes\n"
        );
        assert_eq!(render_json(&t[0], &mut names(), &clock(), false), "");
    }

    #[test]
    fn groups_beyond_the_limit_go_to_other() {
        let mut c = cfg("client-ip");
        c.max_groups = 3;
        let mut s = Summary::new(c, START);
        for i in 0..10u8 {
            let mut r = rec(START);
            r.client = [10, 0, 0, i % 5].into();
            s.add(&r);
        }
        let t = s.finish(START + SEC).remove(0);
        // The first three clients got groups; the other two went to `other`.
        assert_eq!((t.groups(), t.other_attempts(), t.attempts()), (3, 4, 10));
        assert_eq!(s.other_attempts(), 4);
        let rows = rows(&t);
        let other = rows.last().expect("rows");
        assert_eq!(other.get("other"), &J::Bool(true));
        assert_eq!(other.s("client_ip"), None);
        assert_eq!(other.n("handshakes"), Some(4));
        let text = render_text_at(&t, &mut names(), &clock(), false, Some(0));
        assert!(
            text.lines()
                .nth(6)
                .expect("other row")
                .starts_with("(other)   "),
            "{text}"
        );
        assert!(
            text.contains(
                "note: 4 of 10 handshakes are in (other): a table holds at most 3 groups"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_flood_of_distinct_clients_keeps_memory_bounded() {
        let mut c = cfg("client-ip");
        c.interval = Some(Duration::from_secs(10));
        let mut s = Summary::new(c, START);
        for i in 0..200_000u32 {
            let mut r = rec(START + u64::from(i) * 10_000);
            r.client = (0x0a00_0000 + i).to_be_bytes().into();
            s.add(&r);
            assert!(s.groups_held() <= 4097);
        }
        let tables = s.finish(START + 2 * SEC);
        assert_eq!(tables.len(), 1);
        assert_eq!((tables[0].groups(), tables[0].attempts()), (4096, 200_000));
        assert_eq!(s.other_attempts(), 200_000 - 4096);
        // The limit is per table: each interval has its own groups and overflow.
        let mut s = Summary::new(every(1, 0), START);
        for i in 0..15_000u32 {
            let mut r = rec(START + u64::from(i / 5_000) * SEC);
            r.server_port = (i % 5_000) as u16;
            s.add(&r);
        }
        assert_eq!(s.groups_held(), 3 * 4097);
        let tables = s.due(START + 3 * SEC);
        let shape: Vec<(usize, u64)> = tables
            .iter()
            .map(|t| (t.groups(), t.other_attempts()))
            .collect();
        assert_eq!(shape, [(4096, 904); 3]);
        assert_eq!(s.other_attempts(), 3 * 904);
        assert_eq!(s.groups_held(), 0);
    }

    #[test]
    fn text_table_is_aligned_with_units_and_local_columns_only_for_in() {
        let mut slow = rec(START);
        slow.server = "2001:db8::1".parse().expect("literal");
        slow.server_port = 80;
        slow.rtt_ns = Some(1_234_567_890);
        let mut lost = rec(START);
        lost.outcome = Outcome::Timeout;
        lost.rtt_ns = None;
        lost.retrans = 4;
        let t = one_table(cfg("iface,dir,server"), &[rec(START), lost, slow.clone()]);
        let text = render_text_at(&t, &mut names(), &clock(), false, Some(0));
        let want = "\
12:00:00.000000 to 12:01:00.000000 (60.000 s): 3 handshakes in 2 groups
                                                                                            ------------------- rtt (ms) -------------------
iface  dir  server             attempts  ok  refused  unreach  timeout  abandoned  retrans       min       p50       p90       p99       max
eth0   out  93.184.216.34:443         2   1        0        0        1          0        4    12.000    12.000    12.000    12.000    12.000
eth0   out  [2001:db8::1]:80          1   1        0        0        0          0        0  1234.567  1234.567  1234.567  1234.567  1234.567
";
        assert_eq!(text, want);
        let t = one_table(
            cfg("dir,server-port"),
            &[rec(START), inbound(START, "192.0.2.1", 31_020_000, 41_000)],
        );
        let text = render_text_at(&t, &mut names(), &clock(), false, Some(3600));
        let want = "\
13:00:00.000000 to 13:01:00.000000 (60.000 s): 2 handshakes in 2 groups
                                                                               -------------- rtt (ms) --------------  ---------- local (ms) -----------
dir  server-port  attempts  ok  refused  unreach  timeout  abandoned  retrans     min     p50     p90     p99     max    min    p50    p90    p99    max
out  443                 1   1        0        0        0          0        0  12.000  12.000  12.000  12.000  12.000      -      -      -      -      -
in   22                  1   1        0        0        0          0        0  31.020  31.020  31.020  31.020  31.020  0.041  0.041  0.041  0.041  0.041
";
        assert_eq!(text, want);
    }

    #[test]
    fn histograms_follow_each_group_within_80_columns() {
        let mut c = cfg("iface,dir,server");
        c.hist = true;
        let mut rng = Rng(1);
        let mut rs: Vec<Record> = (0..100)
            .map(|_| {
                inbound(
                    START,
                    "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                    MS + rng.below(100 * MS),
                    30_000,
                )
            })
            .collect();
        let mut lost = rec(START);
        lost.outcome = Outcome::Timeout;
        lost.rtt_ns = None;
        rs.push(lost);
        let t = one_table(c, &rs);
        let text = render_text_at(&t, &mut names(), &clock(), true, Some(0));
        let hist: Vec<&str> = text.lines().skip_while(|l| !l.is_empty()).collect();
        for l in &hist {
            assert!(l.chars().count() <= 80, "{} columns: {l}", l.len());
        }
        assert_eq!(
            hist[1],
            "iface=eth0 dir=in server=10.0.0.5:22: 100 handshakes"
        );
        assert_eq!(hist[2], "     rtt usecs           : count     distribution");
        let bars: u64 = hist
            .iter()
            .take_while(|l| !l.contains("local"))
            .filter_map(|l| l.split(" : ").nth(1))
            .filter_map(|c| c.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(bars, 100, "{text}");
        assert!(
            hist.contains(&"     local usecs         : count     distribution"),
            "{text}"
        );
        assert!(
            hist.contains(
                &"        16 -> 31         : 100      |****************************************|"
            ),
            "{text}"
        );
        assert_eq!(
            hist[hist.len() - 2],
            "iface=eth0 dir=out server=93.184.216.34:443: 1 handshake"
        );
        assert_eq!(hist[hist.len() - 1], "     rtt: none");
        // Without hist collected, asking to draw adds nothing.
        let plain = one_table(cfg("iface,dir,server"), &rs);
        let text = render_text_at(&plain, &mut names(), &clock(), true, Some(0));
        assert!(!text.contains("usecs"), "{text}");
    }

    #[test]
    fn json_lines_have_the_documented_keys_and_parse() {
        let mut c = cfg("iface,dir,server");
        c.hist = true;
        let t = one_table(
            c,
            &[inbound(START + 5 * SEC, "192.0.2.1", 31_020_000, 41_000)],
        );
        assert_eq!(
            render_json(&t, &mut names(), &clock(), true),
            "{\"type\":\"summary\",\"interval_start\":\"2026-11-27T12:00:00.000000Z\",\
             \"interval_end\":\"2026-11-27T12:01:00.000000Z\",\"iface\":\"eth0\",\"dir\":\"in\",\
             \"server_ip\":\"10.0.0.5\",\"server_port\":22,\"other\":false,\"handshakes\":1,\"ok\":1,\
             \"refused\":0,\"unreachable\":0,\"timeout\":0,\"abandoned\":0,\"retrans\":0,\"rtt_min_ns\":31020000,\
             \"rtt_p50_ns\":31020000,\"rtt_p90_ns\":31020000,\"rtt_p99_ns\":31020000,\
             \"rtt_max_ns\":31020000,\"rtt_mean_ns\":31020000,\"local_min_ns\":41000,\
             \"local_p50_ns\":41000,\"local_p90_ns\":41000,\"local_p99_ns\":41000,\
             \"local_max_ns\":41000,\"local_mean_ns\":41000,\
             \"rtt_hist\":[{\"lo_ns\":16384000,\"hi_ns\":32768000,\"count\":1}],\
             \"local_hist\":[{\"lo_ns\":32000,\"hi_ns\":64000,\"count\":1}]}\n"
        );
        // Every key, odd names, `other`: every line still parses.
        let mut c = cfg("cgroup,client-net,iface,dir,server-ip,server-port");
        (c.hist, c.max_groups) = (true, 2);
        let mut odd = names();
        odd.ifaces.insert(2, "we\"ird\\\u{1}é".to_string());
        let mut rs: Vec<Record> = (0..4u8)
            .map(|i| inbound(START, &format!("192.0.2.{i}"), 1_000, u64::from(i)))
            .collect();
        rs[0].cgroup_id = Some(7);
        rs.push(rec(START));
        let t = one_table(c, &rs);
        let text = render_json(&t, &mut odd, &clock(), true);
        let parsed: Vec<J> = text
            .lines()
            .map(|l| parse_json(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        // The three attempts with no cgroup, the one in cgroup 7, and the
        // `out` attempt, which found the table full.
        let shape: Vec<_> = parsed
            .iter()
            .map(|r| {
                (
                    r.n("handshakes"),
                    r.n("cgroup_id"),
                    r.s("cgroup"),
                    r.get("other"),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                (Some(3), None, None, &J::Bool(false)),
                (
                    Some(1),
                    Some(7),
                    Some("/system.slice/nginx.service"),
                    &J::Bool(false)
                ),
                (Some(1), None, None, &J::Bool(true))
            ]
        );
        assert_eq!(parsed[0].s("iface"), Some("we\"ird\\\u{1}é"));
        assert_eq!(parsed[0].s("client_net"), Some("192.0.2.0/24"));
        assert_eq!(parsed[2].s("client_net"), None);
        let total: u64 = parsed.iter().filter_map(|r| r.n("handshakes")).sum();
        assert_eq!(total, 5);
    }
}
