//! What becomes of records. Every reported attempt reaches the [`Fanout`],
//! which alone decides what is counted where: the exit line's tally, the
//! metrics, and the view the user asked for (lines or summary tables), each
//! writing into the output it is given (only `main` owns stdout).

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::Duration;

pub mod clock;
pub mod histogram;
pub mod http;
pub mod json;
pub mod labels;
pub mod lines;
pub mod metrics;
pub mod summary;

use crate::probe::{AggKey, AggValue, Failure, Outcome, Record};
use crate::sinks::labels::{Labels, Names};
use crate::sinks::metrics::{Gauges, Metrics};

/// A consumer of records.
pub trait Consumer {
    /// One reported attempt.
    fn record(
        &mut self,
        r: &Record,
        labels: &mut dyn Labels,
        out: &mut dyn Write,
    ) -> io::Result<()>;

    /// Time passes (called at least every 100 ms): output that is due.
    fn tick(
        &mut self,
        _now_ns: u64,
        _labels: &mut dyn Labels,
        _out: &mut dyn Write,
    ) -> io::Result<()> {
        Ok(())
    }

    /// The run ends: whatever is left.
    fn finish(
        &mut self,
        _now_ns: u64,
        _labels: &mut dyn Labels,
        _out: &mut dyn Write,
    ) -> io::Result<()> {
        Ok(())
    }

    /// Attempts counted in an `other` group for want of room, if the
    /// consumer groups at all.
    fn other_attempts(&self) -> Option<u64> {
        None
    }

    /// Attempts read after their interval's table was written, counted in
    /// a later one, if the consumer has intervals at all.
    fn late_attempts(&self) -> Option<u64> {
        None
    }
}

/// Attempts by result, for the exit line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally([u64; Outcome::ALL.len()]);

impl Tally {
    /// Counts `n` attempts that ended so.
    pub fn add(&mut self, outcome: Outcome, n: u64) {
        self.0[outcome.index()] += n;
    }

    /// The attempts that ended so.
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.0[outcome.index()]
    }

    /// All attempts counted.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `N handshakes: N ok, N refused, ...`, every result in its order.
    pub fn describe(&self) -> String {
        let each: Vec<String> = Outcome::ALL
            .iter()
            .map(|&o| format!("{} {}", self.get(o), o.as_str()))
            .collect();
        format!("{} handshakes: {}", self.total(), each.join(", "))
    }
}

/// Where a batch of records comes from, which decides what the kernel has
/// counted of them already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Ended by the classifier: with kernel aggregation on, counted there.
    Kernel,
    /// Timeouts found by the sweep: the kernel never counts them.
    Sweep,
}

/// The one place records go, and the counting policy: every record is
/// tallied for the exit line (up to `--count`), given to the metrics unless
/// the kernel counted it already, and shown by the view the user asked for.
pub struct Fanout {
    /// Lines or tables; none with `--quiet`.
    view: Option<Box<dyn Consumer>>,
    metrics: Option<Metrics>,
    names: Names,
    /// Reported attempts by result (with `--quiet`, only the sweep's).
    tally: Tally,
    /// `--count`: attempts still to report.
    left: Option<u64>,
    /// Attempts that ended after `--count` was reached.
    beyond_count: u64,
    /// Whether the classifier sends a record per attempt.
    records: bool,
    /// Whether the classifier counts the attempts it ends itself.
    kernel_counts: bool,
}

impl Fanout {
    /// `records`: the classifier sends a record per attempt; `kernel_counts`:
    /// it aggregates the attempts it ends.
    pub fn new(
        view: Option<Box<dyn Consumer>>,
        metrics: Option<Metrics>,
        names: Names,
        count: Option<u64>,
        records: bool,
        kernel_counts: bool,
    ) -> Fanout {
        Fanout {
            view,
            metrics,
            names,
            tally: Tally::default(),
            left: count,
            beyond_count: 0,
            records,
            kernel_counts,
        }
    }

    /// Hands records on, then flushes `out` once. Every record is counted
    /// even when a write fails, so the exit line stays right; `Err` is the
    /// first write error. `Ok(Some(n))`: `--count` is reached, after `n`.
    pub fn take(
        &mut self,
        records: &[Record],
        origin: Origin,
        out: &mut dyn Write,
    ) -> io::Result<Option<u64>> {
        let mut result = Ok(());
        for r in records {
            // On a workload's interface no socket is seen: the attempt is
            // the workload's, and so is its cgroup.
            let local;
            let r = match self.names.workload_cgroup(r) {
                Some(id) => {
                    local = Record {
                        cgroup_id: Some(id),
                        ..r.clone()
                    };
                    &local
                }
                None => r,
            };
            // The kernel counts what it ends; only the sweep's are ours to add.
            if origin == Origin::Sweep || !self.kernel_counts {
                if let Some(m) = self.metrics.as_mut() {
                    let w = if m.by_workload() {
                        self.names.workload(r.ifindex, r.cgroup_id)
                    } else {
                        None
                    };
                    m.add_of(r, w);
                }
            }
            if self.left == Some(0) {
                self.beyond_count += 1;
                continue;
            }
            self.tally.add(r.outcome, 1);
            if let (Some(v), true) = (self.view.as_mut(), result.is_ok()) {
                result = v.record(r, &mut self.names, out);
            }
            if let Some(n) = self.left.as_mut() {
                *n -= 1;
            }
        }
        result?;
        out.flush()?;
        Ok(match self.left {
            Some(0) => Some(self.tally.total()),
            _ => None,
        })
    }

    /// Time passes: the view writes what is due.
    pub fn tick(&mut self, now_ns: u64, out: &mut dyn Write) -> io::Result<()> {
        if let Some(v) = self.view.as_mut() {
            v.tick(now_ns, &mut self.names, out)?;
            out.flush()?;
        }
        Ok(())
    }

    /// The run ends: the view writes what is left.
    pub fn finish(&mut self, now_ns: u64, out: &mut dyn Write) -> io::Result<()> {
        if let Some(v) = self.view.as_mut() {
            v.finish(now_ns, &mut self.names, out)?;
        }
        Ok(())
    }

    /// An interface a pattern matched was attached: it has a name and
    /// series from now on.
    pub fn add_iface(&mut self, ifindex: u32, name: String) {
        self.names.rename(ifindex, name.clone());
        if let Some(m) = self.metrics.as_mut() {
            m.add_iface(ifindex, name);
        }
    }

    /// An interface is gone: its series stay for the TTL.
    pub fn iface_gone(&mut self, ifindex: u32, now_ns: u64) {
        self.names.iface_gone(ifindex, now_ns);
        if let Some(m) = self.metrics.as_mut() {
            m.iface_gone(ifindex);
        }
    }

    /// Forgets interfaces gone for longer than `ttl`: their names, their
    /// workloads, their series. Returns their indexes, for the kernel's
    /// aggregates to drop them too.
    pub fn expire(&mut self, now_ns: u64, ttl: Duration) -> Vec<u32> {
        let gone = self.names.expire(now_ns, ttl);
        if let Some(m) = self.metrics.as_mut() {
            m.forget_ifaces(&gone);
        }
        gone
    }

    /// The names of the run (workloads are resolved through them).
    pub fn names_mut(&mut self) -> &mut Names {
        &mut self.names
    }

    /// An interface was renamed: lines and labels say the new name.
    pub fn rename_iface(&mut self, ifindex: u32, name: String) {
        self.names.rename(ifindex, name.clone());
        if let Some(m) = self.metrics.as_mut() {
            m.rename_iface(ifindex, name);
        }
    }

    /// Whether metrics are served.
    pub fn has_metrics(&self) -> bool {
        self.metrics.is_some()
    }

    /// The exposition, with the kernel's aggregates as they are now.
    pub fn render_metrics(
        &mut self,
        kernel: Vec<(AggKey, AggValue)>,
        kernel_failures: Vec<(Failure, u64)>,
        gauges: &Gauges,
    ) -> String {
        let Some(m) = self.metrics.as_mut() else {
            return String::new();
        };
        let names = &mut self.names;
        // A workload's interface sees no socket: its attempts are the
        // workload's, in the workload's cgroup.
        let kernel: Vec<(AggKey, AggValue)> = kernel
            .into_iter()
            .map(|(mut k, v)| {
                if let Some(id) = names.workloads().iface(k.ifindex).and_then(|w| w.cgroup_id) {
                    if !k.other {
                        k.cgroup_id = Some(id);
                    }
                }
                (k, v)
            })
            .collect();
        if m.by_workload() {
            let mut w = HashMap::new();
            for (k, _) in &kernel {
                if let Some(name) = names.workload(k.ifindex, k.cgroup_id) {
                    w.insert((k.ifindex, k.cgroup_id), name);
                }
            }
            m.set_kernel_workloads(w);
            m.set_iface_workloads(names.workloads().iface_names().into_iter().collect());
        }
        m.set_kernel(kernel);
        m.set_kernel_failures(kernel_failures);
        let names = &mut self.names;
        m.render(&mut |id| names.cgroup(id), gauges)
    }

    /// Every attempt that ended, for the exit line: those reported, those
    /// held back under `--min-rtt` (`below_min_rtt`), and, when the
    /// classifier sends no records, what it counted itself (`kernel`, asked
    /// for only then).
    pub fn handshakes<E>(
        &self,
        below_min_rtt: u64,
        kernel: impl FnOnce() -> Result<Vec<(AggKey, AggValue)>, E>,
    ) -> Result<Tally, E> {
        let mut tally = self.tally;
        if self.records {
            // Not reported, but they happened.
            tally.add(Outcome::Ok, below_min_rtt);
        } else {
            // The kernel counted what it ended (those under --min-rtt
            // included); the sweep's timeouts are in the tally.
            for (_, v) in kernel()? {
                for o in Outcome::ALL {
                    tally.add(o, v.results[o.index()]);
                }
            }
        }
        Ok(tally)
    }

    /// Attempts that ended after `--count` was reached.
    pub fn beyond_count(&self) -> u64 {
        self.beyond_count
    }

    /// Attempts the view counted in an `other` group for want of room.
    pub fn other_attempts(&self) -> Option<u64> {
        self.view.as_ref().and_then(|v| v.other_attempts())
    }

    /// Attempts the view counted in a later interval than the one in which
    /// they ended.
    pub fn late_attempts(&self) -> Option<u64> {
        self.view.as_ref().and_then(|v| v.late_attempts())
    }
}
