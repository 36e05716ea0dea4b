//! Packets as an administrator would capture them to check flowlat by hand:
//! `tcpdump -w` on an interface in a namespace, the file read back with
//! `tshark -r -T fields`. Nothing here knows how flowlat classifies.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::net::NetNs;

/// TCP flags as they are on the wire.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// tcpdump writing what crosses `dev` (in and out) to a file; killed on drop
/// if still running.
pub struct Capture {
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
    path: PathBuf,
}

/// A capture that ended, and what tcpdump said of it.
#[derive(Debug)]
pub struct Captured {
    pub path: PathBuf,
    /// "N packets captured".
    pub captured: u64,
    /// "N packets dropped by kernel": packets the capture missed.
    pub dropped: u64,
    pub stderr: String,
}

impl Capture {
    /// Starts `tcpdump -B 65536 -s 96 -w PATH -i DEV FILTER` in `ns` (96 bytes
    /// hold the Ethernet, IPv6 and TCP headers), and waits until it captures.
    pub fn start(ns: &NetNs, dev: &str, path: &Path, filter: &str) -> Capture {
        let path_s = path.to_string_lossy().into_owned();
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", ns.name))
            .args(["tcpdump", "-n", "-B", "65536", "-s", "96", "-Z", "root"])
            .args(["-i", dev, "-w", &path_s, filter])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcpdump (scripts/test.sh installs it)");
        let stderr = crate::collect_text(child.stderr.take().expect("piped"));
        let c = Capture {
            child: Some(child),
            stderr,
            path: path.to_path_buf(),
        };
        let end = Instant::now() + Duration::from_secs(10);
        while !c.said().contains("listening on") {
            assert!(
                Instant::now() < end,
                "tcpdump did not start capturing on {dev}: {}",
                c.said()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        c
    }

    fn said(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// Stops it (SIGINT: it writes the rest of its buffer and its counts) and
    /// waits for its exit.
    pub fn stop(mut self) -> Captured {
        let mut child = self.child.take().expect("running");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let status = crate::exit_within(&mut child, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("tcpdump did not stop within 10 s: {}", self.said()));
        // Its counts come last, as it exits: let the reader see them.
        let end = Instant::now() + Duration::from_secs(2);
        while !self.said().contains("dropped by kernel") && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        let stderr = self.said();
        assert!(status.success(), "tcpdump failed: {status:?}\n{stderr}");
        let count = |what: &str| {
            stderr
                .lines()
                .find(|l| l.ends_with(what))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no `{what}` count from tcpdump: {stderr}"))
        };
        Captured {
            path: self.path.clone(),
            captured: count("packets captured"),
            dropped: count("packets dropped by kernel"),
            stderr,
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One captured TCP segment: its timestamp (ns since the epoch, as the
/// capture stamped it), ends, flags and raw (absolute) numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub t_ns: u64,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
}

impl Segment {
    /// Whether exactly the flags in `set` of those in `mask` are on.
    pub fn is(&self, mask: u8, set: u8) -> bool {
        self.flags & mask == set
    }
}

/// Every TCP segment of a capture file, in the file's order, read with
/// `tshark -r FILE -T fields` (absolute sequence numbers, no name lookups).
pub fn tcp_segments(path: &Path) -> Vec<Segment> {
    let out = Command::new("tshark")
        .arg("-n")
        .arg("-r")
        .arg(path)
        .args(["-Y", "tcp", "-T", "fields"])
        .args(["-e", "frame.time_epoch", "-e", "ip.src", "-e", "ipv6.src"])
        .args(["-e", "tcp.srcport", "-e", "ip.dst", "-e", "ipv6.dst"])
        .args(["-e", "tcp.dstport", "-e", "tcp.flags"])
        .args(["-e", "tcp.seq_raw", "-e", "tcp.ack_raw"])
        .output()
        .expect("run tshark (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "tshark -r {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| parse_fields(line).unwrap_or_else(|| panic!("tshark wrote {line:?}")))
        .collect()
}

/// One line of the fields above: tab-separated, the address of the family the
/// packet does not have left empty.
fn parse_fields(line: &str) -> Option<Segment> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() != 10 {
        return None;
    }
    let addr = |v4: &str, v6: &str| -> Option<IpAddr> {
        // A packet in an ICMP error has two IP headers: the first is its own.
        let a = if v4.is_empty() { v6 } else { v4 };
        a.split(',').next()?.parse().ok()
    };
    let first = |s: &str| s.split(',').next().map(str::to_string);
    let (secs, frac) = f[0].split_once('.')?;
    let frac = format!("{frac:0<9}");
    let t_ns = secs.parse::<u64>().ok()? * 1_000_000_000 + frac.get(..9)?.parse::<u64>().ok()?;
    let flags = u16::from_str_radix(first(f[7])?.trim_start_matches("0x"), 16).ok()?;
    Some(Segment {
        t_ns,
        src: addr(f[1], f[2])?,
        sport: first(f[3])?.parse().ok()?,
        dst: addr(f[4], f[5])?,
        dport: first(f[6])?.parse().ok()?,
        flags: flags as u8,
        seq: first(f[8])?.parse().ok()?,
        ack: first(f[9])?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_both_families_parse() {
        let s = parse_fields(
            "1796618573.033780000\t10.77.0.2\t\t80\t10.77.0.1\t\t47496\t0x0012\t1649052574\t4271917689",
        )
        .expect("v4");
        assert_eq!(s.t_ns, 1_796_618_573_033_780_000);
        assert_eq!((s.sport, s.dport, s.flags), (80, 47496, SYN | ACK));
        assert_eq!((s.seq, s.ack), (1_649_052_574, 4_271_917_689));
        assert_eq!(s.src, "10.77.0.2".parse::<IpAddr>().expect("literal"));
        let s = parse_fields("1.5\t\tfd00::1\t1\t\tfd00::2\t80\t0x0004\t7\t0").expect("v6");
        assert_eq!(s.t_ns, 1_500_000_000);
        assert!(s.is(SYN | ACK | RST, RST));
        assert_eq!(s.dst, "fd00::2".parse::<IpAddr>().expect("literal"));
        assert!(parse_fields("garbage").is_none());
    }
}
