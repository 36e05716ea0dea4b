//! End to end: why handshakes fail. Real kernel clients in a client namespace
//! connect through a router namespace to a server namespace, whose nftables
//! reject SYNs to given ports with each ICMP code and with a TCP reset; the
//! router rejects others on the way. What each connect() returned, and how
//! long it took, is compared with what flowlat reports at the client's end
//! (records and, from another flowlat, metrics) and at the server's end.
//!
//! On these veth pairs an IPv6 client's first error arrives while connect()
//! still holds the socket: the kernel keeps it as a soft error, sends the SYN
//! again a second later and returns at that SYN's error. It is still one
//! attempt, and must make one record at each end.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use kit::json::Rec;
use kit::net::NetNs;
use kit::router::{nft, Routed};
use kit::run::{Flowlat, Stopped};
use nix::errno::Errno;

use crate::handshakes::find;
use crate::metrics::get;
use kit::run::exposition_samples as samples;

/// Who ends an attempt.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum By {
    /// A listener in the server namespace accepts it.
    Listener,
    /// The server's input hook, with the case's statement.
    Server,
    /// The router's forward hook, with the case's statement.
    Router,
}

/// What connect() returns.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Saw {
    Connected,
    Errno(Errno),
    /// Nothing came back before the client gave up.
    TimedOut,
}

/// One connect to one port, and what ends it.
struct Case {
    v6: bool,
    port: u16,
    by: By,
    /// The reason the records must give: for the firewalls, the code they
    /// reject with (nftables names them as flowlat does), `rst` for a TCP
    /// reset, `no-answer` for a silent drop.
    reason: Option<&'static str>,
    /// What connect() returns, as Linux 6.18 maps each error.
    saw: Saw,
}

const fn case(v6: bool, port: u16, by: By, reason: Option<&'static str>, saw: Saw) -> Case {
    Case {
        v6,
        port,
        by,
        reason,
        saw,
    }
}

impl Case {
    /// The nftables statement for SYNs to its port.
    fn verdict(&self) -> String {
        match (self.reason, self.v6) {
            (Some("rst"), _) => "reject with tcp reset".into(),
            (Some("no-answer"), _) => "drop".into(),
            (Some(code), false) => format!("reject with icmp type {code}"),
            (Some(code), true) => format!("reject with icmpv6 type {code}"),
            (None, _) => panic!("a listener answers port {}", self.port),
        }
    }
}

const REFUSED: Saw = Saw::Errno(Errno::ECONNREFUSED);
const HOST: Saw = Saw::Errno(Errno::EHOSTUNREACH);
const NET: Saw = Saw::Errno(Errno::ENETUNREACH);
const ACCES: Saw = Saw::Errno(Errno::EACCES);

const CASES: &[Case] = &[
    case(false, 7000, By::Listener, None, Saw::Connected),
    case(true, 7000, By::Listener, None, Saw::Connected),
    // The server rejects.
    case(false, 7001, By::Server, Some("port-unreachable"), REFUSED),
    case(false, 7002, By::Server, Some("host-unreachable"), HOST),
    case(false, 7003, By::Server, Some("net-unreachable"), NET),
    case(false, 7004, By::Server, Some("admin-prohibited"), HOST),
    case(false, 7005, By::Server, Some("rst"), REFUSED),
    case(true, 7001, By::Server, Some("port-unreachable"), REFUSED),
    case(true, 7006, By::Server, Some("no-route"), NET),
    case(true, 7004, By::Server, Some("admin-prohibited"), ACCES),
    // The router rejects: the SYN never reaches the server.
    case(false, 7102, By::Router, Some("host-unreachable"), HOST),
    case(false, 7104, By::Router, Some("admin-prohibited"), HOST),
    case(true, 7106, By::Router, Some("no-route"), NET),
    case(true, 7104, By::Router, Some("admin-prohibited"), ACCES),
    // The server drops silently.
    case(false, 7009, By::Server, Some("no-answer"), Saw::TimedOut),
    case(true, 7009, By::Server, Some("no-answer"), Saw::TimedOut),
];

/// The clients give up on a silent port after this, before their kernel's
/// first SYN retransmission (1 s): one SYN per attempt.
const GIVE_UP: Duration = Duration::from_millis(500);

/// One ruleset for `by`'s namespace: a table per family, whose chain on
/// `hook` applies each case's verdict to SYNs (not SYN-ACKs) to its port.
fn ruleset(by: By, hook: &str) -> String {
    let mut out = String::new();
    for (family, v6) in [("ip", false), ("ip6", true)] {
        out.push_str(&format!(
            "table {family} causes {{\n  chain {hook} {{\n    type filter hook {hook} priority 0; policy accept;\n"
        ));
        for c in CASES.iter().filter(|c| c.by == by && c.v6 == v6) {
            out.push_str(&format!(
                "    tcp dport {} tcp flags & (syn | ack) == syn {}\n",
                c.port,
                c.verdict()
            ));
        }
        out.push_str("  }\n}\n");
    }
    out
}

/// What connect() gave, as the client sees it.
fn saw(res: &std::io::Result<()>) -> Saw {
    match res {
        Ok(()) => Saw::Connected,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut && e.raw_os_error().is_none() => {
            Saw::TimedOut
        }
        Err(e) => Saw::Errno(Errno::from_raw(
            e.raw_os_error()
                .unwrap_or_else(|| panic!("connect failed without an errno: {e}")),
        )),
    }
}

/// The result a user expects in the record of a connect() that returned so.
fn result_of(s: Saw) -> &'static str {
    match s {
        Saw::Connected => "ok",
        Saw::TimedOut => "timeout",
        Saw::Errno(Errno::ECONNREFUSED) => "refused",
        Saw::Errno(Errno::EHOSTUNREACH | Errno::ENETUNREACH | Errno::EACCES) => "unreachable",
        Saw::Errno(e) => panic!("connect() returned {e}, which no case expects"),
    }
}

/// The one `dir` record of an attempt at an end.
fn the_one<'a>(
    end: &'a Stopped,
    dir: &str,
    client: &str,
    server: &str,
    port: u16,
    what: &str,
) -> &'a Rec {
    let found = find(&end.records, dir, client, server, port);
    assert_eq!(found.len(), 1, "{what}: {dir} records {:#?}", end.lines);
    found[0]
}

/// A record's duration `key`, which must be more than 0 and, like the
/// packets it spans, within the `took` that connect() waited.
fn during(r: &Rec, key: &str, took: Duration, what: &str) -> u64 {
    let ns = r
        .n(key)
        .unwrap_or_else(|| panic!("{what}: no {key} in {r:?}"));
    assert!(
        ns > 0 && ns <= took.as_nanos() as u64,
        "{what}: {key} {ns}, connect() took {took:?}"
    );
    ns
}

/// `N handshakes: N ok, ...` as the exit line counts `recs`.
fn exit_line(recs: &[Rec]) -> String {
    let each: Vec<String> = ["ok", "refused", "timeout", "abandoned", "unreachable"]
        .iter()
        .map(|res| {
            let n = recs.iter().filter(|r| r.s("result") == *res).count();
            format!("{n} {res}")
        })
        .collect();
    format!("{} handshakes: {}", recs.len(), each.join(", "))
}

/// `GET /metrics` from inside `ns`: the exposition's samples, `name{labels}` -> value.
fn scrape(ns: &NetNs, addr: SocketAddr) -> HashMap<String, f64> {
    let (status, _, body) = get(ns, addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    samples(&body)
}

/// The address a `--metrics ADDR:0` flowlat says it serves on.
fn metrics_addr(f: &Flowlat) -> SocketAddr {
    let err = f.stderr();
    err.split("metrics at http://")
        .nth(1)
        .and_then(|rest| rest.split("/metrics").next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in {err:?}"))
}

/// Starts flowlat in each namespace with its arguments, all at once, and
/// waits until each is attached.
fn start_all(runs: &[(&NetNs, Vec<&str>)]) -> Vec<Flowlat> {
    let started: Vec<Flowlat> = runs
        .iter()
        .map(|(ns, args)| {
            let mut cmd = ns.command(kit::run::binary());
            cmd.arg(kit::run::HOST_VIEW).args(args);
            Flowlat::spawn(cmd)
        })
        .collect();
    for f in &started {
        f.wait_stderr("attached to", Duration::from_secs(30));
    }
    started
}

/// Connects from the client to each case's port, all at once, each from a
/// thread of its own: what each connect() returned and how long it took.
fn connect_all(net: &Routed, cases: &[&'static Case]) -> Vec<(Saw, Duration)> {
    let tries: Vec<_> = cases
        .iter()
        .map(|&c| {
            let server = if c.v6 { &net.server6 } else { &net.server4 };
            let sa = SocketAddr::new(server.parse().expect("address"), c.port);
            let wait = if c.saw == Saw::TimedOut {
                GIVE_UP
            } else {
                Duration::from_secs(5)
            };
            let t = net.client.spawn(move || {
                let started = Instant::now();
                let res = TcpStream::connect_timeout(&sa, wait).map(drop);
                (res, started.elapsed())
            });
            (c, sa, t)
        })
        .collect();
    tries
        .into_iter()
        .map(|(c, sa, t)| {
            let (res, took) = t.join().expect("the client's thread");
            let s = saw(&res);
            assert_eq!(
                s, c.saw,
                "connect to {sa} (rejected by {:?}: {:?}) returned {res:?}",
                c.by, c.reason
            );
            (s, took)
        })
        .collect()
}

#[test]
fn rejections_by_the_server_and_by_a_router_are_reported_as_the_client_saw_them() {
    let net = Routed::new("rej");
    nft(&net.server, &ruleset(By::Server, "input"));
    nft(&net.router, &ruleset(By::Router, "forward"));
    let _l4 = kit::net::listen(&net.server, &net.server4, 7000);
    let _l6 = kit::net::listen(&net.server, &net.server6, 7000);
    let timeout = ["--syn-timeout", "2s"];
    // Each end's flowlat loads its classifier at the same time: on a loaded
    // machine the verifier takes seconds. (The quiet one, on the client's
    // interface too, after the first there: two starts on one interface at
    // once are another test's matter.)
    let [client_end, server_end]: [Flowlat; 2] = start_all(&[
        (&net.client, [&timeout[..], &["--json", "c"]].concat()),
        (&net.server, [&timeout[..], &["--json", "s"]].concat()),
    ])
    .try_into()
    .unwrap_or_else(|_| panic!("two flowlats"));
    let quiet = Flowlat::start(
        &net.client,
        &[&timeout[..], &["--metrics", "127.0.0.1:0", "--quiet", "c"]].concat(),
    );
    let maddr = metrics_addr(&quiet);

    // The silent drops after all the others have ended: their timeouts are
    // then the last records, so that once they are in, any record another
    // attempt could still make (a timeout, two seconds after its SYN) is in
    // too.
    let (silent, answered): (Vec<&'static Case>, Vec<&'static Case>) =
        CASES.iter().partition(|c| c.saw == Saw::TimedOut);
    let mut seen = connect_all(&net, &answered);
    seen.extend(connect_all(&net, &silent));
    let order = answered.iter().chain(&silent);

    let n = CASES.len();
    let at_server = CASES.iter().filter(|c| c.by != By::Router).count();
    let limit = Duration::from_secs(8);
    client_end.wait_records(n, limit, |_| true);
    server_end.wait_records(at_server, limit, |_| true);
    let timeouts = CASES.iter().filter(|c| c.saw == Saw::TimedOut).count() as f64;
    // The quiet flowlat's sweep finds the timeouts on its own schedule.
    let key =
        |res: &str| format!("flowlat_handshakes_total{{iface=\"c\",dir=\"out\",result=\"{res}\"}}");
    let end = Instant::now() + limit;
    let metrics = loop {
        let m = scrape(&net.client, maddr);
        if m.get(&key("timeout")) == Some(&timeouts) || Instant::now() > end {
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (client, server, quiet) = (client_end.stop(), server_end.stop(), quiet.stop());
    for s in [&client, &server, &quiet] {
        kit::run::assert_clean_stop(s);
    }

    // The client's end: one record per connect, with what the client saw.
    assert_eq!(client.records.len(), n, "{:#?}", client.lines);
    for (c, &(s, took)) in order.zip(&seen) {
        let (client_ip, server_ip) = if c.v6 {
            (&net.client6, &net.server6)
        } else {
            (&net.client4, &net.server4)
        };
        let what = format!(
            "{:?} {} port {} ({s:?} after {took:?})",
            c.by, server_ip, c.port
        );
        let r = the_one(&client, "out", client_ip, server_ip, c.port, &what);
        let from = match (c.by, s) {
            (_, Saw::Connected | Saw::TimedOut) => None,
            (By::Router, _) if c.v6 => Some(net.router6.as_str()),
            (By::Router, _) => Some(net.router4.as_str()),
            _ => Some(server_ip.as_str()),
        };
        assert_eq!(
            (r.s("iface"), r.s("result"), r.opt_s("reason")),
            ("c", result_of(s), c.reason),
            "{what}: {r:?}"
        );
        assert_eq!(r.opt_s("reason_from"), from, "{what}: {r:?}");
        assert_eq!(r.n("local_ns"), None, "{what}: {r:?}");
        if s == Saw::TimedOut {
            assert_eq!(r.n("rtt_ns"), None, "{what}: {r:?}");
        } else {
            // The SYN left and the answer came while connect() waited.
            let rtt = during(r, "rtt_ns", took, &what);
            assert!(r.n("total_ns").is_some_and(|t| t >= rtt), "{what}: {r:?}");
        }

        // The server's end: the SYNs that arrived, and how this host answered.
        if c.by == By::Router {
            let found = find(&server.records, "in", client_ip, server_ip, c.port);
            assert!(found.is_empty(), "{what}: the SYN never arrived: {found:?}");
            continue;
        }
        let r = the_one(&server, "in", client_ip, server_ip, c.port, &what);
        let from = (c.by == By::Server && s != Saw::TimedOut).then_some(server_ip.as_str());
        assert_eq!(
            (r.s("iface"), r.s("result"), r.opt_s("reason")),
            ("s", result_of(s), c.reason),
            "{what}: {r:?}"
        );
        assert_eq!(r.opt_s("reason_from"), from, "{what}: {r:?}");
        if s == Saw::TimedOut {
            assert_eq!(r.n("local_ns"), None, "{what}: {r:?}");
        } else {
            // The SYN arrived and our answer left while connect() waited.
            during(r, "local_ns", took, &what);
        }
        // Only a completed handshake has a round trip to the client.
        let rtt = r.n("rtt_ns");
        assert_eq!(
            rtt.is_some_and(|t| t > 0),
            s == Saw::Connected,
            "{what}: {r:?}"
        );
    }
    assert_eq!(server.records.len(), at_server, "{:#?}", server.lines);

    // The exit lines count the same results, the quiet flowlat's too.
    let line = exit_line(&client.records);
    for (end, s) in [("client", &client), ("quiet", &quiet)] {
        assert!(s.stderr.contains(&line), "{end}: {line} in {}", s.stderr);
    }
    let line = exit_line(&server.records);
    assert!(
        server.stderr.contains(&line),
        "server: {line} in {}",
        server.stderr
    );

    // The metrics count what the records say, by result and by reason.
    for res in ["ok", "refused", "timeout", "abandoned", "unreachable"] {
        let n = client
            .records
            .iter()
            .filter(|r| r.s("result") == res)
            .count() as f64;
        assert_eq!(metrics.get(&key(res)), Some(&n), "{res}: {metrics:#?}");
    }
    let mut by_reason = BTreeMap::new();
    for r in &client.records {
        if let Some(reason) = r.opt_s("reason") {
            *by_reason
                .entry(format!(
                    "flowlat_handshake_failures_total{{iface=\"c\",dir=\"out\",reason=\"{reason}\"}}"
                ))
                .or_insert(0.0) += 1.0;
        }
    }
    let scraped: BTreeMap<String, f64> = metrics
        .iter()
        .filter(|(k, v)| k.starts_with("flowlat_handshake_failures_total{") && **v > 0.0)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(scraped, by_reason);
}
