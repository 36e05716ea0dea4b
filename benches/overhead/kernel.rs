//! The classifier's cost in the kernel, from `BPF_PROG_TEST_RUN`'s own clock,
//! always beside the empty classifier run the same way in the same round.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};

use flowlat::bpf::perf::PerfBuffers;
use flowlat::bpf::sys;
use flowlat::probe::{Aggregation, Filter, Hook, Probe, ProbeConfig, Record};

use crate::frames::{self, Class, Dir, Layout};
use crate::stats::median;
use kit::asm;
use kit::probe::TC_ACT_UNSPEC;

/// flowlat's classifier as it loads in production, the empty one, and the
/// perf rings the classifier's records go to (drained, as flowlat would).
pub struct Rig {
    probe: Probe,
    empty: OwnedFd,
    perf: PerfBuffers,
    records: u64,
    /// How the classifier aggregates, which decides what a handshake must produce.
    aggregation: Aggregation,
    /// Whether the probe parses each layout, found out once.
    parses: HashMap<Layout, bool>,
}

/// One class, measured.
pub struct ClassResult {
    pub empty_runs: Vec<u32>,
    pub flowlat_runs: Vec<u32>,
    /// For layouts the parser may lack: whether it handled them.
    pub parsed: Option<bool>,
}

impl ClassResult {
    pub fn empty_ns(&self) -> u32 {
        median(&self.empty_runs)
    }
    pub fn flowlat_ns(&self) -> u32 {
        median(&self.flowlat_runs)
    }
    /// The median of each round's difference: a round's two runs are taken
    /// back to back, so a slower or faster spell of the machine cancels out.
    pub fn diff_ns(&self) -> i64 {
        net(&self.flowlat_runs, &self.empty_runs)
    }
}

/// Handshakes, measured one packet at a time.
pub struct HandshakeResult {
    pub dir: Dir,
    pub count: usize,
    /// Per packet of the handshake: its name, and flowlat's and the empty
    /// classifier's duration of every handshake.
    pub packets: Vec<(&'static str, Vec<u32>, Vec<u32>)>,
    /// Per handshake: the sum over its packets, flowlat and empty.
    pub flowlat_sums: Vec<u32>,
    pub empty_sums: Vec<u32>,
}

impl HandshakeResult {
    /// The median handshake as test-run reports it, harness included.
    pub fn flowlat_ns(&self) -> u32 {
        median(&self.flowlat_sums)
    }
    /// The same for the empty classifier: the harness alone.
    pub fn empty_ns(&self) -> u32 {
        median(&self.empty_sums)
    }
    /// flowlat's own cost: the median over handshakes of flowlat's sum minus
    /// the empty classifier's, taken side by side.
    pub fn net_ns(&self) -> i64 {
        net(&self.flowlat_sums, &self.empty_sums)
    }
}

impl HandshakeResult {
    fn new(dir: Dir, count: u32) -> HandshakeResult {
        HandshakeResult {
            dir,
            count: count as usize,
            packets: Vec::new(),
            flowlat_sums: Vec::with_capacity(count as usize),
            empty_sums: Vec::with_capacity(count as usize),
        }
    }
}

/// The median of the differences of paired runs.
pub fn net(flowlat: &[u32], empty: &[u32]) -> i64 {
    let d: Vec<i64> = flowlat
        .iter()
        .zip(empty)
        .map(|(&f, &e)| i64::from(f) - i64::from(e))
        .collect();
    median(&d)
}

impl Rig {
    pub fn new(max_pending: u32, perf_pages: usize) -> Rig {
        let probe = Probe::load(&ProbeConfig::new(max_pending)).expect("load flowlat's classifier");
        let perf = probe.open_perf(perf_pages).expect("open the perf rings");
        let empty = asm::empty_classifier().expect("load the empty classifier");
        Rig {
            probe,
            empty,
            perf,
            records: 0,
            aggregation: Aggregation::default(),
            parses: HashMap::new(),
        }
    }

    fn run(&self, hook: Hook, frame: &[u8], repeat: u32) -> u32 {
        let r = self
            .probe
            .test_run(hook, frame, repeat)
            .unwrap_or_else(|e| panic!("test run of flowlat's {hook:?} classifier: {e}"));
        assert_eq!(r.retval, TC_ACT_UNSPEC, "flowlat must return TC_ACT_UNSPEC");
        assert_eq!(r.data_out, frame, "flowlat must not change the packet");
        r.duration_ns
    }

    fn run_empty(&self, frame: &[u8], repeat: u32) -> u32 {
        let r = sys::prog_test_run(self.empty.as_fd(), frame, None, repeat)
            .unwrap_or_else(|e| panic!("test run of the empty classifier: {e}"));
        assert_eq!(r.retval, TC_ACT_UNSPEC);
        r.duration_ns
    }

    /// Sets the classifier's aggregation for what is measured next.
    pub fn set_aggregation(&mut self, a: Aggregation) {
        self.probe.set_aggregation(&a);
        self.aggregation = a;
    }

    /// Attempts in the classifier's aggregates, all keys and results.
    fn aggregated(&self) -> u64 {
        let aggs = self.probe.aggregates().expect("read the aggregates");
        aggs.iter().flat_map(|(_, v)| v.results).sum()
    }

    /// Sets the classifier's filter for what is measured next.
    pub fn set_filter(&mut self, f: &Filter) {
        self.probe.set_filter(f).expect("set the filter");
    }

    /// Runs one packet once through flowlat and once through the empty
    /// classifier, the order alternating with `i`: (flowlat ns, empty ns).
    pub fn once(&mut self, i: usize, hook: Hook, frame: &[u8]) -> (u32, u32) {
        if i.is_multiple_of(2) {
            let e = self.run_empty(frame, 1);
            (self.run(hook, frame, 1), e)
        } else {
            let f = self.run(hook, frame, 1);
            (f, self.run_empty(frame, 1))
        }
    }

    /// Runs a packet through flowlat alone, once, unmeasured (to end an attempt).
    pub fn feed(&mut self, hook: Hook, frame: &[u8]) {
        self.run(hook, frame, 1);
        self.drain();
    }

    /// Reads the records the classifier sent, as flowlat's main loop would.
    fn drain(&mut self) {
        let mut n = 0;
        self.probe.drain(&mut self.perf, |ev| {
            Record::from_event(ev).expect("a well-formed record");
            n += 1;
        });
        self.records += n;
    }

    pub fn pending(&self) -> usize {
        self.probe.pending_entries().expect("walk the table").len()
    }

    /// Puts `n` attempts in progress in the table, through the classifier itself.
    pub fn prefill(&mut self, n: u32) {
        for i in 0..n {
            let (hook, frame) = frames::filler(i);
            self.run(hook, &frame, 1);
        }
    }

    /// Whether a SYN in `layout` leaves an entry in the table. Asked once per
    /// layout: the same SYN again would be a retransmission and add nothing.
    fn parses(&mut self, layout: Layout) -> bool {
        if let Some(&p) = self.parses.get(&layout) {
            return p;
        }
        let before = self.pending();
        self.run(Hook::Egress, &frames::parser_probe(layout), 1);
        let p = self.pending() > before;
        self.parses.insert(layout, p);
        p
    }

    /// `rounds` rounds of (empty, flowlat), each `repeat` runs of the class's
    /// packet; the order within a round alternates, so that a drift in the
    /// machine's speed weighs on both alike.
    pub fn measure(&mut self, class: &Class, repeat: u32, rounds: usize) -> ClassResult {
        let parsed = class.needs_parser.map(|layout| self.parses(layout));
        for (hook, frame) in &class.setup {
            self.run(*hook, frame, 1);
        }
        let mut res = ClassResult {
            empty_runs: Vec::with_capacity(rounds),
            flowlat_runs: Vec::with_capacity(rounds),
            parsed,
        };
        for round in 0..rounds {
            if round.is_multiple_of(2) {
                res.empty_runs.push(self.run_empty(&class.frame, repeat));
                res.flowlat_runs
                    .push(self.run(class.hook, &class.frame, repeat));
            } else {
                res.flowlat_runs
                    .push(self.run(class.hook, &class.frame, repeat));
                res.empty_runs.push(self.run_empty(&class.frame, repeat));
            }
            self.drain();
        }
        res
    }

    /// `count` whole handshakes in direction `dir`, each packet run once
    /// beside one run of the empty classifier on the same packet. Every
    /// handshake must end in exactly one record, which is read and decoded
    /// (or, as the aggregation is set, be aggregated instead or as well).
    pub fn handshakes(&mut self, dir: Dir, count: u32) -> HandshakeResult {
        let mut res = HandshakeResult::new(dir, count);
        self.run_handshakes(dir, 0..count, &mut res);
        res
    }

    /// The same `count` handshakes under each aggregation setting, the
    /// settings taking turns every [`TURN`] handshakes, so that a slower or
    /// faster spell of the machine weighs on all alike.
    pub fn handshakes_in_turns(
        &mut self,
        dir: Dir,
        count: u32,
        modes: &[Aggregation],
    ) -> Vec<HandshakeResult> {
        let mut res: Vec<HandshakeResult> = modes
            .iter()
            .map(|_| HandshakeResult::new(dir, count))
            .collect();
        for start in (0..count).step_by(TURN as usize) {
            for (m, r) in modes.iter().zip(res.iter_mut()) {
                self.set_aggregation(*m);
                self.run_handshakes(dir, start..(start + TURN).min(count), r);
            }
        }
        self.set_aggregation(Aggregation::default());
        res
    }

    fn run_handshakes(&mut self, dir: Dir, range: std::ops::Range<u32>, res: &mut HandshakeResult) {
        let sent_before = self.probe.kernel_stats().expect("stats").sent;
        let records_before = self.records;
        let aggregated_before = self.aggregated();
        let count = range.len() as u32;
        for i in range {
            let packets = frames::handshake(dir, i);
            if res.packets.is_empty() {
                res.packets = packets
                    .iter()
                    .map(|(name, _, _)| (*name, Vec::new(), Vec::new()))
                    .collect();
            }
            let (mut f_sum, mut e_sum) = (0, 0);
            for (p, (_, hook, frame)) in packets.iter().enumerate() {
                let (f, e) = self.once(i as usize + p, *hook, frame);
                res.packets[p].1.push(f);
                res.packets[p].2.push(e);
                f_sum += f;
                e_sum += e;
            }
            res.flowlat_sums.push(f_sum);
            res.empty_sums.push(e_sum);
            self.drain();
        }
        let ks = self.probe.kernel_stats().expect("stats");
        let records = if self.aggregation.no_records {
            0
        } else {
            count
        };
        assert_eq!(
            ks.sent - sent_before,
            u64::from(records),
            "every handshake sends one record, or none when aggregating only ({} failed to send)",
            ks.send_failed
        );
        assert_eq!(
            self.records - records_before,
            u64::from(records),
            "every record is read"
        );
        let aggregated = if self.aggregation.enabled { count } else { 0 };
        assert_eq!(
            self.aggregated() - aggregated_before,
            u64::from(aggregated),
            "every handshake is aggregated once, when aggregating"
        );
    }
}

/// Handshakes of one setting before the next takes over, where settings take turns.
pub const TURN: u32 = 250;
