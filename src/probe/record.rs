//! The record of one handshake attempt and the measurement contract: how a
//! record's timestamps become `rtt`, `local` and `total`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::abi::{
    Event, DIR_IN, DIR_OUT, RESULT_ABANDONED, RESULT_OK, RESULT_REFUSED, RESULT_TIMEOUT,
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
    /// The server answered the SYN with a RST.
    Refused,
    /// No answer within `--syn-timeout` of the first SYN.
    Timeout,
    /// The client sent a SYN with a new ISN on the same tuple before any answer.
    Abandoned,
}

impl Outcome {
    /// Every result, in the order of [`Outcome::index`].
    pub const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::Refused,
        Outcome::Timeout,
        Outcome::Abandoned,
    ];

    /// Its `FLOWLAT_RESULT_*` code: where aggregates count it
    /// ([`crate::probe::AggValue::results`]).
    pub fn index(self) -> usize {
        usize::from(match self {
            Outcome::Ok => RESULT_OK,
            Outcome::Refused => RESULT_REFUSED,
            Outcome::Timeout => RESULT_TIMEOUT,
            Outcome::Abandoned => RESULT_ABANDONED,
        })
    }

    /// The word used in both output formats.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
            Outcome::Abandoned => "abandoned",
        }
    }
}

impl Dir {
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
        let dir = match k.dir {
            DIR_OUT => Dir::Out,
            DIR_IN => Dir::In,
            _ => return None,
        };
        let outcome = match ev.result {
            RESULT_OK => Outcome::Ok,
            RESULT_REFUSED => Outcome::Refused,
            RESULT_TIMEOUT => Outcome::Timeout,
            RESULT_ABANDONED => Outcome::Abandoned,
            _ => return None,
        };
        let since = |t: u64| ev.end_ns.checked_sub(t);
        let (rtt_ns, local_ns, total_ns) = match (dir, outcome) {
            // The SYN-ACK or RST arrived: the network beyond answered in end - last SYN.
            (Dir::Out, Outcome::Ok | Outcome::Refused) => {
                (since(p.last_syn_ns), None, since(p.first_syn_ns))
            }
            // The client's ACK arrived: one round trip to the client after our last SYN-ACK.
            (Dir::In, Outcome::Ok) => (
                since(p.last_synack_ns),
                p.first_synack_ns.checked_sub(p.last_syn_ns),
                since(p.first_syn_ns),
            ),
            // This side refused: how long it took to say no.
            (Dir::In, Outcome::Refused) => (None, since(p.last_syn_ns), since(p.first_syn_ns)),
            // An "in" attempt that got as far as our SYN-ACK still tells how fast we answered.
            (Dir::In, Outcome::Timeout | Outcome::Abandoned) if p.synacks > 0 => {
                (None, p.first_synack_ns.checked_sub(p.last_syn_ns), None)
            }
            _ => (None, None, None),
        };
        Some(Record {
            ifindex: k.ifindex,
            dir,
            outcome,
            client: addr(k.family, &k.client)?,
            client_port: u16::from_be(k.client_port),
            server: addr(k.family, &k.server)?,
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
        })
    }
}
