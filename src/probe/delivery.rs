//! Delivery of records: the per-CPU perf rings carry full batches, and the
//! batches not yet full are read from their mapped slots like a seqlock's
//! reader, so that no record waits for its batch to fill. It hands out each
//! record once and keeps one count of those lost.

use std::mem::offset_of;
use std::sync::atomic::{fence, Ordering};

use super::abi::{Batch, Event, BATCH};
use super::record::Record;
use super::stats::KernelStats;
use super::Probe;
use crate::bpf::perf::{PerfBuffers, PerfStats};
use crate::bpf::BpfError;

/// The most records per perf event, and what the probe loads with. More than
/// one needs [`Probe::drain`] to read part-filled batches from their slots,
/// and that read needs the classifier's plain stores to become visible in the
/// order it made them, which x86 guarantees and other CPUs do not: elsewhere
/// each record goes out alone at once.
pub(crate) const MAX_RECORDS_PER_EVENT: u32 = if STORES_IN_ORDER { BATCH as u32 } else { 1 };

/// Whether this CPU makes plain stores visible in the order they were made,
/// as x86 does: then the classifier publishes a new attempt in the slot
/// table with a plain store (`FLOWLAT_CFG_IN_ORDER`), and reads of
/// part-filled batches are sound (`MAX_RECORDS_PER_EVENT`).
pub(crate) const STORES_IN_ORDER: bool = cfg!(any(target_arch = "x86_64", target_arch = "x86"));

/// What [`Probe::drain`] has delivered of one CPU's batches: a batch's first
/// records may be read from its slot before it fills, and the rest come with
/// the whole batch through the perf ring.
#[derive(Debug, Default, Clone)]
pub(crate) struct Delivered {
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

impl Probe {
    /// Opens the per-CPU perf rings the classifier writes its batches of records to.
    pub fn open_perf(&self, pages: usize) -> Result<PerfBuffers, BpfError> {
        PerfBuffers::open(&self.events, pages, std::mem::size_of::<Batch>())
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

    /// Hands out, as [`Record`]s, every record not delivered before (see
    /// [`Probe::drain`]); one that does not decode is counted in
    /// [`Probe::records_lost`].
    pub fn records(&mut self, perf: &mut PerfBuffers, into: &mut Vec<Record>) {
        let mut malformed = 0;
        self.drain(perf, |ev| match Record::from_event(ev) {
            Some(r) => into.push(r),
            None => malformed += 1,
        });
        self.malformed += malformed;
    }

    /// Records that never reached user space whole, the one count of them:
    /// those of batches the perf ring had no room for (by the classifier's
    /// count, or the ring's own count of lost samples, each a batch of
    /// `records_per_event`) less those read from their slot before the batch
    /// filled, and those that came of the wrong size or did not decode.
    pub fn records_lost(&self, ks: &KernelStats, ps: &PerfStats) -> u64 {
        ks.send_failed
            .max(ps.lost.saturating_mul(u64::from(self.records_per_event)))
            .saturating_sub(self.recovered)
            + ps.wrong_size
            + self.malformed
    }

    /// A consistent view of one CPU's slot: its batch number and the records
    /// in it; `None` when the classifier kept changing it while it was read.
    pub(super) fn read_slot(&self, cpu: usize) -> Option<(u64, Vec<Event>)> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
