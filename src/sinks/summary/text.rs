//! The summary as aligned text tables, with histograms under their rows.

use std::fmt::Write as _;

use super::group::*;
use crate::sinks::clock::WallClock;
use crate::sinks::clock::{local_utc_offset, time_of_day};
use crate::sinks::histogram::Log2Hist;
use crate::sinks::labels::Labels;

/// Durations in text: milliseconds to the microsecond, as in record lines.
fn ms(v: Option<u64>) -> String {
    match v {
        Some(ns) => format!("{}.{:03}", ns / 1_000_000, ns % 1_000_000 / 1_000),
        None => "-".to_string(),
    }
}

/// A column of the text table.
struct Col {
    head: &'static str,
    right: bool,
    cells: Vec<String>,
}

impl Col {
    fn new(head: &'static str, right: bool) -> Col {
        Col {
            head,
            right,
            cells: Vec::new(),
        }
    }

    fn width(&self) -> usize {
        self.cells
            .iter()
            .map(|c| c.chars().count())
            .chain([self.head.len()])
            .max()
            .unwrap_or(0)
    }
}

/// The count columns, in order, and a group's values for them.
const COUNTS: [&str; 7] = [
    "attempts",
    "ok",
    "refused",
    "unreach",
    "timeout",
    "abandoned",
    "retrans",
];

fn counts(s: &Stats) -> [u64; 7] {
    [
        s.attempts,
        s.ok,
        s.refused,
        s.unreachable,
        s.timeout,
        s.abandoned,
        s.retrans,
    ]
}

/// Columns are two spaces apart.
const GAP: &str = "  ";

fn fmt_cell(out: &mut String, text: &str, width: usize, right: bool) {
    let _ = if right {
        write!(out, "{text:>width$}")
    } else {
        write!(out, "{text:<width$}")
    };
}

fn span_line(t: &Table, clock: &WallClock, utc_offset: Option<i64>) -> String {
    let tod = |mono: u64| {
        let unix = clock.unix_ns(mono);
        let off = utc_offset.unwrap_or_else(|| local_utc_offset((unix / 1_000_000_000) as i64));
        time_of_day(unix, off)
    };
    let secs = t.end_ns.saturating_sub(t.start_ns) as f64 / 1e9;
    let what = match (t.attempts(), t.other.is_some()) {
        (0, _) => "no handshakes".to_string(),
        (n, false) => format!(
            "{} in {}",
            plural(n, "handshake"),
            plural(t.groups() as u64, "group")
        ),
        (n, true) => format!(
            "{} in {} groups and {OTHER}",
            plural(n, "handshake"),
            t.groups()
        ),
    };
    format!(
        "{} to {} ({secs:.3} s): {what}\n",
        tod(t.start_ns),
        tod(t.end_ns)
    )
}

/// The table as aligned text: a line naming its time span (local time of
/// day), a header with units, one row per group (most attempts first, the
/// `other` row last), and a note when attempts went to `other`. With `hist`
/// (and a table collected with [`SummaryConfig::hist`]), then each group's
/// log2 histograms of rtt and local, BCC-style, within 80 columns.
pub fn render_text(t: &Table, labels: &mut dyn Labels, clock: &WallClock, hist: bool) -> String {
    render_text_at(t, labels, clock, hist, None)
}

pub(super) fn render_text_at(
    t: &Table,
    labels: &mut dyn Labels,
    clock: &WallClock,
    hist: bool,
    utc_offset: Option<i64>,
) -> String {
    let mut out = span_line(t, clock, utc_offset);
    if t.attempts() == 0 {
        return out;
    }
    let with_local = t.all_rows().any(|(_, s)| s.inbound > 0);
    let durations: &[&str] = if with_local {
        &["rtt (ms)", "local (ms)"]
    } else {
        &["rtt (ms)"]
    };
    let mut cols: Vec<Col> = t.by.iter().map(|g| Col::new(g.as_str(), false)).collect();
    cols.extend(COUNTS.map(|h| Col::new(h, true)));
    for _ in durations {
        cols.extend(FIVE.map(|h| Col::new(h, true)));
    }
    let hist = hist && t.hist;
    // Each group's key as `name=value` pairs, heading its histograms.
    let mut keys: Vec<String> = Vec::new();
    for (key, s) in t.all_rows() {
        let mut cells: Vec<String> = match key {
            Some(k) => t.by.iter().map(|&g| key_text(t, g, k, labels)).collect(),
            None => (0..t.by.len())
                .map(|i| if i == 0 { OTHER } else { "*" }.to_string())
                .collect(),
        };
        if hist {
            keys.push(match key {
                Some(_) => {
                    t.by.iter()
                        .zip(&cells)
                        .map(|(g, c)| format!("{}={c}", g.as_str()))
                        .collect::<Vec<_>>()
                        .join(" ")
                }
                None => OTHER.to_string(),
            });
        }
        cells.extend(counts(s).map(|n| n.to_string()));
        cells.extend(five(&s.rtt).map(ms));
        if with_local {
            cells.extend(five(&s.local).map(ms));
        }
        for (c, v) in cols.iter_mut().zip(cells) {
            c.cells.push(v);
        }
    }
    let widths: Vec<usize> = cols.iter().map(Col::width).collect();
    out.push_str(&spans(&widths, t.by.len() + COUNTS.len(), durations));
    out.push_str(&aligned(&cols, &widths));
    if let Some(o) = &t.other {
        let _ = writeln!(
            out,
            "note: {} of {} handshakes are in {OTHER}: a table holds at most {} groups \
             (raise it with --max-groups, or group more coarsely with fewer --by keys)",
            o.attempts,
            t.attempts(),
            t.max_groups
        );
    }
    if hist {
        for ((_, s), key) in t.all_rows().zip(&keys) {
            let _ = write!(out, "\n{key}: {}\n", plural(s.attempts, "handshake"));
            draw(&mut out, "rtt", &s.rtt_hist);
            if s.inbound > 0 {
                draw(&mut out, "local", &s.local_hist);
            }
        }
    }
    out
}

/// vmstat-style headings over the duration columns, naming each group of
/// five and its unit: `----- rtt (ms) -----`.
fn spans(widths: &[usize], first: usize, names: &[&str]) -> String {
    let lead: usize = widths[..first].iter().map(|w| w + GAP.len()).sum();
    let mut line = " ".repeat(lead);
    for (i, name) in names.iter().enumerate() {
        let group = &widths[first + i * FIVE.len()..][..FIVE.len()];
        let w = group.iter().sum::<usize>() + GAP.len() * (FIVE.len() - 1);
        let label = format!(" {name} ");
        let dashes = w.saturating_sub(label.len());
        if i > 0 {
            line.push_str(GAP);
        }
        let _ = write!(
            line,
            "{}{label}{}",
            "-".repeat(dashes / 2),
            "-".repeat(dashes - dashes / 2)
        );
    }
    line.truncate(line.trim_end().len());
    line.push('\n');
    line
}

/// The header and the rows, each column padded to its width.
fn aligned(cols: &[Col], widths: &[usize]) -> String {
    let mut out = String::new();
    let rows = cols.first().map_or(0, |c| c.cells.len());
    for r in 0..=rows {
        let start = out.len();
        for (i, (c, &w)) in cols.iter().zip(widths).enumerate() {
            if i > 0 {
                out.push_str(GAP);
            }
            let text = if r == 0 { c.head } else { &c.cells[r - 1] };
            fmt_cell(&mut out, text, w, c.right);
        }
        out.truncate(start + out[start..].trim_end().len());
        out.push('\n');
    }
    out
}

fn draw(out: &mut String, what: &str, h: &Log2Hist) {
    let text = h.draw(&format!("{what} usecs"));
    if text.is_empty() {
        let _ = writeln!(out, "     {what}: none");
    } else {
        out.push_str(&text);
    }
}
