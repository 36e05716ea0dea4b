//! The container-node section: flowlat on a node with `--pods` pods (200 by
//! default), each a namespace behind a veth with a process in a kubelet-style
//! cgroup and its log directory. Measured: how long flowlat takes to attach
//! to them all at start (`'veth*'`) and name their workloads, how much its
//! resident memory grows beyond the same flowlat on a node with no pod, and
//! how long a scrape labelled by workload takes once every pod has made a
//! connection.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use kit::json::J;
use kit::net::{NetNs, VethPair};
use kit::node::{Layout, Node, Pod};

use crate::flowlat::Flowlat;
use crate::rig::median;
use crate::Opts;

/// The targets of the container-node issue.
pub const ATTACH_TARGET_MS: f64 = 2000.0;
pub const RSS_GROWTH_TARGET_MIB: f64 = 8.0;
pub const SCRAPE_TARGET_MS: f64 = 50.0;

/// Current resident set size (VmRSS) of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// `GET /metrics` in `ns`: (milliseconds, body bytes).
fn scrape(ns: &NetNs, addr: SocketAddr) -> Option<(f64, usize)> {
    ns.enter(move || {
        let asked = Instant::now();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).ok()?;
        Some((asked.elapsed().as_secs_f64() * 1000.0, body.len()))
    })
}

/// The port flowlat says it serves metrics on.
fn metrics_addr(stderr: &str) -> SocketAddr {
    stderr
        .split("metrics at http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in:\n{stderr}"))
}

pub fn node(bin: &std::path::Path, o: &Opts, md: &mut String) -> J {
    let pods_n = o.pods.clamp(1, 250);
    eprintln!("  node: making {pods_n} pods");
    let node = Node::new();
    let up = VethPair::new("bnode");
    let ns = &up.a;
    ns.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    up.b.ip(&["route", "add", "10.77.0.0/16", "via", &up.a4]);
    let args = [
        "--metrics",
        "127.0.0.1:0",
        "--metrics-by",
        "workload",
        "--quiet",
        "veth*",
    ];
    let env: Vec<(String, String)> = node.env();
    let start = |args: &[&str]| {
        for (k, v) in &env {
            std::env::set_var(k, v);
        }
        Flowlat::start_as_is(ns, bin, args)
    };

    // The same flowlat on the node before any pod: its memory to grow from.
    let bare = start(&args);
    std::thread::sleep(Duration::from_millis(300));
    let rss_bare = rss(bare.pid());
    bare.stop_with_stderr();

    let made = Instant::now();
    let pods: Vec<Pod> = (0..pods_n)
        .map(|i| {
            Pod::new(
                &node,
                ns,
                (i + 1) as u8,
                &format!("p{i}"),
                Layout::pod("bench", &format!("app-{i}")),
                false,
            )
        })
        .collect();
    eprintln!("  node: {pods_n} pods made in {:.1?}", made.elapsed());

    // Attaching to them all at start, and naming every one.
    let mut attach_ms = Vec::new();
    let mut kept = None;
    for round in 0..3 {
        let f = start(&args);
        attach_ms.push(f.startup.as_secs_f64() * 1000.0);
        // The reader says it saw the line before it keeps it.
        let mut text = f.stderr();
        for _ in 0..100 {
            if text.contains("attached to") {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            text = f.stderr();
        }
        let attached = text
            .lines()
            .find(|l| l.contains("attached to"))
            .unwrap_or("");
        let n = attached.matches("(from its peer's side)").count();
        assert_eq!(n, pods_n, "every pod's veth from its side: {attached}");
        if round == 2 {
            kept = Some(f);
        } else {
            f.stop_with_stderr();
        }
    }
    let f = kept.expect("the last start");
    // One connection per pod, to a listener beyond the uplink, so that every
    // pod has its series.
    let server: SocketAddr = format!("{}:8080", up.b4).parse().expect("address");
    let _listener = kit::net::listen(&up.b, &up.b4, 8080);
    for p in &pods {
        p.ns.enter(move || {
            let _ = TcpStream::connect_timeout(&server, Duration::from_secs(2));
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_pods = rss(f.pid());
    let addr = metrics_addr(&f.stderr());
    // The first scrape names every workload's series; the later ones only
    // render.
    let first_ms = scrape(ns, addr).map_or(f64::NAN, |(ms, _)| ms);
    let mut scrape_ms = Vec::new();
    let mut bytes = 0;
    for _ in 0..20 {
        if let Some((ms, n)) = scrape(ns, addr) {
            scrape_ms.push(ms);
            bytes = n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = scrape(ns, addr).map(|_| ()).is_some();
    assert!(body, "a last scrape");
    let named = {
        let text = ns.enter(move || {
            let mut s = TcpStream::connect(addr).expect("scrape");
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").expect("ask");
            let mut b = String::new();
            let _ = s.read_to_string(&mut b);
            b
        });
        (0..pods_n)
            .filter(|i| text.contains(&format!("workload=\"pod bench/app-{i}\"")))
            .count()
    };
    f.stop_with_stderr();
    drop(pods);
    // Nothing of flowlat's is left on the uplink (the pods' veths went with
    // them).
    let q = Command::new("ip")
        .args(["netns", "exec", &ns.name, "tc", "qdisc", "show", "dev", "a"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(!q.contains("clsact"), "{q}");

    let attach = median(&attach_ms);
    let growth_mib = rss_pods.saturating_sub(rss_bare) as f64 / (1024.0 * 1024.0);
    let scrape_med = median(&scrape_ms);
    let scrape_max = scrape_ms.iter().copied().fold(0.0, f64::max);
    let mut sorted = scrape_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let scrape_p90 = sorted
        .get(sorted.len().saturating_mul(9) / 10)
        .copied()
        .unwrap_or(f64::NAN);
    eprintln!(
        "  node: attach {attach:.0} ms, RSS {:.1} -> {:.1} MiB (+{growth_mib:.1}), scrapes first {first_ms:.1} then {scrape_med:.1}/{scrape_p90:.1}/{scrape_max:.1} ms, {named}/{pods_n} named",
        rss_bare as f64 / 1048576.0,
        rss_pods as f64 / 1048576.0
    );
    let _ = writeln!(
        md,
        "\nContainer node: {pods_n} pods (namespaces behind veths, processes in kubelet-style \
         cgroups), flowlat started with `--metrics 127.0.0.1:0 --metrics-by workload --quiet \
         'veth*'` after they exist, one connection per pod:\n\n\
         | measure | value | target |\n|---|---:|---:|\n\
         | attach to all and name them (median of 3 starts) | {attach:.0} ms | {ATTACH_TARGET_MS:.0} ms |\n\
         | RSS growth beyond no pod | {growth_mib:.1} MiB | {RSS_GROWTH_TARGET_MIB:.0} MiB |\n\
         | first scrape with a workload label | {first_ms:.1} ms | {SCRAPE_TARGET_MS:.0} ms |\n\
         | later scrapes, median / p90 / max of {} | {scrape_med:.1} / {scrape_p90:.1} / {scrape_max:.1} ms | {SCRAPE_TARGET_MS:.0} ms |\n\
         | exposition size | {} KiB | |\n\
         | pods named in the scrape | {named} / {pods_n} | all |",
        scrape_ms.len(),
        bytes / 1024
    );
    J::obj(vec![
        ("pods", J::Int(pods_n as i64)),
        ("attach_ms", J::Num(attach)),
        ("rss_bare_bytes", J::Int(rss_bare as i64)),
        ("rss_pods_bytes", J::Int(rss_pods as i64)),
        ("rss_growth_mib", J::Num(growth_mib)),
        ("scrape_first_ms", J::Num(first_ms)),
        ("scrape_median_ms", J::Num(scrape_med)),
        ("scrape_p90_ms", J::Num(scrape_p90)),
        ("scrape_max_ms", J::Num(scrape_max)),
        ("exposition_bytes", J::Int(bytes as i64)),
        ("named", J::Int(named as i64)),
        ("attach_met", J::Bool(attach <= ATTACH_TARGET_MS)),
        ("rss_met", J::Bool(growth_mib <= RSS_GROWTH_TARGET_MIB)),
        (
            "scrape_met",
            J::Bool(first_ms.max(scrape_p90) <= SCRAPE_TARGET_MS),
        ),
    ])
}
