//! The mirror of `bpf/flowlat.h`: the constants and `#[repr(C)]` structs the
//! classifier and user space share, field for field (a test compares them
//! with the sizes and offsets clang computed for `bpf/layout.c`), and the
//! byte views of them that the maps take.

pub(crate) const DIR_OUT: u8 = 0;
pub(crate) const DIR_IN: u8 = 1;

pub(crate) const RESULT_OK: u8 = 0;
pub(crate) const RESULT_REFUSED: u8 = 1;
pub(crate) const RESULT_TIMEOUT: u8 = 2;
pub(crate) const RESULT_ABANDONED: u8 = 3;
pub(crate) const RESULT_UNREACHABLE: u8 = 4;
/// `FLOWLAT_RESULTS`: how many results an aggregate counts.
pub const RESULTS: usize = 5;

/// `FLOWLAT_REASON_*`: why an attempt that did not complete ended.
// Set by the classifier only; named here for the layout test.
#[allow(dead_code)]
pub(crate) const REASON_NONE: u8 = 0;
pub(crate) const REASON_RST: u8 = 1;
pub(crate) const REASON_NEW_ISN: u8 = 2;
pub(crate) const REASON_CLIENT_RESET: u8 = 3;
pub(crate) const REASON_NO_ANSWER: u8 = 4;
pub(crate) const REASON_NO_ACK: u8 = 5;
// Set by the classifier only; named here for the layout test.
#[allow(dead_code)]
pub(crate) const REASON_ICMP4_UNREACH: u8 = 16;
// Set by the classifier only; named here for the layout test.
#[allow(dead_code)]
pub(crate) const REASON_TIME_EXCEEDED: u8 = 32;
// Set by the classifier only; named here for the layout test.
#[allow(dead_code)]
pub(crate) const REASON_ICMP6_UNREACH: u8 = 40;
/// `FLOWLAT_REASONS`: reasons are below this.
pub const REASONS: usize = 48;
/// `FLOWLAT_FAIL_KEYS`: room in the `fails` map.
pub(crate) const FAIL_KEYS: usize = 4096;

/// Indices of the per-CPU `stats` map (`FLOWLAT_STAT_*`).
// Written only by the classifier; named here for the layout test.
#[allow(dead_code)]
pub(crate) const STATE_SYN: u8 = 0;
#[allow(dead_code)]
pub(crate) const STATE_SYNACK: u8 = 1;
pub(crate) const STATE_REPORTED: u8 = 2;
pub(crate) const STATE_ANSWERED: u8 = 3;
/// `FLOWLAT_LATE_ANSWER_US`: what `config.late_answer_us` is set to.
pub(crate) const LATE_ANSWER_US: u32 = 200_000;

pub(crate) const STAT_SENT: usize = 0;
pub(crate) const STAT_SEND_FAILED: usize = 1;
pub(crate) const STAT_CREATED: usize = 2;
pub(crate) const STAT_REMOVED: usize = 3;
pub(crate) const STAT_EXT_SKIPPED: usize = 4;
pub(crate) const STAT_FILTERED: usize = 5;
pub(crate) const STAT_BELOW_MIN_RTT: usize = 6;
pub(crate) const STAT_AGG_FAILED: usize = 7;
pub(crate) const STAT_MAX: usize = 8;

/// `FLOWLAT_CFG_*`: bits of `config.flags`.
pub(crate) const CFG_MIN_RTT: u32 = 1;
pub(crate) const CFG_AGGREGATE: u32 = 2;
pub(crate) const CFG_NO_RECORDS: u32 = 4;
pub(crate) const CFG_AGG_PORT: u32 = 8;
pub(crate) const CFG_AGG_CGROUP: u32 = 16;
pub(crate) const CFG_IN_ORDER: u32 = 32;
pub(crate) const CFG_PROCS: u32 = 64;

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

/// `FLOWLAT_AGG_KEYS` and `FLOWLAT_AGG_RESERVE`.
pub(crate) const AGG_KEYS: usize = 1024;
pub(crate) const AGG_RESERVE: usize = 2048;

/// `FLOWLAT_FILTER_*`: bits of `filter.kinds`.
pub(crate) const FILTER_PORT: u32 = 1;
pub(crate) const FILTER_NET: u32 = 2;
pub(crate) const FILTER_DIR: u32 = 4;
pub(crate) const FILTER_CGROUP: u32 = 8;
pub(crate) const FILTER_PROC: u32 = 16;

/// How many cgroups a [`Filter`] may name (`FLOWLAT_MAX_CGROUPS`).
pub const MAX_FILTER_CGROUPS: usize = 8;
/// How many networks a [`Filter`] may name (`FLOWLAT_MAX_NETS`).
pub const MAX_FILTER_NETS: usize = 256;
/// How many pids, and how many names, a [`Filter`] may name (`FLOWLAT_MAX_PROCS`).
pub const MAX_FILTER_PROCS: usize = 8;
/// `FLOWLAT_FILTER_MEMO`.
pub(crate) const FILTER_MEMO: usize = 4096;

/// `FLOWLAT_GATE_SLOTS` and `FLOWLAT_GATE_BANKS`: the ACK gate (see `bpf/flowlat.h`).
pub(crate) const GATE_SLOTS: usize = 32768;
pub(crate) const GATE_BANKS: u32 = 2;
/// `FLOWLAT_GATE_PORT_WORDS`: the gate's words of port bits, after its slots.
pub(crate) const GATE_PORT_WORDS: usize = 65536 / 32;

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
pub(crate) struct ConfigGlobal {
    pub(crate) bank: u32,
    pub(crate) flags: u32,
    pub(crate) agg_keys: u32,
    pub(crate) batch: u32,
    pub(crate) table_mask: u32,
    pub(crate) late_answer_us: u32,
}

/// `struct flowlat_agg_key`, as the map holds it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AggKeyRaw {
    pub(crate) ifindex: u32,
    pub(crate) dir: u8,
    pub(crate) other: u8,
    /// Host order.
    pub(crate) server_port: u16,
    pub(crate) cgroup_id: u64,
}

/// `FLOWLAT_AGG_FAST`: slots in each CPU's cache of aggregates.
pub(crate) const AGG_FAST: u32 = 256;

/// `struct flowlat_filter`, the global user space fills before attaching.
#[repr(C)]
pub(crate) struct FilterGlobal {
    pub(crate) kinds: u32,
    pub(crate) dirs: u32,
    pub(crate) cgroups: u32,
    pub(crate) pad: u32,
    pub(crate) min_rtt_ns: u64,
    pub(crate) cgroup_id: [u64; MAX_FILTER_CGROUPS],
    pub(crate) cgroup_level: [u32; MAX_FILTER_CGROUPS],
    pub(crate) ports: [u32; 65536 / 32],
    pub(crate) memo: [u32; FILTER_MEMO],
    pub(crate) pids: u32,
    pub(crate) comms: u32,
    pub(crate) pid: [u32; MAX_FILTER_PROCS],
    pub(crate) comm: [[u8; 16]; MAX_FILTER_PROCS],
}

/// `struct flowlat_net_key`: a network in the `nets` LPM trie, behind its family byte.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NetKey {
    pub(crate) prefixlen: u32,
    pub(crate) family: u8,
    pub(crate) addr: [u8; 16],
    pub(crate) pad: [u8; 3],
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
    /// The process behind the local socket; pid 0 when none was known.
    pub proc: Proc,
}

/// `FLOWLAT_PROC_SLOTS`.
// Used by the classifier and the connect hook only; named here for the layout test.
#[allow(dead_code)]
pub(crate) const PROC_SLOTS: usize = 4096;

/// `struct flowlat_proc_slot`: a slot of `conn_procs`.
// Used by the classifier and the connect hook only; named here for the layout test.
#[allow(dead_code)]
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ProcSlot {
    pub(crate) cookie: u64,
    pub(crate) proc: Proc,
}

/// `struct flowlat_proc`: the process behind a socket, as the cgroup hooks
/// note it in the `procs` socket storage.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Proc {
    /// Thread group id in the initial PID namespace; 0: none.
    pub pid: u32,
    pub pad: u32,
    /// The kernel's name of the process, NUL-padded.
    pub comm: [u8; 16],
}

impl Pending {
    /// Whether this entry is a tombstone of a reported attempt (timed out,
    /// ended by an ICMP error, or answered late), kept so that copies of the
    /// client's SYN start no second record.
    pub fn tombstone(&self) -> bool {
        self.state == STATE_REPORTED || self.state == STATE_ANSWERED
    }
}

/// `struct flowlat_event`: one record per attempt, as the classifier sends it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Event {
    pub key: Key,
    pub p: Pending,
    pub end_ns: u64,
    pub result: u8,
    /// `FLOWLAT_REASON_*`.
    pub reason: u8,
    pub pad: [u8; 6],
}

impl Event {
    /// The sender of the ICMP error that ended the attempt (network order),
    /// where the record carries it: in `p.first_synack_ns` and
    /// `p.last_synack_ns`, as `FLOWLAT_EVENT_FROM` says.
    pub(crate) fn icmp_from(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&self.p.first_synack_ns.to_ne_bytes());
        a[8..].copy_from_slice(&self.p.last_synack_ns.to_ne_bytes());
        a
    }
}

/// `struct flowlat_fail_key`: failures counted by interface, direction and reason.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FailKey {
    pub(crate) ifindex: u32,
    pub(crate) dir: u8,
    pub(crate) reason: u8,
    pub(crate) pad: u16,
}

/// `FLOWLAT_BATCH`: records per perf event, at most.
pub const BATCH: usize = 8;

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
impl Pod for FailKey {}
// A per-CPU counter (the `fails` map's values).
impl Pod for u64 {}
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
pub(crate) fn per_cpu_stride<T>() -> usize {
    std::mem::size_of::<T>().next_multiple_of(8)
}

/// Each CPU's `T` in a per-CPU map's value, as the kernel lays them out.
pub(crate) fn per_cpu<T: Pod>(values: &[u8]) -> impl Iterator<Item = Option<T>> + '_ {
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
