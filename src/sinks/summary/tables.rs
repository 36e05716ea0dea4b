//! `--summary` as a consumer of records: tables every interval and at exit.

use std::io::{self, Write};

use super::group::{Summary, Table};
use super::json::render_json;
use super::text::render_text;
use crate::probe::Record;
use crate::sinks::clock::WallClock;
use crate::sinks::labels::Labels;
use crate::sinks::Consumer;

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
                render_json(t, labels, &self.clock, self.hist)
            } else {
                render_text(t, labels, &self.clock, self.hist)
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
        labels: &mut dyn Labels,
        _out: &mut dyn Write,
    ) -> io::Result<()> {
        if self.summary.by_workload() {
            let w = labels.workload(r.ifindex, r.cgroup_id);
            self.summary.add_of(r, w);
        } else {
            self.summary.add(r);
        }
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

    fn late_attempts(&self) -> Option<u64> {
        Some(self.summary.late_attempts())
    }
}
