//! The classifier's filters, run on crafted packets through
//! `BPF_PROG_TEST_RUN`: a filtered-out attempt takes no table entry and sends
//! no record, a kept one is measured as before, and every packet passes
//! unchanged with TC_ACT_UNSPEC whatever the filter.

use std::net::IpAddr;
use std::time::Duration;

use flowlat::probe::{Dir, Filter, Hook, Outcome, Probe, ProbeConfig, Record};
use kit::cgroup;
use kit::packet::{Tcp, ACK, RST, SYN};
use kit::probe::{Rig, TC_ACT_UNSPEC};

/// The rig with a filter set.
fn filtered_rig(filter: Filter) -> Rig {
    let mut rig = Rig::new();
    rig.probe.set_filter(&filter).expect("set the filter");
    rig
}

/// What these tests do with the rig.
trait FilterRig {
    fn filtered(&self) -> u64;
    /// Sends the SYN of an attempt and says whether it took a table entry.
    fn syn_tracked(&self, hook: Hook, a: &Attempt) -> bool;
    /// A whole handshake in the direction the hook of its SYN gives; the
    /// records it produced.
    fn handshake(&mut self, dir: Dir, a: &Attempt) -> Vec<Record>;
}

impl FilterRig for Rig {
    fn filtered(&self) -> u64 {
        self.probe.kernel_stats().expect("stats").filtered
    }

    fn syn_tracked(&self, hook: Hook, a: &Attempt) -> bool {
        let before = self.pending();
        self.run(hook, &a.syn());
        self.pending() > before
    }

    fn handshake(&mut self, dir: Dir, a: &Attempt) -> Vec<Record> {
        match dir {
            Dir::Out => {
                self.run(Hook::Egress, &a.syn());
                self.run(Hook::Ingress, &a.synack());
            }
            Dir::In => {
                self.run(Hook::Ingress, &a.syn());
                self.run(Hook::Egress, &a.synack());
                self.run(Hook::Ingress, &a.ack());
            }
        }
        self.records()
    }
}

/// One attempt's endpoints and sequence numbers.
struct Attempt {
    c: &'static str,
    cport: u16,
    s: &'static str,
    sport: u16,
    isn: u32,
}

const SERVER_ISN: u32 = 90_000;

fn at(c: &'static str, cport: u16, s: &'static str, sport: u16) -> Attempt {
    Attempt {
        c,
        cport,
        s,
        sport,
        isn: u32::from(cport) * 7,
    }
}

impl Attempt {
    fn syn(&self) -> Vec<u8> {
        Tcp::new(self.c, self.cport, self.s, self.sport, SYN)
            .seq(self.isn)
            .frame()
    }
    fn synack(&self) -> Vec<u8> {
        Tcp::new(self.s, self.sport, self.c, self.cport, SYN | ACK)
            .seq(SERVER_ISN)
            .ack(self.isn.wrapping_add(1))
            .frame()
    }
    fn ack(&self) -> Vec<u8> {
        Tcp::new(self.c, self.cport, self.s, self.sport, ACK)
            .seq(self.isn.wrapping_add(1))
            .ack(SERVER_ISN + 1)
            .frame()
    }
    fn rst(&self) -> Vec<u8> {
        Tcp::new(self.s, self.sport, self.c, self.cport, RST | ACK)
            .ack(self.isn.wrapping_add(1))
            .frame()
    }
}

fn net(s: &str, prefix: u8) -> (IpAddr, u8) {
    (s.parse().expect("address literal"), prefix)
}

#[test]
fn port_filter_keeps_attempts_with_either_port() {
    let mut rig = filtered_rig(Filter {
        ports: vec![443, 5432],
        ..Filter::default()
    });
    for (c, s) in [
        ("10.0.0.5", "93.184.216.34"),
        ("2001:db8::5", "2001:db8::1"),
    ] {
        // The server's port, then the client's.
        for a in [at(c, 40001, s, 443), at(c, 5432, s, 8080)] {
            let recs = rig.handshake(Dir::Out, &a);
            assert_eq!(recs.len(), 1, "{c} {} -> {}", a.cport, a.sport);
            assert_eq!(recs[0].outcome, Outcome::Ok);
        }
        let before = rig.filtered();
        let other = at(c, 40002, s, 80);
        assert!(!rig.syn_tracked(Hook::Egress, &other), "{c}: port 80");
        assert!(!rig.syn_tracked(Hook::Ingress, &other), "{c}: port 80, in");
        rig.run(Hook::Ingress, &other.synack());
        assert!(rig.records().is_empty());
        assert_eq!(rig.filtered() - before, 2, "one attempt each way");
        // A retransmission of a dropped SYN is the same attempt, not another.
        rig.run(Hook::Egress, &other.syn());
        assert_eq!(rig.filtered() - before, 2);
        assert_eq!(rig.pending(), 0);
    }
}

#[test]
fn net_filter_keeps_attempts_with_either_address_in_either_family() {
    let mut rig = filtered_rig(Filter {
        nets: vec![net("10.0.0.0", 8), net("2001:db8:1::", 48)],
        ..Filter::default()
    });
    // Client in a network, then server.
    for a in [
        at("10.1.2.3", 40001, "93.184.216.34", 443),
        at("192.168.1.1", 40002, "10.9.9.9", 443),
        at("2001:db8:1::5", 40003, "2001:db8:2::1", 443),
        at("2001:db8:2::5", 40004, "2001:db8:1:ffff::1", 443),
    ] {
        assert_eq!(rig.handshake(Dir::Out, &a).len(), 1, "{} -> {}", a.c, a.s);
        assert_eq!(
            rig.handshake(Dir::In, &at(a.c, a.cport + 100, a.s, 22))
                .len(),
            1
        );
    }
    let before = rig.filtered();
    for a in [
        at("192.168.1.1", 40011, "93.184.216.34", 443),
        at("11.0.0.1", 40012, "9.255.255.255", 443),
        at("2001:db8:2::5", 40013, "2001:db8:3::1", 443),
        // The family is part of the match: these begin with 10 (0x0a) too.
        at("a00::1", 40014, "a01::1", 443),
    ] {
        assert!(!rig.syn_tracked(Hook::Egress, &a), "{} -> {}", a.c, a.s);
        rig.run(Hook::Ingress, &a.synack());
    }
    assert!(rig.records().is_empty());
    assert_eq!(rig.filtered() - before, 4);
    // Setting another filter replaces the networks.
    rig.probe
        .set_filter(&Filter {
            nets: vec![net("192.168.0.0", 16)],
            ..Filter::default()
        })
        .expect("set again");
    assert!(!rig.syn_tracked(Hook::Egress, &at("10.1.2.3", 40021, "8.8.8.8", 53)));
    assert!(rig.syn_tracked(Hook::Egress, &at("192.168.7.7", 40022, "8.8.8.8", 53)));
}

#[test]
fn dir_filter_drops_the_other_direction_at_its_syn() {
    for keep in [Dir::Out, Dir::In] {
        let mut rig = filtered_rig(Filter {
            dir: Some(keep),
            ..Filter::default()
        });
        for (c, s) in [
            ("10.0.0.5", "93.184.216.34"),
            ("2001:db8::5", "2001:db8::1"),
        ] {
            let kept = rig.handshake(keep, &at(c, 40001, s, 443));
            assert_eq!(kept.len(), 1, "{keep:?} {c}");
            assert_eq!(kept[0].dir, keep);
            let other = match keep {
                Dir::Out => Dir::In,
                Dir::In => Dir::Out,
            };
            let before = rig.filtered();
            assert!(rig.handshake(other, &at(c, 40002, s, 443)).is_empty());
            assert_eq!(rig.filtered() - before, 1, "{keep:?} {c}");
            assert_eq!(rig.pending(), 0);
        }
    }
}

#[test]
fn filter_kinds_combine_with_and() {
    let mut rig = filtered_rig(Filter {
        ports: vec![443],
        nets: vec![net("10.0.0.0", 8)],
        dir: Some(Dir::In),
        ..Filter::default()
    });
    assert_eq!(
        rig.handshake(Dir::In, &at("10.0.0.5", 40001, "192.0.2.1", 443))
            .len(),
        1
    );
    for (dir, a) in [
        (Dir::Out, at("10.0.0.5", 40002, "192.0.2.1", 443)),
        (Dir::In, at("10.0.0.5", 40003, "192.0.2.1", 80)),
        (Dir::In, at("172.16.0.5", 40004, "192.0.2.1", 443)),
    ] {
        assert!(
            rig.handshake(dir, &a).is_empty(),
            "{dir:?} {}:{}",
            a.c,
            a.sport
        );
    }
    assert_eq!(rig.filtered(), 3);
    assert_eq!(rig.pending(), 0);
}

/// The cgroup filter, with this process moved into cgroups of its own (one
/// test, since the whole process moves). Test-run gives each packet a socket
/// in the caller's cgroup, so the classifier sees the cgroup this process is in.
#[test]
fn cgroup_filter_keeps_a_cgroup_and_its_descendants() {
    kit::require_root();
    let tree = cgroup::Tree::new("filter", &["a/b", "c"]);
    let (a, b, c) = (tree.path("a"), tree.path("a/b"), tree.path("c"));
    let spec = |dir: &std::path::Path| (cgroup::id_of(dir), cgroup::level_of(dir));
    cgroup::enter(&b);
    let b_id = cgroup::id_of(&b);

    // Kept: the process is in a/b, below a; and in the root's subtree, as is everything.
    for keep in [spec(&a), spec(&b), (cgroup::id_of(&cgroup::mount()), 0)] {
        let mut rig = filtered_rig(Filter {
            cgroups: vec![spec(&c), keep],
            ..Filter::default()
        });
        for (cl, s) in [
            ("10.0.0.5", "93.184.216.34"),
            ("2001:db8::5", "2001:db8::1"),
        ] {
            for dir in [Dir::Out, Dir::In] {
                let recs = rig.handshake(dir, &at(cl, 40001, s, 443));
                assert_eq!(recs.len(), 1, "{dir:?} {cl} kept by {keep:?}");
                assert_eq!(recs[0].cgroup_id, Some(b_id), "the socket's own cgroup");
            }
        }
        assert_eq!(rig.filtered(), 0);
    }

    // Not kept: the process is not below c.
    let mut rig = filtered_rig(Filter {
        cgroups: vec![spec(&c)],
        ..Filter::default()
    });
    for (cl, s) in [
        ("10.0.0.5", "93.184.216.34"),
        ("2001:db8::5", "2001:db8::1"),
    ] {
        // out: decided at the SYN, which takes no entry.
        let a1 = at(cl, 40001, s, 443);
        assert!(!rig.syn_tracked(Hook::Egress, &a1), "{cl}");
        rig.run(Hook::Ingress, &a1.synack());
        // in: the SYN is tracked until our SYN-ACK shows the listener.
        let a2 = at(cl, 40002, s, 443);
        assert!(rig.syn_tracked(Hook::Ingress, &a2), "{cl}");
        rig.run(Hook::Egress, &a2.synack());
        assert!(!rig.holds(a2.cport), "{cl}: dropped at our SYN-ACK");
        rig.run(Hook::Ingress, &a2.ack());
        // in, refused by this side: no listener to credit, dropped.
        let a3 = at(cl, 40003, s, 443);
        rig.run(Hook::Ingress, &a3.syn());
        rig.run(Hook::Egress, &a3.rst());
        assert!(!rig.holds(a3.cport), "{cl}: refused, dropped");
        // in, replaced by a new ISN before any SYN-ACK: dropped, not abandoned.
        let a4 = at(cl, 40004, s, 443);
        rig.run(Hook::Ingress, &a4.syn());
        rig.run(
            Hook::Ingress,
            &Tcp::new(a4.c, a4.cport, a4.s, a4.sport, SYN)
                .seq(a4.isn + 1000)
                .frame(),
        );
        assert!(rig.holds(a4.cport), "{cl}: the new attempt waits");
    }
    assert!(rig.records().is_empty(), "nothing of c's is reported");
    assert_eq!(rig.filtered(), 8, "four attempts per family");
    // in, never answered: the sweep drops it instead of reporting a timeout.
    let sweep = rig
        .probe
        .sweep(u64::MAX / 2, Duration::from_millis(1))
        .expect("sweep");
    assert!(sweep.expired.is_empty(), "{:?}", sweep.expired);
    assert_eq!(sweep.filtered, 2);
    assert_eq!(sweep.tombstones, 2, "their retransmissions stay quiet");
    assert_eq!(rig.filtered(), 10);
    // An out attempt that times out was kept at its SYN, and is reported.
    drop(rig);
    let mut rig = filtered_rig(Filter {
        cgroups: vec![spec(&a)],
        ..Filter::default()
    });
    rig.run(Hook::Egress, &at("10.0.0.5", 40009, "192.0.2.1", 443).syn());
    let sweep = rig
        .probe
        .sweep(u64::MAX / 2, Duration::from_millis(1))
        .expect("sweep");
    assert_eq!(sweep.expired.len(), 1);
    assert_eq!(sweep.expired[0].outcome, Outcome::Timeout);
    assert_eq!(sweep.filtered, 0);
    assert!(rig.records().is_empty());
}

#[test]
fn min_rtt_holds_back_fast_ok_records_only() {
    let min = Duration::from_millis(30);
    let mut rig = filtered_rig(Filter {
        min_rtt_ns: Some(min.as_nanos() as u64),
        ..Filter::default()
    });
    for (c, s) in [
        ("10.0.0.5", "93.184.216.34"),
        ("2001:db8::5", "2001:db8::1"),
    ] {
        for dir in [Dir::Out, Dir::In] {
            let before = rig.probe.kernel_stats().expect("stats").below_min_rtt;
            assert!(
                rig.handshake(dir, &at(c, 40001, s, 443)).is_empty(),
                "{dir:?}"
            );
            let ks = rig.probe.kernel_stats().expect("stats");
            assert_eq!(ks.below_min_rtt - before, 1, "{dir:?} {c}: counted");
            assert_eq!(ks.filtered, 0, "not an attempt the filters dropped");
            assert_eq!(rig.pending(), 0, "the attempt ended");
        }
        // Slower answers are reported. in: the rtt is ACK - last SYN-ACK, so
        // a slow local answer does not count.
        let slow = at(c, 40002, s, 443);
        rig.run(Hook::Egress, &slow.syn());
        std::thread::sleep(min + Duration::from_millis(5));
        rig.run(Hook::Ingress, &slow.synack());
        let recs = rig.records();
        assert_eq!(recs.len(), 1);
        assert!(recs[0].rtt_ns.expect("rtt") >= min.as_nanos() as u64);
        let local = at(c, 40003, s, 443);
        rig.run(Hook::Ingress, &local.syn());
        std::thread::sleep(min + Duration::from_millis(5));
        rig.run(Hook::Egress, &local.synack());
        rig.run(Hook::Ingress, &local.ack());
        assert!(rig.records().is_empty(), "{c}: fast to the client");
        let slow_in = at(c, 40004, s, 443);
        rig.run(Hook::Ingress, &slow_in.syn());
        rig.run(Hook::Egress, &slow_in.synack());
        std::thread::sleep(min + Duration::from_millis(5));
        rig.run(Hook::Ingress, &slow_in.ack());
        assert_eq!(rig.records().len(), 1, "{c}: slow to the client");
        // Refusals are always reported, however fast.
        let refused = at(c, 40005, s, 443);
        rig.run(Hook::Egress, &refused.syn());
        rig.run(Hook::Ingress, &refused.rst());
        let recs = rig.records();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].outcome, Outcome::Refused);
    }
}

#[test]
fn filters_the_maps_cannot_hold_are_refused() {
    kit::require_root();
    let mut probe = Probe::load(&ProbeConfig::new(64)).expect("load");
    let too_many_nets = Filter {
        nets: (0..=256u32)
            .map(|i| (IpAddr::from((0x0a00_0000 + (i << 8)).to_be_bytes()), 24))
            .collect(),
        ..Filter::default()
    };
    let too_many_cgroups = Filter {
        cgroups: (1..=9).map(|i| (i, 1)).collect(),
        ..Filter::default()
    };
    let too_long = Filter {
        nets: vec![net("10.0.0.0", 8), net("2001:db8::", 129)],
        ..Filter::default()
    };
    for (f, says) in [
        (too_many_nets, "at most 256"),
        (too_many_cgroups, "at most 8"),
        (too_long, "at most 128 bits"),
    ] {
        let e = probe.set_filter(&f).expect_err("refused");
        assert!(e.to_string().contains(says), "{e}");
    }
    // Nothing was applied: every attempt is still measured.
    let r = probe
        .test_run(Hook::Egress, &at("172.16.0.1", 1, "192.0.2.1", 2).syn(), 1)
        .expect("run");
    assert_eq!(r.retval, TC_ACT_UNSPEC);
    assert_eq!(probe.pending_entries().expect("walk").len(), 1);
}
