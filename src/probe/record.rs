//! The record of one handshake attempt and the measurement contract: how a
//! record's timestamps become `rtt`, `local` and `total`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::abi::{
    Event, DIR_IN, DIR_OUT, REASONS, REASON_CLIENT_RESET, REASON_NEW_ISN, REASON_NO_ACK,
    REASON_NO_ANSWER, REASON_RST, RESULT_ABANDONED, RESULT_OK, RESULT_REFUSED, RESULT_TIMEOUT,
    RESULT_UNREACHABLE,
};

/// `FLOWLAT_DIR_*`: which side of the interface the client is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// The client is on this side: its SYN leaves through the interface.
    Out,
    /// The client is beyond the interface: its SYN arrives.
    In,
}

/// `FLOWLAT_RESULT_*`: how an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The handshake completed.
    Ok,
    /// The server answered the SYN with a RST, or an ICMP port or protocol
    /// unreachable came back (what connect() reports as ECONNREFUSED).
    Refused,
    /// No answer within `--syn-timeout` of the first SYN.
    Timeout,
    /// The client gave up: a SYN with a new ISN on the same tuple before any
    /// answer, or its RST in answer to our SYN-ACK.
    Abandoned,
    /// An ICMP or ICMPv6 error other than port or protocol unreachable came
    /// back for the SYN: no route, a firewall's rejection, a host down, a loop.
    Unreachable,
}

impl Outcome {
    /// Every result, in the order of [`Outcome::index`].
    pub const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Refused,
        Outcome::Timeout,
        Outcome::Abandoned,
        Outcome::Unreachable,
    ];

    /// Its `FLOWLAT_RESULT_*` code: where aggregates count it
    /// ([`crate::probe::AggValue::results`]).
    pub fn index(self) -> usize {
        usize::from(match self {
            Outcome::Ok => RESULT_OK,
            Outcome::Refused => RESULT_REFUSED,
            Outcome::Timeout => RESULT_TIMEOUT,
            Outcome::Abandoned => RESULT_ABANDONED,
            Outcome::Unreachable => RESULT_UNREACHABLE,
        })
    }

    /// The word used in both output formats.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
            Outcome::Abandoned => "abandoned",
            Outcome::Unreachable => "unreachable",
        }
    }
}

/// The names of `FLOWLAT_REASON_*`, by code: ICMP's in lower case with
/// hyphens, as firewalls name them (`reject with icmp type ...`).
const REASON_NAMES: [&str; REASONS] = [
    "",
    "rst",
    "new-isn",
    "client-reset",
    "no-answer",
    "no-ack",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    // ICMP destination unreachable (type 3), codes 0 to 15.
    "net-unreachable",
    "host-unreachable",
    "protocol-unreachable",
    "port-unreachable",
    "frag-needed",
    "source-route-failed",
    "net-unknown",
    "host-unknown",
    "host-isolated",
    "net-prohibited",
    "host-prohibited",
    "net-tos-unreachable",
    "host-tos-unreachable",
    "admin-prohibited",
    "host-precedence-violation",
    "precedence-cutoff",
    // Time exceeded (ICMP type 11, ICMPv6 type 3), codes 0 and 1.
    "ttl-exceeded",
    "reassembly-time-exceeded",
    "",
    "",
    "",
    "",
    "",
    "",
    // ICMPv6 destination unreachable (type 1), codes 0 to 7.
    "no-route",
    "admin-prohibited",
    "beyond-scope",
    "address-unreachable",
    "port-unreachable",
    "source-policy",
    "reject-route",
    "source-route-error",
];

/// Why an attempt that did not complete ended (`FLOWLAT_REASON_*`): a RST,
/// the client giving up, no answer, or an ICMP error by its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reason(u8);

impl Reason {
    /// Refused by a RST.
    pub const RST: Reason = Reason(REASON_RST);
    /// Abandoned: a SYN with a new ISN on the same tuple.
    pub const NEW_ISN: Reason = Reason(REASON_NEW_ISN);
    /// Abandoned: the client reset our SYN-ACK.
    pub const CLIENT_RESET: Reason = Reason(REASON_CLIENT_RESET);
    /// Timed out with no SYN-ACK.
    pub const NO_ANSWER: Reason = Reason(REASON_NO_ANSWER);
    /// `in`, timed out: our SYN-ACK left and no ACK came.
    pub const NO_ACK: Reason = Reason(REASON_NO_ACK);

    /// The reason of a code, `None` for `FLOWLAT_REASON_NONE` and codes with no name.
    pub fn from_code(code: u8) -> Option<Reason> {
        REASON_NAMES
            .get(usize::from(code))
            .filter(|n| !n.is_empty())
            .map(|_| Reason(code))
    }

    /// Its `FLOWLAT_REASON_*` code.
    pub fn code(self) -> u8 {
        self.0
    }

    /// Its name in both output formats and the metrics.
    pub fn as_str(self) -> &'static str {
        REASON_NAMES.get(usize::from(self.0)).copied().unwrap_or("")
    }

    /// Every named reason, once per name (the same ICMP name of IPv4 and
    /// IPv6 is one reason to a reader).
    #[cfg(test)]
    pub fn names() -> impl Iterator<Item = &'static str> {
        let mut seen: Vec<&'static str> = Vec::new();
        REASON_NAMES.iter().copied().filter(move |n| {
            if n.is_empty() || seen.contains(n) {
                return false;
            }
            seen.push(n);
            true
        })
    }
}

impl Dir {
    /// The direction of a `FLOWLAT_DIR_*` code, `None` for another number.
    pub(crate) fn from_code(code: u8) -> Option<Dir> {
        match code {
            DIR_OUT => Some(Dir::Out),
            DIR_IN => Some(Dir::In),
            _ => None,
        }
    }

    /// The word used in both output formats.
    pub fn as_str(self) -> &'static str {
        match self {
            Dir::Out => "out",
            Dir::In => "in",
        }
    }
}

/// A handshake attempt as flowlat reports it; the contract's arithmetic is in
/// [`Record::from_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub ifindex: u32,
    pub dir: Dir,
    pub outcome: Outcome,
    pub client: IpAddr,
    pub client_port: u16,
    pub server: IpAddr,
    pub server_port: u16,
    /// `CLOCK_MONOTONIC` time at which the attempt ended (or timed out).
    pub end_ns: u64,
    pub rtt_ns: Option<u64>,
    pub local_ns: Option<u64>,
    pub total_ns: Option<u64>,
    /// Client SYNs beyond the first.
    pub retrans: u32,
    /// `in`: this side's SYN-ACKs beyond the first; `None` for `out`.
    pub synack_retrans: Option<u32>,
    /// The cgroup v2 id of the local socket: `out`, the connecting socket's
    /// (from its SYN); `in`, the listener's (from our first SYN-ACK). `None`
    /// when the attempt had no local socket (a RST the kernel sent for a closed
    /// port, forwarded traffic, SYN cookies) or none was seen (an `in` attempt
    /// that ended before our SYN-ACK).
    pub cgroup_id: Option<u64>,
    /// The process behind the local socket: `out`, the one that called
    /// connect(); `in`, the one that made the listener. `None` where there
    /// is no local process or it was not known (see docs/measurement.md).
    pub process: Option<Process>,
    /// Why it did not complete; `None` for `ok`.
    pub reason: Option<Reason>,
    /// Who sent what ended it: the server's RST, a router's or the server's
    /// ICMP error, the client's new SYN or RST; `None` for `ok` and timeouts.
    pub reason_from: Option<IpAddr>,
}

/// A process's name as the kernel has it (`comm`): at most 15 bytes,
/// NUL-padded, kept inline so that a record needs no allocation for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Comm([u8; 16]);

impl Comm {
    /// The kernel's 16 bytes (a name of 15 bytes at most, then NULs).
    pub fn from_kernel(bytes: [u8; 16]) -> Comm {
        let mut b = bytes;
        // A name fills at most 15 bytes; whatever follows its NUL is not part of it.
        let end = b.iter().position(|&c| c == 0).unwrap_or(15).min(15);
        b[end..].fill(0);
        Comm(b)
    }

    /// A name as given (`/proc/PID/comm`, `--comm`), cut to the kernel's 15
    /// bytes, as the kernel cuts the names it keeps.
    pub fn new(name: &str) -> Comm {
        let mut b = [0u8; 16];
        let n = name.len().min(15);
        b[..n].copy_from_slice(&name.as_bytes()[..n]);
        Comm(b)
    }

    /// The bytes as the kernel compares them: the name, then NULs.
    pub fn bytes(&self) -> [u8; 16] {
        self.0
    }

    /// The name; bytes that are not UTF-8 are shown as U+FFFD.
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        let end = self.0.iter().position(|&c| c == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.0[..end])
    }

    /// The name for a line of text: a process may name itself with any
    /// bytes (`prctl(PR_SET_NAME)`), and a control character, a newline
    /// above all, must not break the line, so each shows as `?`.
    pub fn text(&self) -> String {
        self.as_str()
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    }
}

/// The process behind an attempt's local socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Process {
    /// Its process id (thread group id), as the initial PID namespace numbers it.
    pub pid: u32,
    /// Its name when it made the socket's call (connect(), bind()).
    pub comm: Comm,
}

pub(crate) fn addr(family: u8, a: &[u8; 16]) -> Option<IpAddr> {
    match family {
        4 => Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(*a))),
        _ => None,
    }
}

impl Record {
    /// Applies the measurement contract to a record. `None` when the record is
    /// malformed (unknown family, direction or result), which the caller counts.
    pub fn from_event(ev: &Event) -> Option<Record> {
        let k = &ev.key;
        let p = &ev.p;
        let dir = Dir::from_code(k.dir)?;
        let outcome = match ev.result {
            RESULT_OK => Outcome::Ok,
            RESULT_REFUSED => Outcome::Refused,
            RESULT_TIMEOUT => Outcome::Timeout,
            RESULT_ABANDONED => Outcome::Abandoned,
            RESULT_UNREACHABLE => Outcome::Unreachable,
            _ => return None,
        };
        let reason = match outcome {
            Outcome::Ok => None,
            _ => Reason::from_code(ev.reason),
        };
        let since = |t: u64| ev.end_ns.checked_sub(t);
        let (rtt_ns, local_ns, total_ns) = match (dir, outcome) {
            // The SYN-ACK, RST or ICMP error arrived: the network beyond
            // answered in end - last SYN.
            (Dir::Out, Outcome::Ok | Outcome::Refused | Outcome::Unreachable) => {
                (since(p.last_syn_ns), None, since(p.first_syn_ns))
            }
            // The client's ACK arrived: one round trip to the client after our last SYN-ACK.
            (Dir::In, Outcome::Ok) => (
                since(p.last_synack_ns),
                p.first_synack_ns.checked_sub(p.last_syn_ns),
                since(p.first_syn_ns),
            ),
            // This side refused or rejected: how long it took to say no.
            (Dir::In, Outcome::Refused | Outcome::Unreachable) => {
                (None, since(p.last_syn_ns), since(p.first_syn_ns))
            }
            // The client reset our SYN-ACK: its RST came a round trip after it.
            (Dir::In, Outcome::Abandoned) if reason == Some(Reason::CLIENT_RESET) => (
                since(p.last_synack_ns),
                p.first_synack_ns.checked_sub(p.last_syn_ns),
                since(p.first_syn_ns),
            ),
            // An "in" attempt that got as far as our SYN-ACK still tells how fast we answered.
            (Dir::In, Outcome::Timeout | Outcome::Abandoned) if p.synacks > 0 => {
                (None, p.first_synack_ns.checked_sub(p.last_syn_ns), None)
            }
            _ => (None, None, None),
        };
        let client = addr(k.family, &k.client)?;
        let server = addr(k.family, &k.server)?;
        let reason_from = match reason {
            Some(Reason::RST) => Some(server),
            Some(Reason::NEW_ISN | Reason::CLIENT_RESET) => Some(client),
            Some(Reason::NO_ANSWER | Reason::NO_ACK) | None => None,
            Some(_) => Some(addr(k.family, &ev.icmp_from())?),
        };
        Some(Record {
            ifindex: k.ifindex,
            dir,
            outcome,
            client,
            client_port: u16::from_be(k.client_port),
            server,
            server_port: u16::from_be(k.server_port),
            end_ns: ev.end_ns,
            rtt_ns,
            local_ns,
            total_ns,
            retrans: u32::from(p.syns.saturating_sub(1)),
            synack_retrans: match dir {
                Dir::In => Some(u32::from(p.synacks.saturating_sub(1))),
                Dir::Out => None,
            },
            cgroup_id: (p.cgroup_id != 0).then_some(p.cgroup_id),
            process: (p.proc.pid != 0).then(|| Process {
                pid: p.proc.pid,
                comm: Comm::from_kernel(p.proc.comm),
            }),
            reason,
            reason_from,
        })
    }
}
