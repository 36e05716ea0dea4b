//! The two tables of attempts in progress (`bpf/table.h`): the slot table this
//! kernel runs, and the LRU hash table kernels without compare-and-exchange in
//! BPF run. Both keep the measurement contract; the slot table's buckets give
//! up their oldest attempt when full, and the kernel agrees with user space on
//! which bucket a key goes to.

use std::time::Duration;

use flowlat::probe::slots;
use flowlat::probe::{Dir, Hook, Outcome, Probe, ProbeConfig, Table};
use kit::packet::{Tcp, ACK, RST, SYN};
use kit::probe::Rig;

const S4: &str = "93.184.216.34";

fn syn_from(c: &str, port: u16, isn: u32) -> Vec<u8> {
    Tcp::new(c, port, S4, 443, SYN).seq(isn).frame()
}
fn synack_to(c: &str, port: u16, isn: u32) -> Vec<u8> {
    Tcp::new(S4, 443, c, port, SYN | ACK)
        .seq(7000)
        .ack(isn.wrapping_add(1))
        .frame()
}

fn rig(table: Table, max_pending: u32) -> Rig {
    Rig::with(ProbeConfig {
        table: Some(table),
        ..ProbeConfig::new(max_pending)
    })
}

/// `uname -r`'s major and minor version.
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut parts = release.trim().split(['.', '-']);
    let mut num = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (num(), num())
}

#[test]
fn the_slot_table_is_chosen_where_the_kernel_has_compare_and_exchange() {
    kit::require_root();
    let has = flowlat::bpf::sys::has_atomic_cmpxchg();
    if kernel_version() >= (5, 12) {
        assert!(has, "Linux 5.12 and later have BPF compare-and-exchange");
    }
    let probe = Probe::load(&ProbeConfig::new(1024)).expect("load");
    let want = if has { Table::Slots } else { Table::Lru };
    assert_eq!(probe.table(), want);
}

/// The contract, table by table: each way an attempt ends, once. The slot
/// table both as x86 runs it (a new attempt published with a plain store)
/// and as other CPUs do (with a compare-and-exchange).
#[test]
fn both_tables_keep_the_contract() {
    for (table, in_order) in [
        (Table::Slots, true),
        (Table::Slots, false),
        (Table::Lru, true),
    ] {
        let mut rig = rig(table, 1024);
        rig.probe.set_stores_in_order(in_order);
        let what = format!("{table:?}, stores in order: {in_order}");
        // out, answered.
        rig.run(Hook::Egress, &syn_from("10.0.0.5", 40000, 100));
        rig.run(Hook::Ingress, &synack_to("10.0.0.5", 40000, 100));
        let recs = rig.records();
        assert_eq!(recs.len(), 1, "{what}");
        assert_eq!(
            (recs[0].outcome, recs[0].dir),
            (Outcome::Ok, Dir::Out),
            "{what}"
        );
        assert_eq!(
            rig.pending(),
            0,
            "{what}: the answered attempt left the table"
        );
        // The answer again: nothing more.
        rig.run(Hook::Ingress, &synack_to("10.0.0.5", 40000, 100));
        assert!(rig.records().is_empty(), "{what}");
        // in, completed by the client's ACK.
        let c = "10.0.0.6";
        rig.run(
            Hook::Ingress,
            &Tcp::new(c, 40001, S4, 443, SYN).seq(5).frame(),
        );
        rig.run(
            Hook::Egress,
            &Tcp::new(S4, 443, c, 40001, SYN | ACK)
                .seq(900)
                .ack(6)
                .frame(),
        );
        rig.run(
            Hook::Ingress,
            &Tcp::new(c, 40001, S4, 443, ACK).seq(6).ack(901).frame(),
        );
        let recs = rig.records();
        assert_eq!(recs.len(), 1, "{what}");
        assert_eq!(
            (recs[0].outcome, recs[0].dir),
            (Outcome::Ok, Dir::In),
            "{what}"
        );
        assert!(recs[0].local_ns.is_some(), "{what}");
        // out, refused.
        rig.run(Hook::Egress, &syn_from("10.0.0.7", 40002, 50));
        rig.run(
            Hook::Ingress,
            &Tcp::new(S4, 443, "10.0.0.7", 40002, RST | ACK)
                .ack(51)
                .frame(),
        );
        let recs = rig.records();
        assert_eq!(recs.len(), 1, "{what}");
        assert_eq!(recs[0].outcome, Outcome::Refused, "{what}");
        // A new ISN on the tuple abandons the first attempt and starts another.
        rig.run(Hook::Egress, &syn_from("10.0.0.8", 40003, 1));
        rig.run(Hook::Egress, &syn_from("10.0.0.8", 40003, 2));
        let recs = rig.records();
        assert_eq!(recs.len(), 1, "{what}");
        assert_eq!(recs[0].outcome, Outcome::Abandoned, "{what}");
        rig.run(Hook::Ingress, &synack_to("10.0.0.8", 40003, 2));
        assert_eq!(
            rig.records().len(),
            1,
            "{what}: the second attempt is measured"
        );
        // A timeout: reported once by the sweep; the tombstone absorbs the
        // client's retransmission, and a late answer finds nothing.
        rig.run(Hook::Egress, &syn_from("10.0.0.9", 40004, 10));
        std::thread::sleep(Duration::from_millis(30));
        let now = flowlat::sinks::clock::monotonic_ns();
        let sweep = rig
            .probe
            .sweep(now, Duration::from_millis(20))
            .expect("sweep");
        assert_eq!(sweep.expired.len(), 1, "{what}");
        assert_eq!(sweep.expired[0].outcome, Outcome::Timeout, "{what}");
        assert_eq!(sweep.tombstones, 1, "{what}");
        let again = rig
            .probe
            .sweep(now, Duration::from_millis(20))
            .expect("sweep");
        assert!(
            again.expired.is_empty(),
            "{what}: a timeout is reported once"
        );
        rig.run(Hook::Egress, &syn_from("10.0.0.9", 40004, 10));
        rig.run(Hook::Ingress, &synack_to("10.0.0.9", 40004, 10));
        assert!(rig.records().is_empty(), "{what}");
        let ks = rig.probe.kernel_stats().expect("stats");
        let held = rig.pending() as u64;
        assert_eq!(rig.probe.evicted(&ks, held), 0, "{what}: nothing evicted");
    }
}

#[test]
fn both_tables_are_bounded_and_count_what_they_evict() {
    for table in [Table::Slots, Table::Lru] {
        let rig = rig(table, 64);
        let room = kit::probe::room(table, 64);
        // Three times as many attempts as there is room for.
        let n = 3 * room as u32;
        for i in 0..n {
            let c = format!("10.1.{}.{}", i / 250, i % 250 + 1);
            rig.run(Hook::Egress, &syn_from(&c, 1000, i));
        }
        let held = rig.pending() as u64;
        assert!(held <= room, "{table:?}: holds {held} of room for {room}");
        assert!(
            held >= room / 2,
            "{table:?}: holds only {held} of room for {room}"
        );
        let ks = rig.probe.kernel_stats().expect("stats");
        assert_eq!(ks.created, u64::from(n), "{table:?}");
        assert_eq!(
            rig.probe.evicted(&ks, held),
            u64::from(n) - held,
            "{table:?}"
        );
        // The newest attempt is always kept.
        let newest = rig
            .probe
            .pending_entries()
            .expect("entries")
            .into_iter()
            .any(|(_, p)| p.client_isn == n - 1);
        assert!(newest, "{table:?}: the newest attempt was evicted");
    }
}

/// Client ports whose attempts (from `client`, as the SYN of `syn_from`
/// makes them) go to the same bucket as `first`'s, `first` included.
fn ports_sharing_a_bucket(rig: &Rig, client: &str, first: u16, n: usize, buckets: u32) -> Vec<u16> {
    rig.run(Hook::Egress, &syn_from(client, first, 1));
    let entries = rig.probe.pending_entries().expect("entries");
    let (key, _) = entries
        .iter()
        .find(|(k, _)| u16::from_be(k.client_port) == first)
        .expect("the first attempt");
    let bucket = |port: u16| {
        let mut k = *key;
        k.client_port = port.to_be();
        slots::hash(&k) & (buckets - 1)
    };
    let want = bucket(first);
    let mut ports = vec![first];
    ports.extend(
        (1024..=u16::MAX)
            .filter(|&p| p != first && bucket(p) == want)
            .take(n - 1),
    );
    assert_eq!(ports.len(), n, "not enough ports in bucket {want}");
    ports
}

#[test]
fn a_full_front_bucket_spills_and_a_full_main_bucket_gives_up_its_oldest_attempt() {
    let mut rig = rig(Table::Slots, 1024);
    let buckets = slots::buckets_for(1024);
    let c = "10.2.0.1";
    // Keys of one main bucket share their front bucket too (its index is the
    // low bits of theirs).
    let ports = ports_sharing_a_bucket(&rig, c, 40000, 2 * slots::WAYS + 1, buckets);
    let front = {
        let entries = rig.probe.pending_entries().expect("entries");
        slots::hash(&entries[0].0) as usize & (slots::FRONT - 1)
    };
    // ports[0]'s SYN went first; three more fill the front bucket, four go to
    // the main bucket, and the last one finds that full too.
    for (i, &p) in ports.iter().enumerate().skip(1) {
        rig.run(Hook::Egress, &syn_from(c, p, 1 + i as u32));
        let spill = rig.probe.front_spills()[front];
        assert_eq!(
            spill,
            i.saturating_sub(slots::WAYS - 1).min(slots::WAYS) as u64,
            "after {i}"
        );
    }
    let oldest_spilled = ports[slots::WAYS];
    assert!(
        !rig.holds(oldest_spilled),
        "the main bucket's oldest attempt gave way"
    );
    for &p in ports.iter().filter(|&&p| p != oldest_spilled) {
        assert!(rig.holds(p), "port {p}'s attempt is kept");
    }
    let ks = rig.probe.kernel_stats().expect("stats");
    let held = rig.pending() as u64;
    assert_eq!(held, 2 * slots::WAYS as u64);
    assert_eq!(rig.probe.evicted(&ks, held), 1, "the eviction is counted");
    // The evicted attempt's answer finds nothing; the others' are measured,
    // in the front bucket and in the main one.
    rig.run(
        Hook::Ingress,
        &synack_to(c, oldest_spilled, 1 + slots::WAYS as u32),
    );
    assert!(rig.records().is_empty());
    for (i, &p) in ports.iter().enumerate() {
        if p != oldest_spilled {
            rig.run(Hook::Ingress, &synack_to(c, p, 1 + i as u32));
        }
    }
    let recs = rig.records();
    assert_eq!(recs.len(), 2 * slots::WAYS);
    assert!(recs.iter().all(|r| r.outcome == Outcome::Ok));
    assert_eq!(rig.pending(), 0);
    assert!(
        rig.probe.front_spills().iter().all(|&s| s == 0),
        "every spill ended"
    );
    // A way freed by an answer takes the next attempt without evicting.
    rig.run(Hook::Egress, &syn_from(c, oldest_spilled, 77));
    assert!(rig.holds(oldest_spilled));
    let ks = rig.probe.kernel_stats().expect("stats");
    assert_eq!(rig.probe.evicted(&ks, rig.pending() as u64), 1);
}

#[test]
fn spilled_attempts_time_out_and_their_tombstones_leave_the_spill() {
    let mut rig = rig(Table::Slots, 1024);
    let buckets = slots::buckets_for(1024);
    let c = "10.2.1.1";
    let ports = ports_sharing_a_bucket(&rig, c, 41000, 2 * slots::WAYS, buckets);
    for (i, &p) in ports.iter().enumerate().skip(1) {
        rig.run(Hook::Egress, &syn_from(c, p, 1 + i as u32));
    }
    assert_eq!(
        rig.probe.front_spills().iter().sum::<u64>(),
        slots::WAYS as u64
    );
    // All time out at once: reported once each, tombstones left in place.
    let now = flowlat::sinks::clock::monotonic_ns();
    let sweep = rig.probe.sweep(now, Duration::ZERO).expect("sweep");
    assert_eq!(sweep.expired.len(), 2 * slots::WAYS);
    assert!(sweep.expired.iter().all(|r| r.outcome == Outcome::Timeout));
    assert_eq!(
        rig.probe.front_spills().iter().sum::<u64>(),
        slots::WAYS as u64
    );
    // A retransmission of a spilled attempt still finds its tombstone, in the
    // main bucket: no second attempt.
    rig.run(
        Hook::Egress,
        &syn_from(c, ports[slots::WAYS], 1 + slots::WAYS as u32),
    );
    let ks = rig.probe.kernel_stats().expect("stats");
    assert_eq!(ks.created, 2 * slots::WAYS as u64);
    // The tombstones go once their clients have been quiet long enough, and
    // with them the spill.
    let sweep = rig.sweep_after_the_hold(now);
    assert_eq!(sweep.tombstones, 0);
    assert_eq!(rig.pending(), 0);
    assert!(
        rig.probe.front_spills().iter().all(|&s| s == 0),
        "every spill ended"
    );
    assert!(rig.records().is_empty(), "nothing reported twice");
}

#[test]
fn attempts_well_below_the_room_are_all_kept() {
    let rig = rig(Table::Slots, 65536);
    for i in 0..2000u32 {
        let c = format!("10.3.{}.{}", i / 250, i % 250 + 1);
        rig.run(Hook::Egress, &syn_from(&c, 1000 + (i % 7) as u16, i));
    }
    assert_eq!(rig.pending(), 2000);
    let ks = rig.probe.kernel_stats().expect("stats");
    assert_eq!(rig.probe.evicted(&ks, 2000), 0);
}

/// A client's copy of its SYN that crossed the answer can arrive on one CPU
/// while the answer ends the attempt on another, where its entry is busy
/// becoming a tombstone (or while the sweep times it out): the copy is the
/// ended attempt's, and starts no second attempt beside it, which would
/// take no answer and time out.
#[test]
fn a_syn_that_comes_while_its_entry_is_rewritten_starts_no_second_attempt() {
    let mut rig = rig(Table::Slots, 1024);
    let c = "10.4.0.1";
    rig.run(Hook::Egress, &syn_from(c, 42000, 77));
    rig.probe
        .with_entries_busy(|| rig.run(Hook::Egress, &syn_from(c, 42000, 77)));
    let ks = rig.probe.kernel_stats().expect("stats");
    assert_eq!(ks.created, 1, "one attempt, in one entry");
    rig.run(Hook::Ingress, &synack_to(c, 42000, 77));
    let recs = rig.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].outcome, Outcome::Ok);
    assert_eq!(rig.pending(), 0, "no second attempt is left to time out");
    // A new attempt on the same ports, once the entry is whole again, starts.
    rig.run(Hook::Egress, &syn_from(c, 42000, 5000));
    assert_eq!(rig.in_progress(), 1);
}
