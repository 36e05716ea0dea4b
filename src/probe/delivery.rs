//! Delivery of records: the per-CPU perf rings carry full batches, and the
//! batches not yet full are read from their mapped slots like a seqlock's
//! reader, so that no record waits for its batch to fill. It hands out each
//! record once and keeps one count of those lost.

use std::mem::offset_of;
use std::sync::atomic::{fence, Ordering};

use super::abi::{Batch, Event, BATCH};
use super::record::Record;
use super::state::Probe;
use super::stats::KernelStats;
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
