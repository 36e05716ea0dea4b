//! The table of attempts in progress as user space holds it, either kind
//! (`bpf/table.h`), and one sweep of it: the attempts that timed out, taken
//! out and left as tombstones, the tombstones that have served their time
//! removed.

use std::time::Duration;

use super::abi::{
    as_bytes, from_bytes, Event, Key, Pending, DIR_IN, REASON_NO_ACK, REASON_NO_ANSWER,
    RESULT_TIMEOUT, STATE_ANSWERED, STATE_REPORTED,
};
use super::record::Record;
use super::slots::{self, SlotTable};
use crate::bpf::map::{Map, Update};
use crate::bpf::{sys, BpfError};

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

/// The table as user space holds it.
pub(crate) enum TableMap {
    Slots(SlotTable),
    Lru(Lru),
}

/// The LRU hash table of attempts, the fallback where the kernel has no
/// compare-and-exchange in BPF.
pub(crate) struct Lru {
    pub(crate) map: Map,
    /// Room in the table, which bounds a walk of its keys.
    pub(crate) max_pending: u32,
}

/// What the sweep needs of a table of attempts: its entries as found, and
/// three ways of changing one that fail when the classifier changed it first.
pub(super) trait Attempts {
    /// Where an entry was found, as its table needs to find it again.
    type At;

    /// Every entry: attempts in progress and tombstones.
    fn entries(&self) -> Result<Vec<(Key, Pending, Self::At)>, BpfError>;

    /// Removes an entry as it was found: false when the classifier had it first.
    fn remove(&self, k: &Key, at: &Self::At) -> Result<bool, BpfError>;

    /// Takes an attempt out of the table to time it out, and gives it as it
    /// is now; `None` when the classifier had it first. A taken slot stays
    /// claimed for [`Attempts::tombstone`].
    fn take(&self, k: &Key, p: Pending, at: &Self::At) -> Result<Option<Pending>, BpfError>;

    /// Puts a tombstone where [`Attempts::take`] took an attempt: false
    /// when a new attempt of the same key took the place meanwhile.
    fn tombstone(&self, k: &Key, tomb: &Pending, at: &Self::At) -> Result<bool, BpfError>;
}

impl Attempts for SlotTable {
    /// A way of a bucket, and its word then.
    type At = slots::Found;

    fn entries(&self) -> Result<Vec<(Key, Pending, slots::Found)>, BpfError> {
        Ok(SlotTable::entries(self)
            .into_iter()
            .map(|f| (f.key, f.p, f))
            .collect())
    }

    fn remove(&self, _: &Key, at: &slots::Found) -> Result<bool, BpfError> {
        Ok(SlotTable::remove(self, at))
    }

    fn take(&self, _: &Key, p: Pending, at: &slots::Found) -> Result<Option<Pending>, BpfError> {
        if !self.claim(at) {
            return Ok(None);
        }
        Ok(Some(self.pending_of(at).unwrap_or(p)))
    }

    fn tombstone(&self, _: &Key, tomb: &Pending, at: &slots::Found) -> Result<bool, BpfError> {
        self.replace(at, tomb);
        Ok(true)
    }
}

impl Attempts for Lru {
    /// An entry is found by its key alone.
    type At = ();

    fn entries(&self) -> Result<Vec<(Key, Pending, ())>, BpfError> {
        let map = &self.map;
        let mut keys = Vec::new();
        let mut cur: Option<Key> = None;
        let mut next = Key::default();
        // get_next_key restarts from the first key when `cur` vanished meanwhile;
        // the bound keeps such a restart from looping forever on a busy table.
        let bound = 2 * self.max_pending as usize + 1024;
        while keys.len() < bound {
            let mut nb = [0u8; std::mem::size_of::<Key>()];
            let more = map.next_key(cur.as_ref().map(as_bytes), &mut nb)?;
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
            if map.lookup(as_bytes(&k), &mut vb)? {
                if let Some(v) = from_bytes(&vb) {
                    out.push((k, v, ()));
                }
            }
        }
        Ok(out)
    }

    fn remove(&self, k: &Key, _: &()) -> Result<bool, BpfError> {
        self.map.delete(as_bytes(k))
    }

    fn take(&self, k: &Key, p: Pending, _: &()) -> Result<Option<Pending>, BpfError> {
        Ok(self.map.delete(as_bytes(k))?.then_some(p))
    }

    fn tombstone(&self, k: &Key, tomb: &Pending, _: &()) -> Result<bool, BpfError> {
        match self
            .map
            .update(as_bytes(k), as_bytes(tomb), Update::NoExist)
        {
            Ok(()) => Ok(true),
            Err(BpfError::Sys { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// How long the tombstone of a timed-out attempt, or of one an ICMP error
/// ended (the classifier leaves those), outlives its client's last SYN.
/// Linux retries a SYN at most 120 s (`TCP_RTO_MAX`) apart, so a client that
/// keeps retrying the reported attempt never starts a second record.
pub const REPORTED_HOLD: Duration = Duration::from_secs(120);

/// How long the tombstone of an attempt that ended late (see
/// `FLOWLAT_STATE_ANSWERED`) outlives its end, or the last copy of its SYN
/// that came after it: a copy the client sent before the answer reached it
/// left before the client's ACK, and arrives after it only by the little a
/// reordering delays it.
pub const ANSWERED_HOLD: Duration = Duration::from_secs(1);

/// What a sweep of the pending table found.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Attempts that timed out and were removed by this sweep.
    pub expired: Vec<Record>,
    /// Attempts still pending after the sweep.
    pub pending: u64,
    /// Tombstones still held: of reported timeouts and ICMP errors (see
    /// [`REPORTED_HOLD`]) and of attempts answered late ([`ANSWERED_HOLD`]).
    pub tombstones: u64,
    /// `in` attempts that timed out with no SYN-ACK of ours while a cgroup
    /// filter is set: with no listener seen, they are dropped as filtered, not
    /// reported (and leave a tombstone like a timeout).
    pub filtered: u64,
}

/// What the sweep did beyond what it reports, for the probe's own counts.
#[derive(Default)]
pub(super) struct Swept {
    /// Entries it removed (timeouts and old tombstones).
    pub(super) removed: u64,
    /// Tombstones it inserted.
    pub(super) tombstones: u64,
}

/// One sweep of a table (see [`Probe::sweep`]).
pub(super) fn sweep_table<T: Attempts>(
    t: &T,
    now_ns: u64,
    timeout_ns: u64,
    cgroup_filter: bool,
) -> Result<(Sweep, Swept), BpfError> {
    let mut sweep = Sweep::default();
    let mut swept = Swept::default();
    for (k, p, at) in t.entries()? {
        if p.tombstone() {
            let hold = match p.state {
                STATE_ANSWERED => ANSWERED_HOLD,
                _ => REPORTED_HOLD,
            };
            if now_ns.saturating_sub(p.last_syn_ns) < hold.as_nanos() as u64 {
                sweep.tombstones += 1;
            } else if t.remove(&k, &at)? {
                swept.removed += 1;
            }
            continue;
        }
        if now_ns.saturating_sub(p.first_syn_ns) < timeout_ns {
            sweep.pending += 1;
            continue;
        }
        let Some(p) = t.take(&k, p, &at)? else {
            continue;
        };
        swept.removed += 1;
        // No SYN-ACK of ours, so no listener to hold against the cgroup filter.
        let unattributed = cgroup_filter && k.dir == DIR_IN && p.synacks == 0;
        if unattributed {
            sweep.filtered += 1;
        }
        let ev = Event {
            key: k,
            p,
            end_ns: p.first_syn_ns.saturating_add(timeout_ns),
            result: RESULT_TIMEOUT,
            // Which half never came: our SYN-ACK left (in), or nothing answered.
            reason: if k.dir == DIR_IN && p.synacks > 0 {
                REASON_NO_ACK
            } else {
                REASON_NO_ANSWER
            },
            pad: [0; 6],
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
        if t.tombstone(&k, &tomb, &at)? {
            swept.tombstones += 1;
            sweep.tombstones += 1;
        }
    }
    Ok((sweep, swept))
}
