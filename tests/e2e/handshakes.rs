//! End to end: the flowlat binary attached to veth interfaces in namespaces
//! this test makes, real kernel clients and servers, and a raw-socket peer that
//! answers after a set delay. The records are asserted, not just the output.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kit::json::Rec;
use kit::kernel::{add_foreign_filters, tc, tc_state};
use kit::net::{NetNs, VethPair};
use kit::peer::{slow_client, Peer};
use kit::run::{Flowlat, Stopped};
use nix::sys::signal::Signal;

fn connect(ns: &NetNs, addr: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let sa = SocketAddr::new(addr.parse().expect("address"), port);
    ns.enter(move || TcpStream::connect_timeout(&sa, timeout))
}

pub(crate) fn find<'a>(
    recs: &'a [Rec],
    dir: &str,
    client: &str,
    server: &str,
    sport: u16,
) -> Vec<&'a Rec> {
    recs.iter()
        .filter(|r| {
            r.s("dir") == dir
                && r.s("client_ip") == client
                && r.s("server_ip") == server
                && r.n("server_port") == Some(u64::from(sport))
        })
        .collect()
}

/// The one `dir` record of client `c`'s handshake with `server` port 8080,
/// which flowlat at the `end` end printed before it stopped.
fn only_record<'a>(s: &'a Stopped, dir: &str, c: &SocketAddr, server: &str, end: &str) -> &'a Rec {
    let port = u64::from(c.port());
    let found: Vec<_> = find(&s.records, dir, &c.ip().to_string(), server, 8080)
        .into_iter()
        .filter(|r| r.n("client_port") == Some(port))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {dir} record for {c} at the {end} end: {:?}",
        s.lines
    );
    found[0]
}

#[test]
fn both_ends_measure_the_same_handshakes_v4_and_v6() {
    let net = VethPair::new("both");
    let fa = Flowlat::start(&net.a, &["--json", "a"]);
    let fb = Flowlat::start(&net.b, &["--json", "b"]);
    let _l4 = kit::net::listen(&net.b, &net.b4, 8080);
    let _l6 = kit::net::listen(&net.b, &net.b6, 8080);
    let mut clients = Vec::new();
    let connected = Instant::now();
    for addr in [&net.b4, &net.b6, &net.b4] {
        let s = connect(&net.a, addr, 8080, Duration::from_secs(3)).expect("connect");
        clients.push(s.local_addr().expect("local address"));
    }
    fa.wait_records(3, Duration::from_secs(5), |r| r.s("result") == "ok");
    // Records are printed live (within a tenth of a second, plus scheduling).
    assert!(
        connected.elapsed() < Duration::from_secs(1),
        "records took {:?}",
        connected.elapsed()
    );
    fb.wait_records(3, Duration::from_secs(5), |r| r.s("result") == "ok");
    let (a, b) = (fa.stop(), fb.stop());
    kit::run::assert_clean_stop(&a);
    kit::run::assert_clean_stop(&b);
    for c in &clients {
        let server = if c.is_ipv4() { &net.b4 } else { &net.b6 };
        let r = only_record(&a, "out", c, server, "client");
        assert_eq!((r.s("iface"), r.s("result")), ("a", "ok"));
        let rtt = r.n("rtt_ns").expect("rtt");
        assert!(rtt > 0 && rtt < 1_000_000_000, "rtt {rtt}");
        assert_eq!(r.n("total_ns"), Some(rtt));
        assert_eq!(r.n("local_ns"), None);
        assert_eq!(r.n("retrans"), Some(0));
        let r = only_record(&b, "in", c, server, "server");
        assert_eq!((r.s("iface"), r.s("result")), ("b", "ok"));
        let (rtt, local, total) = (
            r.n("rtt_ns").expect("rtt"),
            r.n("local_ns").expect("local"),
            r.n("total_ns").expect("total"),
        );
        assert!(
            total >= rtt + local,
            "total {total} covers rtt {rtt} and local {local}"
        );
    }
    assert_eq!(
        a.records.len(),
        3,
        "nothing but the three handshakes at a: {:?}",
        a.lines
    );
    assert_eq!(
        b.records.len(),
        3,
        "nothing but the three handshakes at b: {:?}",
        b.lines
    );
    // ts is RFC 3339 UTC with microseconds, close to now.
    let ts = a.records[0].s("ts");
    assert_eq!(ts.len(), 27, "{ts}");
    assert!(
        ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.',
        "{ts}"
    );
    let year: u64 = ts[..4].parse().expect("year");
    let now_year = 1970
        + SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            / 31_556_952;
    assert!(
        year == now_year || year + 1 == now_year || year == now_year + 1,
        "{ts}"
    );
}

#[test]
fn closed_port_is_refused_at_both_ends() {
    let net = VethPair::new("refused");
    let fa = Flowlat::start(&net.a, &["--json", "a"]);
    let fb = Flowlat::start(&net.b, &["--json", "b"]);
    let err =
        connect(&net.a, &net.b4, 9, Duration::from_secs(3)).expect_err("nothing listens on port 9");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    fa.wait_records(1, Duration::from_secs(5), |_| true);
    fb.wait_records(1, Duration::from_secs(5), |_| true);
    let (a, b) = (fa.stop(), fb.stop());
    let out = find(&a.records, "out", &net.a4, &net.b4, 9);
    assert_eq!(out.len(), 1, "{:?}", a.lines);
    assert_eq!(out[0].s("result"), "refused");
    assert!(out[0].n("rtt_ns").is_some());
    let inn = find(&b.records, "in", &net.a4, &net.b4, 9);
    assert_eq!(inn.len(), 1, "{:?}", b.lines);
    assert_eq!(inn[0].s("result"), "refused");
    assert_eq!(inn[0].n("rtt_ns"), None);
    assert!(inn[0].n("local_ns").is_some());
}

#[test]
fn a_slow_server_shows_in_rtt_at_the_client_and_local_time_at_the_server() {
    const DELAY: Duration = Duration::from_millis(200);
    const MARGIN: u64 = 60_000_000;
    let net = VethPair::new("slow");
    let fa = Flowlat::start(&net.a, &["--json", "a"]);
    let fb = Flowlat::start(&net.b, &["--json", "b"]);
    for v6 in [false, true] {
        let addr = net.unowned_beyond_b(v6, 0x63);
        let _peer = Peer::slow_server(&net.b, "b", addr.parse().expect("address"), DELAY, 0);
        let started = Instant::now();
        let _s = connect(&net.a, &addr, 443, Duration::from_secs(3)).expect("the peer answers");
        assert!(started.elapsed() >= DELAY);
        fa.wait_records(1, Duration::from_secs(5), |r| r.s("server_ip") == addr);
        fb.wait_records(1, Duration::from_secs(5), |r| r.s("server_ip") == addr);
    }
    let (a, b) = (fa.stop(), fb.stop());
    let d = DELAY.as_nanos() as u64;
    for v6 in [false, true] {
        let addr = net.unowned_beyond_b(v6, 0x63);
        let client = if v6 { &net.a6 } else { &net.a4 };
        let out = find(&a.records, "out", client, &addr, 443);
        assert_eq!(out.len(), 1, "{:?}", a.lines);
        let rtt = out[0].n("rtt_ns").expect("rtt");
        assert!(
            rtt >= d && rtt < d + MARGIN,
            "out rtt {rtt} ns for a {DELAY:?} delay"
        );
        // At the server's interface the delay is this side's own answer time.
        let inn = find(&b.records, "in", client, &addr, 443);
        assert_eq!(inn.len(), 1, "{:?}", b.lines);
        let local = inn[0].n("local_ns").expect("local");
        assert!(
            local >= d && local < d + MARGIN,
            "in local {local} ns for a {DELAY:?} delay"
        );
        assert!(inn[0].n("rtt_ns").expect("rtt") < MARGIN);
    }
}

#[test]
fn a_slow_client_shows_in_rtt_at_the_server() {
    const DELAY: Duration = Duration::from_millis(150);
    let net = VethPair::new("slowc");
    let _l = kit::net::listen(&net.b, &net.b4, 8443);
    let fake = {
        let mut parts: Vec<&str> = net.a4.split('.').collect();
        parts[3] = "98";
        parts.join(".")
    };
    let amac = net.a.mac("a");
    let bmac = net.b.mac("b");
    let amac_s = kit::net::mac_text(amac);
    net.b.neigh_permanent(&fake, &amac_s, "b");
    let fb = Flowlat::start(&net.b, &["--json", "b"]);
    let src: IpAddr = fake.parse().expect("address");
    slow_client(
        &net.a,
        "a",
        (amac, bmac),
        src,
        40001,
        net.b4.parse().expect("address"),
        8443,
        DELAY,
    );
    fb.wait_records(1, Duration::from_secs(5), |r| r.s("client_ip") == fake);
    let b = fb.stop();
    let inn = find(&b.records, "in", &fake, &net.b4, 8443);
    assert_eq!(inn.len(), 1, "{:?}", b.lines);
    assert_eq!(inn[0].s("result"), "ok");
    assert_eq!(inn[0].n("client_port"), Some(40001));
    let rtt = inn[0].n("rtt_ns").expect("rtt");
    let d = DELAY.as_nanos() as u64;
    assert!(
        rtt >= d && rtt < d + 60_000_000,
        "in rtt {rtt} ns for a {DELAY:?} delay"
    );
    assert!(inn[0].n("local_ns").expect("local") < 50_000_000);
}

#[test]
fn a_retransmitted_syn_is_counted() {
    let net = VethPair::new("retrans");
    let fa = Flowlat::start(&net.a, &["--json", "a"]);
    let addr = net.unowned_beyond_b(false, 0x62);
    let _peer = Peer::slow_server(
        &net.b,
        "b",
        addr.parse().expect("address"),
        Duration::ZERO,
        1,
    );
    let _s =
        connect(&net.a, &addr, 80, Duration::from_secs(5)).expect("answered on the retransmission");
    fa.wait_records(1, Duration::from_secs(5), |_| true);
    let a = fa.stop();
    let out = find(&a.records, "out", &net.a4, &addr, 80);
    assert_eq!(out.len(), 1, "{:?}", a.lines);
    let r = out[0];
    assert_eq!(r.s("result"), "ok");
    assert_eq!(r.n("retrans"), Some(1));
    let (rtt, total) = (r.n("rtt_ns").expect("rtt"), r.n("total_ns").expect("total"));
    assert!(
        rtt < 100_000_000,
        "rtt {rtt} runs from the retransmitted SYN"
    );
    assert!(
        total >= 900_000_000,
        "total {total} runs from the first SYN, about 1 s earlier"
    );
}

#[test]
fn an_unanswered_syn_times_out_once() {
    let net = VethPair::new("timeout");
    let fa = Flowlat::start(&net.a, &["--json", "--syn-timeout", "300ms", "a"]);
    let addr = net.unowned_beyond_b(false, 0x61);
    // Give up before the kernel's first retransmission (1 s), so the attempt ends.
    let err = connect(&net.a, &addr, 81, Duration::from_millis(700)).expect_err("nobody answers");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    let recs = fa.wait_records(1, Duration::from_secs(3), |_| true);
    assert_eq!(recs.len(), 1);
    std::thread::sleep(Duration::from_millis(500));
    let a = fa.stop();
    let out = find(&a.records, "out", &net.a4, &addr, 81);
    assert_eq!(out.len(), 1, "exactly one record: {:?}", a.lines);
    assert_eq!(a.records.len(), 1, "{:?}", a.lines);
    let r = out[0];
    assert_eq!(r.s("result"), "timeout");
    assert_eq!(
        (r.n("rtt_ns"), r.n("local_ns"), r.n("total_ns")),
        (None, None, None)
    );
    assert_eq!(r.n("retrans"), Some(0));
    assert!(a.stderr.contains("1 timeout"), "{}", a.stderr);
}

#[test]
fn syns_sent_at_once_from_both_cpus_are_each_reported_once() {
    // Many clients at the same instant: their SYNs meet in the table's front
    // buckets from both CPUs, where two may read the same free way.
    const CLIENTS: usize = 48;
    let net = VethPair::new("burst");
    let fa = Flowlat::start(&net.a, &["--json", "--syn-timeout", "300ms", "a"]);
    let addr = net.unowned_beyond_b(false, 0x62);
    let sa = SocketAddr::new(addr.parse().expect("address"), 82);
    let start = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let start = start.clone();
            net.a.spawn(move || {
                start.wait();
                TcpStream::connect_timeout(&sa, Duration::from_millis(700)).is_err()
            })
        })
        .collect();
    for c in clients {
        assert!(c.join().expect("client thread"), "nobody answers");
    }
    let recs = fa.wait_records(CLIENTS, Duration::from_secs(3), |_| true);
    assert_eq!(recs.len(), CLIENTS, "one timeout per client");
    std::thread::sleep(Duration::from_millis(300));
    let a = fa.stop();
    let mut ports: Vec<u64> = find(&a.records, "out", &net.a4, &addr, 82)
        .iter()
        .filter(|r| r.s("result") == "timeout")
        .filter_map(|r| r.n("client_port"))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), CLIENTS, "every client once: {:?}", a.lines);
    assert_eq!(a.records.len(), CLIENTS, "{:?}", a.lines);
}

#[test]
fn exit_restores_the_tc_state_including_foreign_filters() {
    let net = VethPair::new("cleanup");
    // A fresh interface: nothing is left, not even the clsact flowlat made.
    let fresh = tc_state(&net.b, "b");
    let fb = Flowlat::start(&net.b, &["b"]);
    let during = tc_state(&net.b, "b");
    assert!(
        during.contains("clsact") && during.matches("flowlat-").count() == 2,
        "{during}"
    );
    kit::run::assert_clean_stop(&fb.stop());
    assert_eq!(tc_state(&net.b, "b"), fresh);

    // An interface with a clsact and filters of someone else's.
    tc(&net.a, &["qdisc", "add", "dev", "a", "clsact"]);
    for hook in ["ingress", "egress"] {
        add_foreign_filters(
            &net.a,
            "a",
            hook,
            ("10", &["classid", "1:1"]),
            ("20", &["classid", "1:2"]),
        );
    }
    let before = tc_state(&net.a, "a");
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        let fa = Flowlat::start(&net.a, &["--json", "a"]);
        let during = tc_state(&net.a, "a");
        assert_eq!(during.matches("flowlat-").count(), 2, "{during}");
        assert!(
            during.contains("u32") && during.contains("flowid 1:2"),
            "{during}"
        );
        assert!(
            during.contains("pref 9 bpf chain 0 handle 0x1 flowlat-"),
            "ours goes first: {during}"
        );
        let stopped = fa.stop_with(sig);
        kit::run::assert_clean_stop(&stopped);
        assert!(
            stopped.stderr.contains(&format!("stopped by {sig}")),
            "{}",
            stopped.stderr
        );
        assert_eq!(tc_state(&net.a, "a"), before, "after {sig}");
    }
}

#[test]
fn closing_stdout_stops_flowlat_cleanly() {
    let net = VethPair::new("pipe");
    let _l = kit::net::listen(&net.b, &net.b4, 8081);
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &net.a.name,
        kit::run::binary(),
        kit::run::HOST_VIEW,
        "a",
    ]);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let stderr = child.stderr.take().expect("piped");
    let mut err_lines = BufReader::new(stderr).lines();
    let first = err_lines.next().expect("a line").expect("read");
    assert!(first.contains("attached to a"), "{first}");
    let _s = connect(&net.a, &net.b4, 8081, Duration::from_secs(3)).expect("connect");
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line).expect("one record");
    assert!(line.contains(" out ") && line.contains(" ok "), "{line}");
    assert!(line.contains(&format!("-> {}:8081", net.b4)), "{line}");
    drop(out); // like `| head -1` exiting
    let end = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(
            Instant::now() < end,
            "flowlat kept running after its stdout closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let rest: Vec<String> = err_lines.map_while(Result::ok).collect();
    assert!(status.success(), "{status:?} {rest:?}");
    assert!(rest.iter().any(|l| l.contains("output closed")), "{rest:?}");
    assert!(!rest.iter().any(|l| l.contains("panicked")), "{rest:?}");
    assert!(!tc_state(&net.a, "a").contains("clsact"));
}

#[test]
fn errors_are_one_line_with_the_right_exit_code() {
    kit::require_root();
    let ns = NetNs::new("errors");
    let run = |args: &[&str]| {
        let out = ns
            .command(kit::run::binary())
            .args(args)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["nosuchif0"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("nosuchif0"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (code, err) = run(&["--syn-timeout", "soon", "lo"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _) = run(&["--help"]);
    assert_eq!(code, Some(0));

    // Without privileges: a user with no capabilities.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            kit::run::binary(),
            "lo",
        ])
        .output()
        .expect("run setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("CAP_BPF") && err.contains("CAP_NET_ADMIN"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!tc_state(&ns, "lo").contains("clsact"));
}
