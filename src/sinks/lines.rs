//! Formats records as text lines or JSON lines. Printing is `main`'s job.

use std::fmt::Write as _;

use nix::time::{clock_gettime, ClockId};

use crate::probe::Record;
use crate::sinks::labels::Labels;

/// Converts the kernel's `CLOCK_MONOTONIC` timestamps (`bpf_ktime_get_ns`) to
/// wall-clock time, by the offset between the two clocks measured once.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    offset_ns: i128,
}

fn ns(clock: ClockId) -> i128 {
    clock_gettime(clock).map_or(0, |t| {
        i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())
    })
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    u64::try_from(ns(ClockId::CLOCK_MONOTONIC)).unwrap_or(0)
}

impl WallClock {
    /// Measures the offset now.
    pub fn now() -> WallClock {
        let mono = ns(ClockId::CLOCK_MONOTONIC);
        let real = ns(ClockId::CLOCK_REALTIME);
        WallClock {
            offset_ns: real - mono,
        }
    }

    /// A clock with a given offset (tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn with_offset(offset_ns: i128) -> WallClock {
        WallClock { offset_ns }
    }

    /// Unix time in nanoseconds of a monotonic timestamp.
    pub fn unix_ns(&self, mono_ns: u64) -> i128 {
        i128::from(mono_ns) + self.offset_ns
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// RFC 3339, UTC, microseconds: `2026-11-27T01:02:03.123456Z`.
pub fn rfc3339(unix_ns: i128) -> String {
    let micros = unix_ns.div_euclid(1_000);
    let secs = micros.div_euclid(1_000_000) as i64;
    let us = micros.rem_euclid(1_000_000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{us:06}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Seconds east of UTC for the local time zone at `secs`, from the C library
/// (which reads TZ and /etc/localtime on glibc and musl alike); 0 if unknown.
pub fn local_utc_offset(secs: i64) -> i64 {
    // `time_t` by inference: naming it warns on musl, where the libc crate
    // flags the type for a 32-bit-target change; on x86_64 it is i64 on both.
    let t = secs as _;
    // SAFETY: an all-zero `tm` is a valid value to be overwritten.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers refer to live locals; localtime_r is the thread-safe variant.
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if ok {
        tm.tm_gmtoff as i64
    } else {
        0
    }
}

/// Local time of day with microseconds: `12:00:01.123456`.
pub fn time_of_day(unix_ns: i128, utc_offset_s: i64) -> String {
    let micros = unix_ns.div_euclid(1_000) + i128::from(utc_offset_s) * 1_000_000;
    let secs = micros.div_euclid(1_000_000) as i64;
    let sod = secs.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        micros.rem_euclid(1_000_000)
    )
}

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

/// Appends `s` to `out` as a JSON string literal (quotes, backslashes and
/// control characters escaped).
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_opt(v: Option<u64>) -> String {
    v.map_or_else(|| "null".to_string(), |n| n.to_string())
}

/// Turns records into lines (without the newline).
pub struct Formatter {
    json: bool,
    clock: WallClock,
    name_width: usize,
    utc_offset_s: Option<i64>,
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
        }
    }

    /// Uses a fixed UTC offset for text output instead of the local zone (tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn with_utc_offset(mut self, secs: i64) -> Formatter {
        self.utc_offset_s = Some(secs);
        self
    }

    /// One line for one record; `cgroup` is the path of its cgroup, when known.
    pub fn format(&mut self, r: &Record, labels: &dyn Labels, cgroup: Option<&str>) -> String {
        let unix = self.clock.unix_ns(r.end_ns);
        let iface = labels.iface(r.ifindex);
        // A renamed interface may be longer than the names at start.
        self.name_width = self.name_width.max(iface.len());
        if self.json {
            let mut s = String::with_capacity(384);
            s.push_str("{\"type\":\"handshake\",\"ts\":\"");
            s.push_str(&rfc3339(unix));
            s.push_str("\",\"iface\":");
            json_str(&mut s, &iface);
            let _ = write!(
                s,
                ",\"dir\":\"{}\",\"result\":\"{}\",\"client_ip\":\"{}\",\"client_port\":{},\
                 \"server_ip\":\"{}\",\"server_port\":{},\"rtt_ns\":{},\"local_ns\":{},\
                 \"total_ns\":{},\"retrans\":{},\"synack_retrans\":{},\"cgroup_id\":{},\"cgroup\":",
                r.dir.as_str(),
                r.outcome.as_str(),
                r.client,
                r.client_port,
                r.server,
                r.server_port,
                json_opt(r.rtt_ns),
                json_opt(r.local_ns),
                json_opt(r.total_ns),
                r.retrans,
                json_opt(r.synack_retrans.map(u64::from)),
                json_opt(r.cgroup_id),
            );
            match cgroup {
                Some(c) => json_str(&mut s, c),
                None => s.push_str("null"),
            }
            s.push('}');
            s
        } else {
            let offset = self
                .utc_offset_s
                .unwrap_or_else(|| local_utc_offset((unix / 1_000_000_000) as i64));
            let synack = match r.synack_retrans {
                Some(n) => format!(" synack-retrans {n}"),
                None => String::new(),
            };
            // The cgroup comes last: it is the one field of unbounded width.
            let cg = match (cgroup, r.cgroup_id) {
                (Some(path), _) => crate::host::cgroup::shorten(path),
                (None, Some(id)) => format!("cgroup#{id}"),
                (None, None) => "-".to_string(),
            };
            format!(
                "{} {:<nw$} {:<3} {:>21} -> {:<21} {:<9} rtt {:>10} local {:>10} total {:>10} retrans {}{} {}",
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
                cg,
                nw = self.name_width
            )
        }
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
        let line = f.format(&record(), &names(), None);
        assert_eq!(
            line,
            "12:00:01.123456 eth0  out        10.0.0.5:51234 -> 93.184.216.34:443     ok        \
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
            f.format(&record(), &names(), None),
            f.format(&r2, &names(), None),
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
        let line = f.format(&r, &names(), None);
        assert!(line.ends_with("retrans 0 synack-retrans 2 -"), "{line}");
        let json = json().format(&r, &names(), None);
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
            .format(&r, &names(), None)
            .contains("-> [2001:db8::1]:80 "));
    }

    #[test]
    fn json_line_has_the_documented_keys_and_nulls() {
        let line = json().format(&record(), &names(), None);
        assert_eq!(
            line,
            "{\"type\":\"handshake\",\"ts\":\"2026-11-27T12:00:01.123456Z\",\"iface\":\"eth0\",\"dir\":\"out\",\
             \"result\":\"ok\",\"client_ip\":\"10.0.0.5\",\"client_port\":51234,\
             \"server_ip\":\"93.184.216.34\",\"server_port\":443,\"rtt_ns\":12345678,\
             \"local_ns\":null,\"total_ns\":12400000,\"retrans\":0,\"synack_retrans\":null,\
             \"cgroup_id\":null,\"cgroup\":null}"
        );
    }

    #[test]
    fn json_escapes_interface_names() {
        let mut n = names();
        n.ifaces.insert(2, "we\"ird\\".to_string());
        let line = json().format(&record(), &n, None);
        assert!(line.contains("\"iface\":\"we\\\"ird\\\\\""), "{line}");
    }

    #[test]
    fn rfc3339_handles_epoch_leap_years_and_negative_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(rfc3339(-1_000), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn unknown_interfaces_are_named_by_index() {
        let mut r = record();
        r.ifindex = 42;
        assert!(json()
            .format(&r, &names(), None)
            .contains("\"iface\":\"if42\""));
    }

    #[test]
    fn the_cgroup_ends_the_line_and_is_in_json_whole() {
        let mut r = record();
        r.cgroup_id = Some(4242);
        let path = "/system.slice/nginx.service";
        let line = text().with_utc_offset(0).format(&r, &names(), Some(path));
        assert!(line.ends_with(" /system.slice/nginx.service"), "{line}");
        let j = json().format(&r, &names(), Some(path));
        assert!(
            j.ends_with("\"cgroup_id\":4242,\"cgroup\":\"/system.slice/nginx.service\"}"),
            "{j}"
        );
        // Known by id only: a cgroup that was gone before it could be named.
        let line = text().with_utc_offset(0).format(&r, &names(), None);
        assert!(line.ends_with(" cgroup#4242"), "{line}");
        let j = json().format(&r, &names(), None);
        assert!(j.ends_with("\"cgroup_id\":4242,\"cgroup\":null}"), "{j}");
    }
}
