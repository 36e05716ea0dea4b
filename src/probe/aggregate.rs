//! The kernel's aggregation: what an aggregate counts (the one definition,
//! shared with user space's own counts), how the classifier is told to
//! aggregate, and how its per-CPU maps and caches are read and summed.

use std::mem::offset_of;
use std::sync::atomic::Ordering;

use super::abi::FailKey;
use super::abi::{
    from_bytes, per_cpu, per_cpu_stride, AggKeyRaw, ConfigGlobal, Pod, AGG_FAST, AGG_KEYS,
    AGG_RESERVE, CFG_AGGREGATE, CFG_AGG_CGROUP, CFG_AGG_PORT, CFG_NO_RECORDS, FAIL_KEYS,
    HIST_BOUNDS_NS, HIST_N, RESULTS,
};
use super::record::{Dir, Outcome, Reason, Record};
use super::state::Probe;
use crate::bpf::map::{batch_unsupported, Batch, Map};
use crate::bpf::BpfError;

/// The bucket a duration falls in, by the classifier's rule: the first
/// bound it does not exceed, or `HIST_N` above them all.
pub fn hist_bucket(ns: u64) -> usize {
    HIST_BOUNDS_NS.partition_point(|&b| b < ns)
}

/// An aggregation key as the classifier wrote it.
pub(crate) fn agg_key(k: &AggKeyRaw) -> Option<AggKey> {
    let dir = Dir::from_code(k.dir)?;
    Some(AggKey {
        ifindex: k.ifindex,
        dir,
        server_port: (k.server_port != 0).then_some(k.server_port),
        cgroup_id: (k.cgroup_id != 0).then_some(k.cgroup_id),
        other: k.other != 0,
    })
}

/// `struct flowlat_agg_slot`: a key and its aggregate in a CPU's cache.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AggSlot {
    pub(crate) key: AggKeyRaw,
    pub(crate) v: AggValue,
}

/// A histogram of durations (`struct flowlat_hist`), over [`HIST_BOUNDS_NS`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hist {
    /// Counts per bucket, not cumulative; `buckets[HIST_N]` is above the last bound.
    pub buckets: [u64; HIST_N + 1],
    /// The sum of the durations counted, in nanoseconds.
    pub sum_ns: u64,
}

impl Default for Hist {
    fn default() -> Hist {
        Hist {
            buckets: [0; HIST_N + 1],
            sum_ns: 0,
        }
    }
}

impl Hist {
    /// Counts one duration.
    pub fn observe(&mut self, ns: u64) {
        self.buckets[hist_bucket(ns)] += 1;
        self.sum_ns = self.sum_ns.wrapping_add(ns);
    }

    /// How many durations it counts.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    fn merge(&mut self, o: &Hist) {
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a = a.wrapping_add(*b);
        }
        self.sum_ns = self.sum_ns.wrapping_add(o.sum_ns);
    }
}

/// What an aggregate holds (`struct flowlat_agg`): ended attempts by result,
/// their SYN retransmissions, and two histograms.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AggValue {
    /// Attempts by [`Outcome`], in the order of [`Outcome::index`].
    pub results: [u64; RESULTS],
    /// Client SYNs beyond the first ([`Record::retrans`]), summed.
    pub retrans: u64,
    /// [`Record::rtt_ns`] of the `ok` attempts.
    pub rtt: Hist,
    /// [`Record::local_ns`] of the `in` attempts that are `ok`.
    pub local: Hist,
}

impl AggValue {
    /// Adds one attempt, as the classifier adds the ones it ends: the one
    /// definition of what an aggregate counts (user space adds its timeouts
    /// with it).
    pub fn add_record(&mut self, r: &Record) {
        self.results[r.outcome.index()] += 1;
        self.retrans += u64::from(r.retrans);
        if r.outcome != Outcome::Ok {
            return;
        }
        if let Some(ns) = r.rtt_ns {
            self.rtt.observe(ns);
        }
        if let (Dir::In, Some(ns)) = (r.dir, r.local_ns) {
            self.local.observe(ns);
        }
    }

    /// Adds another aggregate's counts to this one.
    pub fn merge(&mut self, o: &AggValue) {
        for (a, b) in self.results.iter_mut().zip(&o.results) {
            *a = a.wrapping_add(*b);
        }
        self.retrans = self.retrans.wrapping_add(o.retrans);
        self.rtt.merge(&o.rtt);
        self.local.merge(&o.local);
    }
}

/// What a failure is counted by: the interface, the direction and the reason.
pub type Failure = (u32, Dir, Reason);

/// What the classifier aggregates by: the interface, the direction, and as
/// [`Aggregation`] asks the server port and the cgroup. `other` holds the
/// attempts of keys beyond the classifier's room (1024 keys with a port or a
/// cgroup), with neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AggKey {
    pub ifindex: u32,
    pub dir: Dir,
    /// `None` unless aggregated by server port.
    pub server_port: Option<u16>,
    /// `None` unless aggregated by cgroup, or when the attempt had no local socket.
    pub cgroup_id: Option<u64>,
    pub other: bool,
}

/// Whether and how the classifier aggregates ended attempts itself, in the
/// map [`Probe::aggregates`] reads. It adds an attempt when it ends it (`ok`,
/// `refused`, `abandoned`); timeouts are found by [`Probe::sweep`], whose
/// records the caller adds with [`AggValue::add_record`]. Attempts the
/// filters drop are not aggregated; `ok` attempts under
/// [`Filter::min_rtt_ns`] are (the filter holds back records only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Aggregation {
    /// Aggregate.
    pub enabled: bool,
    /// Send no record per attempt (the daemon mode): the rings stay quiet, and
    /// only the timeouts come as records, from the sweep.
    pub no_records: bool,
    /// Key the aggregates by the server's port too.
    pub by_server_port: bool,
    /// Key the aggregates by the local socket's cgroup too.
    pub by_cgroup: bool,
}

impl Pod for AggValue {}
impl Pod for AggSlot {}

/// Every key of `map` (of `N` bytes), walked with `BPF_MAP_GET_NEXT_KEY`,
/// at most `bound`: a key that vanishes under the walk restarts it, and the
/// bound ends it.
fn keys_of<const N: usize>(map: &Map, bound: usize) -> Result<Vec<[u8; N]>, BpfError> {
    let mut keys: Vec<[u8; N]> = Vec::new();
    for _ in 0..bound {
        let mut next = [0u8; N];
        if !map.next_key(keys.last().map(|k| &k[..]), &mut next)? {
            break;
        }
        keys.push(next);
    }
    Ok(keys)
}

impl Probe {
    /// Sets whether and how the classifier aggregates (see [`Aggregation`]);
    /// it applies to attempts that end from now on.
    pub fn set_aggregation(&mut self, a: &Aggregation) {
        let flags = &self.globals.words()[self.config_word + offset_of!(ConfigGlobal, flags) / 4];
        let mut set = 0;
        for (on, bit) in [
            (a.enabled, CFG_AGGREGATE),
            (a.no_records, CFG_NO_RECORDS),
            (a.by_server_port, CFG_AGG_PORT),
            (a.by_cgroup, CFG_AGG_CGROUP),
        ] {
            if on {
                set |= bit;
            }
        }
        let mine = CFG_AGGREGATE | CFG_NO_RECORDS | CFG_AGG_PORT | CFG_AGG_CGROUP;
        // One store: the classifier reads the flags once per ended attempt.
        let _ = flags.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| {
            Some((f & !mine) | set)
        });
    }

    /// The classifier's aggregates, summed over CPUs, read with batch lookups
    /// (falling back to one lookup per key on kernels without them, before
    /// Linux 5.6). The counts only grow; the timeouts are not in them (see
    /// [`Aggregation`]).
    pub fn aggregates(&self) -> Result<Vec<(AggKey, AggValue)>, BpfError> {
        match self.aggregates_batched() {
            Err(e) if batch_unsupported(&e) => self.aggregates_walked(),
            r => self.with_cached(r?),
        }
    }

    /// Adds what each CPU's cache of aggregates holds to the map's (see
    /// `FLOWLAT_AGG_FAST`): a cached key is in the map as well.
    pub(super) fn with_cached(
        &self,
        mut out: Vec<(AggKey, AggValue)>,
    ) -> Result<Vec<(AggKey, AggValue)>, BpfError> {
        for (key, v) in self.aggregates_cached()? {
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some((_, sum)) => sum.merge(&v),
                None => out.push((key, v)),
            }
        }
        Ok(out)
    }

    /// What the CPUs' caches of aggregates hold, a key per CPU that caches it
    /// (tests; [`Probe::aggregates`] adds them to the map's).
    pub fn aggregates_cached(&self) -> Result<Vec<(AggKey, AggValue)>, BpfError> {
        let mut out = Vec::new();
        let mut values = vec![0u8; per_cpu_stride::<AggSlot>() * self.possible_cpus];
        for i in 0..AGG_FAST {
            if !self.agg_cpu.lookup(&i.to_ne_bytes(), &mut values)? {
                continue;
            }
            for slot in per_cpu::<AggSlot>(&values).flatten() {
                if let Some(key) = agg_key(&slot.key).filter(|_| slot.key.ifindex != 0) {
                    out.push((key, slot.v));
                }
            }
        }
        Ok(out)
    }

    /// The classifier's counts of failures by interface, direction and
    /// reason (`fails`), summed over CPUs; like the aggregates, without the
    /// sweep's timeouts. At most `FLOWLAT_FAIL_KEYS` keys.
    pub fn failures(&self) -> Result<Vec<(Failure, u64)>, BpfError> {
        let mut values = vec![0u8; per_cpu_stride::<u64>() * self.possible_cpus];
        let mut out = Vec::new();
        for next in keys_of::<{ std::mem::size_of::<FailKey>() }>(&self.fails, 2 * FAIL_KEYS)? {
            if !self.fails.lookup(&next, &mut values)? {
                continue;
            }
            let Some(k) = from_bytes::<FailKey>(&next) else {
                continue;
            };
            let (Some(dir), Some(reason)) = (Dir::from_code(k.dir), Reason::from_code(k.reason))
            else {
                continue;
            };
            let n: u64 = per_cpu::<u64>(&values).flatten().sum();
            out.push(((k.ifindex, dir, reason), n));
        }
        Ok(out)
    }

    /// Deletes the aggregates and failure counts of interfaces that are gone
    /// (after the metrics' TTL), so that a node whose pods come and go keeps
    /// room for the live ones; the keys with a port or a cgroup give their
    /// place under the cap back. Returns how many keys went. A CPU's cache
    /// slot that holds a key of these interfaces keeps it (no packet of
    /// theirs comes any more), at the cost of that slot only.
    pub fn forget_ifaces(&self, ifindexes: &[u32]) -> Result<usize, BpfError> {
        if ifindexes.is_empty() {
            return Ok(0);
        }
        let mut dead = keys_of::<{ std::mem::size_of::<AggKeyRaw>() }>(
            &self.agg,
            2 * (AGG_KEYS + AGG_RESERVE),
        )?;
        dead.retain(|k| from_bytes::<AggKeyRaw>(k).is_some_and(|k| ifindexes.contains(&k.ifindex)));
        let mut capped = 0u32;
        let mut gone = 0;
        for k in &dead {
            if self.agg.delete(k)? {
                gone += 1;
                if from_bytes::<AggKeyRaw>(k)
                    .is_some_and(|k| k.other == 0 && (k.server_port != 0 || k.cgroup_id != 0))
                {
                    capped += 1;
                }
            }
        }
        if capped > 0 {
            let keys =
                &self.globals.words()[self.config_word + offset_of!(ConfigGlobal, agg_keys) / 4];
            let _ = keys.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(capped))
            });
        }
        let mut dead = keys_of::<{ std::mem::size_of::<FailKey>() }>(&self.fails, 2 * FAIL_KEYS)?;
        dead.retain(|k| from_bytes::<FailKey>(k).is_some_and(|k| ifindexes.contains(&k.ifindex)));
        for k in &dead {
            if self.fails.delete(k)? {
                gone += 1;
            }
        }
        Ok(gone)
    }

    /// The bytes of one key's values, one per possible CPU.
    pub(super) fn agg_stride(&self) -> usize {
        per_cpu_stride::<AggValue>() * self.possible_cpus
    }

    pub(super) fn aggregates_batched(&self) -> Result<Vec<(AggKey, AggValue)>, BpfError> {
        let key_size = std::mem::size_of::<AggKeyRaw>();
        let stride = self.agg_stride();
        let mut count = 64u32;
        let mut keys = vec![0u8; count as usize * key_size];
        let mut values = vec![0u8; count as usize * stride];
        let mut out = Vec::new();
        let mut at = Batch::Start;
        // Every call moves on by at least one bucket; the bound only guards
        // against a kernel that would not.
        for _ in 0..2 * (AGG_KEYS + AGG_RESERVE) + 16 {
            if at == Batch::Done {
                return Ok(out);
            }
            let step = self.agg.lookup_batch(at, count, &mut keys, &mut values);
            let (n, next) = match step {
                Ok(step) => step,
                // One bucket holds more keys than asked for: ask for more.
                Err(BpfError::Sys { source, .. })
                    if source.raw_os_error() == Some(libc::ENOSPC) && count < 4096 =>
                {
                    count *= 2;
                    keys.resize(count as usize * key_size, 0);
                    values.resize(count as usize * stride, 0);
                    continue;
                }
                Err(e) => return Err(e),
            };
            for i in 0..n as usize {
                let k = &keys[i * key_size..(i + 1) * key_size];
                let v = &values[i * stride..(i + 1) * stride];
                if let Some(kv) = self.agg_entry(k, v) {
                    out.push(kv);
                }
            }
            at = next;
        }
        Err(BpfError::Invalid(
            "reading the aggregates did not come to an end".to_string(),
        ))
    }

    /// [`Probe::aggregates`] the way kernels before Linux 5.6 allow: one
    /// lookup per key (public to compare the two in tests).
    pub fn aggregates_walked(&self) -> Result<Vec<(AggKey, AggValue)>, BpfError> {
        let mut values = vec![0u8; self.agg_stride()];
        let mut out = Vec::new();
        for next in
            keys_of::<{ std::mem::size_of::<AggKeyRaw>() }>(&self.agg, AGG_KEYS + AGG_RESERVE)?
        {
            if self.agg.lookup(&next, &mut values)? {
                out.extend(self.agg_entry(&next, &values));
            }
        }
        self.with_cached(out)
    }

    /// One key of the map and its per-CPU values, summed.
    pub(super) fn agg_entry(&self, key: &[u8], values: &[u8]) -> Option<(AggKey, AggValue)> {
        let k = agg_key(&from_bytes(key)?)?;
        let mut sum = AggValue::default();
        for v in per_cpu::<AggValue>(values) {
            sum.merge(&v?);
        }
        Some((k, sum))
    }
}
