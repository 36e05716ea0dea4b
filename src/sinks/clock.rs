//! Time as records and tables show it: the kernel's monotonic timestamps
//! turned into wall-clock time, RFC 3339 and the local time of day.

use nix::time::{clock_gettime, ClockId};

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

/// [`rfc3339`] for a stream of timestamps: the text up to the second is
/// made once per second, not once per record.
#[derive(Debug, Default, Clone)]
pub struct Rfc3339 {
    /// The second of `head`, and `head`: `2026-11-27T01:02:03.`.
    second: Option<i64>,
    head: String,
}

impl Rfc3339 {
    /// Appends what [`rfc3339`] returns for `unix_ns`.
    pub fn rfc3339_into(&mut self, out: &mut String, unix_ns: i128) {
        let Ok(ns) = i64::try_from(unix_ns) else {
            out.push_str(&rfc3339(unix_ns));
            return;
        };
        let micros = ns.div_euclid(1_000);
        let secs = micros.div_euclid(1_000_000);
        if self.second != Some(secs) {
            let whole = rfc3339(unix_ns);
            self.head.clear();
            // `…SS.` of `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`.
            self.head.push_str(&whole[..whole.len() - 7]);
            self.second = Some(secs);
        }
        out.push_str(&self.head);
        let us = micros.rem_euclid(1_000_000) as u32;
        let mut digits = [b'0'; 6];
        let mut n = us;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend(digits.iter().map(|&d| char::from(d)));
        out.push('Z');
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_stream_of_timestamps_reads_as_each_alone() {
        let mut ts = Rfc3339::default();
        for ns in [
            0,
            999,
            1_000,
            999_999_999,
            1_000_000_000,
            951_782_400_000_000_000,
            951_782_400_123_456_789,
            951_782_399_999_999_999,
            -1_000,
            -1_000_000_001,
            i128::from(i64::MAX) + 5_000,
        ] {
            let mut s = String::new();
            ts.rfc3339_into(&mut s, ns);
            assert_eq!(s, rfc3339(ns), "{ns}");
        }
    }
}
