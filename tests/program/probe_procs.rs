//! The process of an `out` attempt, copied by the classifier from its
//! socket's storage into the attempt at the SYN, under `BPF_PROG_TEST_RUN`:
//! a hand-made classifier gives the run's socket a process, as flowlat's
//! connect hook would, and tail-calls the probe's.

use std::os::fd::{AsFd, OwnedFd};

use flowlat::bpf::map::{Map, MapAttr, Update};
use flowlat::probe::{Comm, Filter, Hook, Process};
use kit::packet::{Tcp, ACK, SYN};
use kit::probe::{Rig, TC_ACT_UNSPEC};

const C4: &str = "10.0.0.5";
const S4: &str = "93.184.216.34";

/// `BPF_MAP_TYPE_PROG_ARRAY`.
const PROG_ARRAY: u32 = 3;

/// The probe's egress classifier behind one that names the socket.
struct Named {
    _progs: Map,
    namer: OwnedFd,
}

fn named(rig: &Rig, pid: u32, comm: &str) -> Named {
    let progs = Map::create(
        &MapAttr {
            map_type: PROG_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            map_flags: 0,
        },
        "test_progs",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let egress = rig.probe.program(Hook::Egress);
    progs
        .update(
            &0u32.to_ne_bytes(),
            &(std::os::fd::AsRawFd::as_raw_fd(&egress) as u32).to_ne_bytes(),
            Update::Any,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let namer = kit::asm::socket_namer(
        rig.probe.conn_procs_map(),
        progs.as_fd(),
        pid,
        Comm::new(comm).bytes(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Named {
        _progs: progs,
        namer,
    }
}

fn syn(cport: u16) -> Vec<u8> {
    Tcp::new(C4, cport, S4, 443, SYN).seq(1000).frame()
}

fn synack(cport: u16) -> Vec<u8> {
    Tcp::new(S4, 443, C4, cport, SYN | ACK)
        .seq(7000)
        .ack(1001)
        .frame()
}

/// A SYN through the namer and the probe, then its SYN-ACK: the process
/// the record has.
fn process_of(rig: &mut Rig, n: &Named, cport: u16) -> Option<Option<Process>> {
    let r = flowlat::bpf::sys::prog_test_run(n.namer.as_fd(), &syn(cport), None, 1)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.retval, TC_ACT_UNSPEC, "the tail call reached the probe");
    rig.run(Hook::Ingress, &synack(cport));
    let recs = rig.records();
    assert!(recs.len() <= 1, "{recs:?}");
    recs.first().map(|r| r.process)
}

#[test]
fn the_syn_copies_its_sockets_process_into_the_record() {
    let mut rig = Rig::new();
    let n = named(&rig, 4242, "flt-test-conn");
    // Off, as the probe loads: the storage is not read.
    assert_eq!(process_of(&mut rig, &n, 40001), Some(None));
    rig.probe.set_process_attribution(true);
    let want = Process {
        pid: 4242,
        comm: Comm::new("flt-test-conn"),
    };
    assert_eq!(process_of(&mut rig, &n, 40002), Some(Some(want)));
    // A socket with no process noted: none.
    rig.run(Hook::Egress, &syn(40003));
    rig.run(Hook::Ingress, &synack(40003));
    let recs = rig.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].process, None);
}

#[test]
fn pid_and_comm_filters_decide_at_the_syn_in_the_kernel() {
    let mut rig = Rig::new();
    rig.probe.set_process_attribution(true);
    let n = named(&rig, 4242, "flt-test-conn");
    let set = |rig: &mut Rig, pids: Vec<u32>, comms: &[&str]| {
        rig.probe
            .set_filter(&Filter {
                pids,
                comms: comms.iter().map(|c| Comm::new(c)).collect(),
                ..Filter::default()
            })
            .unwrap_or_else(|e| panic!("{e}"));
    };
    set(&mut rig, vec![4242], &[]);
    assert!(process_of(&mut rig, &n, 40010).is_some(), "its pid");
    set(&mut rig, vec![1, 2], &["flt-test-conn"]);
    assert!(process_of(&mut rig, &n, 40011).is_some(), "its name");
    set(&mut rig, vec![4243], &["flt-test-con", "flt-test-conn2"]);
    assert_eq!(process_of(&mut rig, &n, 40012), None, "neither");
    assert!(!rig.holds(40012), "dropped at the SYN, no entry taken");
    // A socket with no process never matches.
    rig.run(Hook::Egress, &syn(40013));
    assert!(!rig.holds(40013));
    assert!(rig.probe.kernel_stats().expect("stats").filtered >= 2);
    // Too many for the kernel: refused before anything changes.
    let e = rig
        .probe
        .set_filter(&Filter {
            pids: (1..=9).collect(),
            ..Filter::default()
        })
        .expect_err("nine pids");
    assert!(e.to_string().contains("at most 8"), "{e}");
}
