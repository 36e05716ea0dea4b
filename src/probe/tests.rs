//! The probe's unit tests: the contract's arithmetic, the layout against the
//! C header, the filters' keys, the aggregates and delivery bookkeeping.

use super::abi::*;
use super::aggregate::*;
use super::filter::*;
use super::record::*;
use super::slots;
use std::net::Ipv6Addr;

fn event(dir: u8, result: u8) -> Event {
    let mut ev = Event::default();
    ev.key.family = 4;
    ev.key.client[..4].copy_from_slice(&[10, 0, 0, 5]);
    ev.key.server[..4].copy_from_slice(&[93, 184, 216, 34]);
    ev.key.client_port = 51234u16.to_be();
    ev.key.server_port = 443u16.to_be();
    ev.key.ifindex = 7;
    ev.key.dir = dir;
    ev.p.first_syn_ns = 1_000;
    ev.p.last_syn_ns = 3_000;
    ev.p.syns = 2;
    ev.result = result;
    ev
}

#[test]
fn out_ok_measures_from_the_last_and_first_syn() {
    let mut ev = event(DIR_OUT, RESULT_OK);
    ev.end_ns = 10_000;
    let r = Record::from_event(&ev).expect("valid");
    assert_eq!(r.dir, Dir::Out);
    assert_eq!(r.outcome, Outcome::Ok);
    assert_eq!(r.rtt_ns, Some(7_000));
    assert_eq!(r.total_ns, Some(9_000));
    assert_eq!(r.local_ns, None);
    assert_eq!(r.retrans, 1);
    assert_eq!(r.client.to_string(), "10.0.0.5");
    assert_eq!(r.client_port, 51234);
    assert_eq!(r.server_port, 443);
}

#[test]
fn in_ok_splits_local_and_network_time() {
    let mut ev = event(DIR_IN, RESULT_OK);
    ev.p.first_synack_ns = 3_500;
    ev.p.last_synack_ns = 4_000;
    ev.end_ns = 9_000;
    let r = Record::from_event(&ev).expect("valid");
    assert_eq!(r.rtt_ns, Some(5_000));
    assert_eq!(r.local_ns, Some(500));
    assert_eq!(r.total_ns, Some(8_000));
}

#[test]
fn in_refused_has_local_time_and_no_rtt() {
    let mut ev = event(DIR_IN, RESULT_REFUSED);
    ev.end_ns = 3_200;
    let r = Record::from_event(&ev).expect("valid");
    assert_eq!(r.rtt_ns, None);
    assert_eq!(r.local_ns, Some(200));
}

#[test]
fn timeouts_have_no_rtt() {
    let mut ev = event(DIR_OUT, RESULT_TIMEOUT);
    ev.end_ns = 1_000 + 10_000_000_000;
    let r = Record::from_event(&ev).expect("valid");
    assert_eq!(r.outcome, Outcome::Timeout);
    assert_eq!((r.rtt_ns, r.local_ns, r.total_ns), (None, None, None));
}

#[test]
fn malformed_records_are_rejected() {
    assert!(Record::from_event(&event(9, RESULT_OK)).is_none());
    assert!(Record::from_event(&event(DIR_OUT, 77)).is_none());
    let mut ev = event(DIR_OUT, RESULT_OK);
    ev.key.family = 5;
    assert!(Record::from_event(&ev).is_none());
    assert!(Event::decode(&[0u8; 10]).is_none());
}

/// `bpf/layout.c` records clang's sizes and offsets of the shared structs in
/// its `layout` section, in the order listed here.
#[test]
fn rust_structs_match_the_c_header() {
    use object::{Object as _, ObjectSection as _};
    use std::mem::{offset_of, size_of};
    let elf = include_bytes!(concat!(env!("OUT_DIR"), "/layout.o")).to_vec();
    let file = object::File::parse(&*elf).expect("layout.o parses");
    let data = file
        .section_by_name("layout")
        .expect("layout section")
        .data()
        .expect("data");
    let c: Vec<u64> = data
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let rust = [
        size_of::<Key>(),
        offset_of!(Key, client),
        offset_of!(Key, server),
        offset_of!(Key, client_port),
        offset_of!(Key, server_port),
        offset_of!(Key, ifindex),
        offset_of!(Key, family),
        offset_of!(Key, dir),
        size_of::<Pending>(),
        offset_of!(Pending, first_syn_ns),
        offset_of!(Pending, last_syn_ns),
        offset_of!(Pending, first_synack_ns),
        offset_of!(Pending, last_synack_ns),
        offset_of!(Pending, client_isn),
        offset_of!(Pending, server_isn),
        offset_of!(Pending, syns),
        offset_of!(Pending, synacks),
        offset_of!(Pending, state),
        offset_of!(Pending, bank),
        offset_of!(Pending, syn_len),
        offset_of!(Pending, cgroup_id),
        size_of::<Event>(),
        offset_of!(Event, key),
        offset_of!(Event, p),
        offset_of!(Event, end_ns),
        offset_of!(Event, result),
        DIR_OUT as usize,
        DIR_IN as usize,
        RESULT_OK as usize,
        RESULT_REFUSED as usize,
        RESULT_TIMEOUT as usize,
        RESULT_ABANDONED as usize,
        STATE_SYN as usize,
        STATE_SYNACK as usize,
        STATE_REPORTED as usize,
        STATE_ANSWERED as usize,
        STAT_SENT,
        STAT_SEND_FAILED,
        STAT_CREATED,
        STAT_REMOVED,
        STAT_EXT_SKIPPED,
        STAT_FILTERED,
        STAT_BELOW_MIN_RTT,
        STAT_AGG_FAILED,
        STAT_MAX,
        GATE_SLOTS,
        GATE_BANKS as usize,
        GATE_PORT_WORDS,
        (GATE_SLOTS + GATE_PORT_WORDS) * 4 * GATE_BANKS as usize,
        size_of::<ConfigGlobal>(),
        offset_of!(ConfigGlobal, bank),
        offset_of!(ConfigGlobal, flags),
        offset_of!(ConfigGlobal, agg_keys),
        offset_of!(ConfigGlobal, batch),
        offset_of!(ConfigGlobal, table_mask),
        CFG_MIN_RTT as usize,
        CFG_AGGREGATE as usize,
        CFG_NO_RECORDS as usize,
        CFG_AGG_PORT as usize,
        CFG_AGG_CGROUP as usize,
        CFG_IN_ORDER as usize,
        FILTER_PORT as usize,
        FILTER_NET as usize,
        FILTER_DIR as usize,
        FILTER_CGROUP as usize,
        MAX_FILTER_CGROUPS,
        MAX_FILTER_NETS,
        FILTER_MEMO,
        size_of::<FilterGlobal>(),
        offset_of!(FilterGlobal, kinds),
        offset_of!(FilterGlobal, dirs),
        offset_of!(FilterGlobal, cgroups),
        offset_of!(FilterGlobal, min_rtt_ns),
        offset_of!(FilterGlobal, cgroup_id),
        offset_of!(FilterGlobal, cgroup_level),
        offset_of!(FilterGlobal, ports),
        offset_of!(FilterGlobal, memo),
        size_of::<NetKey>(),
        offset_of!(NetKey, prefixlen),
        offset_of!(NetKey, family),
        offset_of!(NetKey, addr),
        HIST_N,
        AGG_KEYS,
        AGG_RESERVE,
        size_of::<AggKeyRaw>(),
        offset_of!(AggKeyRaw, ifindex),
        offset_of!(AggKeyRaw, dir),
        offset_of!(AggKeyRaw, other),
        offset_of!(AggKeyRaw, server_port),
        offset_of!(AggKeyRaw, cgroup_id),
        size_of::<Hist>(),
        offset_of!(Hist, buckets),
        offset_of!(Hist, sum_ns),
        size_of::<AggValue>(),
        offset_of!(AggValue, results),
        offset_of!(AggValue, retrans),
        offset_of!(AggValue, rtt),
        offset_of!(AggValue, local),
        BATCH,
        size_of::<Batch>(),
        offset_of!(Batch, seq),
        offset_of!(Batch, n),
        offset_of!(Batch, ev),
        AGG_FAST as usize,
        size_of::<AggSlot>(),
        offset_of!(AggSlot, key),
        offset_of!(AggSlot, v),
        slots::WAYS,
        slots::FRONT,
        slots::LIVE as usize,
        slots::BUSY as usize,
        size_of::<slots::Entry>(),
        offset_of!(slots::Entry, key),
        offset_of!(slots::Entry, p),
        size_of::<slots::Bucket>(),
        offset_of!(slots::Bucket, word),
        offset_of!(slots::Bucket, spill),
        offset_of!(slots::Bucket, e),
        offset_of!(Event, reason),
        RESULT_UNREACHABLE as usize,
        RESULTS,
        REASON_NONE as usize,
        REASON_RST as usize,
        REASON_NEW_ISN as usize,
        REASON_CLIENT_RESET as usize,
        REASON_NO_ANSWER as usize,
        REASON_NO_ACK as usize,
        REASON_ICMP4_UNREACH as usize,
        REASON_TIME_EXCEEDED as usize,
        REASON_ICMP6_UNREACH as usize,
        REASONS,
        FAIL_KEYS,
        size_of::<FailKey>(),
        offset_of!(FailKey, ifindex),
        offset_of!(FailKey, dir),
        offset_of!(FailKey, reason),
        offset_of!(ConfigGlobal, late_answer_us),
        LATE_ANSWER_US as usize,
        size_of::<Proc>(),
        offset_of!(Proc, pid),
        offset_of!(Proc, comm),
        offset_of!(Pending, proc),
        CFG_PROCS as usize,
        FILTER_PROC as usize,
        MAX_FILTER_PROCS,
        offset_of!(FilterGlobal, pids),
        offset_of!(FilterGlobal, comms),
        offset_of!(FilterGlobal, pid),
        offset_of!(FilterGlobal, comm),
        PROC_SLOTS,
        size_of::<ProcSlot>(),
        offset_of!(ProcSlot, cookie),
        offset_of!(ProcSlot, proc),
    ];
    let rust: Vec<usize> = rust
        .into_iter()
        .chain(HIST_BOUNDS_NS.iter().map(|&b| b as usize))
        .collect();
    let rust: Vec<u64> = rust.iter().map(|&v| v as u64).collect();
    assert_eq!(c, rust, "bpf/flowlat.h and src/probe/abi.rs disagree");
}

#[test]
fn net_keys_clear_host_bits_and_count_the_family_byte() {
    let k = net_key("10.1.2.3".parse().expect("literal"), 20).expect("valid");
    assert_eq!((k.prefixlen, k.family), (28, 4));
    assert_eq!(k.addr[..4], [10, 1, 0, 0]);
    let k = net_key("2001:db8:ffff::1".parse().expect("literal"), 36).expect("valid");
    assert_eq!((k.prefixlen, k.family), (44, 6));
    assert_eq!(k.addr[..6], [0x20, 0x01, 0x0d, 0xb8, 0xf0, 0]);
    assert_eq!(k.addr[15], 0);
    let all = net_key("0.0.0.0".parse().expect("literal"), 0).expect("valid");
    assert_eq!((all.prefixlen, all.addr), (8, [0; 16]));
    let full = net_key("::1".parse().expect("literal"), 128).expect("valid");
    assert_eq!(full.addr[15], 1);
    for (a, p) in [("10.0.0.0", 33), ("::", 129)] {
        let e = net_key(a.parse().expect("literal"), p).expect_err("too long");
        assert!(e.to_string().contains("prefix is at most"), "{e}");
    }
}

#[test]
fn durations_fall_in_the_first_bucket_whose_bound_they_do_not_exceed() {
    assert_eq!(hist_bucket(0), 0);
    assert_eq!(hist_bucket(5_000), 0);
    assert_eq!(hist_bucket(5_001), 1);
    assert_eq!(hist_bucket(10_000), 1);
    assert_eq!(hist_bucket(999_999), 7);
    assert_eq!(hist_bucket(1_000_000), 7);
    assert_eq!(hist_bucket(50_000_000_000), HIST_N - 1);
    assert_eq!(hist_bucket(50_000_000_001), HIST_N);
    assert_eq!(hist_bucket(u64::MAX), HIST_N);
    for w in HIST_BOUNDS_NS.windows(2) {
        assert!(w[0] < w[1]);
        assert!(w[1] == 2 * w[0] || 2 * w[1] == 5 * w[0], "1-2-5: {w:?}");
    }
}

#[test]
fn records_aggregate_by_the_one_definition() {
    let mut a = AggValue::default();
    let mut ok_in = event(DIR_IN, RESULT_OK);
    ok_in.p.first_synack_ns = 3_500;
    ok_in.p.last_synack_ns = 4_000;
    ok_in.end_ns = 3_004_000;
    let mut refused_out = event(DIR_OUT, RESULT_REFUSED);
    refused_out.end_ns = 10_000;
    let mut timeout_in = event(DIR_IN, RESULT_TIMEOUT);
    timeout_in.p.synacks = 1;
    timeout_in.p.first_synack_ns = 3_100;
    timeout_in.end_ns = 99_000_000;
    for ev in [ok_in, refused_out, timeout_in] {
        a.add_record(&Record::from_event(&ev).expect("valid"));
    }
    assert_eq!(a.results, [1, 1, 1, 0, 0]);
    assert_eq!(a.retrans, 3, "each event had two SYNs");
    assert_eq!(a.rtt.count(), 1, "rtt of ok attempts only");
    assert_eq!(a.rtt.buckets[hist_bucket(3_000_000)], 1);
    assert_eq!(a.rtt.sum_ns, 3_000_000);
    assert_eq!(
        a.local.count(),
        1,
        "local of in + ok only, not the timeout's"
    );
    assert_eq!(a.local.sum_ns, 500);
    let mut b = a;
    b.merge(&a);
    assert_eq!(b.results, [2, 2, 2, 0, 0]);
    assert_eq!((b.rtt.count(), b.local.sum_ns), (2, 1_000));
}

#[test]
fn cgroup_id_zero_means_no_socket() {
    let mut ev = event(DIR_OUT, RESULT_OK);
    assert_eq!(Record::from_event(&ev).expect("valid").cgroup_id, None);
    ev.p.cgroup_id = 4242;
    assert_eq!(
        Record::from_event(&ev).expect("valid").cgroup_id,
        Some(4242)
    );
}

#[test]
fn batches_decode() {
    let mut b = Batch {
        seq: 7,
        n: BATCH as u32,
        ..Batch::default()
    };
    b.ev[3] = event(DIR_IN, RESULT_OK);
    assert_eq!(Batch::decode(&b.to_bytes()), Some(b));
    assert!(Batch::decode(&b.to_bytes()[1..]).is_none());
}

#[test]
fn ipv6_addresses_decode() {
    let mut ev = event(DIR_OUT, RESULT_OK);
    ev.key.family = 6;
    ev.key.server = "2001:db8::1".parse::<Ipv6Addr>().expect("literal").octets();
    let r = Record::from_event(&Event::decode(&ev.to_bytes()).expect("size")).expect("valid");
    assert_eq!(r.server.to_string(), "2001:db8::1");
}

#[test]
fn icmp_reasons_are_named_by_their_codes() {
    let name = |code: u8| Reason::from_code(code).map(Reason::as_str);
    assert_eq!(name(REASON_ICMP4_UNREACH), Some("net-unreachable"));
    assert_eq!(name(REASON_ICMP4_UNREACH + 1), Some("host-unreachable"));
    assert_eq!(name(REASON_ICMP4_UNREACH + 3), Some("port-unreachable"));
    assert_eq!(name(REASON_ICMP4_UNREACH + 10), Some("host-prohibited"));
    assert_eq!(name(REASON_ICMP4_UNREACH + 13), Some("admin-prohibited"));
    assert_eq!(name(REASON_TIME_EXCEEDED), Some("ttl-exceeded"));
    assert_eq!(name(REASON_ICMP6_UNREACH), Some("no-route"));
    assert_eq!(name(REASON_ICMP6_UNREACH + 1), Some("admin-prohibited"));
    assert_eq!(name(REASON_ICMP6_UNREACH + 3), Some("address-unreachable"));
    assert_eq!(name(REASON_ICMP6_UNREACH + 4), Some("port-unreachable"));
    assert_eq!(name(REASON_NONE), None);
    assert_eq!(name(6), None);
    assert_eq!(name(REASONS as u8), None);
    let names: Vec<&str> = Reason::names().collect();
    assert!(names.iter().all(|n| !n.is_empty()));
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "one series per name");
}

#[test]
fn an_icmp_error_times_the_answer_and_names_its_sender() {
    let mut ev = event(DIR_OUT, RESULT_UNREACHABLE);
    ev.reason = REASON_ICMP4_UNREACH + 13;
    ev.end_ns = 10_000;
    let mut from = [0u8; 16];
    from[..4].copy_from_slice(&[192, 0, 2, 1]);
    ev.p.first_synack_ns = u64::from_ne_bytes(from[..8].try_into().expect("8 bytes"));
    let r = Record::from_event(&ev).expect("valid");
    assert_eq!(r.outcome, Outcome::Unreachable);
    assert_eq!(r.reason.map(Reason::as_str), Some("admin-prohibited"));
    assert_eq!(
        r.reason_from.map(|a| a.to_string()).as_deref(),
        Some("192.0.2.1")
    );
    assert_eq!(
        (r.rtt_ns, r.local_ns, r.total_ns),
        (Some(7_000), None, Some(9_000))
    );

    let mut ev = event(DIR_IN, RESULT_UNREACHABLE);
    ev.reason = REASON_ICMP6_UNREACH + 1;
    ev.end_ns = 3_500;
    let r = Record::from_event(&ev).expect("valid");
    assert_eq!(
        (r.rtt_ns, r.local_ns, r.total_ns),
        (None, Some(500), Some(2_500))
    );
}

#[test]
fn a_client_reset_is_abandoned_a_round_trip_after_our_synack() {
    let mut ev = event(DIR_IN, RESULT_ABANDONED);
    ev.reason = REASON_CLIENT_RESET;
    ev.p.first_synack_ns = 3_200;
    ev.p.last_synack_ns = 4_000;
    ev.p.synacks = 2;
    ev.end_ns = 9_000;
    let r = Record::from_event(&ev).expect("valid");
    assert_eq!(r.reason, Some(Reason::CLIENT_RESET));
    assert_eq!(r.reason_from, Some(r.client));
    assert_eq!(
        (r.rtt_ns, r.local_ns, r.total_ns),
        (Some(5_000), Some(200), Some(8_000))
    );

    // A new ISN on the tuple: how fast we answered, no round trip.
    ev.reason = REASON_NEW_ISN;
    let r = Record::from_event(&ev).expect("valid");
    assert_eq!((r.rtt_ns, r.local_ns, r.total_ns), (None, Some(200), None));
}

#[test]
fn refusals_and_timeouts_say_why_and_ok_does_not() {
    let mut ev = event(DIR_OUT, RESULT_REFUSED);
    ev.reason = REASON_RST;
    ev.end_ns = 5_000;
    let r = Record::from_event(&ev).expect("valid");
    assert_eq!(
        (r.reason, r.reason_from),
        (Some(Reason::RST), Some(r.server))
    );
    let mut ev = event(DIR_OUT, RESULT_TIMEOUT);
    ev.reason = REASON_NO_ANSWER;
    let r = Record::from_event(&ev).expect("valid");
    assert_eq!((r.reason, r.reason_from), (Some(Reason::NO_ANSWER), None));
    let mut ev = event(DIR_OUT, RESULT_OK);
    ev.reason = REASON_RST;
    ev.end_ns = 5_000;
    let r = Record::from_event(&ev).expect("valid");
    assert_eq!((r.reason, r.reason_from), (None, None));
}

#[test]
fn a_process_name_is_cut_as_the_kernel_cuts_it_and_never_breaks_a_line() {
    assert_eq!(
        Comm::new("a-name-longer-than-15").as_str(),
        "a-name-longer-t"
    );
    // What follows the kernel's NUL is not part of the name.
    let mut raw = *b"nginx\0garbage!!!";
    assert_eq!(Comm::from_kernel(raw), Comm::new("nginx"));
    raw = *b"0123456789abcdef";
    assert_eq!(Comm::from_kernel(raw).as_str(), "0123456789abcde");
    assert_eq!(Comm::new("two\nlines\t").text(), "two?lines?");
}
