//! End to end: the Prometheus endpoint. A `--metrics --quiet` flowlat (the
//! kernel counts, no record reaches user space) and a record-printing one
//! watch the same scripted handshakes; their numbers must agree, promtool
//! must accept the exposition, a real Prometheus server must scrape it, and
//! hostile clients of the endpoint must not disturb any of it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kit::json::{self, Rec};
use kit::kernel::our_filters;
use kit::net::{NetNs, VethPair};
use kit::peer::Peer;
use kit::run::{exposition_samples, Flowlat};

/// A port nobody in `ns` listens on now.
fn free_port(ns: &NetNs) -> u16 {
    ns.enter(|| {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    })
}

/// One HTTP exchange inside `ns`: (status, headers, body).
fn http(ns: &NetNs, addr: SocketAddr, request: String) -> (u16, String, String) {
    ns.enter(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(request.as_bytes()).expect("send");
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        let text = String::from_utf8_lossy(&reply).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        (status, head.to_string(), body.to_string())
    })
}

pub(crate) fn get(ns: &NetNs, addr: SocketAddr, path: &str) -> (u16, String, String) {
    http(
        ns,
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    )
}

fn sample(s: &HashMap<String, f64>, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {:?}", s.keys().collect::<Vec<_>>()))
}

/// A Prometheus server in `ns` scraping `target` every second, its data in a
/// temporary directory; killed and removed on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Prometheus {
    fn start(ns: &NetNs, target: SocketAddr) -> Prometheus {
        let dir = std::env::temp_dir().join(format!(
            "flowlat-prom-{}-{}",
            std::process::id(),
            target.port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("prometheus dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: flowlat\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("prometheus config");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port(ns))
            .parse()
            .expect("addr");
        let child = ns
            .command("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (installed by .ci/run: apt-get install prometheus)");
        let p = Prometheus { child, dir, addr };
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = ns.enter(move || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            });
            if ok && get(ns, addr, "/-/ready").0 == 200 {
                return p;
            }
            assert!(Instant::now() < end, "prometheus did not get ready in 30 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The value of an instant query that returns one series.
    fn query(&self, ns: &NetNs, q: &str) -> Option<f64> {
        let enc: String = q
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, _, body) = get(ns, self.addr, &format!("/api/v1/query?query={enc}"));
        assert_eq!(status, 200, "{q}: {body}");
        // {"status":"success","data":{"resultType":"vector","result":[{"metric":{..},"value":[t,"v"]}]}}
        let reply = json::parse(&body).ok()?;
        let series = reply.get("data")?.get("result")?.at(0)?;
        series.get("value")?.at(1)?.as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Clients of the endpoint that misbehave, held open for the test's length.
fn hostile(ns: &NetNs, addr: SocketAddr) -> Vec<std::thread::JoinHandle<()>> {
    let mut held = Vec::new();
    // 64 idle connections.
    held.push(ns.spawn(move || {
        let conns: Vec<TcpStream> = (0..64)
            .filter_map(|_| TcpStream::connect(addr).ok())
            .collect();
        std::thread::sleep(Duration::from_secs(6));
        drop(conns);
    }));
    // A request sent one byte a second.
    held.push(ns.spawn(move || {
        if let Ok(mut s) = TcpStream::connect(addr) {
            // Ten bytes, ten seconds: the server gives up on it before.
            for b in b"GET /metri" {
                if s.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }));
    // A 100 KB header, and garbage.
    held.push(ns.spawn(move || {
        for payload in [
            format!(
                "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
                "a".repeat(100_000)
            )
            .into_bytes(),
            (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ] {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = s.write_all(&payload);
                let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
                let _ = s.read(&mut [0u8; 256]);
            }
        }
    }));
    held
}

#[test]
fn kernel_counted_metrics_agree_with_the_records_and_prometheus_reads_them() {
    let net = VethPair::new("prom");
    let _l = kit::net::listen(&net.b, &net.b4, 8080);
    let slow = net.unowned_beyond_b(false, 0x63);
    let _peer = Peer::slow_server(
        &net.b,
        "b",
        slow.parse().expect("address"),
        Duration::from_millis(30),
        0,
    );
    // Its first SYN goes unanswered: one retransmission, a second later.
    let retried = net.unowned_beyond_b(false, 0x64);
    let _peer2 = Peer::slow_server(
        &net.b,
        "b",
        retried.parse().expect("address"),
        Duration::from_millis(5),
        1,
    );
    let silent = net.unowned_beyond_b(false, 0x65);
    let port = free_port(&net.a);
    let maddr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let listen = maddr.to_string();
    let records = Flowlat::start(&net.a, &["--json", "--syn-timeout", "3s", "a"]);
    let quiet = Flowlat::start(
        &net.a,
        &["--metrics", &listen, "--quiet", "--syn-timeout", "3s", "a"],
    );
    let v6 = format!("[::1]:{}", free_port(&net.a));
    let both = Flowlat::start(
        &net.a,
        &["--metrics", &v6, "--json", "--syn-timeout", "3s", "a"],
    );
    let prom = Prometheus::start(&net.a, maddr);
    let hostile = hostile(&net.a, maddr);

    let connect_within = |addr: &str, port: u16, t: Duration| {
        let sa = SocketAddr::new(addr.parse().expect("address"), port);
        net.a.enter(move || TcpStream::connect_timeout(&sa, t))
    };
    let connect = |addr: &str, port: u16| connect_within(addr, port, Duration::from_secs(2));
    let mut made = 0;
    for _ in 0..3 {
        for _ in 0..5 {
            connect(&net.b4, 8080).expect("listener");
            made += 1;
        }
        for _ in 0..4 {
            connect(&slow, 443).expect("slow peer");
            made += 1;
        }
        assert!(connect(&net.b4, 9).is_err());
        made += 1;
        // A scrape answers quickly whatever the hostile clients do.
        let asked = Instant::now();
        let (status, head, _) = get(&net.a, maddr, "/metrics");
        assert_eq!(status, 200);
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "scrape took {:?}",
            asked.elapsed()
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
    }
    connect(&retried, 443).expect("answered after a retransmission");
    // Given up before the kernel retransmits, so that every flowlat sees the
    // same SYNs before its timeout, 3 s after the first.
    let given_up = connect_within(&silent, 80, Duration::from_millis(500));
    assert!(given_up.is_err(), "nobody answers");
    made += 2;
    records.wait_records(made, Duration::from_secs(6), |_| true);
    std::thread::sleep(Duration::from_millis(500));
    for h in hostile {
        let _ = h.join();
    }

    // The timeout is the sweep's to report, each flowlat's own: on a busy
    // machine the quiet one's may come a little after the records'.
    let timeout_key = "flowlat_handshakes_total{iface=\"a\",dir=\"out\",result=\"timeout\"}";
    let swept = |text: &str| sample(&exposition_samples(text), timeout_key) >= 1.0;
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let (_, _, text) = get(&net.a, maddr, "/metrics");
        if swept(&text) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (status, _, text6) = get(&net.a, v6.parse().expect("addr"), "/metrics");
    assert_eq!(status, 200, "the endpoint on IPv6");
    assert_eq!(get(&net.a, maddr, "/other").0, 404);
    assert_eq!(
        http(
            &net.a,
            maddr,
            "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n".to_string()
        )
        .0,
        405
    );
    let recs = records.stop();
    kit::run::assert_clean_stop(&recs);
    let all: Vec<&Rec> = recs.records.iter().collect();
    assert_eq!(all.len(), made, "{:?}", recs.lines);

    for (what, text) in [("--quiet", &text), ("with records", &text6)] {
        let s = exposition_samples(text);
        for res in ["ok", "refused", "timeout", "abandoned", "unreachable"] {
            let n = all.iter().filter(|r| r.s("result") == res).count() as f64;
            let key =
                format!("flowlat_handshakes_total{{iface=\"a\",dir=\"out\",result=\"{res}\"}}");
            assert_eq!(sample(&s, &key), n, "{what}: {key}");
        }
        let rtts: Vec<u64> = all
            .iter()
            .filter(|r| r.s("result") == "ok")
            .filter_map(|r| r.n("rtt_ns"))
            .collect();
        let count = sample(
            &s,
            "flowlat_handshake_rtt_seconds_count{iface=\"a\",dir=\"out\"}",
        );
        let inf = sample(
            &s,
            "flowlat_handshake_rtt_seconds_bucket{iface=\"a\",dir=\"out\",le=\"+Inf\"}",
        );
        assert_eq!(
            (count, inf),
            (rtts.len() as f64, rtts.len() as f64),
            "{what}"
        );
        let sum = sample(
            &s,
            "flowlat_handshake_rtt_seconds_sum{iface=\"a\",dir=\"out\"}",
        );
        let exact = rtts.iter().sum::<u64>() as f64 / 1e9;
        // Each process's classifier stamps packets on its own, a few
        // microseconds apart in the filter chain: durations agree to that.
        assert!(
            (sum - exact).abs() < 200e-6 * rtts.len() as f64,
            "{what}: sum {sum} vs {exact}"
        );
        let retrans: u64 = all.iter().map(|r| r.n("retrans").unwrap_or(0)).sum();
        assert!(retrans >= 1, "the retried attempt: {:?}", recs.lines);
        assert_eq!(
            sample(&s, "flowlat_syn_retransmits_total{iface=\"a\",dir=\"out\"}"),
            retrans as f64
        );
        assert_eq!(sample(&s, "flowlat_records_lost_total"), 0.0, "{what}");
        assert!(s.contains_key(&format!(
            "flowlat_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )));
    }

    // promtool accepts the exposition as it is.
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (installed by .ci/run with prometheus)");
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let verdict = check.wait_with_output().expect("promtool");
    assert!(
        verdict.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&verdict.stdout),
        String::from_utf8_lossy(&verdict.stderr)
    );

    // Prometheus scraped the same numbers, and its median is in the bucket
    // of the exact one.
    std::thread::sleep(Duration::from_millis(2500));
    let ok = all.iter().filter(|r| r.s("result") == "ok").count() as f64;
    let scraped = prom.query(&net.a, "sum(flowlat_handshakes_total{result=\"ok\"})");
    assert_eq!(scraped, Some(ok), "prometheus' count of ok handshakes");
    let refused = prom.query(&net.a, "sum(flowlat_handshakes_total{result=\"refused\"})");
    assert_eq!(refused, Some(3.0));
    let median = prom
        .query(
            &net.a,
            "histogram_quantile(0.5, sum by (le) (flowlat_handshake_rtt_seconds_bucket))",
        )
        .expect("a median");
    let mut rtts: Vec<u64> = all
        .iter()
        .filter(|r| r.s("result") == "ok")
        .filter_map(|r| r.n("rtt_ns"))
        .collect();
    rtts.sort_unstable();
    let mid = rtts[rtts.len().div_ceil(2) - 1];
    let exact = mid as f64 / 1e9;
    let bounds = flowlat::probe::HIST_BOUNDS_NS;
    // The records come from another flowlat on the same hooks than the
    // metrics, whose timestamps differ from these by the other classifiers'
    // runs, a few µs at most: a median that close to a bound may fall on
    // either side of it.
    let slack = 5_000;
    let lo = match flowlat::probe::hist_bucket(mid.saturating_sub(slack)) {
        0 => 0.0,
        i => bounds[i - 1] as f64 / 1e9,
    };
    let i = flowlat::probe::hist_bucket(mid + slack);
    let hi = bounds.get(i).map_or(f64::INFINITY, |b| *b as f64 / 1e9);
    assert!(
        median >= lo && median <= hi,
        "histogram_quantile(0.5) = {median} s, exact median {exact} s, buckets ({lo}, {hi}]"
    );

    let q = quiet.stop();
    kit::run::assert_clean_stop(&q);
    assert!(
        q.lines.is_empty(),
        "--quiet prints nothing per attempt: {:?}",
        q.lines
    );
    assert!(
        q.stderr.contains(&format!("{made} handshakes")),
        "{}",
        q.stderr
    );
    kit::run::assert_clean_stop(&both.stop());
}

#[test]
fn a_taken_metrics_address_is_one_error_and_nothing_is_attached() {
    let net = VethPair::new("taken");
    let port = free_port(&net.a);
    let sa: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let _holder = net
        .a
        .enter(move || TcpListener::bind(sa).expect("hold the port"));
    let out = net
        .a
        .command(kit::run::binary())
        .args(["--metrics", &sa.to_string(), "a"])
        .output()
        .expect("run flowlat");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&sa.to_string()), "names the address: {err}");
    assert!(our_filters(&net.a, "a").is_empty(), "nothing attached");
}

#[test]
fn port_0_serves_on_the_port_the_kernel_gave_and_says_which() {
    let net = VethPair::new("port0");
    let f = Flowlat::start(&net.a, &["--metrics", "127.0.0.1:0", "--quiet", "a"]);
    f.wait_stderr("metrics at", Duration::from_secs(10));
    let err = f.stderr();
    let url = err
        .split("metrics at http://")
        .nth(1)
        .and_then(|rest| rest.split("/metrics").next())
        .unwrap_or_else(|| panic!("no metrics address in {err:?}"));
    let addr: SocketAddr = url
        .parse()
        .unwrap_or_else(|e| panic!("{url:?} is no address: {e}"));
    assert_ne!(addr.port(), 0, "{err}");
    let (status, _, body) = get(&net.a, addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("flowlat_"), "{body}");
    kit::run::assert_clean_stop(&f.stop());
}
