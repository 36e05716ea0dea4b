//! Why attempts fail, on crafted packets through `BPF_PROG_TEST_RUN`: ICMP
//! and ICMPv6 errors that quote an attempt's SYN end it (`unreachable`, or
//! `refused` for port and protocol unreachable) and name their code and their
//! sender; a client's RST of our SYN-ACK abandons an `in` attempt
//! (`client-reset`); errors and resets that do not fit the attempt change
//! nothing; and aggregation counts each failure by its reason.

use std::net::IpAddr;
use std::time::Duration;

use flowlat::probe::{Aggregation, Dir, Filter, Hook, Outcome, Reason, Record};
use kit::icmp::{self, v4, v6, IcmpError};
use kit::packet::{Tcp, ACK, PSH, RST, SYN};
use kit::probe::Rig;

/// This host's address and a peer's, and a router between them; the
/// family's destination unreachable type.
struct Family {
    here: &'static str,
    peer: &'static str,
    router: &'static str,
    family: u8,
    unreach: u8,
}

const V4: Family = Family {
    here: "10.0.0.5",
    peer: "93.184.216.34",
    router: "10.0.0.1",
    family: 4,
    unreach: v4::DEST_UNREACH,
};
const V6: Family = Family {
    here: "2001:db8::5",
    peer: "2001:db8:9::1",
    router: "2001:db8::1",
    family: 6,
    unreach: v6::DEST_UNREACH,
};

const ISN: u32 = 1_000_000;
const SERVER_ISN: u32 = 7_000_000;

fn syn(c: &str, cport: u16, s: &str, isn: u32) -> Tcp {
    Tcp::new(c, cport, s, 443, SYN).seq(isn)
}
fn synack(c: &str, cport: u16, s: &str, isn: u32, server_isn: u32) -> Vec<u8> {
    Tcp::new(s, 443, c, cport, SYN | ACK)
        .seq(server_isn)
        .ack(isn.wrapping_add(1))
        .frame()
}
fn client_ack(c: &str, cport: u16, s: &str, isn: u32, server_isn: u32) -> Vec<u8> {
    Tcp::new(c, cport, s, 443, ACK)
        .seq(isn.wrapping_add(1))
        .ack(server_isn.wrapping_add(1))
        .frame()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// The one record, checked to be of `dir` between these ends.
fn one(recs: Vec<Record>, dir: Dir, c: &str, cport: u16, s: &str, what: &str) -> Record {
    assert_eq!(recs.len(), 1, "{what}: {recs:?}");
    let r = recs.into_iter().next().expect("one");
    assert_eq!(r.dir, dir, "{what}");
    assert_eq!((r.client, r.client_port), (ip(c), cport), "{what}");
    assert_eq!((r.server, r.server_port), (ip(s), 443), "{what}");
    r
}

fn reason(r: &Record) -> &'static str {
    r.reason.map_or("", Reason::as_str)
}

/// Every code of the contract's list, in both families: this host's SYN
/// leaves, the error arrives from a router (or, for a refusal, from the
/// server) and ends the attempt, timed like a RST, with the code's name
/// and the sender.
#[test]
fn arriving_icmp_errors_end_out_attempts_by_their_code() {
    let mut rig = Rig::new();
    for f in [V4, V6] {
        let table = icmp::errors(f.family);
        assert_eq!(table.len(), if f.family == 4 { 18 } else { 10 });
        for (i, (kind, code, result, name)) in table.into_iter().enumerate() {
            let cport = 40000 + i as u16;
            let what = format!("IPv{} type {kind} code {code} ({name})", f.family);
            let s = syn(f.here, cport, f.peer, ISN + i as u32);
            rig.run(Hook::Egress, &s.frame());
            // The first of each family is a retransmitted SYN.
            if i == 0 {
                std::thread::sleep(Duration::from_millis(3));
                rig.run(Hook::Egress, &s.frame());
            }
            std::thread::sleep(Duration::from_millis(1));
            let from = if result == Outcome::Refused {
                f.peer
            } else {
                f.router
            };
            rig.run(Hook::Ingress, &IcmpError::new(from, kind, code, &s).frame());
            let r = one(rig.records(), Dir::Out, f.here, cport, f.peer, &what);
            assert_eq!(r.outcome, result, "{what}");
            assert_eq!(reason(&r), name, "{what}");
            assert_eq!(r.reason_from, Some(ip(from)), "{what}: its sender");
            let rtt = r.rtt_ns.expect("rtt");
            let total = r.total_ns.expect("total");
            assert!(rtt >= 1_000_000, "{what}: rtt {rtt} covers the 1 ms wait");
            assert_eq!(r.local_ns, None, "{what}");
            if i == 0 {
                assert_eq!(r.retrans, 1, "{what}");
                assert!(
                    total >= rtt + 3_000_000,
                    "{what}: rtt runs from the last SYN, total from the first"
                );
            } else {
                assert_eq!((r.retrans, total), (0, rtt), "{what}");
            }
            // Only its tombstone is left, for the client's retransmissions.
            assert_eq!(rig.in_progress(), 0, "{what}: the attempt left the table");
            // A second copy of the error finds nothing: never two records.
            rig.run(Hook::Ingress, &IcmpError::new(from, kind, code, &s).frame());
            assert!(rig.records().is_empty(), "{what}: a second error");
            // Nor does the same SYN sent again after a soft error, and the
            // error it draws: it belongs to the attempt reported.
            rig.run(Hook::Egress, &s.frame());
            rig.run(Hook::Ingress, &IcmpError::new(from, kind, code, &s).frame());
            assert!(rig.records().is_empty(), "{what}: a retransmission's error");
            assert_eq!(rig.in_progress(), 0, "{what}: no new attempt");
        }
    }
}

/// A peer's SYN arrives and this host rejects it with an error (a firewall's
/// `reject`, or no socket for a protocol): the `in` attempt ends when the
/// error leaves, with how long this side took to say no.
#[test]
fn leaving_icmp_errors_end_in_attempts() {
    let mut rig = Rig::new();
    for f in [V4, V6] {
        for (i, (kind, code, result, name)) in icmp::errors(f.family).into_iter().enumerate() {
            let cport = 41000 + i as u16;
            let what = format!("IPv{} type {kind} code {code} ({name})", f.family);
            let s = syn(f.peer, cport, f.here, ISN);
            rig.run(Hook::Ingress, &s.frame());
            std::thread::sleep(Duration::from_millis(1));
            rig.run(
                Hook::Egress,
                &IcmpError::new(f.here, kind, code, &s).frame(),
            );
            let r = one(rig.records(), Dir::In, f.peer, cport, f.here, &what);
            assert_eq!(r.outcome, result, "{what}");
            assert_eq!(reason(&r), name, "{what}");
            assert_eq!(r.reason_from, Some(ip(f.here)), "{what}: this host");
            let local = r.local_ns.expect("local");
            assert!(local >= 1_000_000, "{what}: local {local}");
            assert_eq!(r.total_ns, Some(local), "{what}");
            assert_eq!((r.rtt_ns, r.synack_retrans), (None, Some(0)), "{what}");
            assert_eq!(rig.in_progress(), 0, "{what}");
        }
    }
}

/// Errors in the shapes the classifier parses: tagged frames, IPv4 options
/// in the error's header and in the quoted one, TCP options in the quoted
/// SYN, a quote of exactly the 8 bytes RFC 792 promises.
#[test]
fn icmp_errors_are_read_in_every_shape() {
    type Shape = (&'static str, fn(&mut Tcp), fn(&mut IcmpError));
    let shapes: [Shape; 5] = [
        ("one VLAN tag", |_| {}, |e| e.vlans = vec![(0x8100, 10)]),
        (
            "QinQ",
            |_| {},
            |e| e.vlans = vec![(0x88a8, 7), (0x8100, 10)],
        ),
        ("8 bytes of TCP", |_| {}, |e| e.quoted_tcp = 8),
        (
            "IPv4 options in the error's header",
            |_| {},
            |e| {
                if e.from.is_ipv4() {
                    e.ip_options = vec![1; 12];
                }
            },
        ),
        (
            "IPv4 and TCP options in the quoted SYN",
            |s| {
                if s.src.is_ipv4() {
                    s.ip_options = vec![1; 8];
                }
                s.tcp_options = vec![2, 4, 5, 0xb4];
            },
            |_| {},
        ),
    ];
    let mut rig = Rig::new();
    for f in [V4, V6] {
        for (i, (what, shape_syn, shape_error)) in shapes.iter().enumerate() {
            let what = format!("IPv{}: {what}", f.family);
            let cport = 42000 + i as u16;
            let mut s = syn(f.here, cport, f.peer, ISN);
            shape_syn(&mut s);
            rig.run(Hook::Egress, &s.frame());
            let mut e = IcmpError::new(f.router, f.unreach, 1, &s);
            shape_error(&mut e);
            rig.run(Hook::Ingress, &e.frame());
            let r = one(rig.records(), Dir::Out, f.here, cport, f.peer, &what);
            assert_eq!(r.outcome, Outcome::Unreachable, "{what}");
            assert_eq!(r.reason_from, Some(ip(f.router)), "{what}");
        }
    }
}

/// Makes an attempt of each direction wait for its answer, `out` from port
/// 43000 and `in` from 43001; sends `error(its SYN, sender)` for each, the
/// way an error of it would come (a router's arriving, this host's leaving)
/// or, `wrong_way`, the other way; and checks that this changed nothing.
fn changes_nothing(
    rig: &mut Rig,
    f: &Family,
    what: &str,
    wrong_way: bool,
    error: impl Fn(Tcp, &str) -> Vec<u8>,
) {
    let out = syn(f.here, 43000, f.peer, ISN);
    let inn = syn(f.peer, 43001, f.here, ISN);
    rig.run(Hook::Egress, &out.frame());
    rig.run(Hook::Ingress, &inn.frame());
    let (to_out, to_in) = if wrong_way {
        (Hook::Egress, Hook::Ingress)
    } else {
        (Hook::Ingress, Hook::Egress)
    };
    rig.run(to_out, &error(out, f.router));
    rig.run(to_in, &error(inn, f.here));
    assert!(rig.records().is_empty(), "{what}: no record");
    assert!(
        rig.holds(43000) && rig.holds(43001),
        "{what}: both attempts still wait"
    );
    // Both still complete as usual.
    rig.run(
        Hook::Ingress,
        &synack(f.here, 43000, f.peer, ISN, SERVER_ISN),
    );
    rig.run(
        Hook::Egress,
        &synack(f.peer, 43001, f.here, ISN, SERVER_ISN),
    );
    rig.run(
        Hook::Ingress,
        &client_ack(f.peer, 43001, f.here, ISN, SERVER_ISN),
    );
    let mut recs = rig.records();
    recs.sort_by_key(|r| r.client_port);
    assert_eq!(recs.len(), 2, "{what}: {recs:?}");
    for r in &recs {
        assert_eq!(
            (r.outcome, r.reason, r.reason_from),
            (Outcome::Ok, None, None),
            "{what}"
        );
        assert!(r.rtt_ns.is_some(), "{what}");
    }
    assert_eq!((recs[0].dir, recs[1].dir), (Dir::Out, Dir::In), "{what}");
    assert_eq!(rig.pending(), 0, "{what}");
}

/// A change to the quoted segment.
type Change = fn(&mut Tcp);

/// An error of the right type that does not quote the attempt's SYN (a blind
/// or stale one, RFC 5927), or quotes too little of it to tell, or comes the
/// wrong way, ends nothing.
#[test]
fn icmp_errors_that_do_not_quote_the_syn_change_nothing() {
    let mut rig = Rig::new();
    for f in [V4, V6] {
        // Port unreachable, a refusal: it would end the attempt if it fit.
        let code = if f.family == 4 { 3 } else { 4 };
        let error = |t: Tcp, from: &str| IcmpError::new(from, f.unreach, code, &t).frame();
        let variants: Vec<(&str, Change)> = vec![
            ("ISN+1", |t| t.seq = ISN + 1),
            ("another sequence number", |t| t.seq = 0x9e37_79b9),
            ("sequence number 0", |t| t.seq = 0),
            ("a data segment of the connection", |t| {
                t.flags = ACK | PSH;
                t.seq = ISN + 1;
                t.ack = SERVER_ISN + 1;
                t.payload = b"GET / HTTP/1.1\r\n".to_vec();
            }),
            ("another client port", |t| t.sport += 10),
            ("another server port", |t| t.dport = 80),
        ];
        for (what, change) in &variants {
            let what = format!("IPv{}: {what}", f.family);
            changes_nothing(&mut rig, &f, &what, false, |mut t, from| {
                change(&mut t);
                error(t, from)
            });
        }
        // The quote cut short: the IP header alone, or less than the 8
        // bytes that hold the ports and the sequence number.
        for n in [0, 4, 7] {
            let what = format!("IPv{}: {n} bytes of TCP quoted", f.family);
            changes_nothing(&mut rig, &f, &what, false, |t, from| {
                IcmpError::new(from, f.unreach, code, &t).quoting(n).frame()
            });
        }
        let what = format!("IPv{}: a quoted UDP datagram", f.family);
        changes_nothing(&mut rig, &f, &what, false, |t, from| {
            let mut fr = error(t, from);
            // The quote is the whole SYN: its IP header, then 20 bytes of TCP.
            let quoted_ip = fr.len() - 20 - if f.family == 4 { 20 } else { 40 };
            fr[quoted_ip + if f.family == 4 { 9 } else { 6 }] = 17;
            fr
        });
        // An error for our SYN leaving, one for the peer's SYN arriving.
        let what = format!("IPv{}: errors the wrong way", f.family);
        changes_nothing(&mut rig, &f, &what, true, error);
    }
}

/// Messages that answer no SYN, each quoting the SYN as an error would:
/// echoes, a redirect, a source quench, a parameter problem, ICMPv6's packet
/// too big, and codes beyond the contract's lists.
#[test]
fn icmp_messages_that_are_no_such_error_change_nothing() {
    let mut rig = Rig::new();
    let messages: [(&Family, u8, u8); 14] = [
        (&V4, v4::ECHO_REPLY, 0),
        (&V4, v4::ECHO_REQUEST, 0),
        (&V4, v4::SOURCE_QUENCH, 0),
        (&V4, v4::REDIRECT, 1),
        (&V4, v4::PARAM_PROBLEM, 0),
        (&V4, v4::DEST_UNREACH, 16),
        (&V4, v4::TIME_EXCEEDED, 2),
        (&V6, v6::PACKET_TOO_BIG, 0),
        (&V6, v6::PARAM_PROBLEM, 1),
        (&V6, v6::ECHO_REQUEST, 0),
        (&V6, v6::ECHO_REPLY, 0),
        (&V6, v6::DEST_UNREACH, 8),
        (&V6, v6::TIME_EXCEEDED, 2),
        // ICMP's time exceeded number in ICMPv6 is no ICMPv6 error.
        (&V6, v4::TIME_EXCEEDED, 0),
    ];
    for (f, kind, code) in messages {
        let what = format!("IPv{} type {kind} code {code}", f.family);
        assert_eq!(icmp::contract(f.family, kind, code), None, "{what}");
        changes_nothing(&mut rig, f, &what, false, |t, from| {
            IcmpError::new(from, kind, code, &t).frame()
        });
    }
}

/// An error that comes after the attempt was answered, or after it was
/// reported as a timeout, ends nothing more: one record per attempt.
#[test]
fn icmp_errors_after_the_answer_or_the_timeout_change_nothing() {
    let mut rig = Rig::new();
    for f in [V4, V6] {
        // out: the SYN-ACK came first.
        let out = syn(f.here, 44000, f.peer, ISN);
        rig.run(Hook::Egress, &out.frame());
        rig.run(
            Hook::Ingress,
            &synack(f.here, 44000, f.peer, ISN, SERVER_ISN),
        );
        assert_eq!(rig.records().len(), 1);
        rig.run(
            Hook::Ingress,
            &IcmpError::new(f.router, f.unreach, 1, &out).frame(),
        );
        assert!(rig.records().is_empty(), "out, answered");
        // in: our SYN-ACK left, so the error is not this host's rejection;
        // the client's ACK still completes the attempt.
        let inn = syn(f.peer, 44001, f.here, ISN);
        rig.run(Hook::Ingress, &inn.frame());
        rig.run(
            Hook::Egress,
            &synack(f.peer, 44001, f.here, ISN, SERVER_ISN),
        );
        rig.run(
            Hook::Egress,
            &IcmpError::new(f.here, f.unreach, 1, &inn).frame(),
        );
        assert!(rig.records().is_empty(), "in, our SYN-ACK left");
        assert!(rig.holds(44001));
        rig.run(
            Hook::Ingress,
            &client_ack(f.peer, 44001, f.here, ISN, SERVER_ISN),
        );
        let recs = rig.records();
        assert_eq!(recs.len(), 1);
        assert_eq!((recs[0].dir, recs[0].outcome), (Dir::In, Outcome::Ok));
        // A timed-out attempt: the late error finds its tombstone.
        let late = syn(f.here, 44002, f.peer, ISN);
        rig.run(Hook::Egress, &late.frame());
        let now = flowlat::sinks::clock::monotonic_ns();
        let sweep = rig
            .probe
            .sweep(now + 10_000_000, Duration::from_millis(1))
            .expect("sweep");
        assert_eq!(sweep.expired.len(), 1);
        assert_eq!(sweep.expired[0].reason, Some(Reason::NO_ANSWER));
        rig.run(
            Hook::Ingress,
            &IcmpError::new(f.router, f.unreach, 1, &late).frame(),
        );
        assert!(rig.records().is_empty(), "timed out, then the error");
        let _ = rig.sweep_after_the_hold(now);
        assert_eq!(rig.pending(), 0);
    }
}

/// The cgroup filter holds an `in` attempt against its listener, known at
/// our SYN-ACK: one this host rejected before any listener answered has no
/// socket to hold against it, and is dropped (as a refusal by RST is).
#[test]
fn an_in_attempt_rejected_under_a_cgroup_filter_is_dropped() {
    let mut rig = Rig::new();
    rig.probe
        .set_filter(&Filter {
            cgroups: vec![(0xdead_beef, 1)],
            ..Filter::default()
        })
        .expect("filter");
    let s = syn(V4.peer, 45000, V4.here, ISN);
    rig.run(Hook::Ingress, &s.frame());
    rig.run(
        Hook::Egress,
        &IcmpError::new(V4.here, v4::DEST_UNREACH, 13, &s).frame(),
    );
    assert!(rig.records().is_empty());
    assert_eq!(rig.pending(), 0, "dropped, not left to time out");
    assert_eq!(rig.probe.kernel_stats().expect("stats").filtered, 1);
}

/// The client resets our SYN-ACK: its RST takes its sequence number from
/// what our SYN-ACK acknowledged, the client's ISN+1 (RFC 9293, 3.10.7.1;
/// Linux answers so for a socket already closed), or acknowledges our
/// SYN-ACK. The attempt is abandoned a round trip after our last SYN-ACK.
#[test]
fn a_client_reset_of_our_syn_ack_abandons_the_in_attempt() {
    let mut rig = Rig::new();
    for f in [V4, V6] {
        let resets = [
            (
                "RST, seq = the client's ISN+1",
                Tcp::new(f.peer, 46000, f.here, 443, RST).seq(ISN + 1),
            ),
            (
                "RST|ACK, ack = our ISN+1",
                Tcp::new(f.peer, 46001, f.here, 443, RST | ACK)
                    .seq(ISN + 1)
                    .ack(SERVER_ISN + 1),
            ),
        ];
        for (what, rst) in resets {
            let what = format!("IPv{}: {what}", f.family);
            let cport = rst.sport;
            rig.run(Hook::Ingress, &syn(f.peer, cport, f.here, ISN).frame());
            std::thread::sleep(Duration::from_millis(1));
            let sa = synack(f.peer, cport, f.here, ISN, SERVER_ISN);
            rig.run(Hook::Egress, &sa);
            // Our SYN-ACK again, 20 ms later: the round trip runs from it.
            std::thread::sleep(Duration::from_millis(20));
            rig.run(Hook::Egress, &sa);
            std::thread::sleep(Duration::from_millis(2));
            rig.run(Hook::Ingress, &rst.frame());
            let r = one(rig.records(), Dir::In, f.peer, cport, f.here, &what);
            assert_eq!(r.outcome, Outcome::Abandoned, "{what}");
            assert_eq!(r.reason, Some(Reason::CLIENT_RESET), "{what}");
            assert_eq!(reason(&r), "client-reset");
            assert_eq!(r.reason_from, Some(ip(f.peer)), "{what}: the client");
            assert_eq!(r.synack_retrans, Some(1), "{what}");
            let rtt = r.rtt_ns.expect("rtt");
            let local = r.local_ns.expect("local");
            let total = r.total_ns.expect("total");
            assert!(rtt >= 2_000_000, "{what}: rtt {rtt}");
            assert!(local >= 1_000_000, "{what}: local {local}");
            assert!(
                total >= local + rtt + 20_000_000,
                "{what}: rtt runs from the last SYN-ACK ({local} + {rtt} + 20 ms > {total})"
            );
            assert_eq!(rig.pending(), 0, "{what}");
            // Another copy of the RST finds nothing.
            rig.run(Hook::Ingress, &rst.frame());
            assert!(rig.records().is_empty(), "{what}: a second RST");
        }
    }
}

/// Resets that are not the client's answer to our SYN-ACK change nothing:
/// other sequence numbers, a RST|ACK acknowledging something else, a RST
/// before our SYN-ACK, our own RST leaving; the client's ACK then completes
/// the attempt `ok`.
#[test]
fn resets_that_do_not_fit_our_syn_ack_change_nothing() {
    let mut rig = Rig::new();
    for f in [V4, V6] {
        let (c, s) = (f.peer, f.here);
        let cport = 47000;
        let rst = |flags: u8, seq: u32, ack: u32| {
            Tcp::new(c, cport, s, 443, flags).seq(seq).ack(ack).frame()
        };
        rig.run(Hook::Ingress, &syn(c, cport, s, ISN).frame());
        // Before our SYN-ACK: the attempt is not waiting for an ACK yet.
        rig.run(Hook::Ingress, &rst(RST, SERVER_ISN + 1, 0));
        rig.run(Hook::Ingress, &rst(RST, ISN + 1, 0));
        rig.run(Hook::Egress, &synack(c, cport, s, ISN, SERVER_ISN));
        for (flags, seq, ack) in [
            (RST, SERVER_ISN, 0),
            (RST, SERVER_ISN + 2, 0),
            (RST, 0x5eed_f00d, 0),
            (RST, SERVER_ISN + 1, 0),
            (RST, ISN, 0),
            (RST, ISN + 2, 0),
            (RST | ACK, ISN + 7, SERVER_ISN),
            (RST | ACK, ISN + 1, SERVER_ISN + 2),
            (RST | ACK, 0x5eed_f00d, 0x5eed_f00d),
        ] {
            rig.run(Hook::Ingress, &rst(flags, seq, ack));
        }
        // This side's own RST with the right numbers, leaving, is no
        // client's; nor is a RST of another connection's ports.
        rig.run(
            Hook::Egress,
            &Tcp::new(s, 443, c, cport, RST).seq(ISN + 1).frame(),
        );
        rig.run(
            Hook::Ingress,
            &Tcp::new(c, cport + 1, s, 443, RST).seq(ISN + 1).frame(),
        );
        let what = format!("IPv{}", f.family);
        assert!(rig.records().is_empty(), "{what}: {:?}", rig.records());
        assert!(rig.holds(cport), "{what}: still waiting");
        rig.run(Hook::Ingress, &client_ack(c, cport, s, ISN, SERVER_ISN));
        let r = one(rig.records(), Dir::In, c, cport, s, &what);
        assert_eq!(r.outcome, Outcome::Ok, "{what}");
        assert_eq!(rig.pending(), 0, "{what}");
    }
}

/// The client's ISN may be any number, 2^32 - 1 too: its reset of our
/// SYN-ACK then carries sequence number 0, like a reset answering a SYN,
/// plain or with an ACK of our SYN-ACK.
#[test]
fn a_client_reset_is_seen_when_its_sequence_number_wraps_to_zero() {
    let mut rig = Rig::new();
    for f in [V4, V6] {
        let (c, s) = (f.peer, f.here);
        // (client port, client ISN, our ISN, the RST's flags and ack)
        for (cport, isn, server_isn, flags, ack) in [
            (48000, u32::MAX, SERVER_ISN, RST, 0),
            (48001, u32::MAX, SERVER_ISN, RST | ACK, SERVER_ISN + 1),
        ] {
            let what = format!("IPv{} flags {flags:#x}", f.family);
            rig.run(Hook::Ingress, &syn(c, cport, s, isn).frame());
            rig.run(Hook::Egress, &synack(c, cport, s, isn, server_isn));
            let rst = Tcp::new(c, cport, s, 443, flags).seq(0).ack(ack);
            rig.run(Hook::Ingress, &rst.frame());
            let r = one(rig.records(), Dir::In, c, cport, s, &what);
            assert_eq!(
                (r.outcome, r.reason),
                (Outcome::Abandoned, Some(Reason::CLIENT_RESET)),
                "{what}"
            );
            assert_eq!(rig.pending(), 0, "{what}");
        }
    }
}

/// A RST|ACK with sequence number 0 that arrives where an `in` attempt
/// waits for its ACK, and resets none, is still the server's refusal of our
/// SYN: here both ends opened the same connection, and our SYN-ACK to the
/// peer's SYN waits while the peer refuses ours.
#[test]
fn a_refusal_where_an_in_attempt_waits_still_refuses_our_syn() {
    let mut rig = Rig::new();
    for f in [V4, V6] {
        let (here, peer) = (f.here, f.peer);
        rig.run(
            Hook::Ingress,
            &Tcp::new(peer, 443, here, 50000, SYN).seq(ISN).frame(),
        );
        rig.run(
            Hook::Egress,
            &Tcp::new(here, 50000, peer, 443, SYN | ACK)
                .seq(SERVER_ISN)
                .ack(ISN + 1)
                .frame(),
        );
        rig.run(
            Hook::Egress,
            &Tcp::new(here, 50000, peer, 443, SYN).seq(ISN + 7).frame(),
        );
        rig.run(
            Hook::Ingress,
            &Tcp::new(peer, 443, here, 50000, RST | ACK)
                .seq(0)
                .ack(ISN + 8)
                .frame(),
        );
        let what = format!("IPv{}", f.family);
        let recs = rig.records();
        assert_eq!(recs.len(), 1, "{what}: {recs:?}");
        assert_eq!(
            (recs[0].dir, recs[0].outcome, recs[0].reason),
            (Dir::Out, Outcome::Refused, Some(Reason::RST)),
            "{what}"
        );
        assert_eq!(recs[0].client_port, 50000, "{what}");
        assert!(rig.holds(443), "{what}: the in attempt still waits");
        // Which the peer's ACK completes.
        rig.run(
            Hook::Ingress,
            &Tcp::new(peer, 443, here, 50000, ACK)
                .seq(ISN + 1)
                .ack(SERVER_ISN + 1)
                .frame(),
        );
        let recs = rig.records();
        assert_eq!(recs.len(), 1, "{what}: {recs:?}");
        assert_eq!((recs[0].dir, recs[0].outcome), (Dir::In, Outcome::Ok));
    }
}

/// With aggregation and no records, each failure counts in its aggregate's
/// results (`unreachable` at index 4) and by its reason in the failures the
/// classifier keeps.
#[test]
fn failures_are_aggregated_and_counted_by_reason() {
    let mut rig = Rig::new();
    rig.probe.set_aggregation(&Aggregation {
        enabled: true,
        no_records: true,
        ..Aggregation::default()
    });
    // out: two unreachable (admin-prohibited, IPv4 and IPv6), one refused
    // (IPv6 port unreachable), one ok.
    let s1 = syn(V4.here, 49000, V4.peer, ISN);
    rig.run(Hook::Egress, &s1.frame());
    rig.run(Hook::Egress, &s1.frame());
    rig.run(
        Hook::Ingress,
        &IcmpError::new(V4.router, v4::DEST_UNREACH, 13, &s1).frame(),
    );
    let s2 = syn(V6.here, 49001, V6.peer, ISN);
    rig.run(Hook::Egress, &s2.frame());
    rig.run(
        Hook::Ingress,
        &IcmpError::new(V6.router, v6::DEST_UNREACH, 1, &s2).frame(),
    );
    let s3 = syn(V6.here, 49002, V6.peer, ISN);
    rig.run(Hook::Egress, &s3.frame());
    rig.run(
        Hook::Ingress,
        &IcmpError::new(V6.peer, v6::DEST_UNREACH, 4, &s3).frame(),
    );
    rig.run(Hook::Egress, &syn(V4.here, 49003, V4.peer, ISN).frame());
    rig.run(
        Hook::Ingress,
        &synack(V4.here, 49003, V4.peer, ISN, SERVER_ISN),
    );
    // in: a client reset, and a rejection by this host (ttl exceeded).
    rig.run(Hook::Ingress, &syn(V4.peer, 49004, V4.here, ISN).frame());
    rig.run(
        Hook::Egress,
        &synack(V4.peer, 49004, V4.here, ISN, SERVER_ISN),
    );
    rig.run(
        Hook::Ingress,
        &Tcp::new(V4.peer, 49004, V4.here, 443, RST)
            .seq(ISN + 1)
            .frame(),
    );
    let s6 = syn(V4.peer, 49005, V4.here, ISN);
    rig.run(Hook::Ingress, &s6.frame());
    rig.run(
        Hook::Egress,
        &IcmpError::new(V4.here, v4::TIME_EXCEEDED, 0, &s6).frame(),
    );
    assert!(rig.records().is_empty(), "no records in this mode");
    assert_eq!(rig.in_progress(), 0, "every attempt ended");

    let aggs = rig.probe.aggregates().expect("aggregates");
    assert_eq!(aggs.len(), 2, "{aggs:?}");
    let of = |dir: Dir| {
        aggs.iter()
            .find(|(k, _)| k.dir == dir)
            .map(|(_, v)| *v)
            .expect("an aggregate per direction")
    };
    let (out, inn) = (of(Dir::Out), of(Dir::In));
    assert_eq!(
        out.results,
        [1, 1, 0, 0, 2],
        "out: ok, refused, 2 unreachable"
    );
    assert_eq!(out.retrans, 1);
    assert_eq!(out.rtt.count(), 1, "the ok attempt's rtt only");
    assert_eq!(inn.results, [0, 0, 0, 1, 1], "in: abandoned, unreachable");
    assert_eq!((inn.rtt.count(), inn.local.count()), (0, 0));

    let ifindex = aggs[0].0.ifindex;
    let mut fails: Vec<(&str, &str, u8, u64)> = rig
        .probe
        .failures()
        .expect("failures")
        .into_iter()
        .map(|((i, dir, reason), n)| {
            assert_eq!(i, ifindex);
            (dir.as_str(), reason.as_str(), reason.code(), n)
        })
        .collect();
    fails.sort();
    let mut want = vec![
        // FLOWLAT_REASON_ICMP4_UNREACH + 13, FLOWLAT_REASON_ICMP6_UNREACH + 1
        // and + 4: the same name in both families is two codes.
        ("out", "admin-prohibited", 16 + 13, 1),
        ("out", "admin-prohibited", 40 + 1, 1),
        ("out", "port-unreachable", 40 + 4, 1),
        ("in", "client-reset", Reason::CLIENT_RESET.code(), 1),
        ("in", "ttl-exceeded", 32, 1),
    ];
    want.sort();
    assert_eq!(fails, want);
}
