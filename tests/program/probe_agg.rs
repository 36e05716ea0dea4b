//! The classifier's own aggregation, run on crafted packets through
//! `BPF_PROG_TEST_RUN`: an attempt the classifier ends adds exactly one
//! observation to its aggregate (and sends its record only if asked), by the
//! same definition as `AggValue::add_record` over the records.

use std::collections::HashMap;
use std::time::Duration;

use flowlat::probe::{
    hist_bucket, AggKey, AggValue, Aggregation, Dir, Filter, Hook, Outcome, Record,
};
use kit::cgroup;
use kit::packet::{Tcp, ACK, RST, SYN};
use kit::probe::Rig;

fn aggregating(a: Aggregation) -> Rig {
    let mut rig = Rig::new();
    rig.probe
        .set_aggregation(&Aggregation { enabled: true, ..a });
    rig
}

/// What these tests read of the rig's classifier.
trait AggRig {
    /// The aggregates, checked to be the same however they are read.
    fn aggregates(&self) -> HashMap<AggKey, AggValue>;
    fn sent(&self) -> u64;
}

impl AggRig for Rig {
    fn aggregates(&self) -> HashMap<AggKey, AggValue> {
        let batched = self.probe.aggregates().expect("batch lookup");
        let walked = self.probe.aggregates_walked().expect("walk");
        let batched: HashMap<AggKey, AggValue> = batched.into_iter().collect();
        let walked: HashMap<AggKey, AggValue> = walked.into_iter().collect();
        assert_eq!(batched, walked, "batch lookup and walk disagree");
        batched
    }

    fn sent(&self) -> u64 {
        self.probe.kernel_stats().expect("stats").sent
    }
}

const C4: &str = "10.0.0.5";
const S4: &str = "93.184.216.34";
const C6: &str = "2001:db8::5";
const S6: &str = "2001:db8::1";

fn syn(c: &str, cport: u16, s: &str, sport: u16, isn: u32) -> Vec<u8> {
    Tcp::new(c, cport, s, sport, SYN).seq(isn).frame()
}
fn synack(c: &str, cport: u16, s: &str, sport: u16, isn: u32) -> Vec<u8> {
    Tcp::new(s, sport, c, cport, SYN | ACK)
        .seq(7000)
        .ack(isn.wrapping_add(1))
        .frame()
}
fn client_ack(c: &str, cport: u16, s: &str, sport: u16, isn: u32) -> Vec<u8> {
    Tcp::new(c, cport, s, sport, ACK)
        .seq(isn.wrapping_add(1))
        .ack(7001)
        .frame()
}
fn rst(c: &str, cport: u16, s: &str, sport: u16, isn: u32) -> Vec<u8> {
    Tcp::new(s, sport, c, cport, RST | ACK)
        .ack(isn.wrapping_add(1))
        .frame()
}

/// The only aggregate, which must be the plain one of `dir`.
fn only(aggs: &HashMap<AggKey, AggValue>, dir: Dir) -> AggValue {
    assert_eq!(aggs.len(), 1, "{aggs:?}");
    let (k, v) = aggs.iter().next().expect("one");
    assert_eq!(
        (k.dir, k.server_port, k.cgroup_id, k.other),
        (dir, None, None, false)
    );
    *v
}

#[test]
fn an_ended_attempt_adds_one_observation_and_sends_no_record() {
    let mut rig = aggregating(Aggregation {
        no_records: true,
        ..Aggregation::default()
    });
    rig.run(Hook::Egress, &syn(C4, 40001, S4, 443, 10));
    assert!(
        rig.aggregates().is_empty(),
        "an attempt in progress is not counted"
    );
    std::thread::sleep(Duration::from_millis(3));
    rig.run(Hook::Ingress, &synack(C4, 40001, S4, 443, 10));
    assert!(rig.records().is_empty(), "no record in this mode");
    assert_eq!(rig.sent(), 0);
    assert_eq!(rig.pending(), 0, "the attempt ended");
    let v = only(&rig.aggregates(), Dir::Out);
    assert_eq!(v.results, [1, 0, 0, 0, 0]);
    assert_eq!(v.retrans, 0);
    assert_eq!(v.rtt.count(), 1, "one rtt observed");
    assert!(v.rtt.sum_ns >= 3_000_000, "{}", v.rtt.sum_ns);
    assert_eq!(
        v.rtt.buckets[hist_bucket(v.rtt.sum_ns)],
        1,
        "in the bucket of its value"
    );
    assert_eq!(v.local.count(), 0, "out has no local time");
    // A duplicate answer finds nothing, and adds nothing.
    rig.run(Hook::Ingress, &synack(C4, 40001, S4, 443, 10));
    assert_eq!(only(&rig.aggregates(), Dir::Out), v);
}

#[test]
fn with_records_too_each_observation_is_the_records() {
    let mut rig = aggregating(Aggregation::default());
    let mut want: HashMap<AggKey, AggValue> = HashMap::new();
    let mut check = |rig: &mut Rig, what: &str| {
        let recs = rig.records();
        assert_eq!(recs.len(), 1, "{what}: one record sent as well");
        let r = &recs[0];
        let key = AggKey {
            ifindex: r.ifindex,
            dir: r.dir,
            server_port: None,
            cgroup_id: None,
            other: false,
        };
        want.entry(key).or_default().add_record(r);
        assert_eq!(rig.aggregates(), want, "{what}");
        r.clone()
    };
    for (c, s) in [(C4, S4), (C6, S6)] {
        // out ok, with a retransmitted SYN.
        rig.run(Hook::Egress, &syn(c, 40001, s, 443, 10));
        rig.run(Hook::Egress, &syn(c, 40001, s, 443, 10));
        rig.run(Hook::Ingress, &synack(c, 40001, s, 443, 10));
        assert_eq!(check(&mut rig, "out ok").retrans, 1);
        // out refused: no rtt observation.
        rig.run(Hook::Egress, &syn(c, 40002, s, 443, 20));
        rig.run(Hook::Ingress, &rst(c, 40002, s, 443, 20));
        assert_eq!(check(&mut rig, "out refused").outcome, Outcome::Refused);
        // in ok: rtt and local.
        rig.run(Hook::Ingress, &syn(c, 40003, s, 22, 30));
        std::thread::sleep(Duration::from_millis(1));
        rig.run(Hook::Egress, &synack(c, 40003, s, 22, 30));
        rig.run(Hook::Ingress, &client_ack(c, 40003, s, 22, 30));
        let r = check(&mut rig, "in ok");
        assert!(r.local_ns.expect("local") >= 1_000_000);
        // in refused, and an abandoned in attempt.
        rig.run(Hook::Ingress, &syn(c, 40004, s, 22, 40));
        rig.run(Hook::Egress, &rst(c, 40004, s, 22, 40));
        check(&mut rig, "in refused");
        rig.run(Hook::Ingress, &syn(c, 40005, s, 22, 50));
        rig.run(Hook::Ingress, &syn(c, 40005, s, 22, 51));
        assert_eq!(check(&mut rig, "abandoned").outcome, Outcome::Abandoned);
    }
    let total: u64 = want.values().flat_map(|v| v.results).sum();
    assert_eq!(total, 10);
    let inbound = want
        .iter()
        .find(|(k, _)| k.dir == Dir::In)
        .map(|(_, v)| *v)
        .expect("in");
    assert_eq!(inbound.local.count(), 2, "local of in + ok only");
    assert_eq!(inbound.rtt.count(), 2);
}

#[test]
fn timeouts_come_from_the_sweep_not_the_kernel() {
    let mut rig = aggregating(Aggregation {
        no_records: true,
        ..Aggregation::default()
    });
    rig.run(Hook::Egress, &syn(C4, 40001, S4, 443, 10));
    let sweep = rig
        .probe
        .sweep(u64::MAX / 2, Duration::from_millis(1))
        .expect("sweep");
    assert_eq!(sweep.expired.len(), 1, "the sweep still reports timeouts");
    assert!(rig.aggregates().is_empty(), "the kernel never saw it end");
    let mut v = AggValue::default();
    v.add_record(&sweep.expired[0]);
    assert_eq!(v.results, [0, 0, 1, 0, 0]);
    assert_eq!(v.rtt.count(), 0);
}

#[test]
fn keys_carry_the_server_port_and_the_cgroup_when_asked() {
    let _stay = cgroup::stay();
    let rig = aggregating(Aggregation {
        no_records: true,
        by_server_port: true,
        by_cgroup: true,
        ..Aggregation::default()
    });
    let own = cgroup::id_of(&cgroup::own());
    for (cport, sport) in [(40001, 443), (40002, 443), (40003, 80)] {
        rig.run(Hook::Egress, &syn(C4, cport, S4, sport, 10));
        rig.run(Hook::Ingress, &synack(C4, cport, S4, sport, 10));
    }
    // in, refused by this side: no socket of ours, no cgroup.
    rig.run(Hook::Ingress, &syn(C6, 40004, S6, 22, 10));
    rig.run(Hook::Egress, &rst(C6, 40004, S6, 22, 10));
    let mut got: Vec<(Dir, Option<u16>, Option<u64>, u64)> = rig
        .aggregates()
        .iter()
        .map(|(k, v)| {
            assert!(!k.other);
            (k.dir, k.server_port, k.cgroup_id, v.results.iter().sum())
        })
        .collect();
    got.sort_by_key(|g| (g.1, g.3));
    assert_eq!(
        got,
        vec![
            (Dir::In, Some(22), None, 1),
            (Dir::Out, Some(80), Some(own), 1),
            (Dir::Out, Some(443), Some(own), 2),
        ]
    );
}

#[test]
fn beyond_its_room_for_keys_an_attempt_counts_in_other() {
    let rig = aggregating(Aggregation {
        no_records: true,
        by_server_port: true,
        ..Aggregation::default()
    });
    let n: u16 = 1100;
    for port in 1..=n {
        rig.run(Hook::Egress, &syn(C4, 40000, S4, port, u32::from(port)));
        rig.run(Hook::Ingress, &synack(C4, 40000, S4, port, u32::from(port)));
        // The aggregates' map allocates a key's values as it appears, from
        // per-CPU caches the kernel refills after the program returns, at
        // its next interrupt: a thousand new keys in a row from one thread
        // can find them empty, and those attempts are counted as agg_failed
        // (a count of its own, which this test does not measure). A pause
        // now and then lets the refill run, as real traffic does.
        if port % 32 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    let aggs = rig.aggregates();
    let ported = aggs.keys().filter(|k| k.server_port.is_some()).count();
    assert_eq!(ported, 1024, "the classifier keys at most 1024 ports");
    let other: Vec<(&AggKey, &AggValue)> = aggs.iter().filter(|(k, _)| k.other).collect();
    assert_eq!(
        other.len(),
        1,
        "one other key for the interface and direction"
    );
    assert_eq!(other[0].0.server_port, None);
    assert_eq!(other[0].1.results[0], u64::from(n) - 1024);
    let total: u64 = aggs.values().map(|v| v.results[0]).sum();
    assert_eq!(total, u64::from(n), "every attempt counted once");
    assert_eq!(rig.probe.kernel_stats().expect("stats").agg_failed, 0);
}

#[test]
fn filtered_attempts_are_not_aggregated_and_min_rtt_holds_back_only_records() {
    let mut rig = aggregating(Aggregation::default());
    rig.probe
        .set_filter(&Filter {
            ports: vec![443],
            min_rtt_ns: Some(Duration::from_secs(10).as_nanos() as u64),
            ..Filter::default()
        })
        .expect("filter");
    for port in [443, 80] {
        rig.run(Hook::Egress, &syn(C4, 40001, S4, port, 10));
        rig.run(Hook::Ingress, &synack(C4, 40001, S4, port, 10));
    }
    assert!(
        rig.records().is_empty(),
        "443: under --min-rtt; 80: filtered"
    );
    let v = only(&rig.aggregates(), Dir::Out);
    assert_eq!(
        v.results,
        [1, 0, 0, 0, 0],
        "only the attempt the filter kept"
    );
    assert_eq!(v.rtt.count(), 1);
    let ks = rig.probe.kernel_stats().expect("stats");
    assert_eq!((ks.filtered, ks.below_min_rtt), (1, 1));
}

#[test]
fn aggregation_can_be_turned_off_again() {
    let mut rig = aggregating(Aggregation {
        no_records: true,
        ..Aggregation::default()
    });
    rig.probe.set_aggregation(&Aggregation::default());
    rig.run(Hook::Egress, &syn(C4, 40001, S4, 443, 10));
    rig.run(Hook::Ingress, &synack(C4, 40001, S4, 443, 10));
    let recs: Vec<Record> = rig.records();
    assert_eq!(recs.len(), 1, "records are back");
    assert!(rig.aggregates().is_empty());
}

/// Each CPU caches the aggregates of the keys it adds to (`FLOWLAT_AGG_FAST`),
/// and what a user reads is the map's and every CPU's cache added up.
#[test]
fn each_cpus_cached_aggregates_are_added_up() {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let rig = aggregating(Aggregation {
        no_records: true,
        by_server_port: true,
        ..Aggregation::default()
    });
    let was = sched_getaffinity(Pid::from_raw(0)).expect("affinity");
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&c| was.is_set(c).unwrap_or(false))
        .collect();
    let mut isn = 0;
    let mut total = 0u64;
    for (i, &cpu) in cpus.iter().take(2).enumerate() {
        let mut one = CpuSet::new();
        one.set(cpu).expect("cpu");
        sched_setaffinity(Pid::from_raw(0), &one).expect("pin to one CPU");
        for _ in 0..3 + i {
            isn += 1;
            rig.run(Hook::Egress, &syn(C4, 40000 + isn as u16, S4, 443, isn));
            rig.run(Hook::Ingress, &synack(C4, 40000 + isn as u16, S4, 443, isn));
            total += 1;
        }
    }
    sched_setaffinity(Pid::from_raw(0), &was).expect("restore the affinity");
    let cached = rig.probe.aggregates_cached().expect("caches");
    assert_eq!(
        cached.len(),
        cpus.len().min(2),
        "each CPU caches the key: {cached:?}"
    );
    let in_caches: u64 = cached.iter().map(|(_, v)| v.results[0]).sum();
    assert_eq!(in_caches, total, "all counted in the caches");
    let aggs = rig.aggregates();
    assert_eq!(aggs.len(), 1, "{aggs:?}");
    let (k, v) = aggs.iter().next().expect("one key");
    assert_eq!(k.server_port, Some(443));
    assert_eq!(v.results[0], total, "the caches are added to the map once");
    assert_eq!(v.rtt.count(), total);
}
