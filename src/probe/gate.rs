//! The ACK gate (see `bpf/flowlat.h`): counters in the probe's globals that
//! let an arriving ACK skip the table unless it may complete one of our
//! handshakes, and their rotation between two banks.

use std::mem::offset_of;
use std::sync::atomic::{AtomicU32, Ordering};

use super::abi::{ConfigGlobal, GATE_BANKS, GATE_PORT_WORDS, GATE_SLOTS};
use super::state::Probe;

impl Probe {
    /// The ACK gate's counters, a pair per slot, then its port groups' words,
    /// a pair per 32 ports: one of each pair per bank.
    pub(super) fn gate_words(&self) -> &[AtomicU32] {
        let words = self.globals.words();
        let len = (GATE_SLOTS + GATE_PORT_WORDS) * GATE_BANKS as usize;
        // Checked at load: the global lies within the mapped value.
        &words[self.gate_word..self.gate_word + len]
    }

    /// The ACK gate's counts for a slot, one per bank (tests).
    #[cfg(any(test, feature = "testing"))]
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
    #[cfg(any(test, feature = "testing"))]
    pub fn gate_port_marks(&self, port: u16) -> [u32; 2] {
        let at = (GATE_SLOTS + usize::from(port >> 5)) * GATE_BANKS as usize;
        let w = self.gate_words();
        [
            w[at].load(Ordering::Relaxed),
            w[at + 1].load(Ordering::Relaxed),
        ]
    }

    /// The ACK gate's count for a slot, summed over both banks (tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn gate_count(&self, slot: u32) -> u64 {
        self.gate_banks(slot).iter().map(|&n| u64::from(n)).sum()
    }

    /// Zeroes the inactive gate bank and makes it the active one, once every
    /// `timeout` + 1 s: by then every attempt counted in it has completed or
    /// been swept as a timeout, so only counts of evicted or timed-out attempts
    /// are cleared (see `bpf/flowlat.h`).
    pub(super) fn rotate_gate(&mut self, now_ns: u64, timeout_ns: u64) {
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
}
