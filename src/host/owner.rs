//! Whose filters are these? flowlat names each filter after the process that
//! attached it, so that a later flowlat can tell the filters of a running
//! flowlat, which it never touches, from those a flowlat that died (`kill -9`,
//! a crash, a power cut of the process) left behind, which it removes.
//!
//! A name is `flowlat-PID-START-PIDNS`, plus `+clsact` when that flowlat may
//! delete the clsact qdisc once it is empty (it created it, or took it over
//! from the flowlat that did). START is the process's start time (field 22 of
//! `/proc/PID/stat`), so a PID reused by another process is not mistaken for
//! the owner; PIDNS is the inode of its PID namespace, since a PID means
//! nothing in another one, and filters of a flowlat in another PID namespace
//! (another container on the same network namespace) are left alone.

use std::fmt;
use std::io;

use rtnetlink::Handle;

use crate::netlink::link::Link;
use crate::netlink::tc::{self, FilterInfo, Hook};
use crate::netlink::NetlinkError;

const PREFIX: &str = "flowlat-";
const QDISC_MARK: &str = "+clsact";

/// A flowlat process, as its filters name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    /// Its PID, in its own PID namespace.
    pub pid: u32,
    /// Its start time in clock ticks after boot (field 22 of `/proc/PID/stat`).
    pub start: u64,
    /// The inode of its PID namespace.
    pub pidns: u64,
}

impl Owner {
    /// This process, from `/proc/self`: the same `/proc` that will later be
    /// asked whether the owner still runs, so PIDs are always read in one
    /// namespace.
    pub fn current() -> Result<Owner, String> {
        let cannot = |what: &str, e: &dyn fmt::Display| {
            format!("cannot read {what}: {e}; flowlat names its filters after its process and needs /proc for that")
        };
        let stat = std::fs::read_to_string("/proc/self/stat")
            .map_err(|e| cannot("/proc/self/stat", &e))?;
        let (pid, start) =
            parse_stat(&stat).ok_or_else(|| cannot("/proc/self/stat", &"unexpected format"))?;
        let pidns = pidns_of("self").map_err(|e| cannot("/proc/self/ns/pid", &e))?;
        Ok(Owner { pid, start, pidns })
    }

    /// The `TCA_BPF_NAME` for this owner's filters.
    pub fn filter_name(&self, owns_qdisc: bool) -> String {
        let mark = if owns_qdisc { QDISC_MARK } else { "" };
        format!("{PREFIX}{}-{}-{}{mark}", self.pid, self.start, self.pidns)
    }

    /// The owner named by a filter name, and whether it owns the qdisc;
    /// `None` for a name that is not of this form.
    pub fn parse(name: &str) -> Option<(Owner, bool)> {
        let rest = name.strip_prefix(PREFIX)?;
        let (rest, owns_qdisc) = match rest.strip_suffix(QDISC_MARK) {
            Some(r) => (r, true),
            None => (rest, false),
        };
        let mut parts = rest.split('-');
        let owner = Owner {
            pid: parts.next()?.parse().ok()?,
            start: parts.next()?.parse().ok()?,
            pidns: parts.next()?.parse().ok()?,
        };
        if parts.next().is_some() {
            return None;
        }
        Some((owner, owns_qdisc))
    }

    /// Whether this owner still runs, asked from `me`'s PID namespace.
    pub fn liveness(&self, me: &Owner) -> Liveness {
        if self.pidns != me.pidns {
            return Liveness::Unknown;
        }
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(stat) => match parse_stat(&stat) {
                Some((_, start)) if start == self.start => Liveness::Running,
                Some(_) => Liveness::Gone,
                None => Liveness::Unknown,
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Liveness::Gone,
            // ESRCH: the process exited while we read.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Liveness::Gone,
            Err(_) => Liveness::Unknown,
        }
    }
}

/// Whether the owner of a filter still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// A process with this PID and start time exists.
    Running,
    /// No process has this PID, or the one that has it started at another time.
    Gone,
    /// It cannot be told (another PID namespace, `/proc` unreadable): treated
    /// as running, so its filters are kept.
    Unknown,
}

/// PID (field 1) and start time (field 22) of a `/proc/PID/stat` line. The
/// command name (field 2) is in parentheses and may hold spaces and `)`, so
/// fields after it are counted from its last `)`.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let pid = stat.split_whitespace().next()?.parse().ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let start = rest.split_whitespace().nth(19)?.parse().ok()?;
    Some((pid, start))
}

/// The inode of `/proc/WHO/ns/pid`, which reads as `pid:[INODE]`.
fn pidns_of(who: &str) -> io::Result<u64> {
    let link = std::fs::read_link(format!("/proc/{who}/ns/pid"))?;
    link.to_str()
        .and_then(|s| s.strip_prefix("pid:["))
        .and_then(|s| s.strip_suffix(']'))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("{link:?}")))
}

/// A flowlat filter found on an interface.
#[derive(Debug, Clone)]
pub struct Found {
    /// The hook it is on.
    pub hook: Hook,
    /// The filter as listed.
    pub filter: FilterInfo,
    /// Whose it is.
    pub owner: Owner,
    /// Whether its owner may delete the clsact qdisc.
    pub owns_qdisc: bool,
    /// Whether its owner still runs.
    pub liveness: Liveness,
}

/// The flowlat filters on both hooks of `link` (none if it has no clsact).
/// Filters whose name only looks like ours are not included.
pub async fn scan(handle: &Handle, link: &Link, me: &Owner) -> Result<Vec<Found>, NetlinkError> {
    if !tc::has_clsact(handle, link.index).await? {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for hook in Hook::BOTH {
        for filter in tc::list_link_filters(handle, link, hook).await? {
            let Some((owner, owns_qdisc)) = filter.bpf_name.as_deref().and_then(Owner::parse)
            else {
                continue;
            };
            found.push(Found {
                hook,
                liveness: owner.liveness(me),
                filter,
                owner,
                owns_qdisc,
            });
        }
    }
    Ok(found)
}

/// What [`remove_left`] did on one interface, and what it left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// The interface.
    pub ifname: String,
    /// Filters removed, by owner (a flowlat no longer running), in PID order.
    pub removed: Vec<(Owner, usize)>,
    /// Whether the clsact qdisc was removed too (a dead owner had created it,
    /// and nothing else was left on it).
    pub removed_qdisc: bool,
    /// Filters kept because their owner still runs.
    pub running: Vec<(Owner, usize)>,
    /// Filters kept because whether their owner runs cannot be told.
    pub unknown: Vec<(Owner, usize)>,
}

impl Cleanup {
    /// What was removed, e.g. `2 filters of flowlat pid 812 and the clsact
    /// qdisc it created`; `None` if nothing was.
    pub fn describe_removed(&self) -> Option<String> {
        if self.removed.is_empty() {
            // Only a dead owner's filters make us delete a qdisc.
            return None;
        }
        let mut s = counts(&self.removed);
        if self.removed_qdisc {
            s.push_str(if self.removed.len() == 1 {
                " and the clsact qdisc it created"
            } else {
                " and the clsact qdisc one of them created"
            });
        }
        Some(s)
    }

    /// What was left alone and why, e.g. `2 filters of flowlat pid 77, which
    /// is still running`; `None` if nothing was.
    pub fn describe_kept(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.running.is_empty() {
            parts.push(format!(
                "{}, which {} still running",
                counts(&self.running),
                if self.running.len() == 1 { "is" } else { "are" }
            ));
        }
        if !self.unknown.is_empty() {
            parts.push(format!(
                "{}, in another PID namespace, so whether {} still running cannot be told",
                counts(&self.unknown),
                if self.unknown.len() == 1 {
                    "it is"
                } else {
                    "they are"
                }
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// `2 filters of pid 812`, `4 filters of pids 812, 900`.
fn counts(by_owner: &[(Owner, usize)]) -> String {
    let n: usize = by_owner.iter().map(|(_, n)| n).sum();
    let pids: Vec<String> = by_owner.iter().map(|(o, _)| o.pid.to_string()).collect();
    format!(
        "{n} filter{} of flowlat pid{} {}",
        if n == 1 { "" } else { "s" },
        if pids.len() == 1 { "" } else { "s" },
        pids.join(", ")
    )
}

fn tally(into: &mut Vec<(Owner, usize)>, owner: Owner) {
    match into.iter_mut().find(|(o, _)| *o == owner) {
        Some((_, n)) => *n += 1,
        None => {
            into.push((owner, 1));
            into.sort();
        }
    }
}

/// Removes from `link` the filters in `found` whose owner is gone, then the
/// clsact qdisc if one of those owners created it and nothing else is on it.
/// Filters of running owners, or of owners that cannot be checked, stay.
pub async fn remove_left(
    handle: &Handle,
    link: &Link,
    found: &[Found],
) -> Result<Cleanup, NetlinkError> {
    let mut cleanup = Cleanup {
        ifname: link.name.clone(),
        ..Cleanup::default()
    };
    let mut dead_owned_qdisc = false;
    for f in found {
        match f.liveness {
            Liveness::Running => tally(&mut cleanup.running, f.owner),
            Liveness::Unknown => tally(&mut cleanup.unknown, f.owner),
            Liveness::Gone => {
                if tc::remove_listed(handle, link, f.hook, &f.filter).await? {
                    tally(&mut cleanup.removed, f.owner);
                }
                dead_owned_qdisc |= f.owns_qdisc;
            }
        }
    }
    if dead_owned_qdisc {
        cleanup.removed_qdisc = tc::remove_unused_clsact(handle, link).await?;
    }
    Ok(cleanup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let o = Owner {
            pid: 812,
            start: 123_456,
            pidns: 4_026_531_836,
        };
        assert_eq!(o.filter_name(false), "flowlat-812-123456-4026531836");
        assert_eq!(o.filter_name(true), "flowlat-812-123456-4026531836+clsact");
        assert_eq!(Owner::parse(&o.filter_name(false)), Some((o, false)));
        assert_eq!(Owner::parse(&o.filter_name(true)), Some((o, true)));
    }

    #[test]
    fn other_names_are_not_ours() {
        for name in [
            "flowlat",
            "flowlat-812",
            "flowlat-812-5",
            "flowlat-812-5-6-7",
            "flowlat-a-5-6",
            "flowlat-812-5-6+other",
            "cilium-812-5-6",
            "probe.o:[classifier]",
            "",
        ] {
            assert_eq!(Owner::parse(name), None, "{name}");
        }
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let tail = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
        let stat = format!("4242 (a b) c)) {tail}");
        assert_eq!(parse_stat(&stat), Some((4242, 987_654)));
        assert_eq!(parse_stat("4242 (x"), None);
    }

    #[test]
    fn this_process_is_running_and_a_reused_pid_is_not() {
        let me = Owner::current().expect("/proc/self");
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.liveness(&me), Liveness::Running);
        let reused = Owner {
            start: me.start + 1,
            ..me
        };
        assert_eq!(reused.liveness(&me), Liveness::Gone);
        let elsewhere = Owner {
            pidns: me.pidns + 1,
            ..me
        };
        assert_eq!(elsewhere.liveness(&me), Liveness::Unknown);
        // PIDs stop well below this (pid_max is at most 2^22).
        let gone = Owner {
            pid: u32::MAX - 1,
            ..me
        };
        assert_eq!(gone.liveness(&me), Liveness::Gone);
    }

    #[test]
    fn cleanup_says_what_was_removed_and_kept() {
        let o = |pid| Owner {
            pid,
            start: 1,
            pidns: 2,
        };
        let c = Cleanup {
            ifname: "eth0".into(),
            removed: vec![(o(812), 2)],
            removed_qdisc: true,
            running: vec![(o(77), 2)],
            unknown: vec![(o(5), 1)],
        };
        assert_eq!(
            c.describe_removed().as_deref(),
            Some("2 filters of flowlat pid 812 and the clsact qdisc it created")
        );
        let kept = c.describe_kept().expect("kept");
        assert!(
            kept.contains("2 filters of flowlat pid 77, which is still running"),
            "{kept}"
        );
        assert!(
            kept.contains("1 filter of flowlat pid 5, in another PID namespace"),
            "{kept}"
        );
        assert_eq!(Cleanup::default().describe_removed(), None);
        assert_eq!(Cleanup::default().describe_kept(), None);
    }
}
