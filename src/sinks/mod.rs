//! What becomes of records: each consumer takes every reported attempt, in
//! the order reported, and writes what it has to say into the output it is
//! given (only `main` owns stdout).

use std::io::{self, Write};

pub mod histogram;
pub mod http;
pub mod labels;
pub mod lines;
pub mod metrics;
pub mod summary;

use crate::probe::{Outcome, Record};
use crate::sinks::labels::Labels;
use crate::sinks::lines::{Formatter, WallClock};
use summary::{Summary, Table};

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
}

/// One line per attempt, text or JSON.
pub struct Lines {
    fmt: Formatter,
}

impl Lines {
    pub fn new(fmt: Formatter) -> Lines {
        Lines { fmt }
    }
}

impl Consumer for Lines {
    fn record(
        &mut self,
        r: &Record,
        labels: &mut dyn Labels,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let cgroup = r.cgroup_id.and_then(|id| labels.cgroup(id));
        writeln!(out, "{}", self.fmt.format(r, labels, cgroup.as_deref()))
    }
}

/// `--summary`: tables of groups, every interval and at exit.
pub struct Tables {
    summary: Summary,
    json: bool,
    hist: bool,
    clock: WallClock,
}

impl Tables {
    pub fn new(summary: Summary, json: bool, hist: bool, clock: WallClock) -> Tables {
        Tables {
            summary,
            json,
            hist,
            clock,
        }
    }

    fn write(
        &self,
        tables: Vec<Table>,
        labels: &mut dyn Labels,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        for t in &tables {
            let text = if self.json {
                summary::render_json(t, labels, &self.clock, self.hist)
            } else {
                summary::render_text(t, labels, &self.clock, self.hist)
            };
            out.write_all(text.as_bytes())?;
            if !self.json {
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    }
}

impl Consumer for Tables {
    fn record(
        &mut self,
        r: &Record,
        _labels: &mut dyn Labels,
        _out: &mut dyn Write,
    ) -> io::Result<()> {
        self.summary.add(r);
        Ok(())
    }

    fn tick(
        &mut self,
        now_ns: u64,
        labels: &mut dyn Labels,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let due = self.summary.due(now_ns);
        self.write(due, labels, out)
    }

    fn finish(
        &mut self,
        now_ns: u64,
        labels: &mut dyn Labels,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let left = self.summary.finish(now_ns);
        self.write(left, labels, out)
    }

    fn other_attempts(&self) -> Option<u64> {
        Some(self.summary.other_attempts())
    }
}

/// Attempts by result, for the exit line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub ok: u64,
    pub refused: u64,
    pub timeout: u64,
    pub abandoned: u64,
}

impl Tally {
    pub fn add(&mut self, outcome: Outcome, n: u64) {
        match outcome {
            Outcome::Ok => self.ok += n,
            Outcome::Refused => self.refused += n,
            Outcome::Timeout => self.timeout += n,
            Outcome::Abandoned => self.abandoned += n,
        }
    }

    pub fn total(&self) -> u64 {
        self.ok + self.refused + self.timeout + self.abandoned
    }
}
