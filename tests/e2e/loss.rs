//! End to end under loss, against references flowlat did not make: a real
//! HTTP server (nginx) and a real load generator (ab) in two namespaces joined
//! by a veth pair, nftables in the server's dropping 5% of the SYNs arriving
//! and 5% of the SYN-ACKs leaving, at random. flowlat watches both ends of the
//! veth, and is held to:
//! - the client's kernel counters (nstat): one `out` attempt per connect,
//!   and the kernel's SYN retransmissions;
//! - what tcpdump captured at each end, read back with tshark and classified
//!   here from the TCP rules alone, as one would check by hand: every attempt
//!   (client port and ISN) gets one record, whose result, reason, counts,
//!   timings and time agree with the packets;
//! - and a `--metrics --quiet` flowlat at the server's end counts what the
//!   records say.
//!
//! `ab` closes the connects still pending when it is done; the SYN-ACKs that
//! come for them later are answered by the client's kernel with a RST, which
//! the server's end must report as `abandoned`, reason `client-reset`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use kit::capture::{tcp_segments, Capture, Segment, ACK, RST, SYN};
use kit::json::Rec;
use kit::net::VethPair;
use kit::nginx::Nginx;
use kit::run::Flowlat;
use kit::Scratch;

/// flowlat's `--syn-timeout`. Linux sends a SYN at 0, 1, 3, 7 s and a server
/// its SYN-ACKs at 1, 3, 7 s after its first, so answers come a little after
/// whole seconds: 4.5 s keeps every answer clear of the time at which flowlat
/// may or may not have swept an attempt out yet (below).
const SYN_TIMEOUT: &str = "4500ms";
const SYN_TIMEOUT_NS: u64 = 4_500_000_000;
/// flowlat times attempts out in a sweep every tenth of `--syn-timeout`: an
/// answer up to that long after the timeout (plus scheduling) may still
/// complete one. Either result is right for an attempt that ends there. (No
/// answer comes between 4.1 and 6 s after a first SYN.)
const LATE_NS: u64 = 1_200_000_000;
/// The capture's clock and flowlat's are read at different points of a
/// packet's way (the tap, the classifier): how far a time, a duration, or the
/// timeout's edge may differ between them.
const SLACK_NS: u64 = 20_000_000;
/// A SYN and an answer that cross (a retransmitted SYN arriving, or leaving,
/// within microseconds of the answer) may be in one order at the tap and in
/// the other at the classifier: a count of packets before the answer may be
/// either of the counts this near it.
const CROSSING_NS: u64 = 1_000_000;
const PORT: u16 = 80;
const CONNECTIONS: u32 = 3000;
const CONCURRENCY: u32 = 50;

#[test]
fn ipv4_loss_every_attempt_at_both_ends_as_the_packets_say() {
    under_loss(false);
}

#[test]
fn ipv6_loss_every_attempt_at_both_ends_as_the_packets_say() {
    under_loss(true);
}

fn under_loss(v6: bool) {
    let started = Instant::now();
    let family = if v6 { "IPv6" } else { "IPv4" };
    let net = VethPair::new(if v6 { "loss6" } else { "loss4" });
    let (client, server): (IpAddr, IpAddr) = if v6 {
        (parse(&net.a6), parse(&net.b6))
    } else {
        (parse(&net.a4), parse(&net.b4))
    };
    let files = Scratch::new("loss");
    let _nginx = Nginx::start(&net.b, &[SocketAddr::new(server, PORT)]);
    let rules = files.path().join("loss.nft");
    std::fs::write(
        &rules,
        format!(
            "table inet loss {{\n\
             \x20 chain syns {{ type filter hook input priority 0; \
             tcp dport {PORT} tcp flags & (syn|ack) == syn numgen random mod 100 < 5 drop; }}\n\
             \x20 chain synacks {{ type filter hook output priority 0; \
             tcp sport {PORT} tcp flags & (syn|ack) == syn|ack numgen random mod 100 < 5 drop; }}\n\
             }}\n"
        ),
    )
    .expect("write the rules");
    net.b.exec("nft", &["-f", &rules.to_string_lossy()]);

    let fa = Flowlat::start(&net.a, &["--json", "--syn-timeout", SYN_TIMEOUT, "a"]);
    let fb = Flowlat::start(&net.b, &["--json", "--syn-timeout", SYN_TIMEOUT, "b"]);
    let fm = Flowlat::start(
        &net.b,
        &[
            "--metrics",
            "127.0.0.1:0",
            "--quiet",
            "--syn-timeout",
            SYN_TIMEOUT,
            "b",
        ],
    );
    let metrics_at = fm.metrics_at();
    let filter = format!("tcp port {PORT}");
    let ca = Capture::start(&net.a, "a", &files.path().join("a.pcap"), &filter);
    let cb = Capture::start(&net.b, "b", &files.path().join("b.pcap"), &filter);

    let before = kit::kernel::nstat(&net.a);
    let url = match server {
        IpAddr::V6(a) => format!("http://[{a}]:{PORT}/"),
        IpAddr::V4(a) => format!("http://{a}:{PORT}/"),
    };
    let load = Instant::now();
    let ab = net
        .a
        .command("ab")
        .args(["-n", &CONNECTIONS.to_string()])
        .args(["-c", &CONCURRENCY.to_string(), "-s", "40", &url])
        .output()
        .expect("run ab (scripts/test.sh installs apache2-utils)");
    let ab_out = String::from_utf8_lossy(&ab.stdout).into_owned();
    let complete = ab_out
        .lines()
        .find_map(|l| l.strip_prefix("Complete requests:"))
        .and_then(|n| n.trim().parse::<u32>().ok());
    assert!(
        ab.status.success() && complete == Some(CONNECTIONS),
        "ab: {ab_out}{}",
        String::from_utf8_lossy(&ab.stderr)
    );
    let load = load.elapsed();
    // The last attempts ab started, and those it closed unanswered, end (by
    // an answer, a client's RST or flowlat's timeout) within this.
    std::thread::sleep(Duration::from_nanos(SYN_TIMEOUT_NS + LATE_NS + 500_000_000));
    let after = kit::kernel::nstat(&net.a);
    let delta = |name: &str| {
        let get = |m: &HashMap<String, u64>| {
            *m.get(name)
                .unwrap_or_else(|| panic!("nstat has no {name}: {m:?}"))
        };
        get(&after) - get(&before)
    };
    let (active_opens, syn_retrans) = (delta("TcpActiveOpens"), delta("TcpExtTCPSynRetrans"));

    let (ka, kb) = (ca.stop(), cb.stop());
    for k in [&ka, &kb] {
        assert_eq!(
            k.dropped, 0,
            "tcpdump missed packets, so the packets cannot judge flowlat: {}",
            k.stderr
        );
    }
    let metrics = kit::run::scrape(&net.b, metrics_at);
    let (ra, rb, rm) = (fa.stop(), fb.stop(), fm.stop());
    for r in [&ra, &rb, &rm] {
        kit::run::assert_clean_stop(r);
    }
    // tshark takes seconds to start: both files at once.
    let pa = ka.path.clone();
    let read_a = std::thread::spawn(move || tcp_segments(&pa));
    let sb = tcp_segments(&kb.path);
    let sa = read_a.join().expect("tshark thread");

    let at_client = judge(&sa, client, server, Dir::Out);
    let at_server = judge(&sb, client, server, Dir::In);
    let mut wrong = Vec::new();
    let ends = (client, server);
    let (agreed_a, off_a) = compare(&at_client, &sa, &ra.records, ends, Dir::Out, &mut wrong);
    let (agreed_b, off_b) = compare(&at_server, &sb, &rb.records, ends, Dir::In, &mut wrong);
    assert!(
        wrong.is_empty(),
        "{family}: {} disagreements between flowlat and the packets, first ones:\n{}",
        wrong.len(),
        wrong
            .iter()
            .take(12)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The kernel's counts at the client: one attempt per connect, and every
    // SYN it retransmitted was captured. flowlat counts the retransmissions
    // of an attempt until it reports it: those of attempts it had timed out
    // (the kernel keeps trying) are the difference.
    let captured_retrans: u64 = at_client.iter().map(|v| v.syns.len() as u64 - 1).sum();
    let after_timeout: u64 = at_client.iter().map(|v| v.syns_after_timeout).sum();
    let out_records = ra.records.iter().filter(|r| r.s("dir") == "out").count() as u64;
    let retrans: u64 = ra.records.iter().filter_map(|r| r.n("retrans")).sum();
    assert_eq!(
        (out_records, at_client.len() as u64),
        (active_opens, active_opens),
        "{family}: out records and attempts captured at the client vs nstat TcpActiveOpens"
    );
    assert_eq!(
        captured_retrans, syn_retrans,
        "{family}: SYN retransmissions captured vs nstat TcpExtTCPSynRetrans"
    );
    assert_eq!(
        retrans + after_timeout,
        syn_retrans,
        "{family}: sum of the out records' retrans ({retrans}) and the SYNs sent after \
         flowlat timed their attempt out ({after_timeout}) vs TcpExtTCPSynRetrans"
    );

    // The kernel-counted metrics of the quiet flowlat at the server's end
    // against the records of the other: they differ only if an attempt ended
    // where the sweep may come before or after it, and then by no more.
    let ambiguous = at_server.iter().filter(|v| v.ambiguous()).count() as f64;
    let s = kit::run::exposition_samples(&metrics);
    let count = |key: &str, value: &str| {
        rb.records
            .iter()
            .filter(|r| r.opt_s(key) == Some(value))
            .count() as f64
    };
    // Each failed attempt of the records, for a count that disagrees.
    let failed: Vec<String> = rb
        .records
        .iter()
        .filter(|r| r.s("result") != "ok")
        .map(|r| {
            format!(
                "port {} {} {} at {}",
                r.n("client_port").unwrap_or(0),
                r.s("result"),
                r.opt_s("reason").unwrap_or("-"),
                r.s("ts")
            )
        })
        .collect();
    let failed = failed.join("\n");
    for result in ["ok", "refused", "timeout", "abandoned", "unreachable"] {
        let key = format!("flowlat_handshakes_total{{iface=\"b\",dir=\"in\",result=\"{result}\"}}");
        let m = s.get(&key).copied().unwrap_or(0.0);
        let n = count("result", result);
        assert!(
            (m - n).abs() <= ambiguous,
            "{family}: {key} = {m}, records {n} ({ambiguous} attempts ambiguous)\n{metrics}\n\
             the failed attempts' records:\n{failed}"
        );
    }
    assert!(s.contains_key("flowlat_handshakes_total{iface=\"b\",dir=\"in\",result=\"ok\"}"));
    for reason in ["client-reset", "no-ack", "no-answer", "new-isn", "rst"] {
        let key = format!(
            "flowlat_handshake_failures_total{{iface=\"b\",dir=\"in\",reason=\"{reason}\"}}"
        );
        let m = s.get(&key).copied().unwrap_or(0.0);
        let n = count("reason", reason);
        assert!(
            (m - n).abs() <= ambiguous,
            "{family}: {key} = {m}, records {n} ({ambiguous} attempts ambiguous)\n{metrics}\n\
             the failed attempts' records:\n{failed}"
        );
    }
    // Tombstones of reported attempts are no evictions; the table is far
    // from full.
    assert_eq!(
        s.get("flowlat_pending_evictions_total").copied(),
        Some(0.0),
        "{family}: evictions\n{metrics}"
    );

    let results = |recs: &[Rec]| {
        let mut by: BTreeMap<String, usize> = BTreeMap::new();
        for r in recs {
            let k = match r.opt_s("reason") {
                Some(why) => format!("{}/{why}", r.s("result")),
                None => r.s("result").to_string(),
            };
            *by.entry(k).or_default() += 1;
        }
        by
    };
    eprintln!(
        "{family}: ab {CONNECTIONS} requests, -c {CONCURRENCY}, in {load:.1?}; \
         nstat: {active_opens} active opens, {syn_retrans} SYN retransmissions; \
         captured {} + {} packets; {} attempts at the client, {} at the server \
         ({} SYNs retransmitted after flowlat timed their attempt out, \
         {} SYNs arrived at the server after their attempt's ACK); \
         client {:?}; server {:?}; agreed {agreed_a} + {agreed_b}, \
         {} ambiguous, times within {} us of the packets'; {:.1?} in all",
        ka.captured,
        kb.captured,
        at_client.len(),
        at_server.len(),
        after_timeout,
        at_server.iter().map(|v| v.copies_after_answer).sum::<u64>(),
        results(&ra.records),
        results(&rb.records),
        at_client
            .iter()
            .chain(&at_server)
            .filter(|v| v.ambiguous())
            .count(),
        off_a.max(off_b) / 1000,
        started.elapsed()
    );
}

fn parse(addr: &str) -> IpAddr {
    addr.parse().expect("an address")
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dir {
    /// The client's end: its SYNs leave.
    Out,
    /// The server's end: the SYNs arrive.
    In,
}

/// What the packets captured at one end say of one attempt.
#[derive(Debug)]
struct Verdict {
    port: u16,
    isn: u32,
    /// When the client's SYNs with this ISN were captured.
    syns: Vec<u64>,
    /// SYNs captured after the attempt timed out (0 unless it did).
    syns_after_timeout: u64,
    /// SYNs captured after the answer that ended the attempt.
    copies_after_answer: u64,
    /// What flowlat may rightly report: one outcome, or two when the attempt
    /// ended where flowlat's sweep may come before or after it.
    outcomes: Vec<Expect>,
}

impl Verdict {
    fn ambiguous(&self) -> bool {
        self.outcomes.len() > 1
    }
}

/// One record's worth of what the packets say.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expect {
    result: &'static str,
    reason: Option<&'static str>,
    /// Whose address `reason_from` names.
    reason_from: Option<IpAddr>,
    /// The record's time: the packet that ended the attempt, or the first
    /// SYN + the timeout.
    ts: u64,
    /// The fewest and most SYN retransmissions a record may count.
    retrans: (u64, u64),
    /// The fewest and most SYN-ACK retransmissions (in only).
    synack_retrans: Option<(u64, u64)>,
    rtt: Option<u64>,
    local: Option<u64>,
    total: Option<u64>,
}

/// How an attempt ended, in packets.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// out: the server's SYN-ACK (or RST) acknowledging the SYN arrived;
    /// in: the client's ACK of our SYN-ACK (or our RST) left.
    Answer { t: u64, refused: bool },
    /// in: the client reset our SYN-ACK.
    ClientReset { t: u64 },
    /// A SYN with another ISN on the same ports.
    NewIsn { t: u64 },
}

impl Ending {
    fn t(&self) -> u64 {
        match *self {
            Ending::Answer { t, .. } | Ending::ClientReset { t } | Ending::NewIsn { t } => t,
        }
    }
}

/// Classifies every attempt in a capture at one end, from the TCP rules
/// (RFC 9293) and flowlat's documented contract (docs/measurement.md): not
/// from flowlat's code.
fn judge(segs: &[Segment], client: IpAddr, server: IpAddr, dir: Dir) -> Vec<Verdict> {
    // The segments of each connection (by the client's port), in capture order.
    let mut by_port: BTreeMap<u16, Vec<Segment>> = BTreeMap::new();
    for s in segs {
        if s.src == client && s.dst == server && s.dport == PORT {
            by_port.entry(s.sport).or_default().push(*s);
        } else if s.src == server && s.dst == client && s.sport == PORT {
            by_port.entry(s.dport).or_default().push(*s);
        }
    }
    let mut verdicts = Vec::new();
    for (port, segs) in by_port {
        let from_client = |s: &&Segment| s.src == client;
        let from_server = |s: &&Segment| s.src == server;
        // The client's SYNs: SYN on, ACK and RST off.
        let syns: Vec<&Segment> = segs
            .iter()
            .filter(from_client)
            .filter(|s| s.is(SYN | ACK | RST, SYN))
            .collect();
        let mut isns: Vec<u32> = Vec::new();
        for s in &syns {
            if !isns.contains(&s.seq) {
                isns.push(s.seq);
            }
        }
        for (i, &isn) in isns.iter().enumerate() {
            let mine: Vec<u64> = syns
                .iter()
                .filter(|s| s.seq == isn)
                .map(|s| s.t_ns)
                .collect();
            let first = mine[0];
            let deadline = first + SYN_TIMEOUT_NS;
            // A segment of the server's that acknowledges this SYN.
            let acks_syn = |s: &&Segment| s.ack == isn.wrapping_add(1);
            let mut endings: Vec<Ending> = Vec::new();
            if let Some(next) = isns.get(i + 1) {
                let t = syns.iter().find(|s| s.seq == *next).expect("its SYN").t_ns;
                endings.push(Ending::NewIsn { t });
            }
            // Ours (in) or the server's (out) SYN-ACKs for this SYN.
            let synacks: Vec<&Segment> = segs
                .iter()
                .filter(from_server)
                .filter(|s| s.is(SYN | ACK | RST, SYN | ACK) && s.t_ns >= first)
                .filter(acks_syn)
                .collect();
            // A RST that answers a SYN acknowledges it (and carries SEQ 0).
            let refusal = segs
                .iter()
                .filter(from_server)
                .filter(|s| s.is(SYN | ACK | RST, ACK | RST) && s.t_ns >= first)
                .find(acks_syn);
            match dir {
                Dir::Out => {
                    let answer = synacks.first().map(|s| Ending::Answer {
                        t: s.t_ns,
                        refused: false,
                    });
                    let no = refusal.map(|s| Ending::Answer {
                        t: s.t_ns,
                        refused: true,
                    });
                    endings.extend(answer);
                    endings.extend(no);
                }
                Dir::In => {
                    if let Some(r) =
                        refusal.filter(|r| synacks.first().is_none_or(|s| r.t_ns < s.t_ns))
                    {
                        endings.push(Ending::Answer {
                            t: r.t_ns,
                            refused: true,
                        });
                    }
                    if let Some(sa) = synacks.first() {
                        let server_isn = sa.seq;
                        let later = |s: &&Segment| s.t_ns >= sa.t_ns;
                        // The client's ACK of our SYN-ACK: ACK on, SYN and RST off.
                        let acked = segs.iter().filter(from_client).filter(later).find(|s| {
                            s.is(SYN | ACK | RST, ACK) && s.ack == server_isn.wrapping_add(1)
                        });
                        endings.extend(acked.map(|s| Ending::Answer {
                            t: s.t_ns,
                            refused: false,
                        }));
                        // The client's RST of our SYN-ACK: a reset answering
                        // a segment with ACK on takes its sequence number from
                        // that ACK field (RFC 9293, 3.10.7.1); one that
                        // acknowledges our SYN-ACK is one too.
                        let reset = segs.iter().filter(from_client).filter(later).find(|s| {
                            s.flags & RST != 0
                                && (s.seq == sa.ack
                                    || (s.flags & ACK != 0 && s.ack == server_isn.wrapping_add(1)))
                        });
                        endings.extend(reset.map(|s| Ending::ClientReset { t: s.t_ns }));
                    }
                }
            }
            let ending = endings.into_iter().min_by_key(Ending::t);

            // What a record says, as of time `at` (counts of packets before it).
            let before = |ts: &[u64], at: u64| ts.iter().filter(|&&t| t < at).count() as u64;
            // Retransmissions before `at`: those that crossed it may count or not.
            let retrans_before = |ts: &[u64], at: u64| {
                (
                    before(ts, at.saturating_sub(CROSSING_NS)).saturating_sub(1),
                    before(ts, at + CROSSING_NS).saturating_sub(1),
                )
            };
            let synack_times: Vec<u64> = synacks.iter().map(|s| s.t_ns).collect();
            let last_before = |ts: &[u64], at: u64| ts.iter().copied().filter(|&t| t < at).max();
            let local = |at: u64| -> Option<u64> {
                let first_synack = *synack_times.first().filter(|&&t| t < at)?;
                Some(first_synack - last_before(&mine, first_synack)?)
            };
            let synack_retrans = |at: u64| match dir {
                Dir::Out => None,
                Dir::In => Some(retrans_before(&synack_times, at)),
            };
            let timeout = |at: u64| Expect {
                result: "timeout",
                reason: Some(if dir == Dir::In && before(&synack_times, at) > 0 {
                    "no-ack"
                } else {
                    "no-answer"
                }),
                reason_from: None,
                ts: deadline,
                retrans: retrans_before(&mine, at),
                synack_retrans: synack_retrans(at),
                rtt: None,
                local: if dir == Dir::In { local(at) } else { None },
                total: None,
            };
            let ended = |e: Ending| {
                let t = e.t();
                let base = Expect {
                    result: "ok",
                    reason: None,
                    reason_from: None,
                    ts: t,
                    retrans: retrans_before(&mine, t),
                    synack_retrans: synack_retrans(t),
                    rtt: None,
                    local: None,
                    total: Some(t - first),
                };
                match (dir, e) {
                    (Dir::Out, Ending::Answer { refused, .. }) => Expect {
                        result: if refused { "refused" } else { "ok" },
                        reason: refused.then_some("rst"),
                        reason_from: refused.then_some(server),
                        rtt: last_before(&mine, t).map(|s| t - s),
                        ..base
                    },
                    (Dir::In, Ending::Answer { refused: true, .. }) => Expect {
                        result: "refused",
                        reason: Some("rst"),
                        reason_from: Some(server),
                        local: last_before(&mine, t).map(|s| t - s),
                        ..base
                    },
                    (Dir::In, Ending::Answer { refused: false, .. }) => Expect {
                        rtt: last_before(&synack_times, t).map(|s| t - s),
                        local: local(t),
                        ..base
                    },
                    (_, Ending::ClientReset { .. }) => Expect {
                        result: "abandoned",
                        reason: Some("client-reset"),
                        reason_from: Some(client),
                        rtt: last_before(&synack_times, t).map(|s| t - s),
                        local: local(t),
                        ..base
                    },
                    (_, Ending::NewIsn { .. }) => Expect {
                        result: "abandoned",
                        reason: Some("new-isn"),
                        reason_from: Some(client),
                        local: if dir == Dir::In { local(t) } else { None },
                        total: None,
                        ..base
                    },
                }
            };
            // The sweep that times an attempt out comes at its deadline or
            // up to LATE_NS after it; the clocks differ by up to SLACK_NS.
            let (early, late) = (deadline - SLACK_NS, deadline + LATE_NS);
            let mut outcomes = Vec::new();
            match ending {
                Some(e) if e.t() < early => outcomes.push(ended(e)),
                Some(e) if e.t() < late => {
                    outcomes.push(ended(e));
                    outcomes.push(timeout(early));
                    outcomes.push(timeout(e.t()));
                }
                _ => {
                    outcomes.push(timeout(early));
                    outcomes.push(timeout(late));
                }
            }
            outcomes.dedup();
            let timed_out = outcomes.iter().all(|o| o.result == "timeout");
            let syns_after_timeout = if timed_out {
                mine.iter().filter(|&&t| t >= late).count() as u64
            } else {
                0
            };
            // Copies of the SYN captured after the answer that ended the
            // attempt: retransmissions overtaken by the client's ACK.
            let copies_after_answer = match ending {
                Some(e) if !timed_out => mine.iter().filter(|&&t| t > e.t()).count() as u64,
                _ => 0,
            };
            verdicts.push(Verdict {
                port,
                isn,
                syns: mine,
                syns_after_timeout,
                copies_after_answer,
                outcomes,
            });
        }
    }
    verdicts
}

/// The ns since the epoch of a record's `ts` (`YYYY-MM-DDTHH:MM:SS.uuuuuuZ`).
fn ts_ns(ts: &str) -> u64 {
    fn bad(ts: &str) -> ! {
        panic!("ts {ts:?} is not RFC 3339 UTC")
    }
    let (date, time) = ts
        .strip_suffix('Z')
        .and_then(|t| t.split_once('T'))
        .unwrap_or_else(|| bad(ts));
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().unwrap_or_else(|_| bad(ts)))
        .collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<u64> = hms
        .split(':')
        .map(|p| p.parse().unwrap_or_else(|_| bad(ts)))
        .collect();
    if d.len() != 3 || t.len() != 3 {
        bad(ts);
    }
    // Days since 1970-01-01 of a proleptic Gregorian date.
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let frac_ns: u64 = format!("{frac:0<9}")[..9]
        .parse()
        .unwrap_or_else(|_| bad(ts));
    (days as u64 * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1_000_000_000 + frac_ns
}

/// Why `r` is not what `e` says, if it is not.
fn differs(r: &Rec, e: &Expect, client: IpAddr, server: IpAddr, dir: Dir) -> Option<String> {
    let mut why = Vec::new();
    let want_dir = if dir == Dir::Out { "out" } else { "in" };
    if r.s("dir") != want_dir
        || r.s("client_ip").parse::<IpAddr>().ok() != Some(client)
        || r.s("server_ip").parse::<IpAddr>().ok() != Some(server)
        || r.n("server_port") != Some(u64::from(PORT))
    {
        why.push("not this connection".to_string());
    }
    if r.s("result") != e.result {
        why.push(format!("result {} (packets: {})", r.s("result"), e.result));
    }
    if r.opt_s("reason") != e.reason {
        why.push(format!(
            "reason {:?} (packets: {:?})",
            r.opt_s("reason"),
            e.reason
        ));
    }
    let from = r.opt_s("reason_from").map(parse);
    if from != e.reason_from {
        why.push(format!(
            "reason_from {from:?} (packets: {:?})",
            e.reason_from
        ));
    }
    let within = |n: Option<u64>, (lo, hi): (u64, u64)| n.is_some_and(|n| (lo..=hi).contains(&n));
    if !within(r.n("retrans"), e.retrans) {
        why.push(format!(
            "retrans {:?} (packets: {:?})",
            r.n("retrans"),
            e.retrans
        ));
    }
    let synack_ok = match e.synack_retrans {
        Some(range) => within(r.n("synack_retrans"), range),
        None => r.n("synack_retrans").is_none(),
    };
    if !synack_ok {
        why.push(format!(
            "synack_retrans {:?} (packets: {:?})",
            r.n("synack_retrans"),
            e.synack_retrans
        ));
    }
    for (key, want) in [
        ("rtt_ns", e.rtt),
        ("local_ns", e.local),
        ("total_ns", e.total),
    ] {
        let got = r.n(key);
        let close = match (got, want) {
            (Some(g), Some(w)) => g.abs_diff(w) <= SLACK_NS,
            (g, w) => g.is_none() && w.is_none(),
        };
        if !close {
            why.push(format!("{key} {got:?} (packets: {want:?})"));
        }
    }
    let ts = ts_ns(r.s("ts"));
    if ts.abs_diff(e.ts) > SLACK_NS {
        why.push(format!(
            "ts {} is {:.3} s from the packets'",
            r.s("ts"),
            (ts as f64 - e.ts as f64) / 1e9
        ));
    }
    (!why.is_empty()).then(|| why.join(", "))
}

/// Holds each attempt's verdict against its record: one record per attempt,
/// matched by the client's port (and, if a port served two attempts, by
/// time). Returns how many agreed, and the largest difference between a
/// time or duration of theirs and the packets'; the rest is added to
/// `wrong`, with the packets of their ports.
fn compare(
    verdicts: &[Verdict],
    segs: &[Segment],
    records: &[Rec],
    (client, server): (IpAddr, IpAddr),
    dir: Dir,
    wrong: &mut Vec<String>,
) -> (usize, u64) {
    let end = if dir == Dir::Out { "client" } else { "server" };
    let mut recs: BTreeMap<u16, Vec<&Rec>> = BTreeMap::new();
    for r in records {
        let port = r.n("client_port").unwrap_or(0) as u16;
        recs.entry(port).or_default().push(r);
    }
    let mut seen: BTreeMap<u16, Vec<&Verdict>> = BTreeMap::new();
    for v in verdicts {
        seen.entry(v.port).or_default().push(v);
    }
    let (mut agreed, mut worst) = (0, 0);
    let packets = |port: u16| timeline(segs, port, client);
    for (port, vs) in &seen {
        let mut rs = recs.remove(port).unwrap_or_default();
        if rs.len() != vs.len() {
            wrong.push(format!(
                "{end} end, port {port}: {} attempts captured {:?}, {} records {rs:?}; packets:\n{}",
                vs.len(),
                vs.iter().map(|v| (v.isn, &v.outcomes)).collect::<Vec<_>>(),
                rs.len(),
                packets(*port)
            ));
            continue;
        }
        rs.sort_by_key(|r| ts_ns(r.s("ts")));
        let mut vs = vs.clone();
        vs.sort_by_key(|v| v.outcomes[0].ts);
        for (v, r) in vs.iter().zip(rs) {
            let whys: Vec<String> = v
                .outcomes
                .iter()
                .filter_map(|e| differs(r, e, client, server, dir))
                .collect();
            if whys.len() < v.outcomes.len() {
                agreed += 1;
                let off = v
                    .outcomes
                    .iter()
                    .filter(|e| differs(r, e, client, server, dir).is_none())
                    .map(|e| deviation(r, e))
                    .min()
                    .unwrap_or(0);
                worst = worst.max(off);
            } else {
                wrong.push(format!(
                    "{end} end, port {port} ISN {}: {} (SYNs at {:?}; record {r:?})",
                    v.isn,
                    whys.join(" | or | "),
                    v.syns
                ));
            }
        }
    }
    for (port, rs) in recs {
        wrong.push(format!(
            "{end} end: records of no attempt captured, port {port}: {rs:?}"
        ));
    }
    (agreed, worst)
}

/// How far the record's time and durations are from the packets'.
fn deviation(r: &Rec, e: &Expect) -> u64 {
    [
        ("rtt_ns", e.rtt),
        ("local_ns", e.local),
        ("total_ns", e.total),
    ]
    .into_iter()
    .filter_map(|(key, want)| Some(r.n(key)?.abs_diff(want?)))
    .chain([ts_ns(r.s("ts")).abs_diff(e.ts)])
    .max()
    .unwrap_or(0)
}

/// The captured segments of the client's `port`, one a line: seconds since
/// the first, `>` from the client or `<` to it, flags, sequence and
/// acknowledgment numbers.
fn timeline(segs: &[Segment], port: u16, client: IpAddr) -> String {
    let mine: Vec<&Segment> = segs
        .iter()
        .filter(|s| (s.src == client && s.sport == port) || (s.dst == client && s.dport == port))
        .collect();
    let t0 = mine.first().map_or(0, |s| s.t_ns);
    mine.iter()
        .map(|s| {
            let names = [(SYN, "S"), (RST, "R"), (ACK, "."), (kit::capture::FIN, "F")];
            let flags: String = names
                .iter()
                .filter(|(f, _)| s.flags & f != 0)
                .map(|(_, n)| *n)
                .collect();
            format!(
                "  {:+.6} {} [{flags}] seq {} ack {}",
                (s.t_ns - t0) as f64 / 1e9,
                if s.src == client { ">" } else { "<" },
                s.seq,
                s.ack
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
