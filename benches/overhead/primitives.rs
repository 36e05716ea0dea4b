//! The kernel operations a handshake is made of, each measured alone
//! (`bpf/bench/primitives.c`): what a clock read, a table insert and delete, a
//! lookup and a record sent cost on this machine. Their sum is the floor under
//! any whole handshake that keeps its attempts in the table flowlat runs here
//! (the slot table, or the LRU hash table where the kernel has no BPF
//! compare-and-exchange) and sends its records through perf rings, whatever
//! the classifier around them does.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use flowlat::bpf::map::Map;
use flowlat::bpf::object::Object;
use flowlat::bpf::perf::PerfBuffers;
use flowlat::bpf::{cpu, sys};
use flowlat::probe::{Event, Table};

use crate::kernel::net;
use crate::stats::median;

static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/primitives.o"));

/// Runs per test-run: few enough that the records of a round fit the perf
/// rings, which are drained between runs, and the BPF ring buffer, which is not.
pub const REPEAT: u32 = 1000;
/// Data pages per CPU of the perf rings: 1,000 records of 136 bytes fit.
const PERF_PAGES: usize = 64;
/// The table's size: the probe's default `--max-pending`.
const TABLE_SIZE: u32 = 65_536;

/// One primitive: a program, and the baseline it is measured against.
pub struct Primitive {
    pub key: &'static str,
    pub what: &'static str,
    pub base: &'static str,
    prog: &'static str,
}

// The perf_output row names the record's size.
const _: () = assert!(std::mem::size_of::<Event>() == 144);

pub const PRIMITIVES: [Primitive; 8] = [
    Primitive {
        key: "ktime",
        what: "bpf_ktime_get_ns: one clock read",
        base: "empty",
        prog: "ktime",
    },
    Primitive {
        key: "cgroup_id",
        what: "bpf_skb_cgroup_id: the cgroup of the packet's socket (an out SYN, an in SYN-ACK)",
        base: "empty",
        prog: "cgroup_id",
    },
    Primitive {
        key: "insert_delete",
        what: "a new key inserted into the LRU table, then deleted (a SYN, then its answer)",
        base: "make_key",
        prog: "insert_delete",
    },
    Primitive {
        key: "lookup_miss",
        what: "a lookup of a key not in the table",
        base: "make_key",
        prog: "lookup_miss",
    },
    Primitive {
        key: "perf_output",
        what: "one 144-byte record through the perf rings (bpf_perf_event_output)",
        base: "empty",
        prog: "perf_output",
    },
    Primitive {
        key: "batch_record",
        what: "one record as flowlat sends it: into its CPU's batch, and the batch through the \
               perf rings as one event every eight records",
        base: "empty",
        prog: "batch_record",
    },
    Primitive {
        key: "slot_add_find_remove",
        what: "a new attempt into the slot table, found by its key and taken out (a SYN, then \
               its answer): the probe's own table code, `bpf/table.h`",
        base: "make_key",
        prog: "slot_add_find_remove",
    },
    Primitive {
        key: "ringbuf_output",
        what: "the same record into a BPF ring buffer (bpf_ringbuf_output), for comparison",
        base: "empty",
        prog: "ringbuf_output",
    },
];

pub struct PrimitiveResult {
    pub base_runs: Vec<u32>,
    pub runs: Vec<u32>,
}

impl PrimitiveResult {
    pub fn base_ns(&self) -> u32 {
        median(&self.base_runs)
    }
    pub fn ns(&self) -> u32 {
        median(&self.runs)
    }
    pub fn diff_ns(&self) -> i64 {
        net(&self.runs, &self.base_runs)
    }
}

/// What a whole `out` handshake cannot cost less than: the SYN's insert, the
/// answer's lookup and its removal, in the table flowlat runs on this kernel
/// (with the LRU table the lookup is counted as a miss's), a record as flowlat
/// sends it (batched), and a clock read for each of the two packets.
pub fn out_floor_ns(r: &[PrimitiveResult]) -> i64 {
    let d = |key| diff_of(r, key);
    table_ns(r) + d("batch_record") + 2 * d("ktime")
}

/// The table's part of the floor.
fn table_ns(r: &[PrimitiveResult]) -> i64 {
    let d = |key| diff_of(r, key);
    match Table::best() {
        Table::Slots => d("slot_add_find_remove"),
        Table::Lru => d("insert_delete") + d("lookup_miss"),
    }
}

/// The measured cost of the primitive named `key`.
fn diff_of(r: &[PrimitiveResult], key: &str) -> i64 {
    PRIMITIVES
        .iter()
        .position(|p| p.key == key)
        .map_or(0, |i| r[i].diff_ns())
}

/// The same floor for a classifier that sent its records through a BPF ring
/// buffer instead.
pub fn out_floor_alternative_ns(r: &[PrimitiveResult]) -> i64 {
    let d = |key| diff_of(r, key);
    table_ns(r) + d("ringbuf_output") + 2 * d("ktime")
}

/// Measures every primitive, `rounds` rounds each, alternated with its baseline.
pub fn measure(rounds: usize) -> Vec<PrimitiveResult> {
    let obj = Object::parse(OBJECT).expect("parse the primitives' object");
    let cpus = cpu::possible_cpus().expect("count the possible CPUs");
    let mut maps: HashMap<String, Map> = HashMap::new();
    for def in &obj.maps {
        let mut attr = def.attr();
        match def.name.as_str() {
            "table" => attr.max_entries = TABLE_SIZE,
            "events" | "batches" => attr.max_entries = cpus,
            _ => {}
        }
        let map = Map::create(&attr, &format!("bench_{}", def.name)).expect("create a map");
        maps.insert(def.name.clone(), map);
    }
    let fd_of = |name: &str| maps.get(name).map(|map| map.as_fd().as_raw_fd());
    let mut perf = PerfBuffers::open(&maps["events"], PERF_PAGES, std::mem::size_of::<Event>())
        .expect("open the perf rings");
    let mut progs: HashMap<&str, OwnedFd> = HashMap::new();
    for name in PRIMITIVES
        .iter()
        .flat_map(|p| [p.base, p.prog])
        .chain(["insert", "slot_insert"])
        .collect::<Vec<_>>()
    {
        if progs.contains_key(name) {
            continue;
        }
        let prog = obj
            .program(name)
            .expect("a program of the primitives' object");
        let insns = prog.relocate(fd_of).expect("relocate");
        let fd = sys::prog_load(sys::BPF_PROG_TYPE_SCHED_CLS, &insns, &obj.license, name)
            .unwrap_or_else(|e| panic!("load the {name} primitive: {e}"));
        progs.insert(name, fd);
    }
    let packet = vec![0u8; 64];
    // 10,000 attempts of other clients in the table, as in the rest of the
    // bench, so that lookups and inserts search a table of realistic size.
    let fill =
        sys::prog_test_run(progs["insert"].as_fd(), &packet, None, 10_000).expect("fill the table");
    assert_eq!(fill.retval, 0, "the table takes 10,000 attempts");
    let fill = sys::prog_test_run(progs["slot_insert"].as_fd(), &packet, None, 10_000)
        .expect("fill the slot table");
    assert_eq!(fill.retval, 0, "the slot table takes 10,000 attempts");
    let mut run = |name: &str| {
        let r = sys::prog_test_run(progs[name].as_fd(), &packet, None, REPEAT)
            .unwrap_or_else(|e| panic!("test run of the {name} primitive: {e}"));
        assert_eq!(r.retval, 0, "the {name} primitive must succeed");
        perf.drain(|_, _| {});
        r.duration_ns
    };
    let results = PRIMITIVES
        .iter()
        .map(|p| {
            let mut res = PrimitiveResult {
                base_runs: Vec::with_capacity(rounds),
                runs: Vec::with_capacity(rounds),
            };
            for round in 0..rounds {
                if round.is_multiple_of(2) {
                    res.base_runs.push(run(p.base));
                    res.runs.push(run(p.prog));
                } else {
                    res.runs.push(run(p.prog));
                    res.base_runs.push(run(p.base));
                }
            }
            res
        })
        .collect();
    assert_eq!(
        perf.stats().lost,
        0,
        "no record may be lost while measuring"
    );
    results
}
