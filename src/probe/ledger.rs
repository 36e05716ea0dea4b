//! What has been handed out of each CPU's batches: the bookkeeping that lets
//! a batch's first records be read from its slot before it fills, and the
//! rest come with the whole batch through the ring, each record once.

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
    pub(super) fn read_of(&self, seq: u64) -> usize {
        self.read
            .iter()
            .find(|(s, _)| *s == seq)
            .map_or(0, |&(_, n)| n)
    }

    /// The full batch `seq` has come through the ring: how many of its
    /// records were delivered already.
    pub(super) fn take(&mut self, seq: u64) -> usize {
        let done = self.read_of(seq);
        self.read.retain(|(s, _)| *s != seq);
        self.ring_done = Some(self.ring_done.map_or(seq, |d| d.max(seq)));
        done
    }

    /// Whether batch `seq` has come whole through the ring already.
    pub(super) fn sent_whole(&self, seq: u64) -> bool {
        self.ring_done.is_some_and(|d| seq <= d)
    }

    /// The slot showed `n` records of batch `seq`. Returns how many records
    /// were delivered of batches the ring lost: those before the batch of
    /// the previous drain were sent before that drain's read of the slot, so
    /// the ring has delivered them since, unless it had no room for them.
    pub(super) fn note(&mut self, seq: u64, n: usize) -> u64 {
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
