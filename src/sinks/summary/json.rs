//! The summary as JSON lines: one object per group.

use std::fmt::Write as _;

use super::group::*;
use crate::sinks::clock::rfc3339;
use crate::sinks::clock::WallClock;
use crate::sinks::histogram::{Log2Hist, Sketch};
use crate::sinks::json::json_str;
use crate::sinks::labels::Labels;

fn json_opt(out: &mut String, name: &str, v: Option<u64>) {
    let _ = match v {
        Some(n) => write!(out, ",\"{name}\":{n}"),
        None => write!(out, ",\"{name}\":null"),
    };
}

fn json_opt_str(out: &mut String, name: &str, v: Option<&str>) {
    let _ = write!(out, ",\"{name}\":");
    match v {
        Some(s) => json_str(out, s),
        None => out.push_str("null"),
    }
}

/// `rtt_min_ns` ... `rtt_mean_ns`.
fn json_durations(out: &mut String, what: &str, s: &Sketch) {
    for (name, v) in FIVE.iter().zip(five(s)) {
        json_opt(out, &format!("{what}_{name}_ns"), v);
    }
    json_opt(out, &format!("{what}_mean_ns"), s.mean());
}

fn json_hist(out: &mut String, what: &str, h: &Log2Hist) {
    let _ = write!(out, ",\"{what}_hist\":[");
    for (i, b) in h.buckets().iter().enumerate() {
        let sep = if i > 0 { "," } else { "" };
        let _ = write!(
            out,
            "{sep}{{\"lo_ns\":{},\"hi_ns\":{},\"count\":{}}}",
            b.lo_ns, b.hi_ns, b.count
        );
    }
    out.push(']');
}

/// The group's key fields under the names records use; all `null` for `other`.
fn json_key(out: &mut String, t: &Table, key: Option<&Key>, labels: &mut dyn Labels) {
    for &g in &t.by {
        let text = key.map(|k| key_text(t, g, k, labels));
        match g {
            GroupKey::Iface | GroupKey::Dir | GroupKey::ServerIp | GroupKey::ClientIp => {
                let name = g.as_str().replace('-', "_");
                json_opt_str(out, &name, text.as_deref());
            }
            GroupKey::Server => {
                let ip = key.and_then(|k| k.server).map(|a| a.to_string());
                json_opt_str(out, "server_ip", ip.as_deref());
                json_opt(
                    out,
                    "server_port",
                    key.and_then(|k| k.server_port).map(u64::from),
                );
            }
            GroupKey::ServerPort => {
                json_opt(
                    out,
                    "server_port",
                    key.and_then(|k| k.server_port).map(u64::from),
                );
            }
            GroupKey::ClientNet => json_opt_str(out, "client_net", text.as_deref()),
            GroupKey::Cgroup => {
                let id = key.and_then(|k| k.cgroup);
                json_opt(out, "cgroup_id", id);
                let name = id.and_then(|id| labels.cgroup(id));
                json_opt_str(out, "cgroup", name.as_deref());
            }
            GroupKey::Workload => {
                let name = key
                    .and_then(|k| k.workload)
                    .and_then(|w| t.workload_names.get(&w));
                json_opt_str(out, "workload", name.map(|n| &**n));
            }
            GroupKey::Comm => {
                let comm = key.and_then(|k| k.comm).map(|c| c.as_str().into_owned());
                json_opt_str(out, "comm", comm.as_deref());
            }
        }
    }
}

/// The table as JSON lines, one object per group (the `other` row last,
/// marked `"other":true` with its key fields `null`), each ending in a
/// newline; empty for a table with no attempts. Durations in nanoseconds,
/// `null` where a group has none; with `hist` (and a table collected with
/// [`SummaryConfig::hist`]), `rtt_hist` and `local_hist`: arrays of
/// `{"lo_ns","hi_ns","count"}` for the log2 buckets with samples, `lo_ns <= v < hi_ns`.
pub fn render_json(t: &Table, labels: &mut dyn Labels, clock: &WallClock, hist: bool) -> String {
    let mut out = String::new();
    let (start, end) = (
        rfc3339(clock.unix_ns(t.start_ns)),
        rfc3339(clock.unix_ns(t.end_ns)),
    );
    for (key, s) in t.all_rows() {
        let _ = write!(
            out,
            "{{\"type\":\"summary\",\"interval_start\":\"{start}\",\"interval_end\":\"{end}\""
        );
        json_key(&mut out, t, key, labels);
        let _ = write!(
            out,
            ",\"other\":{},\"handshakes\":{},\"ok\":{},\"refused\":{},\"unreachable\":{},\
             \"timeout\":{},\"abandoned\":{},\"retrans\":{}",
            key.is_none(),
            s.attempts,
            s.ok,
            s.refused,
            s.unreachable,
            s.timeout,
            s.abandoned,
            s.retrans
        );
        json_durations(&mut out, "rtt", &s.rtt);
        json_durations(&mut out, "local", &s.local);
        if hist && t.hist {
            json_hist(&mut out, "rtt", &s.rtt_hist);
            json_hist(&mut out, "local", &s.local_hist);
        }
        out.push_str("}\n");
    }
    out
}
