//! What the kernel holds, read the way an administrator would: tc's view of an
//! interface, the flowlat filters on it, the BPF programs and maps a process
//! has open, its open fds and memory, bpftool's lists, and the network
//! stack's counters (nstat).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::net::NetNs;
use crate::run_cmd;

/// `tc ARGS` in `ns`, checked; its stdout.
pub fn tc(ns: &NetNs, args: &[&str]) -> String {
    let mut full = vec!["-n", ns.name.as_str()];
    full.extend_from_slice(args);
    String::from_utf8_lossy(&run_cmd("tc", &full).stdout).into_owned()
}

/// Someone else's filters on `hook` of `dev`: a u32 filter at `u32_pref` that
/// matches every IPv4 packet and a classic-BPF cls_bpf filter at `bpf_pref`
/// that matches every packet, each followed by the tc words in its `then` (a
/// classid, or an action).
pub fn add_foreign_filters(
    ns: &NetNs,
    dev: &str,
    hook: &str,
    (u32_pref, u32_then): (&str, &[&str]),
    (bpf_pref, bpf_then): (&str, &[&str]),
) {
    #[rustfmt::skip]
    let mut u32_args = vec!["filter", "add", "dev", dev, hook, "pref", u32_pref, "protocol", "ip",
        "u32", "match", "u32", "0", "0"];
    u32_args.extend_from_slice(u32_then);
    tc(ns, &u32_args);
    #[rustfmt::skip]
    let mut bpf_args = vec!["filter", "add", "dev", dev, hook, "pref", bpf_pref, "protocol", "all",
        "bpf", "bytecode", "1,6 0 0 4294967295"];
    bpf_args.extend_from_slice(bpf_then);
    tc(ns, &bpf_args);
}

/// qdiscs and filters of `dev` (both hooks), as tc prints them.
pub fn tc_state(ns: &NetNs, dev: &str) -> String {
    let mut s = tc(ns, &["qdisc", "show", "dev", dev]);
    s.push_str(&tc(ns, &["filter", "show", "dev", dev, "ingress"]));
    s.push_str(&tc(ns, &["filter", "show", "dev", dev, "egress"]));
    s
}

/// The filters of one hook as tc prints them, without flowlat's own (found by
/// their priority, which no other filter shares).
pub fn foreign_filters(ns: &NetNs, dev: &str, hook: &str) -> Vec<String> {
    let text = tc(ns, &["filter", "show", "dev", dev, hook]);
    let pref_of = |l: &str| -> Option<String> {
        let words: Vec<&str> = l.split_whitespace().collect();
        let i = words.iter().position(|w| *w == "pref")?;
        words.get(i + 1).map(|p| p.to_string())
    };
    let ours: BTreeSet<String> = text
        .lines()
        .filter(|l| l.contains(" flowlat-"))
        .filter_map(pref_of)
        .collect();
    text.lines()
        .filter(|l| !(l.starts_with("filter ") && pref_of(l).is_some_and(|p| ours.contains(&p))))
        .map(str::to_string)
        .collect()
}

/// One flowlat filter, as `tc filter show` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OurFilter {
    pub hook: &'static str,
    pub pref: u32,
    /// `TCA_BPF_NAME`, e.g. `flowlat-812-4711-4026531836+clsact`.
    pub name: String,
    /// The id of the program it runs.
    pub prog_id: u32,
}

impl OurFilter {
    /// The PID its name gives, if it is of flowlat's form.
    pub fn pid(&self) -> Option<i32> {
        self.name.split('-').nth(1).and_then(|p| p.parse().ok())
    }
}

/// The filters on `dev` named `flowlat-*`, ingress first.
pub fn our_filters(ns: &NetNs, dev: &str) -> Vec<OurFilter> {
    let mut found = Vec::new();
    for hook in ["ingress", "egress"] {
        for line in tc(ns, &["filter", "show", "dev", dev, hook]).lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(name) = words.iter().find(|w| w.starts_with("flowlat-")) else {
                continue;
            };
            let after = |key: &str| -> Option<u32> {
                let i = words.iter().position(|w| *w == key)?;
                words.get(i + 1)?.parse().ok()
            };
            found.push(OurFilter {
                hook,
                pref: after("pref").expect("pref"),
                name: name.to_string(),
                prog_id: after("id").expect("program id"),
            });
        }
    }
    found
}

/// The ids of the BPF programs and maps process `pid` holds open, from
/// `/proc/PID/fdinfo` (`prog_id:` and `map_id:` lines).
pub fn bpf_ids_of(pid: i32) -> (BTreeSet<u32>, BTreeSet<u32>) {
    let (mut progs, mut maps) = (BTreeSet::new(), BTreeSet::new());
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let Ok(entry) = entry else { continue };
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in text.lines() {
            let id = |key: &str| line.strip_prefix(key).and_then(|v| v.trim().parse().ok());
            if let Some(id) = id("prog_id:") {
                progs.insert(id);
            }
            if let Some(id) = id("map_id:") {
                maps.insert(id);
            }
        }
    }
    (progs, maps)
}

/// The ids `bpftool prog show` (`what` = "prog") or `bpftool map show` lists,
/// with the names they go by.
pub fn bpftool_ids(what: &str) -> Vec<(u32, String)> {
    let out = run_cmd("bpftool", &[what, "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // "975: sched_cls  name flowlat_ingress  tag ..." / "12: lru_hash  name flowlat_pending  flags ..."
            let (id, rest) = l.split_once(": ")?;
            let id = id.trim().parse().ok()?;
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = words
                .iter()
                .position(|w| *w == "name")
                .and_then(|i| words.get(i + 1))
                .map_or(String::new(), |n| n.to_string());
            Some((id, name))
        })
        .collect()
}

/// Waits (up to `timeout`, since the kernel frees programs and maps after an
/// RCU grace period) until none of `progs` and `maps` is listed by bpftool;
/// panics naming those still there.
pub fn assert_bpf_objects_gone(progs: &BTreeSet<u32>, maps: &BTreeSet<u32>, timeout: Duration) {
    let end = Instant::now() + timeout;
    loop {
        let left_progs: Vec<(u32, String)> = bpftool_ids("prog")
            .into_iter()
            .filter(|(id, _)| progs.contains(id))
            .collect();
        let left_maps: Vec<(u32, String)> = bpftool_ids("map")
            .into_iter()
            .filter(|(id, _)| maps.contains(id))
            .collect();
        if left_progs.is_empty() && left_maps.is_empty() {
            return;
        }
        if Instant::now() > end {
            panic!("still in the kernel after {timeout:?}: programs {left_progs:?}, maps {left_maps:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many fds process `pid` has open.
pub fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .count()
}

/// `VmRSS` of process `pid`, in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("/proc/PID/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Turns IPv6 off on `dev` in `ns`, so the interface stays silent (no router
/// solicitations, MLD reports or neighbour discovery) and its counters count
/// only what a test sends.
pub fn no_ipv6(ns: &NetNs, dev: &str) {
    ns.exec(
        "sh",
        &[
            "-c",
            &format!("echo 1 > /proc/sys/net/ipv6/conf/{dev}/disable_ipv6"),
        ],
    );
}

/// Packets `dev` in `ns` received and sent (`ip -s link`).
pub fn link_packets(ns: &NetNs, dev: &str) -> (u64, u64) {
    let read = |what: &str| -> u64 {
        let out = ns.exec("cat", &[&format!("/sys/class/net/{dev}/statistics/{what}")]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a counter")
    };
    (read("rx_packets"), read("tx_packets"))
}

/// The packets counted by the actions of the filter at `pref` on `hook` of
/// `dev` (`Sent N bytes M pkt` of `tc -s filter show`), summed over its actions.
pub fn action_packets(ns: &NetNs, dev: &str, hook: &str, pref: u32) -> u64 {
    let text = tc(ns, &["-s", "filter", "show", "dev", dev, hook]);
    let mut total = 0;
    let mut in_filter = false;
    for line in text.lines() {
        if line.starts_with("filter ") {
            in_filter = line.contains(&format!(" pref {pref} "));
            continue;
        }
        if !in_filter {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"Sent") {
            if let Some(i) = words.iter().position(|w| *w == "pkt") {
                total += words[i - 1].parse::<u64>().expect("packet count");
            }
        }
    }
    total
}

/// The network stack's counters in `ns` as `nstat -az` prints them (absolute
/// values, zeros too: `TcpActiveOpens`, `TcpExtTCPSynRetrans`...). Reading
/// them changes nothing: nstat's history file, which `nstat -n` would reset
/// and which every namespace shares, is one of this call's own.
pub fn nstat(ns: &NetNs) -> HashMap<String, u64> {
    let history =
        std::env::temp_dir().join(format!("flowlat-nstat-{}-{}", std::process::id(), ns.name));
    let out = ns
        .command("nstat")
        .arg("-az")
        .env("NSTAT_HISTORY", &history)
        .output()
        .expect("run nstat (iproute2)");
    let _ = std::fs::remove_file(&history);
    assert!(
        out.status.success(),
        "nstat -az: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect()
}
