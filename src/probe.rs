//! flowlat's own BPF program: its maps, its record and the measurement contract.
//!
//! The C side is `bpf/probe.c`; the structs here mirror `bpf/flowlat.h` field for
//! field (a test compares them with the sizes and offsets clang computed for
//! `bpf/layout.c`). User space finishes what the classifier starts: it turns
//! a record's timestamps into the contract's `rtt`, `local` and `total`, and it
//! reports attempts that time out by sweeping the pending table.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use std::mem::offset_of;
use std::num::NonZeroUsize;
use std::sync::atomic::{fence, AtomicU32, Ordering};

use crate::bpf::mmap::Mapping;
use crate::bpf::object::{Object, BSS_MAP};
use crate::bpf::perf::{page_size, PerfBuffers, PerfStats};
use crate::bpf::{cpu, sys, BpfError};
use crate::slots::{self, SlotTable};

/// The classifier's ELF object, compiled by `build.rs`. Aligned so that the ELF
/// parser can read its headers in place.
#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);
static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/probe.o")));
static OBJECT_SLOTS: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/probe_slots.o")));

/// The embedded classifier object of a table (for tests and tools that inspect it).
pub fn object_bytes(table: Table) -> &'static [u8] {
    match table {
        Table::Slots => &OBJECT_SLOTS.0,
        Table::Lru => &OBJECT.0,
    }
}

/// Which table of attempts in progress the classifier keeps (`bpf/table.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Buckets of slots claimed with compare-and-exchange: Linux 5.12 and later.
    Slots,
    /// An LRU hash table, where the kernel has no compare-and-exchange in BPF.
    Lru,
}

impl Table {
    /// The one this kernel can run: slots where it has compare-and-exchange.
    pub fn best() -> Table {
        if sys::has_atomic_cmpxchg() {
            Table::Slots
        } else {
            Table::Lru
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Table::Slots => "slots",
            Table::Lru => "lru",
        }
    }

    /// Its map's name in the probe's object (bpftool shows it as `flowlat_` and this).
    pub fn map_name(self) -> &'static str {
        match self {
            Table::Slots => "slots",
            Table::Lru => "pending",
        }
    }
}

/// Maps `bytes` (rounded up to whole pages) of a `BPF_F_MMAPABLE` array's
/// values; `what` names it for the error.
fn map_values(
    fd: BorrowedFd<'_>,
    bytes: usize,
    page: usize,
    what: &str,
) -> Result<Mapping, BpfError> {
    let len = NonZeroUsize::new(bytes.div_ceil(page) * page)
        .ok_or_else(|| BpfError::Object(format!("{what} has no values to map")))?;
    Mapping::new(fd, len).map_err(|e| BpfError::sys(format!("mapping {what} into memory"), e))
}

/// The table as user space holds it.
enum TableMap {
    Slots(SlotTable),
    Lru(OwnedFd),
}

/// Where an entry of the table was found.
enum Place {
    /// In the LRU table: by its key.
    Lru,
    /// A way of a bucket, and its word then.
    Slot(slots::Found),
}

/// `FLOWLAT_DIR_*`: which side of the interface the client is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// The client is on this side: its SYN leaves through the interface.
    Out,
    /// The client is beyond the interface: its SYN arrives.
    In,
}

/// `FLOWLAT_RESULT_*`: how an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The handshake completed.
    Ok,
    /// The server answered the SYN with a RST.
    Refused,
    /// No answer within `--syn-timeout` of the first SYN.
    Timeout,
    /// The client sent a SYN with a new ISN on the same tuple before any answer.
    Abandoned,
}

impl Outcome {
    /// The word used in both output formats.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
            Outcome::Abandoned => "abandoned",
        }
    }
}

impl Dir {
    /// The word used in both output formats.
    pub fn as_str(self) -> &'static str {
        match self {
            Dir::Out => "out",
            Dir::In => "in",
        }
    }
}

const DIR_OUT: u8 = 0;
const DIR_IN: u8 = 1;

fn dir_code(d: Dir) -> u8 {
    match d {
        Dir::Out => DIR_OUT,
        Dir::In => DIR_IN,
    }
}

/// The `nets` trie's key of a network: the family byte, then the address
/// with its host bits cleared, and the prefix counted from the family byte.
fn net_key(addr: IpAddr, prefix: u8) -> Result<NetKey, BpfError> {
    let (family, octets, bits): (u8, Vec<u8>, u8) = match addr {
        IpAddr::V4(a) => (4, a.octets().to_vec(), 32),
        IpAddr::V6(a) => (6, a.octets().to_vec(), 128),
    };
    if prefix > bits {
        return Err(BpfError::Invalid(format!(
            "network {addr}/{prefix}: an IPv{family} prefix is at most {bits} bits"
        )));
    }
    let mut k = NetKey {
        prefixlen: 8 + u32::from(prefix),
        family,
        ..NetKey::default()
    };
    for (i, (dst, src)) in k.addr.iter_mut().zip(&octets).enumerate() {
        let keep = (usize::from(prefix)).saturating_sub(8 * i).min(8);
        *dst = src & !(0xffu16 >> keep) as u8;
    }
    Ok(k)
}
const RESULT_OK: u8 = 0;
const RESULT_REFUSED: u8 = 1;
const RESULT_TIMEOUT: u8 = 2;
const RESULT_ABANDONED: u8 = 3;

/// Indices of the per-CPU `stats` map (`FLOWLAT_STAT_*`).
// Written only by the classifier; named here for the layout test.
#[allow(dead_code)]
const STATE_SYN: u8 = 0;
#[allow(dead_code)]
const STATE_SYNACK: u8 = 1;
const STATE_REPORTED: u8 = 2;

/// How long a timed-out attempt's tombstone outlives its client's last SYN.
/// Linux retries a SYN at most 120 s (`TCP_RTO_MAX`) apart, so a client that
/// keeps retrying the reported attempt never starts a second record.
pub const REPORTED_HOLD: Duration = Duration::from_secs(120);

const STAT_SENT: usize = 0;
const STAT_SEND_FAILED: usize = 1;
const STAT_CREATED: usize = 2;
const STAT_REMOVED: usize = 3;
const STAT_EXT_SKIPPED: usize = 4;
const STAT_FILTERED: usize = 5;
const STAT_BELOW_MIN_RTT: usize = 6;
const STAT_AGG_FAILED: usize = 7;
const STAT_MAX: usize = 8;

/// `FLOWLAT_CFG_*`: bits of `config.flags`.
const CFG_MIN_RTT: u32 = 1;
const CFG_AGGREGATE: u32 = 2;
const CFG_NO_RECORDS: u32 = 4;
const CFG_AGG_PORT: u32 = 8;
const CFG_AGG_CGROUP: u32 = 16;
const CFG_IN_ORDER: u32 = 32;

/// How many bounds the histograms have (`FLOWLAT_HIST_N`); they have one
/// bucket more, for what lies above the last bound.
pub const HIST_N: usize = 22;

/// The histogram bounds in nanoseconds (`FLOWLAT_HIST_BOUNDS`): 1-2-5 per
/// decade, 5 µs to 50 s. Bucket `i < HIST_N` counts durations `v` with
/// `HIST_BOUNDS_NS[i - 1] < v <= HIST_BOUNDS_NS[i]`; bucket `HIST_N` the rest.
pub const HIST_BOUNDS_NS: [u64; HIST_N] = [
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
    2_000_000_000,
    5_000_000_000,
    10_000_000_000,
    20_000_000_000,
    50_000_000_000,
];

/// The bucket a duration falls in, by the classifier's rule: the first
/// bound it does not exceed, or `HIST_N` above them all.
pub fn hist_bucket(ns: u64) -> usize {
    HIST_BOUNDS_NS.partition_point(|&b| b < ns)
}

/// `FLOWLAT_AGG_KEYS` and `FLOWLAT_AGG_RESERVE`.
const AGG_KEYS: usize = 1024;
const AGG_RESERVE: usize = 128;

/// `FLOWLAT_FILTER_*`: bits of `filter.kinds`.
const FILTER_PORT: u32 = 1;
const FILTER_NET: u32 = 2;
const FILTER_DIR: u32 = 4;
const FILTER_CGROUP: u32 = 8;

/// How many cgroups a [`Filter`] may name (`FLOWLAT_MAX_CGROUPS`).
pub const MAX_FILTER_CGROUPS: usize = 8;
/// How many networks a [`Filter`] may name (`FLOWLAT_MAX_NETS`).
pub const MAX_FILTER_NETS: usize = 256;
/// `FLOWLAT_FILTER_MEMO`.
const FILTER_MEMO: usize = 4096;

/// `FLOWLAT_GATE_SLOTS` and `FLOWLAT_GATE_BANKS`: the ACK gate (see `bpf/flowlat.h`).
const GATE_SLOTS: usize = 32768;
const GATE_BANKS: u32 = 2;
/// `FLOWLAT_GATE_PORT_WORDS`: the gate's words of port bits, after its slots.
const GATE_PORT_WORDS: usize = 65536 / 32;

/// `struct flowlat_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Key {
    pub client: [u8; 16],
    pub server: [u8; 16],
    /// Network byte order, as in the packet.
    pub client_port: u16,
    /// Network byte order, as in the packet.
    pub server_port: u16,
    pub ifindex: u32,
    pub family: u8,
    pub dir: u8,
    pub pad: [u8; 6],
}

/// `struct flowlat_config`: settings the classifier reads as it runs.
#[repr(C)]
struct ConfigGlobal {
    bank: u32,
    flags: u32,
    agg_keys: u32,
    batch: u32,
    table_mask: u32,
}

/// `struct flowlat_agg_key`, as the map holds it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct AggKeyRaw {
    ifindex: u32,
    dir: u8,
    other: u8,
    /// Host order.
    server_port: u16,
    cgroup_id: u64,
}

/// An aggregation key as the classifier wrote it.
fn agg_key(k: &AggKeyRaw) -> Option<AggKey> {
    let dir = match k.dir {
        DIR_OUT => Dir::Out,
        DIR_IN => Dir::In,
        _ => return None,
    };
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
struct AggSlot {
    key: AggKeyRaw,
    v: AggValue,
}

/// `FLOWLAT_AGG_FAST`: slots in each CPU's cache of aggregates.
const AGG_FAST: u32 = 256;

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
    /// Attempts by [`Outcome`]: ok, refused, timeout, abandoned.
    pub results: [u64; 4],
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
        self.results[outcome_index(r.outcome)] += 1;
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

fn outcome_index(o: Outcome) -> usize {
    usize::from(match o {
        Outcome::Ok => RESULT_OK,
        Outcome::Refused => RESULT_REFUSED,
        Outcome::Timeout => RESULT_TIMEOUT,
        Outcome::Abandoned => RESULT_ABANDONED,
    })
}

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

/// `struct flowlat_filter`, the global user space fills before attaching.
#[repr(C)]
struct FilterGlobal {
    kinds: u32,
    dirs: u32,
    cgroups: u32,
    pad: u32,
    min_rtt_ns: u64,
    cgroup_id: [u64; MAX_FILTER_CGROUPS],
    cgroup_level: [u32; MAX_FILTER_CGROUPS],
    ports: [u32; 65536 / 32],
    memo: [u32; FILTER_MEMO],
}

/// `struct flowlat_net_key`: a network in the `nets` LPM trie, behind its family byte.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct NetKey {
    prefixlen: u32,
    family: u8,
    addr: [u8; 16],
    pad: [u8; 3],
}

/// `struct flowlat_pending`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    pub first_syn_ns: u64,
    pub last_syn_ns: u64,
    pub first_synack_ns: u64,
    pub last_synack_ns: u64,
    pub client_isn: u32,
    pub server_isn: u32,
    pub syns: u16,
    pub synacks: u16,
    pub state: u8,
    pub bank: u8,
    pub syn_len: u16,
    /// The local socket's cgroup v2 id, or 0 (see `bpf/flowlat.h`).
    pub cgroup_id: u64,
}

/// `struct flowlat_event`: one record per attempt, as the classifier sends it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Event {
    pub key: Key,
    pub p: Pending,
    pub end_ns: u64,
    pub result: u8,
    pub pad: [u8; 7],
}

/// `FLOWLAT_BATCH`: records per perf event, at most.
pub const BATCH: usize = 8;

/// The most records per perf event, and what the probe loads with. More than
/// one needs [`Probe::drain`] to read part-filled batches from their slots,
/// and that read needs the classifier's plain stores to become visible in the
/// order it made them, which x86 guarantees and other CPUs do not: elsewhere
/// each record goes out alone at once.
const MAX_RECORDS_PER_EVENT: u32 = if STORES_IN_ORDER { BATCH as u32 } else { 1 };

/// Whether this CPU makes plain stores visible in the order they were made,
/// as x86 does: then the classifier publishes a new attempt in the slot
/// table with a plain store (`FLOWLAT_CFG_IN_ORDER`), and reads of
/// part-filled batches are sound (`MAX_RECORDS_PER_EVENT`).
const STORES_IN_ORDER: bool = cfg!(any(target_arch = "x86_64", target_arch = "x86"));

/// `struct flowlat_batch`: a CPU's batch of records (see `bpf/flowlat.h`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Batch {
    /// Batches this CPU filled before this one.
    pub seq: u64,
    /// Records in `ev`.
    pub n: u32,
    pub pad: u32,
    pub ev: [Event; BATCH],
}

/// Plain-old-data structs shared with the kernel: every bit pattern is valid.
pub(crate) trait Pod: Copy + Default {}
impl Pod for Key {}
impl Pod for Pending {}
impl Pod for Event {}
impl Pod for Batch {}
impl Pod for NetKey {}
impl Pod for AggKeyRaw {}
impl Pod for AggValue {}
impl Pod for AggSlot {}

pub(crate) fn as_bytes<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: T is a #[repr(C)] struct of integers and byte arrays with explicit padding
    // fields, so all of its size_of::<T>() bytes are initialised.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
}

pub(crate) fn from_bytes<T: Pod>(b: &[u8]) -> Option<T> {
    if b.len() != std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked, T accepts every bit pattern (Pod), and
    // read_unaligned does not require `b` to be aligned for T.
    Some(unsafe { std::ptr::read_unaligned(b.as_ptr() as *const T) })
}

/// The room of one CPU's `T` in a per-CPU map's value: the kernel rounds
/// each CPU's copy up to 8 bytes.
fn per_cpu_stride<T>() -> usize {
    std::mem::size_of::<T>().next_multiple_of(8)
}

/// Each CPU's `T` in a per-CPU map's value, as the kernel lays them out.
fn per_cpu<T: Pod>(values: &[u8]) -> impl Iterator<Item = Option<T>> + '_ {
    values
        .chunks_exact(per_cpu_stride::<T>())
        .map(|cpu| from_bytes(&cpu[..std::mem::size_of::<T>()]))
}

impl Batch {
    /// Decodes a perf sample of exactly `size_of::<Batch>()` bytes.
    pub fn decode(b: &[u8]) -> Option<Batch> {
        from_bytes(b)
    }

    /// The batch's bytes, as the classifier would send them.
    pub fn to_bytes(&self) -> Vec<u8> {
        as_bytes(self).to_vec()
    }
}

impl Event {
    /// Decodes a record from exactly `size_of::<Event>()` bytes.
    pub fn decode(b: &[u8]) -> Option<Event> {
        from_bytes(b)
    }

    /// The record's bytes, as the classifier would send them.
    pub fn to_bytes(&self) -> Vec<u8> {
        as_bytes(self).to_vec()
    }
}

/// A handshake attempt as flowlat reports it; the contract's arithmetic is in
/// [`Record::from_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub ifindex: u32,
    pub dir: Dir,
    pub outcome: Outcome,
    pub client: IpAddr,
    pub client_port: u16,
    pub server: IpAddr,
    pub server_port: u16,
    /// `CLOCK_MONOTONIC` time at which the attempt ended (or timed out).
    pub end_ns: u64,
    pub rtt_ns: Option<u64>,
    pub local_ns: Option<u64>,
    pub total_ns: Option<u64>,
    /// Client SYNs beyond the first.
    pub retrans: u32,
    /// `in`: this side's SYN-ACKs beyond the first; `None` for `out`.
    pub synack_retrans: Option<u32>,
    /// The cgroup v2 id of the local socket: `out`, the connecting socket's
    /// (from its SYN); `in`, the listener's (from our first SYN-ACK). `None`
    /// when the attempt had no local socket (a RST the kernel sent for a closed
    /// port, forwarded traffic, SYN cookies) or none was seen (an `in` attempt
    /// that ended before our SYN-ACK).
    pub cgroup_id: Option<u64>,
}

fn addr(family: u8, a: &[u8; 16]) -> Option<IpAddr> {
    match family {
        4 => Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(*a))),
        _ => None,
    }
}

impl Record {
    /// Applies the measurement contract to a record. `None` when the record is
    /// malformed (unknown family, direction or result), which the caller counts.
    pub fn from_event(ev: &Event) -> Option<Record> {
        let k = &ev.key;
        let p = &ev.p;
        let dir = match k.dir {
            DIR_OUT => Dir::Out,
            DIR_IN => Dir::In,
            _ => return None,
        };
        let outcome = match ev.result {
            RESULT_OK => Outcome::Ok,
            RESULT_REFUSED => Outcome::Refused,
            RESULT_TIMEOUT => Outcome::Timeout,
            RESULT_ABANDONED => Outcome::Abandoned,
            _ => return None,
        };
        let since = |t: u64| ev.end_ns.checked_sub(t);
        let (rtt_ns, local_ns, total_ns) = match (dir, outcome) {
            // The SYN-ACK or RST arrived: the network beyond answered in end - last SYN.
            (Dir::Out, Outcome::Ok | Outcome::Refused) => {
                (since(p.last_syn_ns), None, since(p.first_syn_ns))
            }
            // The client's ACK arrived: one round trip to the client after our last SYN-ACK.
            (Dir::In, Outcome::Ok) => (
                since(p.last_synack_ns),
                p.first_synack_ns.checked_sub(p.last_syn_ns),
                since(p.first_syn_ns),
            ),
            // This side refused: how long it took to say no.
            (Dir::In, Outcome::Refused) => (None, since(p.last_syn_ns), since(p.first_syn_ns)),
            // An "in" attempt that got as far as our SYN-ACK still tells how fast we answered.
            (Dir::In, Outcome::Timeout | Outcome::Abandoned) if p.synacks > 0 => {
                (None, p.first_synack_ns.checked_sub(p.last_syn_ns), None)
            }
            _ => (None, None, None),
        };
        Some(Record {
            ifindex: k.ifindex,
            dir,
            outcome,
            client: addr(k.family, &k.client)?,
            client_port: u16::from_be(k.client_port),
            server: addr(k.family, &k.server)?,
            server_port: u16::from_be(k.server_port),
            end_ns: ev.end_ns,
            rtt_ns,
            local_ns,
            total_ns,
            retrans: u32::from(p.syns.saturating_sub(1)),
            synack_retrans: match dir {
                Dir::In => Some(u32::from(p.synacks.saturating_sub(1))),
                Dir::Out => None,
            },
            cgroup_id: (p.cgroup_id != 0).then_some(p.cgroup_id),
        })
    }
}

/// Which clsact hook a program runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Ingress,
    Egress,
}

/// The classifier's counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Records the classifier sent (put in its CPU's batch).
    pub sent: u64,
    /// Records of batches the perf ring had no room for (see [`Probe::records_lost`]).
    pub send_failed: u64,
    /// Pending entries the classifier inserted.
    pub created: u64,
    /// Pending entries the classifier removed when reporting them.
    pub removed: u64,
    /// IPv6 packets skipped because their extension header chain was too long.
    pub ext_skipped: u64,
    /// Attempts the [`Filter`] dropped: in the kernel at their SYN (a
    /// retransmitted SYN is not counted again) or, for the cgroup of an `in`
    /// attempt, at our first SYN-ACK or our RST; and those the sweep dropped
    /// ([`Sweep::filtered`]). Every one of them sent no record.
    pub filtered: u64,
    /// `ok` attempts that sent no record because their rtt was under
    /// [`Filter::min_rtt_ns`].
    pub below_min_rtt: u64,
    /// Ended attempts the aggregation map had no room for, not even in an
    /// `other` key (see [`Aggregation`]); not aggregated.
    pub agg_failed: u64,
}

/// What a sweep of the pending table found.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Attempts that timed out and were removed by this sweep.
    pub expired: Vec<Record>,
    /// Attempts still pending after the sweep.
    pub pending: u64,
    /// Tombstones of reported timeouts still held (see [`REPORTED_HOLD`]).
    pub tombstones: u64,
    /// `in` attempts that timed out with no SYN-ACK of ours while a cgroup
    /// filter is set: with no listener seen, they are dropped as filtered, not
    /// reported (and leave a tombstone like a timeout).
    pub filtered: u64,
}

/// Which attempts the classifier measures. An empty list (or `None`) does not
/// filter; several kinds must all match (AND), several values of one kind are
/// alternatives (OR). An attempt filtered out sends no record and, except
/// for the cgroup of an `in` attempt, takes no table entry: it is decided at
/// the client's SYN. The listener of an `in` attempt is known only at our
/// first SYN-ACK, so with `cgroups` set an `in` attempt is dropped there,
/// and one that is refused by this side or times out before any SYN-ACK of
/// ours (no listener to attribute it to) is dropped too. Dropped attempts are
/// counted in [`KernelStats::filtered`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The client's or the server's port is one of these.
    pub ports: Vec<u16>,
    /// The client's or the server's address is in one of these networks
    /// (address, prefix length); at most [`MAX_FILTER_NETS`].
    pub nets: Vec<(IpAddr, u8)>,
    /// Only this direction.
    pub dir: Option<Dir>,
    /// The local socket's cgroup is one of these (cgroup v2 id, level below
    /// the root: the number of path components under the cgroup2 mount) or a
    /// descendant of one; at most [`MAX_FILTER_CGROUPS`].
    pub cgroups: Vec<(u64, u32)>,
    /// `ok` attempts whose rtt (`out`: answer − last SYN; `in`: ACK − last
    /// SYN-ACK) is under this many nanoseconds send no record; they are
    /// counted in [`KernelStats::below_min_rtt`]. Other results are always sent.
    pub min_rtt_ns: Option<u64>,
}

/// How an interface's packets start, which picks the program variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// An Ethernet header (Ethernet, veth, bridges, bonds, lo, ...).
    Ethernet,
    /// The IP header itself (tun, WireGuard and other `link/none` devices).
    Ip,
}

/// The loaded classifier: four programs (two hooks × two framings) and their maps.
pub struct Probe {
    ingress: OwnedFd,
    egress: OwnedFd,
    /// Loaded only when an interface needs them (see [`Probe::load_for`]).
    ingress_l3: Option<OwnedFd>,
    egress_l3: Option<OwnedFd>,
    table: TableMap,
    events: OwnedFd,
    stats: OwnedFd,
    /// The probe's globals (section .bss, one map), mapped: the ACK gate's
    /// counters and the settings.
    globals: Mapping,
    _globals_fd: OwnedFd,
    /// Where the gate's counters start in `globals`, in 32-bit words.
    gate_word: usize,
    /// Where `config` is in `globals`, in 32-bit words.
    config_word: usize,
    /// Where `filter` is in `globals`, in 32-bit words.
    filter_word: usize,
    nets: OwnedFd,
    agg: OwnedFd,
    /// Each CPU's cache of aggregates (`agg_cpu`).
    agg_cpu: OwnedFd,
    /// The `batches` map, mapped: each CPU's batch of records not yet sent.
    batches: Mapping,
    _batches_fd: OwnedFd,
    /// Per possible CPU, what [`Probe::drain`] has delivered of its batches.
    delivered: Vec<Delivered>,
    /// Records of batches the perf ring had no room for that were read from
    /// their slot before the batch filled, so not lost.
    recovered: u64,
    /// `config.batch`: records per perf event.
    records_per_event: u32,
    /// Whether the filter names cgroups, which the sweep applies to `in` attempts.
    cgroup_filter: bool,
    /// `in` attempts the sweep dropped for the cgroup filter, for [`KernelStats::filtered`].
    swept_filtered: u64,
    possible_cpus: usize,
    max_pending: u32,
    /// The ACK gate's active bank, and when it last changed (`None` before the first sweep).
    bank: u32,
    rotated_ns: Option<u64>,
    /// Entries removed by user space (timeouts, old tombstones), for the eviction count.
    swept: u64,
    /// Tombstones inserted by user space, for the eviction count.
    tombstones: u64,
}

/// What [`Probe::drain`] has delivered of one CPU's batches: a batch's first
/// records may be read from its slot before it fills, and the rest come with
/// the whole batch through the perf ring.
#[derive(Debug, Default, Clone)]
struct Delivered {
    /// (batch, records of it delivered from the slot), for the batches still
    /// to come through the ring: at most a few.
    read: Vec<(u64, usize)>,
    /// The batch the slot held at the previous drain.
    prev_seq: u64,
    /// The last batch that came whole through the ring. The slot may still
    /// show it, full, for a moment after it was sent (until the classifier
    /// counts it and starts the next): those records are not to be read again.
    ring_done: Option<u64>,
}

impl Delivered {
    /// How many records of batch `seq` were delivered from the slot.
    fn read_of(&self, seq: u64) -> usize {
        self.read
            .iter()
            .find(|(s, _)| *s == seq)
            .map_or(0, |&(_, n)| n)
    }

    /// The full batch `seq` has come through the ring: how many of its
    /// records were delivered already.
    fn take(&mut self, seq: u64) -> usize {
        let done = self.read_of(seq);
        self.read.retain(|(s, _)| *s != seq);
        self.ring_done = Some(self.ring_done.map_or(seq, |d| d.max(seq)));
        done
    }

    /// Whether batch `seq` has come whole through the ring already.
    fn sent_whole(&self, seq: u64) -> bool {
        self.ring_done.is_some_and(|d| seq <= d)
    }

    /// The slot showed `n` records of batch `seq`. Returns how many records
    /// were delivered of batches the ring lost: those before the batch of
    /// the previous drain were sent before that drain's read of the slot, so
    /// the ring has delivered them since, unless it had no room for them.
    fn note(&mut self, seq: u64, n: usize) -> u64 {
        match self.read.iter_mut().find(|(s, _)| *s == seq) {
            Some(e) => e.1 = n,
            None if n > 0 => self.read.push((seq, n)),
            None => {}
        }
        let prev = self.prev_seq;
        let lost: usize = self
            .read
            .iter()
            .filter(|(s, _)| *s < prev)
            .map(|(_, n)| n)
            .sum();
        self.read.retain(|(s, _)| *s >= prev);
        self.prev_seq = seq;
        lost as u64
    }
}

/// Settings that size the maps.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Room in the table of attempts in progress.
    pub max_pending: u32,
    /// The table to keep them in; `None`: [`Table::best`].
    pub table: Option<Table>,
}

impl ProbeConfig {
    /// Room for `max_pending` attempts, in the best table this kernel runs.
    pub fn new(max_pending: u32) -> ProbeConfig {
        ProbeConfig {
            max_pending,
            table: None,
        }
    }
}

impl Probe {
    /// Parses the embedded object, creates its maps (named `flowlat_*`), patches the
    /// map references and loads all four programs.
    pub fn load(cfg: &ProbeConfig) -> Result<Probe, BpfError> {
        Probe::load_for(cfg, true)
    }

    /// Like [`Probe::load`], loading the programs for L3 devices only when
    /// `l3` says an interface needs them: the verifier's time is most of
    /// flowlat's start-up.
    pub fn load_for(cfg: &ProbeConfig, l3: bool) -> Result<Probe, BpfError> {
        let table = cfg.table.unwrap_or_else(Table::best);
        Probe::load_from(object_bytes(table), table, cfg, l3)
    }

    fn load_from(elf: &[u8], table: Table, cfg: &ProbeConfig, l3: bool) -> Result<Probe, BpfError> {
        let obj = Object::parse(elf)?;
        let buckets = slots::buckets_for(cfg.max_pending);
        // The slot table's front, then its main buckets (see `bpf/flowlat.h`).
        let slot_buckets = slots::FRONT as u32 + buckets;
        let possible_cpus = cpu::possible_cpus()? as usize;
        let mut maps: HashMap<String, OwnedFd> = HashMap::new();
        for def in &obj.maps {
            let mut attr = def.attr();
            match def.name.as_str() {
                "pending" => attr.max_entries = cfg.max_pending,
                "slots" => attr.max_entries = slot_buckets,
                "events" | "batches" => attr.max_entries = possible_cpus as u32,
                _ => {}
            }
            // What bpftool lists: flowlat_pending, ..., and flowlat_globals for .bss.
            let name = match def.name.as_str() {
                BSS_MAP => "flowlat_globals".to_string(),
                other => format!("flowlat_{other}"),
            };
            let fd = sys::map_create(&attr, &name)?;
            maps.insert(def.name.clone(), fd);
        }
        let mut take = |name: &str| {
            maps.remove(name)
                .ok_or_else(|| BpfError::Object(format!("the probe has no map named {name}")))
        };
        let table_name = table.map_name();
        let (table_fd, events, stats) = (take(table_name)?, take("events")?, take("stats")?);
        let (nets, agg, agg_cpu) = (take("nets")?, take("agg")?, take("agg_cpu")?);
        let globals_fd = take(BSS_MAP)?;
        let batches_fd = take("batches")?;
        let fds: HashMap<&str, BorrowedFd<'_>> = [
            (table_name, table_fd.as_fd()),
            ("events", events.as_fd()),
            ("stats", stats.as_fd()),
            ("nets", nets.as_fd()),
            ("agg", agg.as_fd()),
            ("agg_cpu", agg_cpu.as_fd()),
            ("batches", batches_fd.as_fd()),
            (BSS_MAP, globals_fd.as_fd()),
        ]
        .into_iter()
        .collect();
        let load = |name: &str| -> Result<OwnedFd, BpfError> {
            let prog = obj.program(name).ok_or_else(|| {
                BpfError::Object(format!("the probe has no program named {name}"))
            })?;
            let insns = prog.relocate(|m| fds.get(m).map(|fd| fd.as_raw_fd()))?;
            sys::prog_load(sys::BPF_PROG_TYPE_SCHED_CLS, &insns, &obj.license, name)
        };
        let word_of = |name: &str, size: usize| {
            obj.global(name)
                .filter(|g| g.size == size as u64 && g.offset % 8 == 0)
                .map(|g| g.offset as usize / 4)
                .ok_or_else(|| {
                    BpfError::Object(format!(
                        "the probe has no 8-byte-aligned global {name} of {size} bytes"
                    ))
                })
        };
        let gate_word = word_of(
            "gate",
            (GATE_SLOTS + GATE_PORT_WORDS) * 4 * GATE_BANKS as usize,
        )?;
        let config_word = word_of("config", std::mem::size_of::<ConfigGlobal>())?;
        let filter_word = word_of("filter", std::mem::size_of::<FilterGlobal>())?;
        let globals_len = obj
            .map(BSS_MAP)
            .and_then(|m| NonZeroUsize::new(m.value_size as usize))
            .ok_or_else(|| BpfError::Object("the probe has no globals".to_string()))?;
        let globals = Mapping::new(globals_fd.as_fd(), globals_len).map_err(|e| {
            BpfError::sys(
                "mapping the probe's globals (flowlat_globals) into memory",
                e,
            )
        })?;
        let page = page_size()?;
        let batches = map_values(
            batches_fd.as_fd(),
            possible_cpus * std::mem::size_of::<Batch>(),
            page,
            "the probe's batches (flowlat_batches)",
        )?;
        let ingress = load("flowlat_ingress")?;
        let egress = load("flowlat_egress")?;
        let (ingress_l3, egress_l3) = if l3 {
            (Some(load("flowlat_in_l3")?), Some(load("flowlat_eg_l3")?))
        } else {
            (None, None)
        };
        drop(fds);
        let table_map = match table {
            Table::Slots => {
                let map = map_values(
                    table_fd.as_fd(),
                    slot_buckets as usize * std::mem::size_of::<slots::Bucket>(),
                    page,
                    "the table of attempts (flowlat_slots)",
                )?;
                TableMap::Slots(SlotTable::new(table_fd, map, slot_buckets))
            }
            Table::Lru => TableMap::Lru(table_fd),
        };
        let mut probe = Probe {
            ingress,
            egress,
            ingress_l3,
            egress_l3,
            table: table_map,
            events,
            stats,
            globals,
            _globals_fd: globals_fd,
            gate_word,
            config_word,
            filter_word,
            nets,
            agg,
            agg_cpu,
            batches,
            _batches_fd: batches_fd,
            delivered: vec![Delivered::default(); possible_cpus],
            recovered: 0,
            cgroup_filter: false,
            swept_filtered: 0,
            possible_cpus,
            max_pending: cfg.max_pending,
            bank: 0,
            rotated_ns: None,
            swept: 0,
            tombstones: 0,
            records_per_event: 0,
        };
        probe.set_records_per_event(MAX_RECORDS_PER_EVENT);
        probe.set_stores_in_order(STORES_IN_ORDER);
        probe.globals.words()[probe.config_word + offset_of!(ConfigGlobal, table_mask) / 4]
            .store(buckets - 1, Ordering::Relaxed);
        Ok(probe)
    }

    /// How many records the classifier puts in one perf event, 1 to
    /// [`BATCH`] on x86 and 1 elsewhere (see `MAX_RECORDS_PER_EVENT`), which
    /// is what the probe loads with; with more than 1, [`Probe::drain`] also
    /// reads the batches that have not filled. Tests set 1 to run the other
    /// CPUs' path.
    pub fn set_records_per_event(&mut self, n: u32) {
        let n = n.clamp(1, MAX_RECORDS_PER_EVENT);
        self.globals.words()[self.config_word + offset_of!(ConfigGlobal, batch) / 4]
            .store(n, Ordering::Relaxed);
        self.records_per_event = n;
    }

    /// Whether the slot table's classifier publishes a new attempt with a
    /// plain store (`true`, what the probe loads with on x86) or with a
    /// compare-and-exchange (elsewhere). Tests set `false` to run the other
    /// CPUs' path; `true` is only sound on CPUs that keep stores in order.
    pub fn set_stores_in_order(&mut self, on: bool) {
        let flags = &self.globals.words()[self.config_word + offset_of!(ConfigGlobal, flags) / 4];
        if on && STORES_IN_ORDER {
            flags.fetch_or(CFG_IN_ORDER, Ordering::SeqCst);
        } else {
            flags.fetch_and(!CFG_IN_ORDER, Ordering::SeqCst);
        }
    }

    /// The program for a hook of an Ethernet interface, to attach with `cls_bpf`.
    pub fn program(&self, hook: Hook) -> BorrowedFd<'_> {
        match hook {
            Hook::Ingress => self.ingress.as_fd(),
            Hook::Egress => self.egress.as_fd(),
        }
    }

    /// The program for a hook of an interface with the given framing; `None`
    /// for L3 framing when the probe was loaded without it.
    pub fn program_for(&self, hook: Hook, framing: Framing) -> Option<BorrowedFd<'_>> {
        match (hook, framing) {
            (_, Framing::Ethernet) => Some(self.program(hook)),
            (Hook::Ingress, Framing::Ip) => self.ingress_l3.as_ref().map(|fd| fd.as_fd()),
            (Hook::Egress, Framing::Ip) => self.egress_l3.as_ref().map(|fd| fd.as_fd()),
        }
    }

    /// Opens the per-CPU perf rings the classifier writes its batches of records to.
    pub fn open_perf(&self, pages: usize) -> Result<PerfBuffers, BpfError> {
        PerfBuffers::open(self.events.as_fd(), pages, std::mem::size_of::<Batch>())
    }

    /// Calls `on_event` once for every record not delivered before: those of
    /// the full batches in the rings, then those waiting in each CPU's slot
    /// for their batch to fill (so that none waits longer than a drain).
    /// Returns how many it delivered.
    pub fn drain(&mut self, perf: &mut PerfBuffers, mut on_event: impl FnMut(&Event)) -> usize {
        let mut n = 0;
        let delivered = &mut self.delivered;
        perf.drain(|cpu, bytes| {
            let (Some(b), Some(d)) = (Batch::decode(bytes), delivered.get_mut(cpu as usize)) else {
                return;
            };
            let skip = d.take(b.seq);
            let full = (b.n as usize).min(BATCH);
            for ev in b.ev[..full].iter().skip(skip) {
                on_event(ev);
                n += 1;
            }
        });
        let slots = if self.records_per_event > 1 {
            self.possible_cpus
        } else {
            0
        };
        for cpu in 0..slots {
            let Some((seq, evs)) = self.read_slot(cpu) else {
                continue;
            };
            let d = &mut self.delivered[cpu];
            if d.sent_whole(seq) {
                continue;
            }
            for ev in evs.iter().skip(d.read_of(seq)) {
                on_event(ev);
                n += 1;
            }
            self.recovered += d.note(seq, evs.len());
        }
        n
    }

    /// Records lost: those of batches the perf ring had no room for (by the
    /// classifier's count, or the ring's own count of lost samples, each a
    /// batch of `records_per_event`), less those read from their slot before
    /// the batch filled.
    pub fn records_lost(&self, ks: &KernelStats, ps: &PerfStats) -> u64 {
        ks.send_failed
            .max(ps.lost.saturating_mul(u64::from(self.records_per_event)))
            .saturating_sub(self.recovered)
    }

    /// A consistent view of one CPU's slot: its batch number and the records
    /// in it; `None` when the classifier kept changing it while it was read.
    fn read_slot(&self, cpu: usize) -> Option<(u64, Vec<Event>)> {
        const WORDS: usize = std::mem::size_of::<Batch>() / 4;
        const EVENT_BYTES: usize = std::mem::size_of::<Event>();
        const SEQ: usize = offset_of!(Batch, seq) / 4;
        const N: usize = offset_of!(Batch, n) / 4;
        const EV: usize = offset_of!(Batch, ev) / 4;
        let words = self.batches.words();
        let slot = words.get(cpu * WORDS..(cpu + 1) * WORDS)?;
        let seq = || {
            u64::from(slot[SEQ].load(Ordering::Acquire))
                | u64::from(slot[SEQ + 1].load(Ordering::Acquire)) << 32
        };
        for _ in 0..4 {
            let before = seq();
            let n = (slot[N].load(Ordering::Acquire) as usize).min(BATCH);
            let bytes: Vec<u8> = slot[EV..EV + n * EVENT_BYTES / 4]
                .iter()
                .flat_map(|w| w.load(Ordering::Relaxed).to_ne_bytes())
                .collect();
            // As a seqlock's reader: the records are good if seq did not move.
            fence(Ordering::Acquire);
            if seq() == before {
                let evs = bytes.chunks_exact(EVENT_BYTES).filter_map(Event::decode);
                return Some((before, evs.collect()));
            }
        }
        None
    }

    /// Runs a program once on `packet` through `BPF_PROG_TEST_RUN` (tests, benches).
    pub fn test_run(
        &self,
        hook: Hook,
        packet: &[u8],
        repeat: u32,
    ) -> Result<sys::TestRun, BpfError> {
        sys::prog_test_run(self.program(hook), packet, None, repeat)
    }

    /// Like [`Probe::test_run`], for an interface of the given framing.
    pub fn test_run_framed(
        &self,
        hook: Hook,
        framing: Framing,
        packet: &[u8],
        repeat: u32,
    ) -> Result<sys::TestRun, BpfError> {
        let prog = self.program_for(hook, framing).ok_or_else(|| {
            BpfError::Object("the probe was loaded without its L3 programs".to_string())
        })?;
        sys::prog_test_run(prog, packet, None, repeat)
    }

    /// The ACK gate's counters, a pair per slot, then its port groups' words,
    /// a pair per 32 ports: one of each pair per bank.
    fn gate_words(&self) -> &[AtomicU32] {
        let words = self.globals.words();
        let len = (GATE_SLOTS + GATE_PORT_WORDS) * GATE_BANKS as usize;
        // Checked at load: the global lies within the mapped value.
        &words[self.gate_word..self.gate_word + len]
    }

    /// The ACK gate's counts for a slot, one per bank (tests).
    pub fn gate_banks(&self, slot: u32) -> [u32; 2] {
        let at = (slot as usize % GATE_SLOTS) * GATE_BANKS as usize;
        let w = self.gate_words();
        [
            w[at].load(Ordering::Relaxed),
            w[at + 1].load(Ordering::Relaxed),
        ]
    }

    /// The gate's marks, one per bank, of the group of 32 local ports that
    /// `port` belongs to (tests).
    pub fn gate_port_marks(&self, port: u16) -> [u32; 2] {
        let at = (GATE_SLOTS + usize::from(port >> 5)) * GATE_BANKS as usize;
        let w = self.gate_words();
        [
            w[at].load(Ordering::Relaxed),
            w[at + 1].load(Ordering::Relaxed),
        ]
    }

    /// The ACK gate's count for a slot, summed over both banks (tests).
    pub fn gate_count(&self, slot: u32) -> u64 {
        self.gate_banks(slot).iter().map(|&n| u64::from(n)).sum()
    }

    /// Zeroes the inactive gate bank and makes it the active one, once every
    /// `timeout` + 1 s: by then every attempt counted in it has completed or
    /// been swept as a timeout, so only counts of evicted or timed-out attempts
    /// are cleared (see `bpf/flowlat.h`).
    fn rotate_gate(&mut self, now_ns: u64, timeout_ns: u64) {
        let period = timeout_ns.saturating_add(1_000_000_000);
        let last = *self.rotated_ns.get_or_insert(now_ns);
        if now_ns.saturating_sub(last) < period {
            return;
        }
        let next = 1 - self.bank;
        // Nothing counts in the inactive bank, so plain stores cannot lose an
        // update. A slot's counters are side by side, and so are a port
        // group's words: one word of each pair.
        for word in self
            .gate_words()
            .iter()
            .skip(next as usize)
            .step_by(GATE_BANKS as usize)
        {
            word.store(0, Ordering::Relaxed);
        }
        // The classifier reads the bank once per first SYN-ACK; the zeroes
        // above are visible before it can count in the new bank.
        self.globals.words()[self.config_word + offset_of!(ConfigGlobal, bank) / 4]
            .store(next, Ordering::SeqCst);
        self.bank = next;
        self.rotated_ns = Some(now_ns);
    }

    /// Stores a 64-bit field of the globals, `at` in words: two words, in the
    /// order they have in memory.
    fn store_u64(&self, at: usize, v: u64) {
        let b = v.to_ne_bytes();
        let words = self.globals.words();
        for (i, half) in b.chunks_exact(4).enumerate() {
            let w = u32::from_ne_bytes(half.try_into().unwrap_or([0; 4]));
            words[at + i].store(w, Ordering::Relaxed);
        }
    }

    /// Sets which attempts the classifier measures (see [`Filter`]). Meant to
    /// be called before the programs are attached; attempts already in the
    /// table are not judged again. A filter the maps cannot hold (too many
    /// networks or cgroups, a prefix longer than its family's address) is
    /// refused with [`BpfError::Invalid`] before anything changes.
    pub fn set_filter(&mut self, f: &Filter) -> Result<(), BpfError> {
        if f.nets.len() > MAX_FILTER_NETS {
            return Err(BpfError::Invalid(format!(
                "{} networks to filter on; the classifier holds at most {MAX_FILTER_NETS}",
                f.nets.len()
            )));
        }
        if f.cgroups.len() > MAX_FILTER_CGROUPS {
            return Err(BpfError::Invalid(format!(
                "{} cgroups to filter on; the classifier holds at most {MAX_FILTER_CGROUPS}",
                f.cgroups.len()
            )));
        }
        let nets = f
            .nets
            .iter()
            .map(|&(a, p)| net_key(a, p))
            .collect::<Result<Vec<NetKey>, BpfError>>()?;
        let words = self.globals.words();
        let fw = |off: usize| self.filter_word + off / 4;
        let flags = &words[self.config_word + offset_of!(ConfigGlobal, flags) / 4];
        // Off while it is rewritten: the classifier never applies half a filter.
        words[fw(offset_of!(FilterGlobal, kinds))].store(0, Ordering::SeqCst);
        flags.fetch_and(!CFG_MIN_RTT, Ordering::SeqCst);

        let trie = self.nets.as_fd();
        let mut old = [0u8; std::mem::size_of::<NetKey>()];
        while sys::map_get_next_key(trie, None, &mut old)? {
            sys::map_delete(trie, &old)?;
        }
        for k in &nets {
            sys::map_update(trie, as_bytes(k), &[1], sys::BPF_ANY)?;
        }
        let ports = fw(offset_of!(FilterGlobal, ports));
        for w in &words[ports..ports + 65536 / 32] {
            w.store(0, Ordering::Relaxed);
        }
        for &p in &f.ports {
            words[ports + usize::from(p) / 32].fetch_or(1 << (p % 32), Ordering::Relaxed);
        }
        let dirs = f.dir.map_or(0, |d| 1u32 << dir_code(d));
        words[fw(offset_of!(FilterGlobal, dirs))].store(dirs, Ordering::Relaxed);
        for (i, &(id, level)) in f.cgroups.iter().enumerate() {
            self.store_u64(fw(offset_of!(FilterGlobal, cgroup_id) + 8 * i), id);
            words[fw(offset_of!(FilterGlobal, cgroup_level) + 4 * i)]
                .store(level, Ordering::Relaxed);
        }
        words[fw(offset_of!(FilterGlobal, cgroups))]
            .store(f.cgroups.len() as u32, Ordering::Relaxed);
        self.store_u64(
            fw(offset_of!(FilterGlobal, min_rtt_ns)),
            f.min_rtt_ns.unwrap_or(0),
        );

        let mut kinds = 0;
        for (set, bit) in [
            (!f.ports.is_empty(), FILTER_PORT),
            (!f.nets.is_empty(), FILTER_NET),
            (f.dir.is_some(), FILTER_DIR),
            (!f.cgroups.is_empty(), FILTER_CGROUP),
        ] {
            if set {
                kinds |= bit;
            }
        }
        words[fw(offset_of!(FilterGlobal, kinds))].store(kinds, Ordering::SeqCst);
        if f.min_rtt_ns.is_some() {
            flags.fetch_or(CFG_MIN_RTT, Ordering::SeqCst);
        }
        self.cgroup_filter = !f.cgroups.is_empty();
        Ok(())
    }

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
            Err(e) if sys::batch_unsupported(&e) => self.aggregates_walked(),
            r => self.with_cached(r?),
        }
    }

    /// Adds what each CPU's cache of aggregates holds to the map's (see
    /// `FLOWLAT_AGG_FAST`): a cached key is in the map as well.
    fn with_cached(
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
            if !sys::map_lookup(self.agg_cpu.as_fd(), &i.to_ne_bytes(), &mut values)? {
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

    /// The bytes of one key's values, one per possible CPU.
    fn agg_stride(&self) -> usize {
        per_cpu_stride::<AggValue>() * self.possible_cpus
    }

    fn aggregates_batched(&self) -> Result<Vec<(AggKey, AggValue)>, BpfError> {
        let key_size = std::mem::size_of::<AggKeyRaw>();
        let stride = self.agg_stride();
        let mut count = 64u32;
        let mut keys = vec![0u8; count as usize * key_size];
        let mut values = vec![0u8; count as usize * stride];
        let mut out = Vec::new();
        let mut at = sys::Batch::Start;
        // Every call moves on by at least one bucket; the bound only guards
        // against a kernel that would not.
        for _ in 0..2 * (AGG_KEYS + AGG_RESERVE) + 16 {
            if at == sys::Batch::Done {
                return Ok(out);
            }
            let step = sys::map_lookup_batch(
                self.agg.as_fd(),
                at,
                count,
                key_size,
                stride,
                &mut keys,
                &mut values,
            );
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
        let map = self.agg.as_fd();
        let mut values = vec![0u8; self.agg_stride()];
        let mut cur: Option<[u8; std::mem::size_of::<AggKeyRaw>()]> = None;
        let mut out = Vec::new();
        for _ in 0..AGG_KEYS + AGG_RESERVE {
            let mut next = [0u8; std::mem::size_of::<AggKeyRaw>()];
            if !sys::map_get_next_key(map, cur.as_ref().map(|k| &k[..]), &mut next)? {
                break;
            }
            if sys::map_lookup(map, &next, &mut values)? {
                out.extend(self.agg_entry(&next, &values));
            }
            cur = Some(next);
        }
        self.with_cached(out)
    }

    /// One key of the map and its per-CPU values, summed.
    fn agg_entry(&self, key: &[u8], values: &[u8]) -> Option<(AggKey, AggValue)> {
        let k = agg_key(&from_bytes(key)?)?;
        let mut sum = AggValue::default();
        for v in per_cpu::<AggValue>(values) {
            sum.merge(&v?);
        }
        Some((k, sum))
    }

    /// Sums the per-CPU counters.
    pub fn kernel_stats(&self) -> Result<KernelStats, BpfError> {
        let mut sum = [0u64; STAT_MAX];
        // The map's one value: each CPU's counters, one after the other.
        let mut buf = vec![0u8; 8 * STAT_MAX * self.possible_cpus];
        if sys::map_lookup(self.stats.as_fd(), &0u32.to_ne_bytes(), &mut buf)? {
            for cpu in buf.chunks_exact(8 * STAT_MAX) {
                for (total, c) in sum.iter_mut().zip(cpu.chunks_exact(8)) {
                    *total += u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
                }
            }
        }
        Ok(KernelStats {
            sent: sum[STAT_SENT],
            send_failed: sum[STAT_SEND_FAILED],
            created: sum[STAT_CREATED],
            removed: sum[STAT_REMOVED],
            ext_skipped: sum[STAT_EXT_SKIPPED],
            filtered: sum[STAT_FILTERED] + self.swept_filtered,
            below_min_rtt: sum[STAT_BELOW_MIN_RTT],
            agg_failed: sum[STAT_AGG_FAILED],
        })
    }

    /// Which table of attempts the loaded classifier keeps.
    pub fn table(&self) -> Table {
        match self.table {
            TableMap::Slots(_) => Table::Slots,
            TableMap::Lru(_) => Table::Lru,
        }
    }

    /// Every entry of the table of attempts: attempts in progress and
    /// tombstones (tests, and the pending-attempts gauge).
    pub fn pending_entries(&self) -> Result<Vec<(Key, Pending)>, BpfError> {
        Ok(self
            .table_entries()?
            .into_iter()
            .map(|(k, p, _)| (k, p))
            .collect())
    }

    /// Each front bucket's count of attempts waiting in their main buckets,
    /// for the slot table (tests); empty for the LRU table.
    pub fn front_spills(&self) -> Vec<u64> {
        match &self.table {
            TableMap::Slots(t) => t.spills(),
            TableMap::Lru(_) => Vec::new(),
        }
    }

    fn table_entries(&self) -> Result<Vec<(Key, Pending, Place)>, BpfError> {
        let map = match &self.table {
            TableMap::Slots(t) => {
                return Ok(t
                    .entries()
                    .into_iter()
                    .map(|f| (f.key, f.p, Place::Slot(f)))
                    .collect())
            }
            TableMap::Lru(fd) => fd.as_fd(),
        };
        let mut keys = Vec::new();
        let mut cur: Option<Key> = None;
        let mut next = Key::default();
        // get_next_key restarts from the first key when `cur` vanished meanwhile;
        // the bound keeps such a restart from looping forever on a busy table.
        let bound = 2 * self.max_pending as usize + 1024;
        while keys.len() < bound {
            let mut nb = [0u8; std::mem::size_of::<Key>()];
            let more = sys::map_get_next_key(map, cur.as_ref().map(as_bytes), &mut nb)?;
            if !more {
                break;
            }
            next = from_bytes(&nb).unwrap_or(next);
            keys.push(next);
            cur = Some(next);
        }
        keys.sort_by(|a, b| as_bytes(a).cmp(as_bytes(b)));
        keys.dedup();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let mut vb = [0u8; std::mem::size_of::<Pending>()];
            if sys::map_lookup(map, as_bytes(&k), &mut vb)? {
                if let Some(v) = from_bytes(&vb) {
                    out.push((k, v, Place::Lru));
                }
            }
        }
        Ok(out)
    }

    /// Removes an entry as it was found: false when the classifier had it first.
    fn table_remove(&self, k: &Key, at: &Place) -> Result<bool, BpfError> {
        match (&self.table, at) {
            (TableMap::Slots(t), Place::Slot(f)) => Ok(t.remove(f)),
            (TableMap::Lru(fd), _) => sys::map_delete(fd.as_fd(), as_bytes(k)),
            (TableMap::Slots(_), Place::Lru) => Ok(false),
        }
    }

    /// Takes an attempt out of the table to time it out, and gives it as it
    /// is now; None when the classifier had it first. A taken slot stays
    /// claimed for [`Probe::table_tombstone`].
    fn table_take(&self, k: &Key, p: Pending, at: &Place) -> Result<Option<Pending>, BpfError> {
        match (&self.table, at) {
            (TableMap::Slots(t), Place::Slot(f)) => {
                if !t.claim(f) {
                    return Ok(None);
                }
                Ok(Some(t.pending_of(f).unwrap_or(p)))
            }
            (TableMap::Lru(fd), _) => Ok(sys::map_delete(fd.as_fd(), as_bytes(k))?.then_some(p)),
            (TableMap::Slots(_), Place::Lru) => Ok(None),
        }
    }

    /// Puts a tombstone where [`Probe::table_take`] took an attempt: false
    /// when a new attempt of the same key took the place meanwhile.
    fn table_tombstone(&self, k: &Key, tomb: &Pending, at: &Place) -> Result<bool, BpfError> {
        match (&self.table, at) {
            (TableMap::Slots(t), Place::Slot(f)) => {
                t.replace(f, tomb);
                Ok(true)
            }
            (TableMap::Lru(fd), _) => {
                match sys::map_update(fd.as_fd(), as_bytes(k), as_bytes(tomb), sys::BPF_NOEXIST) {
                    Ok(()) => Ok(true),
                    Err(BpfError::Sys { source, .. })
                        if source.raw_os_error() == Some(libc::EEXIST) =>
                    {
                        Ok(false)
                    }
                    Err(e) => Err(e),
                }
            }
            (TableMap::Slots(_), Place::Lru) => Ok(false),
        }
    }

    /// Reports every attempt whose first SYN is `timeout` or more before `now_ns`
    /// (`CLOCK_MONOTONIC`), and leaves a tombstone in its place (see
    /// [`REPORTED_HOLD`]). Whoever takes an entry out of the table reports it,
    /// so an attempt the classifier completes during the sweep is reported
    /// once. Tombstones whose client has been quiet for `REPORTED_HOLD` are
    /// removed.
    pub fn sweep(&mut self, now_ns: u64, timeout: Duration) -> Result<Sweep, BpfError> {
        let timeout_ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let hold_ns = REPORTED_HOLD.as_nanos() as u64;
        let mut sweep = Sweep::default();
        for (k, p, at) in self.table_entries()? {
            if p.state == STATE_REPORTED {
                if now_ns.saturating_sub(p.last_syn_ns) < hold_ns {
                    sweep.tombstones += 1;
                } else if self.table_remove(&k, &at)? {
                    self.swept += 1;
                }
                continue;
            }
            if now_ns.saturating_sub(p.first_syn_ns) < timeout_ns {
                sweep.pending += 1;
                continue;
            }
            let Some(p) = self.table_take(&k, p, &at)? else {
                continue;
            };
            self.swept += 1;
            // No SYN-ACK of ours, so no listener to hold against the cgroup filter.
            let unattributed = self.cgroup_filter && k.dir == DIR_IN && p.synacks == 0;
            if unattributed {
                self.swept_filtered += 1;
                sweep.filtered += 1;
            }
            let ev = Event {
                key: k,
                p,
                end_ns: p.first_syn_ns.saturating_add(timeout_ns),
                result: RESULT_TIMEOUT,
                pad: [0; 7],
            };
            if let Some(r) = Record::from_event(&ev).filter(|_| !unattributed) {
                sweep.expired.push(r);
            }
            let tomb = Pending {
                state: STATE_REPORTED,
                last_syn_ns: now_ns,
                ..p
            };
            // A new SYN may have taken the key meanwhile; then it stands alone.
            if self.table_tombstone(&k, &tomb, &at)? {
                self.tombstones += 1;
                sweep.tombstones += 1;
            }
        }
        // After the timeouts are gone: see rotate_gate.
        self.rotate_gate(now_ns, timeout_ns);
        Ok(sweep)
    }

    /// Entries the table evicted to make room (the LRU table full, or a slot
    /// table's bucket): everything inserted
    /// that was neither removed nor is still in the table (`in_table` entries,
    /// pending attempts and tombstones).
    pub fn evicted(&self, ks: &KernelStats, in_table: u64) -> u64 {
        (ks.created + self.tombstones)
            .saturating_sub(ks.removed)
            .saturating_sub(self.swept)
            .saturating_sub(in_table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(dir: u8, result: u8) -> Event {
        let mut ev = Event::default();
        ev.key.family = 4;
        ev.key.client[..4].copy_from_slice(&[10, 0, 0, 5]);
        ev.key.server[..4].copy_from_slice(&[93, 184, 216, 34]);
        ev.key.client_port = 51234u16.to_be();
        ev.key.server_port = 443u16.to_be();
        ev.key.ifindex = 7;
        ev.key.dir = dir;
        ev.p.first_syn_ns = 1_000;
        ev.p.last_syn_ns = 3_000;
        ev.p.syns = 2;
        ev.result = result;
        ev
    }

    #[test]
    fn out_ok_measures_from_the_last_and_first_syn() {
        let mut ev = event(DIR_OUT, RESULT_OK);
        ev.end_ns = 10_000;
        let r = Record::from_event(&ev).expect("valid");
        assert_eq!(r.dir, Dir::Out);
        assert_eq!(r.outcome, Outcome::Ok);
        assert_eq!(r.rtt_ns, Some(7_000));
        assert_eq!(r.total_ns, Some(9_000));
        assert_eq!(r.local_ns, None);
        assert_eq!(r.retrans, 1);
        assert_eq!(r.client.to_string(), "10.0.0.5");
        assert_eq!(r.client_port, 51234);
        assert_eq!(r.server_port, 443);
    }

    #[test]
    fn in_ok_splits_local_and_network_time() {
        let mut ev = event(DIR_IN, RESULT_OK);
        ev.p.first_synack_ns = 3_500;
        ev.p.last_synack_ns = 4_000;
        ev.end_ns = 9_000;
        let r = Record::from_event(&ev).expect("valid");
        assert_eq!(r.rtt_ns, Some(5_000));
        assert_eq!(r.local_ns, Some(500));
        assert_eq!(r.total_ns, Some(8_000));
    }

    #[test]
    fn in_refused_has_local_time_and_no_rtt() {
        let mut ev = event(DIR_IN, RESULT_REFUSED);
        ev.end_ns = 3_200;
        let r = Record::from_event(&ev).expect("valid");
        assert_eq!(r.rtt_ns, None);
        assert_eq!(r.local_ns, Some(200));
    }

    #[test]
    fn timeouts_have_no_rtt() {
        let mut ev = event(DIR_OUT, RESULT_TIMEOUT);
        ev.end_ns = 1_000 + 10_000_000_000;
        let r = Record::from_event(&ev).expect("valid");
        assert_eq!(r.outcome, Outcome::Timeout);
        assert_eq!((r.rtt_ns, r.local_ns, r.total_ns), (None, None, None));
    }

    #[test]
    fn malformed_records_are_rejected() {
        assert!(Record::from_event(&event(9, RESULT_OK)).is_none());
        assert!(Record::from_event(&event(DIR_OUT, 77)).is_none());
        let mut ev = event(DIR_OUT, RESULT_OK);
        ev.key.family = 5;
        assert!(Record::from_event(&ev).is_none());
        assert!(Event::decode(&[0u8; 10]).is_none());
    }

    /// `bpf/layout.c` records clang's sizes and offsets of the shared structs in
    /// its `layout` section, in the order listed here.
    #[test]
    fn rust_structs_match_the_c_header() {
        use object::{Object as _, ObjectSection as _};
        use std::mem::{offset_of, size_of};
        let elf = include_bytes!(concat!(env!("OUT_DIR"), "/layout.o")).to_vec();
        let file = object::File::parse(&*elf).expect("layout.o parses");
        let data = file
            .section_by_name("layout")
            .expect("layout section")
            .data()
            .expect("data");
        let c: Vec<u64> = data
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let rust = [
            size_of::<Key>(),
            offset_of!(Key, client),
            offset_of!(Key, server),
            offset_of!(Key, client_port),
            offset_of!(Key, server_port),
            offset_of!(Key, ifindex),
            offset_of!(Key, family),
            offset_of!(Key, dir),
            size_of::<Pending>(),
            offset_of!(Pending, first_syn_ns),
            offset_of!(Pending, last_syn_ns),
            offset_of!(Pending, first_synack_ns),
            offset_of!(Pending, last_synack_ns),
            offset_of!(Pending, client_isn),
            offset_of!(Pending, server_isn),
            offset_of!(Pending, syns),
            offset_of!(Pending, synacks),
            offset_of!(Pending, state),
            offset_of!(Pending, bank),
            offset_of!(Pending, syn_len),
            offset_of!(Pending, cgroup_id),
            size_of::<Event>(),
            offset_of!(Event, key),
            offset_of!(Event, p),
            offset_of!(Event, end_ns),
            offset_of!(Event, result),
            DIR_OUT as usize,
            DIR_IN as usize,
            RESULT_OK as usize,
            RESULT_REFUSED as usize,
            RESULT_TIMEOUT as usize,
            RESULT_ABANDONED as usize,
            STATE_SYN as usize,
            STATE_SYNACK as usize,
            STATE_REPORTED as usize,
            STAT_SENT,
            STAT_SEND_FAILED,
            STAT_CREATED,
            STAT_REMOVED,
            STAT_EXT_SKIPPED,
            STAT_FILTERED,
            STAT_BELOW_MIN_RTT,
            STAT_AGG_FAILED,
            STAT_MAX,
            GATE_SLOTS,
            GATE_BANKS as usize,
            GATE_PORT_WORDS,
            (GATE_SLOTS + GATE_PORT_WORDS) * 4 * GATE_BANKS as usize,
            size_of::<ConfigGlobal>(),
            offset_of!(ConfigGlobal, bank),
            offset_of!(ConfigGlobal, flags),
            offset_of!(ConfigGlobal, agg_keys),
            offset_of!(ConfigGlobal, batch),
            offset_of!(ConfigGlobal, table_mask),
            CFG_MIN_RTT as usize,
            CFG_AGGREGATE as usize,
            CFG_NO_RECORDS as usize,
            CFG_AGG_PORT as usize,
            CFG_AGG_CGROUP as usize,
            CFG_IN_ORDER as usize,
            FILTER_PORT as usize,
            FILTER_NET as usize,
            FILTER_DIR as usize,
            FILTER_CGROUP as usize,
            MAX_FILTER_CGROUPS,
            MAX_FILTER_NETS,
            FILTER_MEMO,
            size_of::<FilterGlobal>(),
            offset_of!(FilterGlobal, kinds),
            offset_of!(FilterGlobal, dirs),
            offset_of!(FilterGlobal, cgroups),
            offset_of!(FilterGlobal, min_rtt_ns),
            offset_of!(FilterGlobal, cgroup_id),
            offset_of!(FilterGlobal, cgroup_level),
            offset_of!(FilterGlobal, ports),
            offset_of!(FilterGlobal, memo),
            size_of::<NetKey>(),
            offset_of!(NetKey, prefixlen),
            offset_of!(NetKey, family),
            offset_of!(NetKey, addr),
            HIST_N,
            AGG_KEYS,
            AGG_RESERVE,
            size_of::<AggKeyRaw>(),
            offset_of!(AggKeyRaw, ifindex),
            offset_of!(AggKeyRaw, dir),
            offset_of!(AggKeyRaw, other),
            offset_of!(AggKeyRaw, server_port),
            offset_of!(AggKeyRaw, cgroup_id),
            size_of::<Hist>(),
            offset_of!(Hist, buckets),
            offset_of!(Hist, sum_ns),
            size_of::<AggValue>(),
            offset_of!(AggValue, results),
            offset_of!(AggValue, retrans),
            offset_of!(AggValue, rtt),
            offset_of!(AggValue, local),
            BATCH,
            size_of::<Batch>(),
            offset_of!(Batch, seq),
            offset_of!(Batch, n),
            offset_of!(Batch, ev),
            AGG_FAST as usize,
            size_of::<AggSlot>(),
            offset_of!(AggSlot, key),
            offset_of!(AggSlot, v),
            slots::WAYS,
            slots::FRONT,
            slots::LIVE as usize,
            slots::BUSY as usize,
            size_of::<slots::Entry>(),
            offset_of!(slots::Entry, key),
            offset_of!(slots::Entry, p),
            size_of::<slots::Bucket>(),
            offset_of!(slots::Bucket, word),
            offset_of!(slots::Bucket, spill),
            offset_of!(slots::Bucket, e),
        ];
        let rust: Vec<usize> = rust
            .into_iter()
            .chain(HIST_BOUNDS_NS.iter().map(|&b| b as usize))
            .collect();
        let rust: Vec<u64> = rust.iter().map(|&v| v as u64).collect();
        assert_eq!(c, rust, "bpf/flowlat.h and src/probe.rs disagree");
    }

    #[test]
    fn net_keys_clear_host_bits_and_count_the_family_byte() {
        let k = net_key("10.1.2.3".parse().expect("literal"), 20).expect("valid");
        assert_eq!((k.prefixlen, k.family), (28, 4));
        assert_eq!(k.addr[..4], [10, 1, 0, 0]);
        let k = net_key("2001:db8:ffff::1".parse().expect("literal"), 36).expect("valid");
        assert_eq!((k.prefixlen, k.family), (44, 6));
        assert_eq!(k.addr[..6], [0x20, 0x01, 0x0d, 0xb8, 0xf0, 0]);
        assert_eq!(k.addr[15], 0);
        let all = net_key("0.0.0.0".parse().expect("literal"), 0).expect("valid");
        assert_eq!((all.prefixlen, all.addr), (8, [0; 16]));
        let full = net_key("::1".parse().expect("literal"), 128).expect("valid");
        assert_eq!(full.addr[15], 1);
        for (a, p) in [("10.0.0.0", 33), ("::", 129)] {
            let e = net_key(a.parse().expect("literal"), p).expect_err("too long");
            assert!(e.to_string().contains("prefix is at most"), "{e}");
        }
    }

    #[test]
    fn durations_fall_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        assert_eq!(hist_bucket(0), 0);
        assert_eq!(hist_bucket(5_000), 0);
        assert_eq!(hist_bucket(5_001), 1);
        assert_eq!(hist_bucket(10_000), 1);
        assert_eq!(hist_bucket(999_999), 7);
        assert_eq!(hist_bucket(1_000_000), 7);
        assert_eq!(hist_bucket(50_000_000_000), HIST_N - 1);
        assert_eq!(hist_bucket(50_000_000_001), HIST_N);
        assert_eq!(hist_bucket(u64::MAX), HIST_N);
        for w in HIST_BOUNDS_NS.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[1] == 2 * w[0] || 2 * w[1] == 5 * w[0], "1-2-5: {w:?}");
        }
    }

    #[test]
    fn records_aggregate_by_the_one_definition() {
        let mut a = AggValue::default();
        let mut ok_in = event(DIR_IN, RESULT_OK);
        ok_in.p.first_synack_ns = 3_500;
        ok_in.p.last_synack_ns = 4_000;
        ok_in.end_ns = 3_004_000;
        let mut refused_out = event(DIR_OUT, RESULT_REFUSED);
        refused_out.end_ns = 10_000;
        let mut timeout_in = event(DIR_IN, RESULT_TIMEOUT);
        timeout_in.p.synacks = 1;
        timeout_in.p.first_synack_ns = 3_100;
        timeout_in.end_ns = 99_000_000;
        for ev in [ok_in, refused_out, timeout_in] {
            a.add_record(&Record::from_event(&ev).expect("valid"));
        }
        assert_eq!(a.results, [1, 1, 1, 0]);
        assert_eq!(a.retrans, 3, "each event had two SYNs");
        assert_eq!(a.rtt.count(), 1, "rtt of ok attempts only");
        assert_eq!(a.rtt.buckets[hist_bucket(3_000_000)], 1);
        assert_eq!(a.rtt.sum_ns, 3_000_000);
        assert_eq!(
            a.local.count(),
            1,
            "local of in + ok only, not the timeout's"
        );
        assert_eq!(a.local.sum_ns, 500);
        let mut b = a;
        b.merge(&a);
        assert_eq!(b.results, [2, 2, 2, 0]);
        assert_eq!((b.rtt.count(), b.local.sum_ns), (2, 1_000));
    }

    #[test]
    fn cgroup_id_zero_means_no_socket() {
        let mut ev = event(DIR_OUT, RESULT_OK);
        assert_eq!(Record::from_event(&ev).expect("valid").cgroup_id, None);
        ev.p.cgroup_id = 4242;
        assert_eq!(
            Record::from_event(&ev).expect("valid").cgroup_id,
            Some(4242)
        );
    }

    #[test]
    fn records_read_before_their_batch_is_sent_are_not_delivered_again() {
        let mut d = Delivered::default();
        // A drain finds three records in batch 0, the next one finds five.
        assert_eq!((d.read_of(0), d.note(0, 3)), (0, 0));
        assert_eq!((d.read_of(0), d.note(0, 5)), (3, 0));
        // Batch 0 comes whole through the ring: five of it were delivered;
        // the slot now holds one record of batch 1.
        assert_eq!(d.take(0), 5);
        assert_eq!((d.read_of(1), d.note(1, 1)), (0, 0));
        // Batch 1 fills and comes before any drain saw more of it.
        assert_eq!(d.take(1), 1);
        assert_eq!(d.take(2), 0, "a batch no drain saw is delivered whole");
        assert!(d.read.is_empty());
    }

    #[test]
    fn a_batch_that_came_through_the_ring_is_not_read_again_from_its_slot() {
        let mut d = Delivered::default();
        assert!(!d.sent_whole(0));
        // Batch 0 comes whole through the ring while its slot still shows
        // it, full: the classifier is yet to start batch 1 there.
        assert_eq!(d.take(0), 0);
        assert!(d.sent_whole(0));
        assert!(!d.sent_whole(1));
        assert_eq!((d.read_of(1), d.note(1, 2)), (0, 0));
        assert_eq!(d.take(1), 2);
        assert!(d.sent_whole(1));
    }

    #[test]
    fn records_read_from_a_batch_the_ring_lost_are_not_lost() {
        let mut d = Delivered::default();
        assert_eq!(d.note(0, 3), 0);
        // Batch 0 filled and found no room in the ring. The next drain sees
        // batch 1 in the slot, but batch 0 may still be on its way.
        assert_eq!(d.note(1, 2), 0);
        // By the drain after, it would have come: three of it were delivered.
        assert_eq!(d.note(1, 4), 3);
        assert_eq!(d.read, vec![(1, 4)]);
    }

    #[test]
    fn batches_decode() {
        let mut b = Batch {
            seq: 7,
            n: BATCH as u32,
            ..Batch::default()
        };
        b.ev[3] = event(DIR_IN, RESULT_OK);
        assert_eq!(Batch::decode(&b.to_bytes()), Some(b));
        assert!(Batch::decode(&b.to_bytes()[1..]).is_none());
    }

    #[test]
    fn ipv6_addresses_decode() {
        let mut ev = event(DIR_OUT, RESULT_OK);
        ev.key.family = 6;
        ev.key.server = "2001:db8::1".parse::<Ipv6Addr>().expect("literal").octets();
        let r = Record::from_event(&Event::decode(&ev.to_bytes()).expect("size")).expect("valid");
        assert_eq!(r.server.to_string(), "2001:db8::1");
    }
}
