//! The real embedded classifier under `BPF_PROG_TEST_RUN`, for the program
//! tests: every run must leave the packet unchanged and return TC_ACT_UNSPEC,
//! and the records are read back from the perf rings.

use flowlat::bpf::perf::PerfBuffers;
use flowlat::probe::{Hook, Probe, ProbeConfig, Record, Table};

/// `TC_ACT_UNSPEC` (-1 as the kernel's u32): what the classifier returns for
/// every packet.
pub const TC_ACT_UNSPEC: u32 = u32::MAX;

/// The most attempts a table made for `max_pending` may hold: the slot
/// table has its front's room besides (see `flowlat::probe::slots::FRONT`).
pub fn room(table: Table, max_pending: u64) -> u64 {
    match table {
        Table::Slots => max_pending + flowlat::probe::slots::FRONT_WAYS as u64,
        Table::Lru => max_pending,
    }
}

pub struct Rig {
    pub probe: Probe,
    pub perf: PerfBuffers,
}

impl Default for Rig {
    fn default() -> Rig {
        Rig::new()
    }
}

impl Rig {
    /// The probe with a table of 1024 attempts and small perf rings.
    pub fn new() -> Rig {
        Rig::with(ProbeConfig::new(1024))
    }

    /// The probe with a table of 1024 attempts of the given kind.
    pub fn with_table(table: Table) -> Rig {
        Rig::with(ProbeConfig {
            table: Some(table),
            ..ProbeConfig::new(1024)
        })
    }

    pub fn with(cfg: ProbeConfig) -> Rig {
        crate::require_root();
        let probe = Probe::load(&cfg).expect("load the probe");
        let perf = probe.open_perf(8).expect("open perf rings");
        Rig { probe, perf }
    }

    /// Runs the packet through one hook and checks it passes untouched.
    pub fn run(&self, hook: Hook, frame: &[u8]) {
        let r = self
            .probe
            .test_run(hook, frame, 1)
            .unwrap_or_else(|e| panic!("test run of {} bytes: {e}", frame.len()));
        assert_eq!(
            r.retval, TC_ACT_UNSPEC,
            "{hook:?} must return TC_ACT_UNSPEC"
        );
        assert_eq!(r.data_out, frame, "{hook:?} must not change the packet");
    }

    /// The records sent since the last call.
    pub fn records(&mut self) -> Vec<Record> {
        let mut out = Vec::new();
        self.probe.drain(&mut self.perf, |ev| {
            out.push(Record::from_event(ev).expect("well-formed record"));
        });
        out
    }

    /// Entries in the pending table.
    pub fn pending(&self) -> usize {
        self.probe.pending_entries().expect("walk pending").len()
    }

    /// Attempts in progress in the table: its entries less the tombstones of
    /// reported attempts.
    pub fn in_progress(&self) -> usize {
        self.probe
            .pending_entries()
            .expect("walk pending")
            .iter()
            .filter(|(_, p)| !p.tombstone())
            .count()
    }

    /// Whether the table holds an entry of the attempt from client port `cport`.
    pub fn holds(&self, cport: u16) -> bool {
        self.probe
            .pending_entries()
            .expect("walk pending")
            .iter()
            .any(|(k, _)| u16::from_be(k.client_port) == cport)
    }

    /// A sweep long after `now` (`CLOCK_MONOTONIC` ns): once every tombstone's
    /// hold is over, and with no attempt due.
    pub fn sweep_after_the_hold(&mut self, now: u64) -> flowlat::probe::Sweep {
        let later = now + flowlat::probe::REPORTED_HOLD.as_nanos() as u64 + 10_000_000_000;
        self.probe
            .sweep(later, std::time::Duration::from_secs(3600))
            .expect("sweep")
    }
}
