//! Formats records as text lines or JSON lines. Printing is `main`'s job.

use std::fmt::Write as _;

use std::io::{self, Write};

use crate::probe::Record;
use crate::sinks::clock::{local_utc_offset, time_of_day, Rfc3339, WallClock};
use crate::sinks::json::json_str;
use crate::sinks::labels::Labels;
use crate::sinks::Consumer;

/// `12.345ms`, or `-` where undefined.
fn millis(v: Option<u64>) -> String {
    match v {
        Some(ns) => format!("{}.{:03}ms", ns / 1_000_000, ns % 1_000_000 / 1_000),
        None => "-".to_string(),
    }
}

fn endpoint(ip: std::net::IpAddr, port: u16) -> String {
    match ip {
        std::net::IpAddr::V4(a) => format!("{a}:{port}"),
        std::net::IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Turns records into lines (without the newline).
pub struct Formatter {
    json: bool,
    clock: WallClock,
    name_width: usize,
    utc_offset_s: Option<i64>,
    /// The last second's timestamp text, for the records of the same second.
    ts: Rfc3339,
}

impl Formatter {
    /// `json` picks the format; `name_width` is the longest interface name,
    /// so that text lines align.
    pub fn new(json: bool, clock: WallClock, name_width: usize) -> Formatter {
        Formatter {
            json,
            clock,
            name_width,
            utc_offset_s: None,
            ts: Rfc3339::default(),
        }
    }

    /// Uses a fixed UTC offset for text output instead of the local zone (tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn with_utc_offset(mut self, secs: i64) -> Formatter {
        self.utc_offset_s = Some(secs);
        self
    }

    /// One line for one record; `local` names its cgroup and workload, when
    /// known.
    pub fn format(&mut self, r: &Record, labels: &dyn Labels, local: Local<'_>) -> String {
        let unix = self.clock.unix_ns(r.end_ns);
        let iface = labels.iface(r.ifindex);
        // A renamed interface may be longer than the names at start.
        self.name_width = self.name_width.max(iface.len());
        if self.json {
            let mut s = String::with_capacity(384);
            self.json_into(&mut s, r, unix, &iface, local);
            s
        } else {
            let offset = self
                .utc_offset_s
                .unwrap_or_else(|| local_utc_offset((unix / 1_000_000_000) as i64));
            let synack = match r.synack_retrans {
                Some(n) => format!(" synack-retrans {n}"),
                None => String::new(),
            };
            let why = match (r.reason, r.reason_from) {
                (Some(reason), Some(from)) => format!(" reason {} from {from}", reason.as_str()),
                (Some(reason), None) => format!(" reason {}", reason.as_str()),
                (None, _) => String::new(),
            };
            let process = match &r.process {
                Some(p) => format!(" {}[{}]", p.comm.text(), p.pid),
                None => String::new(),
            };
            // The workload (or its cgroup) comes last: it is the one field
            // of unbounded width.
            let cg = match (local.workload, local.cgroup, r.cgroup_id) {
                (Some(w), _, _) => crate::host::cgroup::escape_controls(w),
                (None, Some(path), _) => crate::host::cgroup::shorten(path),
                (None, None, Some(id)) => format!("cgroup#{id}"),
                (None, None, None) => "-".to_string(),
            };
            format!(
                "{} {:<nw$} {:<3} {:>21} -> {:<21} {:<11} rtt {:>10} local {:>10} total {:>10} retrans {}{}{}{} {}",
                time_of_day(unix, offset),
                iface,
                r.dir.as_str(),
                endpoint(r.client, r.client_port),
                endpoint(r.server, r.server_port),
                r.outcome.as_str(),
                millis(r.rtt_ns),
                millis(r.local_ns),
                millis(r.total_ns),
                r.retrans,
                synack,
                why,
                process,
                cg,
                nw = self.name_width
            )
        }
    }
}

impl Formatter {
    /// Appends the JSON line of a record to `s`. Written field by field
    /// rather than through `format!`: lines are most of flowlat's own CPU
    /// time when it prints every record.
    fn json_into(&mut self, s: &mut String, r: &Record, unix: i128, iface: &str, local: Local<'_>) {
        s.push_str("{\"type\":\"handshake\",\"ts\":\"");
        self.ts.rfc3339_into(s, unix);
        s.push_str("\",\"iface\":");
        json_str(s, iface);
        s.push_str(",\"dir\":\"");
        s.push_str(r.dir.as_str());
        s.push_str("\",\"result\":\"");
        s.push_str(r.outcome.as_str());
        s.push_str("\",\"reason\":");
        match r.reason {
            Some(reason) => {
                s.push('"');
                s.push_str(reason.as_str());
                s.push('"');
            }
            None => s.push_str("null"),
        }
        s.push_str(",\"reason_from\":");
        match r.reason_from {
            Some(ip) => {
                s.push('"');
                push_ip(s, ip);
                s.push('"');
            }
            None => s.push_str("null"),
        }
        s.push_str(",\"client_ip\":\"");
        push_ip(s, r.client);
        s.push_str("\",\"client_port\":");
        push_u64(s, u64::from(r.client_port));
        s.push_str(",\"server_ip\":\"");
        push_ip(s, r.server);
        s.push_str("\",\"server_port\":");
        push_u64(s, u64::from(r.server_port));
        s.push_str(",\"rtt_ns\":");
        push_opt(s, r.rtt_ns);
        s.push_str(",\"local_ns\":");
        push_opt(s, r.local_ns);
        s.push_str(",\"total_ns\":");
        push_opt(s, r.total_ns);
        s.push_str(",\"retrans\":");
        push_u64(s, u64::from(r.retrans));
        s.push_str(",\"synack_retrans\":");
        push_opt(s, r.synack_retrans.map(u64::from));
        s.push_str(",\"pid\":");
        push_opt(s, r.process.map(|p| u64::from(p.pid)));
        s.push_str(",\"comm\":");
        match &r.process {
            Some(p) => json_str(s, &p.comm.as_str()),
            None => s.push_str("null"),
        }
        s.push_str(",\"cgroup_id\":");
        push_opt(s, r.cgroup_id);
        s.push_str(",\"cgroup\":");
        match local.cgroup {
            Some(c) => json_str(s, c),
            None => s.push_str("null"),
        }
        s.push_str(",\"workload\":");
        match local.workload {
            Some(w) => json_str(s, w),
            None => s.push_str("null"),
        }
        s.push('}');
    }
}

/// What a record's line says of its local side besides the numbers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Local<'a> {
    /// The path of its cgroup below the cgroup2 mount.
    pub cgroup: Option<&'a str>,
    /// The workload's name (`pod NAMESPACE/NAME`, `container NAME`, ...).
    pub workload: Option<&'a str>,
}

/// Appends `n` in decimal.
fn push_u64(s: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    s.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// Appends `n`, or `null` when there is none.
fn push_opt(s: &mut String, n: Option<u64>) {
    match n {
        Some(n) => push_u64(s, n),
        None => s.push_str("null"),
    }
}

/// Appends an address as `Display` writes it.
fn push_ip(s: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(a) => {
            for (i, o) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                push_u64(s, u64::from(o));
            }
        }
        std::net::IpAddr::V6(a) => {
            let _ = write!(s, "{a}");
        }
    }
}

/// One line per attempt, text or JSON.
pub struct Lines {
    fmt: Formatter,
    /// The line being written, kept to spare an allocation per record.
    line: String,
}

impl Lines {
    pub fn new(fmt: Formatter) -> Lines {
        Lines {
            fmt,
            line: String::with_capacity(512),
        }
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
        let workload = labels.workload(r.ifindex, r.cgroup_id);
        let local = Local {
            cgroup: cgroup.as_deref(),
            workload: workload.as_deref(),
        };
        if self.fmt.json {
            self.line.clear();
            let unix = self.fmt.clock.unix_ns(r.end_ns);
            let iface = labels.iface(r.ifindex);
            self.fmt.json_into(&mut self.line, r, unix, &iface, local);
            self.line.push('\n');
            return out.write_all(self.line.as_bytes());
        }
        writeln!(out, "{}", self.fmt.format(r, labels, local))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Dir, Outcome};
    use crate::sinks::labels::FixedNames;

    fn record() -> Record {
        Record {
            ifindex: 2,
            dir: Dir::Out,
            outcome: Outcome::Ok,
            client: "10.0.0.5".parse().expect("literal"),
            client_port: 51234,
            server: "93.184.216.34".parse().expect("literal"),
            server_port: 443,
            end_ns: 5_000_000_000,
            rtt_ns: Some(12_345_678),
            local_ns: None,
            total_ns: Some(12_400_000),
            retrans: 0,
            synack_retrans: None,
            cgroup_id: None,
            process: None,
            reason: None,
            reason_from: None,
        }
    }

    /// 2026-11-27T12:00:01.123456Z is 1795780801.123456 s after the epoch.
    fn clock() -> WallClock {
        WallClock::with_offset(1_795_780_801_123_456_000 - 5_000_000_000)
    }

    /// Interface names, and no cgroups.
    fn names() -> FixedNames {
        FixedNames {
            ifaces: [(2, "eth0".to_string()), (3, "wlan0".to_string())].into(),
            ..FixedNames::default()
        }
    }

    fn text() -> Formatter {
        Formatter::new(false, clock(), 5)
    }

    fn json() -> Formatter {
        Formatter::new(true, clock(), 5)
    }

    #[test]
    fn text_line_has_every_field_in_order() {
        let mut f = text().with_utc_offset(0);
        let line = f.format(&record(), &names(), Local::default());
        assert_eq!(
            line,
            "12:00:01.123456 eth0  out        10.0.0.5:51234 -> 93.184.216.34:443     ok          \
             rtt   12.345ms local          - total   12.400ms retrans 0 -"
        );
    }

    #[test]
    fn text_lines_align_across_records() {
        let mut f = text().with_utc_offset(3600);
        let mut r2 = record();
        r2.ifindex = 3;
        r2.outcome = Outcome::Timeout;
        r2.client = "10.1.2.3".parse().expect("literal");
        r2.rtt_ns = None;
        let (a, b) = (
            f.format(&record(), &names(), Local::default()),
            f.format(&r2, &names(), Local::default()),
        );
        assert!(a.starts_with("13:00:01.123456 "), "{a}");
        assert_eq!(a.find(" -> "), b.find(" -> "), "\n{a}\n{b}");
        assert_eq!(a.find(" rtt "), b.find(" rtt "), "\n{a}\n{b}");
    }

    #[test]
    fn inbound_lines_count_synack_retransmissions() {
        let mut f = text().with_utc_offset(0);
        let mut r = record();
        r.dir = Dir::In;
        r.local_ns = Some(50_000);
        r.synack_retrans = Some(2);
        let line = f.format(&r, &names(), Local::default());
        assert!(line.ends_with("retrans 0 synack-retrans 2 -"), "{line}");
        let json = json().format(&r, &names(), Local::default());
        assert!(
            json.contains("\"retrans\":0,\"synack_retrans\":2,"),
            "{json}"
        );
    }

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        let mut f = text().with_utc_offset(0);
        let mut r = record();
        r.server = "2001:db8::1".parse().expect("literal");
        r.server_port = 80;
        assert!(f
            .format(&r, &names(), Local::default())
            .contains("-> [2001:db8::1]:80 "));
    }

    #[test]
    fn json_line_has_the_documented_keys_and_nulls() {
        let line = json().format(&record(), &names(), Local::default());
        assert_eq!(
            line,
            "{\"type\":\"handshake\",\"ts\":\"2026-11-27T12:00:01.123456Z\",\"iface\":\"eth0\",\"dir\":\"out\",\
             \"result\":\"ok\",\"reason\":null,\"reason_from\":null,\"client_ip\":\"10.0.0.5\",\"client_port\":51234,\
             \"server_ip\":\"93.184.216.34\",\"server_port\":443,\"rtt_ns\":12345678,\
             \"local_ns\":null,\"total_ns\":12400000,\"retrans\":0,\"synack_retrans\":null,\
             \"pid\":null,\"comm\":null,\"cgroup_id\":null,\"cgroup\":null,\"workload\":null}"
        );
    }

    #[test]
    fn json_escapes_interface_names() {
        let mut n = names();
        n.ifaces.insert(2, "we\"ird\\".to_string());
        let line = json().format(&record(), &n, Local::default());
        assert!(line.contains("\"iface\":\"we\\\"ird\\\\\""), "{line}");
    }

    #[test]
    fn unknown_interfaces_are_named_by_index() {
        let mut r = record();
        r.ifindex = 42;
        assert!(json()
            .format(&r, &names(), Local::default())
            .contains("\"iface\":\"if42\""));
    }

    #[test]
    fn a_workload_ends_the_line_in_place_of_its_cgroup_and_is_a_json_key() {
        let mut r = record();
        r.cgroup_id = Some(4242);
        let local = Local {
            cgroup: Some("/kubepods.slice/kubepods-pod1.slice"),
            workload: Some("pod shop/web-7d9f"),
        };
        let line = text().with_utc_offset(0).format(&r, &names(), local);
        assert!(line.ends_with(" pod shop/web-7d9f"), "{line}");
        assert!(!line.contains("kubepods"), "{line}");
        let j = json().format(&r, &names(), local);
        assert!(
            j.ends_with(
                "\"cgroup\":\"/kubepods.slice/kubepods-pod1.slice\",\"workload\":\"pod shop/web-7d9f\"}"
            ),
            "{j}"
        );
        // A name read from the host stays on one line.
        let odd = Local {
            cgroup: None,
            workload: Some("container a\nb"),
        };
        let line = text().format(&r, &names(), odd);
        assert!(line.ends_with(" container a\\012b"), "{line}");
    }

    #[test]
    fn the_cgroup_ends_the_line_and_is_in_json_whole() {
        let mut r = record();
        r.cgroup_id = Some(4242);
        let path = "/system.slice/nginx.service";
        let line = text().with_utc_offset(0).format(
            &r,
            &names(),
            Local {
                cgroup: Some(path),
                workload: None,
            },
        );
        assert!(line.ends_with(" /system.slice/nginx.service"), "{line}");
        let j = json().format(
            &r,
            &names(),
            Local {
                cgroup: Some(path),
                workload: None,
            },
        );
        assert!(
            j.ends_with(
                "\"cgroup_id\":4242,\"cgroup\":\"/system.slice/nginx.service\",\"workload\":null}"
            ),
            "{j}"
        );
        // Known by id only: a cgroup that was gone before it could be named.
        let line = text()
            .with_utc_offset(0)
            .format(&r, &names(), Local::default());
        assert!(line.ends_with(" cgroup#4242"), "{line}");
        let j = json().format(&r, &names(), Local::default());
        assert!(
            j.ends_with("\"cgroup_id\":4242,\"cgroup\":null,\"workload\":null}"),
            "{j}"
        );
    }

    #[test]
    fn the_process_shows_as_comm_pid_before_the_cgroup() {
        let mut r = record();
        r.cgroup_id = Some(4242);
        r.process = Some(crate::probe::Process {
            pid: 3141,
            comm: crate::probe::Comm::new("nginx \"w\""),
        });
        let path = "/system.slice/nginx.service";
        let local = Local {
            cgroup: Some(path),
            workload: None,
        };
        let line = text().with_utc_offset(0).format(&r, &names(), local);
        assert!(
            line.ends_with(" nginx \"w\"[3141] /system.slice/nginx.service"),
            "{line}"
        );
        let j = json().format(&r, &names(), local);
        assert!(
            j.contains(",\"pid\":3141,\"comm\":\"nginx \\\"w\\\"\",\"cgroup_id\":4242,"),
            "{j}"
        );
        // No process: nothing in text, nulls in JSON.
        r.process = None;
        let line = text().with_utc_offset(0).format(&r, &names(), local);
        assert!(line.contains(" retrans 0 /system.slice"), "{line}");
    }

    #[test]
    fn failures_say_why_and_who_in_both_formats() {
        let mut r = record();
        r.outcome = crate::probe::Outcome::Unreachable;
        r.reason = crate::probe::Reason::from_code(29);
        r.reason_from = Some("192.0.2.1".parse().expect("literal"));
        let line = text()
            .with_utc_offset(0)
            .format(&r, &names(), Local::default());
        assert!(
            line.contains(" unreachable rtt ")
                && line.ends_with("retrans 0 reason admin-prohibited from 192.0.2.1 -"),
            "{line}"
        );
        let line = json().format(&r, &names(), Local::default());
        assert!(
            line.contains(
                r#""result":"unreachable","reason":"admin-prohibited","reason_from":"192.0.2.1","#
            ),
            "{line}"
        );
    }
}
