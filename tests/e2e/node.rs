//! flowlat as the handshake monitor of a container node: a node namespace
//! with an uplink to a remote network, pods made as a CNI makes them (a
//! namespace behind a veth, a process in a kubelet- or Docker-style cgroup,
//! their names on disk) after flowlat has started, some deleted while it
//! runs. Watched with patterns (`veth*` and the uplink), each pod's veth is
//! measured from the pod's side and named by its workload.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use kit::json::Rec;
use kit::net::{listen, NetNs, VethPair};
use kit::node::{Layout, Node, Pod};
use kit::peer::Peer;
use kit::run::{binary, Flowlat};

/// How long the remote server takes to answer a SYN: a pod's `rtt` to it
/// is at least this.
const REMOTE_DELAY: Duration = Duration::from_millis(30);

/// `flowlat ARGS` in the node's namespace, with the node's names on disk.
fn start(node: &Node, ns: &NetNs, args: &[&str]) -> Flowlat {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, binary()]).args(args);
    for (k, v) in node.env() {
        cmd.env(k, v);
    }
    let f = Flowlat::spawn(cmd);
    f.wait_stderr("attached to", Duration::from_secs(20));
    f
}

/// Connects from `from` to `to` and closes; `Ok` if the handshake completed.
fn connect(from: &NetNs, to: &str, port: u16, timeout: Duration) -> std::io::Result<()> {
    let addr = SocketAddr::new(to.parse().expect("address"), port);
    from.enter(move || TcpStream::connect_timeout(&addr, timeout).map(drop))
}

/// The uplink: the node (`a`) and a remote network (`b`), the node routing
/// between its pods and the uplink, the remote reaching pods through it.
struct Uplink {
    net: VethPair,
    /// An address beyond the uplink whose server answers after REMOTE_DELAY.
    slow: String,
    /// One where nothing answers.
    silent: String,
    _peer: Peer,
}

impl Uplink {
    fn new() -> Uplink {
        let net = VethPair::new("node");
        // The node's uplink is a bridge (a node's br0 or cni0), not a veth:
        // a veth whose peer is in another namespace is a workload's.
        net.a.ip(&["link", "add", "br0", "type", "bridge"]);
        net.a
            .ip(&["addr", "del", &format!("{}/24", net.a4), "dev", "a"]);
        net.a.ip(&["link", "set", "dev", "a", "master", "br0"]);
        net.a
            .ip(&["addr", "add", &format!("{}/24", net.a4), "dev", "br0"]);
        net.a.ip(&["link", "set", "br0", "up"]);
        net.a.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        net.b.ip(&["route", "add", "10.77.0.0/16", "via", &net.a4]);
        let beyond = |last: u8| {
            let mut parts: Vec<String> = net.b4.split('.').map(str::to_string).collect();
            parts[3] = last.to_string();
            let addr = parts.join(".");
            let mac = kit::net::mac_text(net.b.mac("b"));
            net.a.neigh_permanent(&addr, &mac, "br0");
            addr
        };
        let (slow, silent) = (beyond(9), beyond(99));
        let peer = Peer::slow_server(&net.b, "b", slow.parse().expect("address"), REMOTE_DELAY, 0);
        Uplink {
            net,
            slow,
            silent,
            _peer: peer,
        }
    }
}

fn handshakes(recs: &[Rec]) -> Vec<&Rec> {
    recs.iter().filter(|r| r.s("type") == "handshake").collect()
}

/// The record on `iface` of the attempt from `client` to `server:port`.
fn find<'a>(recs: &'a [&'a Rec], iface: &str, client: &str, server: &str, port: u64) -> &'a Rec {
    let found: Vec<&&Rec> = recs
        .iter()
        .filter(|r| {
            r.s("iface") == iface
                && r.s("client_ip") == client
                && r.s("server_ip") == server
                && r.n("server_port") == Some(port)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one record on {iface} of {client} -> {server}:{port}: {recs:#?}"
    );
    found[0]
}

#[test]
fn every_pods_handshakes_from_the_pods_side_named_by_workload_as_pods_come_and_go() {
    let node = Node::new();
    let up = Uplink::new();
    let ns = &up.net.a;
    let f = start(
        &node,
        ns,
        &["--json", "--syn-timeout", "1s", "veth*", "br0"],
    );
    // Pods made after flowlat started: one made with its peer in place, one
    // whose peer is moved in afterwards, a Docker container, and one that is
    // deleted while flowlat runs.
    let web = Pod::new(&node, ns, 1, "web", Layout::pod("shop", "web-7d9f"), false);
    let db = Pod::new(&node, ns, 2, "db", Layout::pod("shop", "db-0"), true);
    let cache = Pod::new(&node, ns, 3, "cache", Layout::docker("redis"), false);
    let gone = Pod::new(&node, ns, 4, "gone", Layout::pod("tmp", "job-1"), false);
    for p in [&web, &db, &cache, &gone] {
        f.wait_stderr(&format!("attached to {}", p.veth), Duration::from_secs(10));
    }
    let _db_listener = listen(&db.ns, &db.ip, 5432);
    let _web_listener = listen(&web.ns, &web.ip, 8080);
    let _gone_listener = listen(&gone.ns, &gone.ip, 80);

    // The pod that goes first: measured, then deleted.
    connect(&up.net.b, &gone.ip, 80, Duration::from_secs(2)).expect("remote -> gone");
    f.wait_records(2, Duration::from_secs(5), |r| r.s("server_ip") == gone.ip);
    let gone_veth = gone.veth.clone();
    gone.delete(ns);
    f.wait_stderr(&format!("{gone_veth} is gone"), Duration::from_secs(10));

    // A pod to a remote server that answers after a known delay; the
    // remote to a pod; a pod to a pod; refused; timed out.
    connect(&web.ns, &up.slow, 80, Duration::from_secs(2)).expect("web -> remote");
    connect(&up.net.b, &web.ip, 8080, Duration::from_secs(2)).expect("remote -> web");
    connect(&web.ns, &db.ip, 5432, Duration::from_secs(2)).expect("web -> db");
    let refused = connect(&cache.ns, &up.net.b4, 81, Duration::from_secs(2));
    assert_eq!(
        refused.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionRefused)
    );
    let _ = connect(&db.ns, &up.silent, 80, Duration::from_millis(300));
    // A pod made later still is measured.
    let late = Pod::new(&node, ns, 5, "late", Layout::pod("shop", "web-8a1b"), false);
    f.wait_stderr(
        &format!("attached to {}", late.veth),
        Duration::from_secs(10),
    );
    connect(&late.ns, &up.slow, 80, Duration::from_secs(2)).expect("late -> remote");
    // A socket of the node itself, on the uplink: its cgroup is named
    // though flowlat was started with `ip netns exec`.
    connect(ns, &up.slow, 80, Duration::from_secs(2)).expect("node -> remote");
    std::thread::sleep(Duration::from_millis(1500));
    let stopped = f.stop();
    kit::run::assert_clean_stop(&stopped);
    let recs = handshakes(&stopped.records);

    // pod -> remote: `out` on the pod's veth, rtt the remote's delay.
    let r = find(&recs, &web.veth, &web.ip, &up.slow, 80);
    assert_eq!((r.s("dir"), r.s("result")), ("out", "ok"), "{r:?}");
    let rtt = r.n("rtt_ns").expect("rtt");
    assert!(rtt >= REMOTE_DELAY.as_nanos() as u64, "{r:?}");
    assert_eq!(r.opt_s("workload"), Some("pod shop/web-7d9f"), "{r:?}");
    assert_eq!(r.opt_s("cgroup"), web.cgroup_path().as_deref(), "{r:?}");
    assert_eq!(
        r.n("cgroup_id"),
        Some(kit::cgroup::id_of(web.cgroup.as_ref().expect("a cgroup"))),
        "{r:?}"
    );
    // The same attempt forwarded through the uplink: the node's view, no
    // local socket, no workload.
    let fwd = find(&recs, "br0", &web.ip, &up.slow, 80);
    assert_eq!(fwd.s("dir"), "out", "{fwd:?}");
    assert_eq!(fwd.opt_s("workload"), None, "{fwd:?}");

    // remote -> pod: `in`, `local` the pod's own answer time (microseconds).
    let r = find(&recs, &web.veth, &up.net.b4, &web.ip, 8080);
    assert_eq!((r.s("dir"), r.s("result")), ("in", "ok"), "{r:?}");
    assert!(r.n("local_ns").expect("local") < 20_000_000, "{r:?}");
    assert_eq!(r.opt_s("workload"), Some("pod shop/web-7d9f"), "{r:?}");

    // pod -> pod: once at each pod's veth, each from its pod's side.
    let a = find(&recs, &web.veth, &web.ip, &db.ip, 5432);
    let b = find(&recs, &db.veth, &web.ip, &db.ip, 5432);
    assert_eq!((a.s("dir"), a.s("result")), ("out", "ok"), "{a:?}");
    assert_eq!((b.s("dir"), b.s("result")), ("in", "ok"), "{b:?}");
    assert_eq!(a.opt_s("workload"), Some("pod shop/web-7d9f"));
    assert_eq!(
        b.opt_s("workload"),
        Some("pod shop/db-0"),
        "{b:?}\n{}",
        stopped.stderr
    );
    assert_eq!(b.opt_s("cgroup"), db.cgroup_path().as_deref(), "{b:?}");

    // Refused, from a Docker container.
    let r = find(&recs, &cache.veth, &cache.ip, &up.net.b4, 81);
    assert_eq!(
        (r.s("dir"), r.s("result"), r.opt_s("reason")),
        ("out", "refused", Some("rst")),
        "{r:?}"
    );
    assert_eq!(r.opt_s("workload"), Some("container redis"), "{r:?}");
    assert_eq!(r.opt_s("cgroup"), cache.cgroup_path().as_deref(), "{r:?}");

    // Timed out.
    let r = find(&recs, &db.veth, &db.ip, &up.silent, 80);
    assert_eq!(
        (r.s("dir"), r.s("result"), r.opt_s("reason")),
        ("out", "timeout", Some("no-answer")),
        "{r:?}"
    );
    assert_eq!(r.opt_s("workload"), Some("pod shop/db-0"));

    // The deleted pod was measured, and the pod made later is.
    let r = find(&recs, &gone_veth, &up.net.b4, "10.77.4.2", 80);
    assert_eq!(
        (r.s("dir"), r.opt_s("workload")),
        ("in", Some("pod tmp/job-1"))
    );
    let r = find(&recs, &late.veth, &late.ip, &up.slow, 80);
    assert_eq!(
        (r.s("dir"), r.s("result"), r.opt_s("workload")),
        ("out", "ok", Some("pod shop/web-8a1b")),
        "{r:?}"
    );

    // The node's own socket: out on the uplink with its cgroup named.
    let r = find(&recs, "br0", &up.net.a4, &up.slow, 80);
    assert_eq!(r.s("dir"), "out");
    assert!(
        r.opt_s("cgroup").is_some(),
        "started with `ip netns exec`, flowlat still names cgroups: {r:?}"
    );

    // Each pod's veth was measured from its peer's side, and nothing of
    // flowlat's is left on the interfaces that remain.
    for p in [&web, &db, &cache, &late] {
        let said = if p.veth == db.veth {
            format!(
                "{}: its peer moved to another network namespace; measured from the peer's side",
                p.veth
            )
        } else {
            format!("attached to {} (from its peer's side)", p.veth)
        };
        assert!(stopped.stderr.contains(&said), "{}", stopped.stderr);
        let q = ns.exec("tc", &["qdisc", "show", "dev", &p.veth]);
        assert!(
            !String::from_utf8_lossy(&q.stdout).contains("clsact"),
            "{}: {}",
            p.veth,
            String::from_utf8_lossy(&q.stdout)
        );
    }
    let q = ns.exec("tc", &["qdisc", "show", "dev", "br0"]);
    assert!(!String::from_utf8_lossy(&q.stdout).contains("clsact"));
}

#[test]
fn the_node_view_keeps_each_veth_as_it_is() {
    let node = Node::new();
    let up = Uplink::new();
    let ns = &up.net.a;
    let f = start(
        &node,
        ns,
        &["--json", "--node-view", "--syn-timeout", "1s", "veth*"],
    );
    let web = Pod::new(&node, ns, 11, "nv", Layout::pod("shop", "web-nv"), false);
    f.wait_stderr(
        &format!("attached to {}", web.veth),
        Duration::from_secs(10),
    );
    connect(&web.ns, &up.slow, 80, Duration::from_secs(2)).expect("web -> remote");
    f.wait_records(1, Duration::from_secs(5), |r| r.s("type") == "handshake");
    let stopped = f.stop();
    let recs = handshakes(&stopped.records);
    // The pod's SYN arrives at the node's end: `in`, and `local` is the
    // remote's answer time seen from the node.
    let r = find(&recs, &web.veth, &web.ip, &up.slow, 80);
    assert_eq!(r.s("dir"), "in", "{r:?}");
    assert!(r.n("local_ns").expect("local") >= REMOTE_DELAY.as_nanos() as u64);
    assert!(
        !stopped.stderr.contains("peer's side"),
        "{}",
        stopped.stderr
    );
}

#[test]
fn metrics_by_workload_equal_the_records_and_gone_pods_leave_the_scrape() {
    let node = Node::new();
    let up = Uplink::new();
    let ns = &up.net.a;
    let records = start(&node, ns, &["--json", "--syn-timeout", "1s", "veth*"]);
    let metrics = start(
        &node,
        ns,
        &[
            "--metrics",
            "127.0.0.1:0",
            "--metrics-by",
            "workload",
            "--series-ttl",
            "1s",
            "--quiet",
            "--syn-timeout",
            "1s",
            "veth*",
        ],
    );
    let at = metrics.metrics_at();
    let stay = Pod::new(&node, ns, 21, "stay", Layout::pod("shop", "api-0"), false);
    records.wait_stderr(
        &format!("attached to {}", stay.veth),
        Duration::from_secs(10),
    );
    metrics.wait_stderr(
        &format!("attached to {}", stay.veth),
        Duration::from_secs(10),
    );
    // Pods that come and go: each measured, then deleted.
    let mut churned = Vec::new();
    for i in 0..12u8 {
        let p = Pod::new(
            &node,
            ns,
            30 + i,
            &format!("ch{i}"),
            Layout::pod("batch", &format!("job-{i}")),
            false,
        );
        metrics.wait_stderr(&format!("attached to {}", p.veth), Duration::from_secs(10));
        records.wait_stderr(&format!("attached to {}", p.veth), Duration::from_secs(10));
        connect(&p.ns, &up.slow, 80, Duration::from_secs(2)).expect("job -> remote");
        churned.push(p);
    }
    for _ in 0..3 {
        connect(&stay.ns, &up.slow, 80, Duration::from_secs(2)).expect("api -> remote");
    }
    let refused = connect(&stay.ns, &up.net.b4, 81, Duration::from_secs(2));
    assert!(refused.is_err());
    std::thread::sleep(Duration::from_millis(500));
    let first = kit::run::scrape(ns, at);
    let stopped = records.stop();
    kit::run::assert_clean_stop(&stopped);
    let s = kit::run::exposition_samples(&first);

    // While fresh, each workload's series are there and equal the records.
    let mut by: BTreeMap<(String, String), f64> = BTreeMap::new();
    for r in handshakes(&stopped.records) {
        let w = r
            .opt_s("workload")
            .unwrap_or_else(|| panic!("no workload: {r:?}"));
        *by.entry((w.to_string(), r.s("result").to_string()))
            .or_default() += 1.0;
    }
    assert_eq!(by.len(), 12 + 2, "{by:?}");
    assert_eq!(
        by.get(&("pod shop/api-0".to_string(), "ok".to_string())),
        Some(&3.0)
    );
    assert_eq!(
        by.get(&("pod shop/api-0".to_string(), "refused".to_string())),
        Some(&1.0)
    );
    for ((w, result), n) in &by {
        let m: f64 = s
            .iter()
            .filter(|(k, _)| {
                k.starts_with("flowlat_handshakes_total{")
                    && k.contains(&format!("workload=\"{w}\""))
                    && k.contains(&format!("result=\"{result}\""))
            })
            .map(|(_, v)| *v)
            .sum();
        assert_eq!(m, *n, "{w} {result}\n{first}");
    }

    // Once gone for the TTL, a pod's series are dropped; the live one stays.
    let names: Vec<String> = churned
        .iter()
        .map(|p| p.layout.workload().expect("named"))
        .collect();
    let veths: Vec<String> = churned.iter().map(|p| p.veth.clone()).collect();
    for p in churned {
        p.delete(ns);
    }
    let started = Instant::now();
    let later = loop {
        std::thread::sleep(Duration::from_millis(500));
        let text = kit::run::scrape(ns, at);
        let left = names
            .iter()
            .any(|w| text.contains(&format!("workload=\"{w}\"")));
        if !left || started.elapsed() > Duration::from_secs(10) {
            break text;
        }
    };
    for (w, v) in names.iter().zip(&veths) {
        assert!(
            !later.contains(&format!("workload=\"{w}\""))
                && !later.contains(&format!("iface=\"{v}\"")),
            "{w} ({v}) is gone, and its series too after the TTL:\n{later}"
        );
    }
    assert!(later.contains("workload=\"pod shop/api-0\""), "{later}");
    kit::run::assert_clean_stop(&metrics.stop());
}

#[test]
fn interfaces_that_come_and_go_in_milliseconds_crash_nothing_and_keep_no_filter() {
    let node = Node::new();
    let up = Uplink::new();
    let ns = &up.net.a;
    let f = start(
        &node,
        ns,
        &["--json", "--syn-timeout", "1s", "veth*", "br0"],
    );
    let web = Pod::new(
        &node,
        ns,
        61,
        "steady",
        Layout::pod("shop", "steady"),
        false,
    );
    f.wait_stderr(
        &format!("attached to {}", web.veth),
        Duration::from_secs(10),
    );
    // Where the moved ends go: a namespace of their own each round.
    let mut away = Vec::new();
    for i in 0..20 {
        let (a, b) = (format!("vethra{i}"), format!("vethrb{i}"));
        let target = NetNs::new("away");
        // Both ends match; one is moved away at once (as Docker moves one
        // end of a pair it made here into the container), one renamed out
        // of the pattern and back, then deleted.
        ns.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ns.ip(&["link", "set", &b, "netns", &target.name]);
        ns.ip(&["link", "set", &a, "up"]);
        let _ = Command::new("ip")
            .args(["-n", &ns.name, "link", "set", &a, "name", &format!("rx{i}")])
            .output();
        let _ = Command::new("ip")
            .args(["-n", &ns.name, "link", "set", &format!("rx{i}"), "name", &a])
            .output();
        // Half the pairs are deleted (the moved end with them), half kept.
        if i % 2 == 1 {
            let _ = Command::new("ip")
                .args(["-n", &ns.name, "link", "del", &a])
                .output();
        } else {
            away.push((target, b));
        }
        // Made and deleted at once.
        let c = format!("vethrc{i}");
        ns.ip(&[
            "link",
            "add",
            &c,
            "type",
            "veth",
            "peer",
            "name",
            &format!("vethrd{i}"),
        ]);
        ns.ip(&["link", "del", &c]);
    }
    // Still measuring the steady pod, after the churn has been read.
    std::thread::sleep(Duration::from_millis(1500));
    connect(&web.ns, &up.slow, 80, Duration::from_secs(2)).expect("steady -> remote");
    f.wait_records(1, Duration::from_secs(5), |r| {
        r.s("type") == "handshake" && r.s("client_ip") == web.ip
    });
    let stopped = f.stop();
    kit::run::assert_clean_stop(&stopped);
    // Nothing of flowlat's anywhere: not on the node's interfaces, not on
    // the ends that moved away while it had filters on them.
    let q = ns.exec("tc", &["qdisc", "show"]);
    let text = String::from_utf8_lossy(&q.stdout).into_owned();
    assert!(!text.contains("clsact"), "{text}\n{}", stopped.stderr);
    for (target, b) in &away {
        let out = target.exec("tc", &["filter", "show", "dev", b, "ingress"]);
        let filters = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            !filters.contains("flowlat"),
            "{b} moved with flowlat's filter on it: {filters}\n{}",
            stopped.stderr
        );
        let q = target.exec("tc", &["qdisc", "show", "dev", b]);
        assert!(!String::from_utf8_lossy(&q.stdout).contains("clsact"));
    }
}

#[test]
fn detach_takes_patterns_and_removes_what_a_killed_flowlat_left_on_each_match() {
    let node = Node::new();
    let up = Uplink::new();
    let ns = &up.net.a;
    let f = start(&node, ns, &["--json", "veth*"]);
    let pods: Vec<Pod> = (0..3)
        .map(|i| {
            Pod::new(
                &node,
                ns,
                71 + i,
                &format!("dt{i}"),
                Layout::pod("shop", &format!("dt-{i}")),
                false,
            )
        })
        .collect();
    for p in &pods {
        f.wait_stderr(&format!("attached to {}", p.veth), Duration::from_secs(10));
    }
    let _ = f.stop_with(nix::sys::signal::Signal::SIGKILL);
    let has_clsact = |dev: &str| {
        let q = ns.exec("tc", &["qdisc", "show", "dev", dev]);
        String::from_utf8_lossy(&q.stdout).contains("clsact")
    };
    assert!(
        pods.iter().all(|p| has_clsact(&p.veth)),
        "left by the killed one"
    );
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            binary(),
            "--detach",
            "veth*",
            "nomatch*",
        ])
        .output()
        .expect("run --detach");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    for p in &pods {
        assert!(!has_clsact(&p.veth), "{}: {err}", p.veth);
        assert!(
            err.contains(&format!("on {}, removed what flowlat processes", p.veth)),
            "{err}"
        );
    }
    assert!(err.contains("nomatch* matches no interface"), "{err}");
}
