//! The real embedded classifier, run on crafted packets through
//! `BPF_PROG_TEST_RUN`: every packet passes unchanged with TC_ACT_UNSPEC, and
//! the pending table and the records follow the measurement contract.

use std::time::Duration;

use flowlat::probe::{Batch, Dir, Hook, Outcome, Probe, ProbeConfig, Record, Table, BATCH};
use kit::cgroup;
use kit::packet::{arp_request, icmp_echo, udp, Tcp, ACK, FIN, PSH, RST, SYN};
use kit::probe::{Rig, TC_ACT_UNSPEC};

const C4: &str = "10.0.0.5";
const S4: &str = "93.184.216.34";
const C6: &str = "2001:db8::5";
const S6: &str = "2001:db8::1";

fn syn(c: &str, s: &str, isn: u32) -> Vec<u8> {
    Tcp::new(c, 51234, s, 443, SYN).seq(isn).frame()
}
fn synack(c: &str, s: &str, isn: u32, server_isn: u32) -> Vec<u8> {
    Tcp::new(s, 443, c, 51234, SYN | ACK)
        .seq(server_isn)
        .ack(isn.wrapping_add(1))
        .frame()
}
fn client_ack(c: &str, s: &str, isn: u32, server_isn: u32) -> Vec<u8> {
    Tcp::new(c, 51234, s, 443, ACK)
        .seq(isn.wrapping_add(1))
        .ack(server_isn.wrapping_add(1))
        .frame()
}
fn rst_to_client(c: &str, s: &str, isn: u32) -> Vec<u8> {
    rst_with_seq(c, s, isn, 0)
}
/// A reset acknowledging the SYN, with sequence number `seq`.
fn rst_with_seq(c: &str, s: &str, isn: u32, seq: u32) -> Vec<u8> {
    Tcp::new(s, 443, c, 51234, RST | ACK)
        .seq(seq)
        .ack(isn.wrapping_add(1))
        .frame()
}

#[test]
fn out_handshake_reports_ok_once_with_rtt() {
    let mut rig = Rig::new();
    rig.run(Hook::Egress, &syn(C4, S4, 1000));
    assert_eq!(rig.pending(), 1);
    assert!(rig.records().is_empty(), "no record before the answer");
    std::thread::sleep(Duration::from_millis(2));
    rig.run(Hook::Ingress, &synack(C4, S4, 1000, 7000));
    let recs = rig.records();
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!((r.dir, r.outcome), (Dir::Out, Outcome::Ok));
    assert_eq!(r.client.to_string(), C4);
    assert_eq!(r.server.to_string(), S4);
    assert_eq!((r.client_port, r.server_port), (51234, 443));
    let rtt = r.rtt_ns.expect("rtt");
    assert!(
        rtt >= 2_000_000,
        "rtt {rtt} covers the 2 ms between SYN and SYN-ACK"
    );
    assert_eq!(r.total_ns, Some(rtt));
    assert_eq!(r.local_ns, None);
    assert_eq!(r.retrans, 0);
    assert_eq!(rig.pending(), 0, "the entry leaves the table");
    // A duplicate SYN-ACK finds nothing: never two records.
    rig.run(Hook::Ingress, &synack(C4, S4, 1000, 7000));
    assert!(rig.records().is_empty());
    let ks = rig.probe.kernel_stats().expect("stats");
    assert_eq!(
        (ks.sent, ks.send_failed, ks.created, ks.removed),
        (1, 0, 1, 1)
    );
}

/// The record carries the local socket's cgroup: out from the SYN, in from our
/// SYN-ACK, none for a refusal from this side (the kernel's RST for a closed
/// port has no socket of ours). Test-run gives every packet a dummy socket
/// charged to this process's cgroup, which is what the classifier reads here;
/// an arriving packet's socket is never read.
#[test]
fn records_carry_the_cgroup_of_the_local_socket() {
    let _stay = cgroup::stay();
    let mut rig = Rig::new();
    let own = cgroup::id_of(&cgroup::own());
    rig.run(Hook::Egress, &syn(C4, S4, 1000));
    rig.run(Hook::Ingress, &synack(C4, S4, 1000, 7000));
    let recs = rig.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].cgroup_id, Some(own), "out: the SYN's socket");

    rig.run(Hook::Ingress, &syn(C6, S6, 10));
    rig.run(Hook::Egress, &synack(C6, S6, 10, 20));
    rig.run(Hook::Ingress, &client_ack(C6, S6, 10, 20));
    let recs = rig.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].cgroup_id, Some(own), "in: our SYN-ACK's socket");

    rig.run(Hook::Ingress, &syn(C4, S4, 30));
    rig.run(Hook::Egress, &rst_to_client(C4, S4, 30));
    let recs = rig.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].outcome, Outcome::Refused);
    assert_eq!(recs[0].cgroup_id, None, "in, refused: no socket of ours");

    // An in attempt that times out before our SYN-ACK has no cgroup either.
    rig.run(Hook::Ingress, &syn(C4, S4, 40));
    let sweep = rig
        .probe
        .sweep(u64::MAX / 2, Duration::from_millis(1))
        .expect("sweep");
    assert_eq!(sweep.expired.len(), 1);
    assert_eq!(sweep.expired[0].cgroup_id, None);
}

#[test]
fn retransmitted_syn_counts_and_rtt_runs_from_the_last_one() {
    let mut rig = Rig::new();
    rig.run(Hook::Egress, &syn(C4, S4, 1000));
    std::thread::sleep(Duration::from_millis(5));
    rig.run(Hook::Egress, &syn(C4, S4, 1000));
    rig.run(Hook::Ingress, &synack(C4, S4, 1000, 1));
    let recs = rig.records();
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.retrans, 1);
    assert!(r.total_ns.expect("total") >= 5_000_000);
    assert!(r.rtt_ns.expect("rtt") < r.total_ns.expect("total"));
}

/// An out handshake from client port `port`, answered at once.
fn answered_from_port(rig: &Rig, port: u16) {
    rig.run(
        Hook::Egress,
        &Tcp::new(C4, port, S4, 443, SYN).seq(1000).frame(),
    );
    rig.run(
        Hook::Ingress,
        &Tcp::new(S4, 443, C4, port, SYN | ACK)
            .seq(5)
            .ack(1001)
            .frame(),
    );
}

#[test]
fn every_record_is_delivered_once_whether_its_batch_filled_or_not() {
    // Records go to user space in batches; a drain also reads the batches
    // that have not filled yet. Drained at odd moments, so that some batches
    // are read in part before they are sent whole, none may come twice.
    let mut rig = Rig::new();
    let n = 3 * BATCH as u16 + 3;
    let mut ports = Vec::new();
    for i in 0..n {
        let port = 40000 + i;
        answered_from_port(&rig, port);
        if i % 5 == 2 {
            ports.extend(rig.records().iter().map(|r| r.client_port));
        }
    }
    ports.extend(rig.records().iter().map(|r| r.client_port));
    ports.sort_unstable();
    assert_eq!(ports, (40000..40000 + n).collect::<Vec<_>>());
    assert!(rig.records().is_empty());
}

#[test]
fn one_record_per_event_comes_through_the_ring_at_once() {
    // Where part-filled batches cannot be read from their slots (CPUs that
    // may reorder the classifier's stores), each record is sent alone.
    let mut rig = Rig::new();
    rig.probe.set_records_per_event(1);
    for i in 0..3u16 {
        let port = 41000 + i;
        answered_from_port(&rig, port);
        let mut ports = Vec::new();
        rig.perf.drain(|_cpu, bytes| {
            let b = Batch::decode(bytes).expect("a whole batch");
            assert_eq!(b.n, 1, "one record per event");
            ports.push(u16::from_be(b.ev[0].key.client_port));
        });
        assert_eq!(ports, vec![port], "sent at once, through the ring");
    }
    assert!(rig.records().is_empty(), "nothing delivered twice");
    let ks = rig.probe.kernel_stats().expect("stats");
    assert_eq!((ks.sent, ks.send_failed), (3, 0));
}

#[test]
fn records_the_ring_had_no_room_for_are_counted_once_each() {
    // The rig's rings hold 8 pages per CPU: a few dozen records sent alone,
    // a couple of hundred in batches. Sent without a drain, the rest are lost,
    // and counted as records, whatever a perf event carries: by the
    // classifier, and by the ring itself, which notes its losses once it has
    // room again (hence the records after the first drain). On one CPU: a
    // thread that moves spreads its records over two rings, and may fill
    // neither.
    let mut one = nix::sched::CpuSet::new();
    let cpu = nix::sched::sched_getcpu().expect("this thread's CPU");
    one.set(cpu).expect("a CPU of this machine");
    let this_thread = nix::unistd::Pid::from_raw(0);
    nix::sched::sched_setaffinity(this_thread, &one).expect("stay on one CPU");
    for per_event in [1, BATCH as u32] {
        let mut rig = Rig::new();
        rig.probe.set_records_per_event(per_event);
        let (first, more) = (400u16, 2 * BATCH as u16);
        for i in 0..first {
            answered_from_port(&rig, 20000 + i);
        }
        let mut delivered = rig.records().len() as u64;
        for i in 0..more {
            answered_from_port(&rig, 30000 + i);
        }
        delivered += rig.records().len() as u64;
        let ps = rig.perf.stats();
        assert!(
            ps.lost > 0,
            "{per_event} per event: the ring noted its losses"
        );
        let ks = rig.probe.kernel_stats().expect("stats");
        let lost = rig.probe.records_lost(&ks, &ps);
        assert_eq!(
            delivered + lost,
            u64::from(first + more),
            "{per_event} per event: every record delivered or counted lost, once"
        );
    }
}

#[test]
fn a_reset_with_a_sequence_number_is_no_refusal() {
    // A reset answering a SYN carries sequence number 0; one with another
    // number resets a connection, even when its ACK happens to match.
    let mut rig = Rig::new();
    rig.run(Hook::Egress, &syn(C4, S4, 42));
    rig.run(Hook::Ingress, &rst_with_seq(C4, S4, 42, 7));
    rig.run(Hook::Ingress, &syn(C6, S6, 77));
    rig.run(Hook::Egress, &rst_with_seq(C6, S6, 77, 9));
    assert!(rig.records().is_empty());
    assert_eq!(rig.pending(), 2, "both attempts still wait for an answer");
    rig.run(Hook::Ingress, &rst_to_client(C4, S4, 42));
    rig.run(Hook::Egress, &rst_to_client(C6, S6, 77));
    let recs = rig.records();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert!(recs.iter().all(|r| r.outcome == Outcome::Refused));
    assert_eq!(rig.pending(), 0);
}

#[test]
fn out_refused_by_rst() {
    let mut rig = Rig::new();
    rig.run(Hook::Egress, &syn(C4, S4, 42));
    // A RST that does not acknowledge ISN+1 is not an answer to this SYN.
    rig.run(
        Hook::Ingress,
        &Tcp::new(S4, 443, C4, 51234, RST | ACK).ack(7).frame(),
    );
    assert!(rig.records().is_empty());
    rig.run(Hook::Ingress, &rst_to_client(C4, S4, 42));
    let recs = rig.records();
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].dir, recs[0].outcome), (Dir::Out, Outcome::Refused));
    assert!(recs[0].rtt_ns.is_some());
    assert_eq!(rig.pending(), 0);
}

#[test]
fn synack_with_wrong_ack_or_without_syn_is_ignored() {
    let mut rig = Rig::new();
    // Half seen: SYN-ACK whose SYN went before we started.
    rig.run(Hook::Ingress, &synack(C4, S4, 1000, 5));
    assert_eq!(rig.pending(), 0);
    rig.run(Hook::Egress, &syn(C4, S4, 1000));
    rig.run(Hook::Ingress, &synack(C4, S4, 2000, 5));
    assert!(rig.records().is_empty());
    assert_eq!(rig.pending(), 1, "still waiting for the right SYN-ACK");
}

#[test]
fn in_handshake_splits_local_and_network_time() {
    let mut rig = Rig::new();
    rig.run(Hook::Ingress, &syn(C4, S4, 1000));
    std::thread::sleep(Duration::from_millis(1));
    rig.run(Hook::Egress, &synack(C4, S4, 1000, 9000));
    // The SYN-ACK alone completes nothing.
    assert!(rig.records().is_empty());
    std::thread::sleep(Duration::from_millis(3));
    // An ACK that does not acknowledge our SYN-ACK is not the third packet.
    rig.run(Hook::Ingress, &client_ack(C4, S4, 1000, 1234));
    assert!(rig.records().is_empty());
    rig.run(Hook::Ingress, &client_ack(C4, S4, 1000, 9000));
    let recs = rig.records();
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!((r.dir, r.outcome), (Dir::In, Outcome::Ok));
    assert_eq!(r.client.to_string(), C4, "the client is the SYN's sender");
    assert!(r.local_ns.expect("local") >= 1_000_000);
    assert!(r.rtt_ns.expect("rtt") >= 3_000_000);
    assert!(r.total_ns.expect("total") >= r.rtt_ns.expect("rtt") + r.local_ns.expect("local"));
    assert_eq!(rig.pending(), 0);
}

#[test]
fn in_refused_when_this_side_resets() {
    let mut rig = Rig::new();
    rig.run(Hook::Ingress, &syn(C6, S6, 77));
    rig.run(Hook::Egress, &rst_to_client(C6, S6, 77));
    let recs = rig.records();
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!((r.dir, r.outcome), (Dir::In, Outcome::Refused));
    assert_eq!(r.rtt_ns, None);
    assert!(r.local_ns.is_some());
    assert_eq!(r.server.to_string(), S6);
}

#[test]
fn ipv6_out_handshake() {
    let mut rig = Rig::new();
    rig.run(Hook::Egress, &syn(C6, S6, u32::MAX)); // ISN+1 wraps to 0
    rig.run(Hook::Ingress, &synack(C6, S6, u32::MAX, 3));
    let recs = rig.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].client.to_string(), C6);
    assert_eq!(recs[0].outcome, Outcome::Ok);
}

#[test]
fn a_new_isn_on_the_same_tuple_is_a_new_attempt() {
    let mut rig = Rig::new();
    rig.run(Hook::Egress, &syn(C4, S4, 100));
    rig.run(Hook::Egress, &syn(C4, S4, 200));
    let recs = rig.records();
    assert_eq!(recs.len(), 1, "the first attempt ends");
    assert_eq!(recs[0].outcome, Outcome::Abandoned);
    assert_eq!(rig.pending(), 1);
    rig.run(Hook::Ingress, &synack(C4, S4, 200, 1));
    let recs = rig.records();
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].outcome, recs[0].retrans), (Outcome::Ok, 0));
}

#[test]
fn ipv4_options_are_skipped_by_ihl() {
    let mut rig = Rig::new();
    for opt_words in [1usize, 3, 10] {
        let mut s = Tcp::new(C4, 40000 + opt_words as u16, S4, 80, SYN).seq(5);
        s.ip_options = vec![1; opt_words * 4]; // NOPs
        rig.run(Hook::Egress, &s.frame());
        let mut a = Tcp::new(S4, 80, C4, 40000 + opt_words as u16, SYN | ACK)
            .seq(9)
            .ack(6);
        a.ip_options = vec![1; opt_words * 4];
        rig.run(Hook::Ingress, &a.frame());
        let recs = rig.records();
        assert_eq!(recs.len(), 1, "IHL {}", 5 + opt_words);
        assert_eq!(recs[0].client_port, 40000 + opt_words as u16);
        assert_eq!(recs[0].server_port, 80);
    }
}

#[test]
fn tcp_options_do_not_matter() {
    let mut rig = Rig::new();
    let mut s = Tcp::new(C4, 1111, S4, 80, SYN).seq(5);
    s.tcp_options = vec![
        2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ];
    rig.run(Hook::Egress, &s.frame());
    rig.run(
        Hook::Ingress,
        &Tcp::new(S4, 80, C4, 1111, SYN | ACK).seq(1).ack(6).frame(),
    );
    assert_eq!(rig.records().len(), 1);
}

#[test]
fn other_traffic_passes_untouched_and_leaves_no_trace() {
    let mut rig = Rig::new();
    let mut data = Tcp::new(C4, 51234, S4, 443, ACK | PSH).seq(1).ack(1);
    data.payload = vec![0xab; 1400];
    let mut fragment = syn(C4, S4, 1);
    fragment[14 + 6] = 0x00;
    fragment[14 + 7] = 0x10; // fragment offset 16: no TCP header here
    let mut bad_ihl = syn(C4, S4, 1);
    bad_ihl[14] = 0x44;
    let mut bad_doff = syn(C4, S4, 1);
    bad_doff[14 + 20 + 12] = 0x40;
    let mut not_v4 = syn(C4, S4, 1);
    not_v4[14] = 0x65;
    let frames = vec![
        data.frame(),
        Tcp::new(C4, 1, S4, 2, FIN | ACK).frame(),
        Tcp::new(C6, 1, S6, 2, ACK).frame(),
        udp(C4, S4),
        udp(C6, S6),
        icmp_echo(C4, S4),
        arp_request(),
        fragment,
        bad_ihl,
        bad_doff,
        not_v4,
    ];
    for f in &frames {
        rig.run(Hook::Egress, f);
        rig.run(Hook::Ingress, f);
    }
    assert_eq!(rig.pending(), 0);
    assert!(rig.records().is_empty());
}

#[test]
fn truncated_packets_pass_untouched() {
    let mut rig = Rig::new();
    // BPF_PROG_TEST_RUN refuses IPv4/IPv6 frames whose IP header is incomplete,
    // so these cut the frame anywhere from the end of the IP header on.
    for (full, ip_end) in [(syn(C4, S4, 1), 14 + 20), (syn(C6, S6, 1), 14 + 40)] {
        for len in ip_end..full.len() {
            let cut = &full[..len];
            rig.run(Hook::Egress, cut);
            rig.run(Hook::Ingress, cut);
        }
    }
    let arp = arp_request();
    for len in 14..arp.len() {
        rig.run(Hook::Egress, &arp[..len]);
    }
    // A SYN whose TCP header is cut anywhere is malformed: never tracked.
    assert_eq!(
        rig.pending(),
        0,
        "a SYN cut inside its TCP header must not be tracked"
    );
    assert!(rig.records().is_empty());
}

#[test]
fn sweep_reports_timeouts_once_and_keeps_fresh_entries() {
    let mut rig = Rig::new();
    rig.run(Hook::Egress, &syn(C4, S4, 1));
    rig.run(
        Hook::Ingress,
        &Tcp::new("10.9.9.9", 5555, S4, 22, SYN).seq(3).frame(),
    );
    rig.run(
        Hook::Egress,
        &Tcp::new(S4, 22, "10.9.9.9", 5555, SYN | ACK)
            .seq(8)
            .ack(4)
            .frame(),
    );
    std::thread::sleep(Duration::from_millis(30));
    rig.run(Hook::Egress, &syn("10.0.0.6", S4, 1)); // fresh
    let now = flowlat::sinks::clock::monotonic_ns();
    let sweep = rig
        .probe
        .sweep(now, Duration::from_millis(20))
        .expect("sweep");
    assert_eq!(sweep.pending, 1);
    assert_eq!(sweep.expired.len(), 2);
    for r in &sweep.expired {
        assert_eq!(r.outcome, Outcome::Timeout);
        assert_eq!(r.rtt_ns, None);
    }
    let inbound = sweep
        .expired
        .iter()
        .find(|r| r.dir == Dir::In)
        .expect("the in attempt");
    assert!(
        inbound.local_ns.is_some(),
        "our SYN-ACK was seen, so local time is known"
    );
    let again = rig
        .probe
        .sweep(now, Duration::from_millis(20))
        .expect("sweep");
    assert!(again.expired.is_empty(), "a timeout is reported once");
    // An answer after the timeout finds nothing.
    rig.run(Hook::Ingress, &synack(C4, S4, 1, 2));
    assert!(rig.records().is_empty());
    // The client retries the reported attempt: it is still the same attempt.
    rig.run(Hook::Egress, &syn(C4, S4, 1));
    let later = rig
        .probe
        .sweep(now + 5_000_000_000, Duration::from_secs(3600))
        .expect("sweep");
    assert!(
        later.expired.is_empty(),
        "a retried SYN of a reported attempt is not reported again"
    );
    assert_eq!(later.tombstones, 2);
    // A new ISN is a new attempt; it silently replaces the tombstone.
    rig.run(Hook::Egress, &syn(C4, S4, 99));
    assert!(rig.records().is_empty());
    rig.run(Hook::Ingress, &synack(C4, S4, 99, 2));
    let recs = rig.records();
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].outcome, recs[0].retrans), (Outcome::Ok, 0));
    // Tombstones go once their client has been quiet long enough.
    let end = rig.sweep_after_the_hold(now);
    assert_eq!(end.tombstones, 0);
}

#[test]
fn full_table_evicts_and_the_eviction_is_counted() {
    kit::require_root();
    let mut probe = Probe::load(&ProbeConfig::new(64)).expect("load");
    for i in 0..300u32 {
        let f = Tcp::new(
            &format!("10.1.{}.{}", i / 250, i % 250 + 1),
            1000,
            S4,
            80,
            SYN,
        )
        .seq(i)
        .frame();
        let r = probe.test_run(Hook::Egress, &f, 1).expect("run");
        assert_eq!(r.retval, TC_ACT_UNSPEC);
    }
    let held = probe.pending_entries().expect("walk").len() as u64;
    let room = kit::probe::room(probe.table(), 64);
    assert!(
        held <= room,
        "the table is bounded by --max-pending, holds {held} of room for {room}"
    );
    let ks = probe.kernel_stats().expect("stats");
    assert_eq!(ks.created, 300);
    let evicted = probe.evicted(&ks, held);
    assert_eq!(
        evicted,
        300 - held,
        "every insert beyond the bound evicted one"
    );
    let _ = probe.sweep(
        flowlat::sinks::clock::monotonic_ns(),
        Duration::from_secs(3600),
    );
}

/// An out handshake (SYN egress, SYN-ACK ingress) with both frames shaped by `shape`.
fn out_handshake(rig: &mut Rig, c: &str, s: &str, shape: impl Fn(&mut Tcp)) -> Vec<Record> {
    let mut syn = Tcp::new(c, 51000, s, 443, SYN).seq(10);
    shape(&mut syn);
    rig.run(Hook::Egress, &syn.frame());
    let mut ack = Tcp::new(s, 443, c, 51000, SYN | ACK).seq(20).ack(11);
    shape(&mut ack);
    rig.run(Hook::Ingress, &ack.frame());
    rig.records()
}

#[test]
fn vlan_tagged_frames_are_measured() {
    let mut rig = Rig::new();
    // One 802.1Q tag; 802.1ad outside 802.1Q (QinQ); both families.
    for tags in [vec![(0x8100, 100)], vec![(0x88a8, 7), (0x8100, 100)]] {
        for (c, s) in [(C4, S4), (C6, S6)] {
            let recs = out_handshake(&mut rig, c, s, |t| t.vlans = tags.clone());
            assert_eq!(recs.len(), 1, "tags {tags:?} {c}");
            assert_eq!(recs[0].outcome, Outcome::Ok);
            assert_eq!(recs[0].client.to_string(), c);
        }
    }
    // A third tag is beyond what is parsed: passed through, not measured.
    let three = vec![(0x88a8, 1), (0x8100, 2), (0x8100, 3)];
    assert!(out_handshake(&mut rig, C4, S4, |t| t.vlans = three.clone()).is_empty());
    assert_eq!(rig.pending(), 0);
}

#[test]
fn ipv6_extension_headers_are_walked() {
    use kit::packet::Ext;
    let mut rig = Rig::new();
    let chains = vec![
        vec![Ext::Options(0, 1)],
        vec![Ext::Options(0, 1), Ext::Options(43, 3), Ext::Options(60, 2)],
        vec![Ext::Fragment(0, true)],
        vec![Ext::Auth(4)],
        vec![
            Ext::Options(0, 1),
            Ext::Options(60, 1),
            Ext::Options(43, 1),
            Ext::Fragment(0, false),
            Ext::Auth(3),
            Ext::Options(60, 2),
        ],
    ];
    for chain in chains {
        let recs = out_handshake(&mut rig, C6, S6, |t| t.ext = chain.clone());
        assert_eq!(recs.len(), 1, "chain {chain:?}");
        assert_eq!(recs[0].outcome, Outcome::Ok);
        // An in handshake: the client's completing ACK behind the headers is
        // let through the gate, and segments of the connection before and
        // after it pass without a record.
        let shaped = |t: Tcp| {
            let mut t = t;
            t.ext = chain.clone();
            t.frame()
        };
        let (isn, server_isn) = (7000, 8000);
        let established = shaped(Tcp::new(C6, 51234, S6, 443, ACK).seq(1).ack(1));
        rig.run(Hook::Ingress, &established);
        rig.run(
            Hook::Ingress,
            &shaped(Tcp::new(C6, 51234, S6, 443, SYN).seq(isn)),
        );
        rig.run(Hook::Egress, &established);
        rig.run(
            Hook::Egress,
            &shaped(
                Tcp::new(S6, 443, C6, 51234, SYN | ACK)
                    .seq(server_isn)
                    .ack(isn + 1),
            ),
        );
        rig.run(Hook::Ingress, &established);
        rig.run(
            Hook::Ingress,
            &shaped(
                Tcp::new(C6, 51234, S6, 443, ACK)
                    .seq(isn + 1)
                    .ack(server_isn + 1),
            ),
        );
        let recs = rig.records();
        assert_eq!(recs.len(), 1, "in handshake, chain {chain:?}");
        assert_eq!(recs[0].outcome, Outcome::Ok);
        assert_eq!(recs[0].dir, Dir::In);
        rig.run(Hook::Ingress, &established);
        assert!(rig.records().is_empty());
        assert_eq!(rig.pending(), 0);
    }
    // A non-first fragment has no TCP header: skipped.
    let frag = vec![Ext::Fragment(185, false)];
    assert!(out_handshake(&mut rig, C6, S6, |t| t.ext = frag.clone()).is_empty());
    assert_eq!(rig.pending(), 0);
    // Seven extension headers: more than the bound, skipped and counted.
    let before = rig.probe.kernel_stats().expect("stats").ext_skipped;
    let long = vec![Ext::Options(60, 1); 7];
    assert!(out_handshake(&mut rig, C6, S6, |t| t.ext = long.clone()).is_empty());
    assert_eq!(rig.pending(), 0);
    let after = rig.probe.kernel_stats().expect("stats").ext_skipped;
    assert_eq!(
        after - before,
        2,
        "both packets of the long chain are counted"
    );
}

#[test]
fn first_ipv4_fragment_is_parsed() {
    let mut rig = Rig::new();
    let recs = out_handshake(&mut rig, C4, S4, |t| {
        // More-fragments set, offset 0: the first fragment holds the TCP header.
        t.ip_options.clear();
        t.payload.clear();
    });
    assert_eq!(recs.len(), 1);
    let mut syn = Tcp::new(C4, 2222, S4, 80, SYN).seq(1).frame();
    syn[14 + 6] = 0x20; // MF, offset 0
    rig.run(Hook::Egress, &syn);
    assert_eq!(rig.pending(), 1);
}

#[test]
fn tcp_fast_open_syn_with_data() {
    let mut rig = Rig::new();
    for (acked, expect) in [(11u32, true), (11 + 5, true), (11 + 6, false)] {
        let mut syn = Tcp::new(C4, 3000, S4, 443, SYN).seq(10);
        syn.payload = b"hello".to_vec();
        rig.run(Hook::Egress, &syn.frame());
        rig.run(
            Hook::Ingress,
            &Tcp::new(S4, 443, C4, 3000, SYN | ACK)
                .seq(9)
                .ack(acked)
                .frame(),
        );
        let recs = rig.records();
        assert_eq!(recs.len(), usize::from(expect), "ack {acked}");
        let _ = rig.probe.sweep(u64::MAX / 2, Duration::from_millis(1));
    }
}

#[test]
fn simultaneous_open_reports_one_out_and_one_in() {
    let mut rig = Rig::new();
    // Both ends send a SYN; both answer with a SYN-ACK; both ACK.
    rig.run(
        Hook::Egress,
        &Tcp::new(C4, 7000, S4, 7001, SYN).seq(100).frame(),
    );
    rig.run(
        Hook::Ingress,
        &Tcp::new(S4, 7001, C4, 7000, SYN).seq(500).frame(),
    );
    rig.run(
        Hook::Egress,
        &Tcp::new(C4, 7000, S4, 7001, SYN | ACK)
            .seq(100)
            .ack(501)
            .frame(),
    );
    rig.run(
        Hook::Ingress,
        &Tcp::new(S4, 7001, C4, 7000, SYN | ACK)
            .seq(500)
            .ack(101)
            .frame(),
    );
    rig.run(
        Hook::Ingress,
        &Tcp::new(S4, 7001, C4, 7000, ACK).seq(501).ack(101).frame(),
    );
    let mut recs = rig.records();
    recs.sort_by_key(|r| r.dir == Dir::In);
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!((recs[0].dir, recs[0].outcome), (Dir::Out, Outcome::Ok));
    assert_eq!(recs[0].client.to_string(), C4);
    assert_eq!((recs[1].dir, recs[1].outcome), (Dir::In, Outcome::Ok));
    assert_eq!(
        recs[1].client.to_string(),
        S4,
        "the peer's SYN made it the client of the in attempt"
    );
    assert_eq!(rig.pending(), 0);
}

#[test]
fn retransmitted_synack_is_counted_and_mismatched_rst_ignored() {
    let mut rig = Rig::new();
    rig.run(Hook::Ingress, &syn(C4, S4, 1000));
    // A RST that does not acknowledge ISN+1 is not a refusal.
    rig.run(
        Hook::Egress,
        &Tcp::new(S4, 443, C4, 51234, RST | ACK).ack(5).frame(),
    );
    // A SYN-ACK that does not acknowledge ISN+1 is not ours to count.
    rig.run(Hook::Egress, &synack(C4, S4, 4000, 9000));
    rig.run(Hook::Egress, &synack(C4, S4, 1000, 9000));
    rig.run(Hook::Ingress, &syn(C4, S4, 1000)); // the client did not hear us
    rig.run(Hook::Egress, &synack(C4, S4, 1000, 9000));
    assert!(rig.records().is_empty());
    rig.run(Hook::Ingress, &client_ack(C4, S4, 1000, 9000));
    let recs = rig.records();
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].retrans, recs[0].synack_retrans), (1, Some(1)));
    assert!(recs[0].local_ns.is_some());
}

/// A client that gave up on its connect has no socket when our SYN-ACK
/// comes: its kernel answers with a RST whose sequence number is our
/// SYN-ACK's acknowledgment, the client's ISN+1, with ACK off (RFC 9293,
/// 3.10.7.1; what Linux sends). That abandons the attempt, `client-reset`,
/// a round trip after our SYN-ACK; after a SYN with data the SYN-ACK may
/// acknowledge up to ISN+1+data, and so may the RST's number. Numbers from
/// our side of the connection (our ISN+1) or beyond what we acknowledged are
/// no answer to our SYN-ACK.
#[test]
fn a_client_reset_takes_its_sequence_number_from_our_syn_acks_ack() {
    use flowlat::probe::Reason;
    let mut rig = Rig::new();
    for (c, s, data) in [(C4, S4, 0u32), (C6, S6, 0), (C4, S4, 5)] {
        let what = format!("{c} with {data} bytes of data");
        let mut first = Tcp::new(c, 51234, s, 443, SYN).seq(1000);
        first.payload = vec![b'x'; data as usize];
        rig.run(Hook::Ingress, &first.frame());
        let acked = 1001 + data;
        rig.run(
            Hook::Egress,
            &Tcp::new(s, 443, c, 51234, SYN | ACK)
                .seq(9000)
                .ack(acked)
                .frame(),
        );
        let rst = |seq: u32| Tcp::new(c, 51234, s, 443, RST).seq(seq).frame();
        for seq in [9001, 1000, acked + 1] {
            rig.run(Hook::Ingress, &rst(seq));
        }
        assert!(rig.records().is_empty(), "{what}: {:?}", rig.records());
        assert!(rig.holds(51234), "{what}: still waiting");
        std::thread::sleep(Duration::from_millis(2));
        rig.run(Hook::Ingress, &rst(acked));
        let recs = rig.records();
        assert_eq!(recs.len(), 1, "{what}: {recs:?}");
        let r = &recs[0];
        assert_eq!((r.dir, r.outcome), (Dir::In, Outcome::Abandoned), "{what}");
        assert_eq!(r.reason, Some(Reason::CLIENT_RESET), "{what}");
        assert_eq!(r.reason_from, Some(r.client), "{what}");
        assert!(
            r.rtt_ns.is_some_and(|rtt| rtt >= 2_000_000),
            "{what}: {r:?}"
        );
        assert_eq!(rig.pending(), 0, "{what}");
    }
}

/// A SYN the client retransmitted before our late SYN-ACK reached it can
/// arrive after the client's ACK, overtaken on the way (two CPUs' backlogs
/// on a veth do that): it is a copy of the reported attempt's SYN, not a new
/// attempt that would time out. The same at the client's end. A quick answer
/// leaves no tombstone; another ISN on the ports is a new attempt still.
#[test]
fn a_copy_of_the_syn_after_a_late_answer_starts_no_attempt() {
    for table in [Table::Slots, Table::Lru] {
        copy_after_late_answer(Rig::with_table(table));
    }
}

fn copy_after_late_answer(mut rig: Rig) {
    rig.run(Hook::Ingress, &syn(C4, S4, 1000));
    rig.run(Hook::Egress, &syn(C6, S6, 2000));
    std::thread::sleep(Duration::from_millis(250));
    rig.run(Hook::Egress, &synack(C4, S4, 1000, 9000));
    rig.run(Hook::Ingress, &client_ack(C4, S4, 1000, 9000));
    rig.run(Hook::Ingress, &synack(C6, S6, 2000, 7000));
    let recs = rig.records();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert!(recs
        .iter()
        .all(|r| r.outcome == Outcome::Ok && r.retrans == 0));
    // The copies, after the answers.
    rig.run(Hook::Ingress, &syn(C4, S4, 1000));
    rig.run(Hook::Egress, &syn(C6, S6, 2000));
    assert!(rig.records().is_empty());
    let now = flowlat::sinks::clock::monotonic_ns();
    let timeout = Duration::from_millis(100);
    let hold = flowlat::probe::ANSWERED_HOLD.as_nanos() as u64;
    let sw = rig.probe.sweep(now + hold / 2, timeout).expect("sweep");
    assert!(sw.expired.is_empty(), "no second record: {:?}", sw.expired);
    assert_eq!((sw.pending, sw.tombstones), (0, 2), "held");
    let sw = rig
        .probe
        .sweep(now + hold + 100_000_000, timeout)
        .expect("sweep");
    assert!(sw.expired.is_empty(), "{:?}", sw.expired);
    assert_eq!(rig.pending(), 0, "the tombstones go after their hold");

    // A quick answer leaves nothing behind.
    rig.run(Hook::Ingress, &syn(C4, S4, 3000));
    rig.run(Hook::Egress, &synack(C4, S4, 3000, 9000));
    rig.run(Hook::Ingress, &client_ack(C4, S4, 3000, 9000));
    assert_eq!(rig.records().len(), 1);
    assert_eq!(rig.pending(), 0);
    // After a late answer, another ISN is another attempt.
    rig.run(Hook::Ingress, &syn(C4, S4, 4000));
    std::thread::sleep(Duration::from_millis(250));
    rig.run(Hook::Egress, &synack(C4, S4, 4000, 9000));
    rig.run(Hook::Ingress, &client_ack(C4, S4, 4000, 9000));
    assert_eq!(rig.records().len(), 1);
    rig.run(Hook::Ingress, &syn(C4, S4, 5000));
    rig.run(Hook::Egress, &synack(C4, S4, 5000, 8000));
    rig.run(Hook::Ingress, &client_ack(C4, S4, 5000, 8000));
    let recs = rig.records();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!((recs[0].outcome, recs[0].retrans), (Outcome::Ok, 0));
}

#[test]
fn the_gate_marks_the_ports_our_syn_acks_left_from_until_their_bank_is_recycled() {
    let mut rig = Rig::new();
    assert_eq!(rig.probe.gate_port_marks(443), [0, 0]);
    rig.run(Hook::Ingress, &syn(C4, S4, 1000));
    rig.run(Hook::Egress, &synack(C4, S4, 1000, 9000));
    // Marked by groups of 32 ports: 416 to 447.
    assert_eq!(rig.probe.gate_port_marks(443), [1, 0]);
    assert_eq!(rig.probe.gate_port_marks(416), [1, 0]);
    assert_eq!(rig.probe.gate_port_marks(448), [0, 0]);
    rig.run(Hook::Ingress, &client_ack(C4, S4, 1000, 9000));
    assert_eq!(rig.records().len(), 1, "the ACK to a marked port completes");
    assert_eq!(rig.probe.gate_port_marks(443), [1, 0], "a mark stays");
    // An ACK to a port no SYN-ACK of ours left from passes at once, and
    // completes nothing (nothing could wait there).
    rig.run(
        Hook::Ingress,
        &Tcp::new(C4, 51234, S4, 8443, ACK).seq(1).ack(1).frame(),
    );
    assert!(rig.records().is_empty());
    // The first rotation makes bank 1 active, the next recycles bank 0.
    let t = flowlat::sinks::clock::monotonic_ns() + 20_000_000;
    let (step, period) = (Duration::from_millis(10), 1_010_000_000);
    let _ = rig.probe.sweep(t, step).expect("sweep");
    let _ = rig.probe.sweep(t + period, step).expect("sweep");
    assert_eq!(rig.probe.gate_port_marks(443), [1, 0]);
    let at_8443 = |isn: u32| {
        let syn = Tcp::new(C4, 51234, S4, 8443, SYN).seq(isn).frame();
        let synack = Tcp::new(S4, 8443, C4, 51234, SYN | ACK)
            .seq(9000)
            .ack(isn + 1)
            .frame();
        let ack = Tcp::new(C4, 51234, S4, 8443, ACK)
            .seq(isn + 1)
            .ack(9001)
            .frame();
        (syn, synack, ack)
    };
    let (s, sa, a) = at_8443(5000);
    rig.run(Hook::Ingress, &s);
    rig.run(Hook::Egress, &sa);
    assert_eq!(
        rig.probe.gate_port_marks(8443),
        [0, 1],
        "marked in the new bank"
    );
    rig.run(Hook::Ingress, &a);
    assert_eq!(rig.records().len(), 1);
    let _ = rig.probe.sweep(t + 2 * period, step).expect("sweep");
    assert_eq!(rig.probe.gate_port_marks(443), [0, 0], "recycled");
    assert_eq!(rig.probe.gate_port_marks(8443), [0, 1]);
}

#[test]
fn established_acks_pass_the_gate_only_when_an_attempt_waits() {
    let mut rig = Rig::new();
    let slot_of = |c: [u8; 4], s: [u8; 4], cp: u16, sp: u16| {
        let (a, b) = (u32::from_ne_bytes(c), u32::from_ne_bytes(s));
        ((a ^ b ^ u32::from(cp.to_be() ^ sp.to_be())).wrapping_mul(0x9E37_79B1)) >> 17
    };
    let slot = slot_of([10, 0, 0, 5], [93, 184, 216, 34], 51234, 443);
    assert_eq!(rig.probe.gate_count(slot), 0);
    rig.run(Hook::Ingress, &syn(C4, S4, 1000));
    rig.run(Hook::Egress, &synack(C4, S4, 1000, 9000));
    assert_eq!(rig.probe.gate_count(slot), 1, "our SYN-ACK opens the slot");
    rig.run(Hook::Egress, &synack(C4, S4, 1000, 9000));
    assert_eq!(
        rig.probe.gate_count(slot),
        1,
        "a retransmission counts once"
    );
    rig.run(Hook::Ingress, &client_ack(C4, S4, 1000, 9000));
    assert_eq!(rig.records().len(), 1);
    assert_eq!(rig.probe.gate_count(slot), 0, "completion closes it");
    // An attempt that times out leaves its count until its bank is recycled,
    // one --syn-timeout + 1 s after the next rotation.
    rig.run(Hook::Ingress, &syn(C4, S4, 2000));
    rig.run(Hook::Egress, &synack(C4, S4, 2000, 9000));
    let t = flowlat::sinks::clock::monotonic_ns() + 20_000_000;
    let step = Duration::from_millis(10);
    let period = 1_010_000_000;
    assert_eq!(rig.probe.sweep(t, step).expect("sweep").expired.len(), 1);
    assert_eq!(rig.probe.gate_count(slot), 1);
    let _ = rig.probe.sweep(t + period, step).expect("sweep");
    assert_eq!(rig.probe.gate_count(slot), 1, "its bank is still in use");
    // The rotation made bank 1 active: a new attempt counts there.
    let other = slot_of([10, 0, 0, 6], [93, 184, 216, 34], 51234, 443);
    let c6 = "10.0.0.6";
    assert_eq!(rig.probe.gate_banks(other), [0, 0]);
    rig.run(Hook::Ingress, &syn(c6, S4, 4000));
    rig.run(Hook::Egress, &synack(c6, S4, 4000, 9000));
    assert_eq!(
        rig.probe.gate_banks(other),
        [0, 1],
        "counted in the new bank"
    );
    rig.run(Hook::Ingress, &client_ack(c6, S4, 4000, 9000));
    assert_eq!(rig.records().len(), 1);
    assert_eq!(rig.probe.gate_banks(other), [0, 0]);
    let _ = rig.probe.sweep(t + 2 * period, step).expect("sweep");
    assert_eq!(rig.probe.gate_count(slot), 0, "recycled");
    // Measurement goes on across rotations.
    rig.run(Hook::Ingress, &syn(C4, S4, 3000));
    rig.run(Hook::Egress, &synack(C4, S4, 3000, 9000));
    rig.run(Hook::Ingress, &client_ack(C4, S4, 3000, 9000));
    assert_eq!(rig.records().len(), 1);
}

#[test]
fn lying_lengths_and_large_packets_pass_untouched() {
    let mut rig = Rig::new();
    let mut long = Tcp::new(C4, 51234, S4, 443, ACK).seq(1).ack(1);
    long.payload = vec![7; 3000];
    let mut frames = vec![long.frame()];
    for tot in [0u16, 20, 40, 41, 0xffff] {
        let mut f = syn(C4, S4, 5);
        f[16..18].copy_from_slice(&tot.to_be_bytes());
        frames.push(f);
    }
    let mut v6 = syn(C6, S6, 5);
    v6[18..20].copy_from_slice(&0xffffu16.to_be_bytes());
    frames.push(v6);
    for f in &frames {
        rig.run(Hook::Egress, f);
        rig.run(Hook::Ingress, f);
    }
    let _ = rig.records();
}
