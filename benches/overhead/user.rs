//! User space: turning records into lines, and reading them off the perf rings.

use std::collections::HashMap;
use std::hint::black_box;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowlat::bpf::map::{Map, MapAttr, BPF_MAP_TYPE_PERF_EVENT_ARRAY};
use flowlat::bpf::perf::PerfBuffers;
use flowlat::bpf::{cpu, sys};
use flowlat::host::cgroup::Cgroups;
use flowlat::probe::{Event, Record};
use flowlat::sinks::labels::Names;
use flowlat::sinks::{clock::WallClock, lines::Formatter};

use crate::stats::median_f64;
use kit::asm;

/// Records as the classifier sends them: a mix of directions, results and
/// address families, so the formatter takes all its paths.
fn sample_events() -> Vec<Vec<u8>> {
    (0..1024u32)
        .map(|i| {
            let mut ev = Event::default();
            ev.key.ifindex = 2;
            ev.key.dir = (i % 2) as u8;
            ev.result = [0, 0, 0, 1, 0, 0, 3, 0][(i % 8) as usize];
            ev.key.client_port = (32768 + i as u16).to_be();
            ev.key.server_port = 443u16.to_be();
            if i % 4 == 3 {
                ev.key.family = 6;
                ev.key.client = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, i as u8];
                ev.key.server = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            } else {
                ev.key.family = 4;
                ev.key.client[..4].copy_from_slice(&[10, 0, (i >> 8) as u8, i as u8]);
                ev.key.server[..4].copy_from_slice(&[93, 184, 216, 34]);
            }
            let t0 = 1_000_000_000_000 + u64::from(i) * 50_000;
            ev.p.first_syn_ns = t0;
            ev.p.last_syn_ns = t0;
            ev.p.first_synack_ns = t0 + 40_000;
            ev.p.last_synack_ns = t0 + 40_000;
            ev.p.syns = 1;
            ev.p.synacks = 1;
            ev.end_ns = t0 + 12_345_678;
            ev.to_bytes()
        })
        .collect()
}

/// Records decoded (bytes to [`Record`]) and formatted per second, as flowlat's
/// main loop does them: the median of `rounds` rounds of `n` records.
pub fn format_rate(json: bool, n: usize, rounds: usize) -> f64 {
    let events = sample_events();
    let ifaces: HashMap<u32, String> = [(2, "eth0".to_string())].into_iter().collect();
    let names = Names::new(ifaces, Cgroups::discover());
    // No fixed UTC offset: text lines look up the local zone per record, as flowlat does.
    let mut fmt = Formatter::new(json, WallClock::now(), 4);
    let rates: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            let mut bytes = 0usize;
            for b in events.iter().cycle().take(n) {
                let ev = Event::decode(black_box(b)).expect("record size");
                let r = Record::from_event(&ev).expect("valid record");
                bytes += black_box(fmt.format(&r, &names, flowlat::sinks::lines::Local::default()))
                    .len();
            }
            black_box(bytes);
            n as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    median_f64(&rates)
}

/// What the perf reader did.
pub struct ReaderResult {
    /// Records the producer sent per second (one CPU, as fast as it could).
    pub offered_per_s: f64,
    /// Records the reader took off the rings per second meanwhile.
    pub read_per_s: f64,
    /// Records the kernel dropped because a ring was full.
    pub lost: u64,
    /// Records per second that one `drain` of a nearly full ring delivers:
    /// the reader's own speed, with no producer to wait for.
    pub drain_per_s: f64,
    pub pages: usize,
}

/// Pins the calling thread to one CPU.
fn pin(cpu: u32) -> bool {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu as usize).is_ok()
        && nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok()
}

/// A perf event array with rings of `pages` pages, and a program that sends
/// one flowlat-sized record per test run and does nothing else.
struct Source {
    perf: PerfBuffers,
    sender: OwnedFd,
    _events: Map,
    frame: Vec<u8>,
}

impl Source {
    fn new(pages: usize) -> Source {
        let possible = cpu::possible_cpus().expect("possible CPUs");
        let events = Map::create(
            &MapAttr {
                map_type: BPF_MAP_TYPE_PERF_EVENT_ARRAY,
                key_size: 4,
                value_size: 4,
                max_entries: possible,
                map_flags: 0,
            },
            "bench_events",
        )
        .expect("create a perf event array");
        let size = std::mem::size_of::<Event>();
        let perf = PerfBuffers::open(&events, pages, size).expect("open perf rings");
        // family = 4 at offset 40, so every record decodes to a valid Record.
        let sender = asm::record_sender(events.as_fd(), size, &[(40, 4)]).expect("load the sender");
        Source {
            perf,
            sender,
            _events: events,
            frame: crate::frames::syn("10.0.0.5", 40000, "93.184.216.34", 1),
        }
    }

    fn send(&self, n: u32) {
        sys::prog_test_run(self.sender.as_fd(), &self.frame, None, n).expect("test run");
    }
}

/// The reader's speed alone: fills one ring to `fill` of its capacity with
/// nobody reading, then times one `drain`; the median of `rounds`.
fn drain_rate(src: &mut Source, pages: usize, rounds: usize) -> f64 {
    // Each sample takes its 8-byte header, a 4-byte size and the record, 8-aligned.
    let per_record = (8 + 4 + std::mem::size_of::<Event>()).next_multiple_of(8);
    let fill = (pages * 4096 / per_record * 9 / 10) as u32;
    let rates: Vec<f64> = (0..rounds)
        .map(|_| {
            src.send(fill);
            let start = Instant::now();
            let n = src.perf.drain(|_, b| {
                black_box(Event::decode(b));
            });
            n as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    median_f64(&rates)
}

/// One CPU sends records as fast as it can for `secs` while another reads them
/// the way flowlat does (woken through the perf event, then draining).
pub fn perf_reader(pages: usize, secs: f64) -> ReaderResult {
    let mut src = Source::new(pages);
    let drain_per_s = drain_rate(&mut src, pages, 21);
    let online = cpu::online_cpus().expect("online CPUs");
    let (reader_cpu, producer_cpu) = (online[0], *online.last().expect("a CPU"));
    let pinned = online.len() > 1 && pin(reader_cpu);
    let lost_before = src.perf.stats().lost;
    let done = Arc::new(AtomicBool::new(false));
    let offered = Arc::new(AtomicU64::new(0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let Source {
        mut perf,
        sender,
        frame,
        _events,
    } = src;
    let mut read = 0u64;
    let mut produced_for = Duration::ZERO;
    rt.block_on(async {
        // Register the rings with the reactor before anything is sent.
        let _ = tokio::time::timeout(Duration::ZERO, perf.readable()).await;
        let (d, o) = (done.clone(), offered.clone());
        let producer = std::thread::spawn(move || {
            if pinned {
                pin(producer_cpu);
            }
            let start = Instant::now();
            let end = start + Duration::from_secs_f64(secs);
            while Instant::now() < end {
                const BATCH: u32 = 1_000;
                sys::prog_test_run(sender.as_fd(), &frame, None, BATCH).expect("test run");
                o.fetch_add(u64::from(BATCH), Ordering::Relaxed);
            }
            d.store(true, Ordering::Release);
            start.elapsed()
        });
        loop {
            match tokio::time::timeout(Duration::from_millis(20), perf.readable()).await {
                Ok(r) => r.expect("wait for the perf rings"),
                Err(_) if done.load(Ordering::Acquire) => break,
                Err(_) => continue,
            }
            read += perf.drain(|_, b| {
                black_box(Event::decode(b));
            }) as u64;
        }
        produced_for = producer.join().expect("producer thread");
    });
    read += perf.drain(|_, _| {}) as u64;
    // What the reader still found after the producer stopped is at most a
    // ring's worth: rates are per second of production.
    let busy = produced_for.as_secs_f64();
    ReaderResult {
        offered_per_s: offered.load(Ordering::Relaxed) as f64 / busy,
        read_per_s: read as f64 / busy,
        lost: perf.stats().lost - lost_before,
        drain_per_s,
        pages,
    }
}

/// One `--summary` grouping measured by [`summary_rate`].
pub struct SummaryCase {
    pub by: &'static str,
    pub hist: bool,
    /// Distinct clients and servers the records come from.
    pub clients: u32,
    pub servers: u32,
}

pub const SUMMARY_CASES: [SummaryCase; 3] = [
    SummaryCase {
        by: "iface,dir,server",
        hist: false,
        clients: 1000,
        servers: 100,
    },
    SummaryCase {
        by: "dir,client-net",
        hist: true,
        clients: 5000,
        servers: 10,
    },
    SummaryCase {
        by: "client-ip",
        hist: false,
        clients: 1_000_000,
        servers: 10,
    },
];

/// Records taken into a summary per second on one thread, as `--summary`
/// does with every record (the default 4096 groups, the rest in `other`):
/// the median of `rounds` rounds of `n` records.
pub fn summary_rate(case: &SummaryCase, n: usize, rounds: usize) -> f64 {
    use flowlat::cli::parse_by;
    use flowlat::probe::{Dir, Outcome};
    use flowlat::sinks::summary::{Summary, SummaryConfig};
    let by = parse_by(case.by).expect("a valid --by");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let records: Vec<Record> = (0..n.min(1 << 20))
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let client = 0x0a00_0000 + (x % u64::from(case.clients)) as u32;
            let server = 0xc000_0200 + (i as u32 % case.servers);
            let rtt = 20_000 + x % 50_000_000;
            Record {
                ifindex: 2,
                dir: if x & 1 == 0 { Dir::Out } else { Dir::In },
                outcome: if x.is_multiple_of(50) {
                    Outcome::Timeout
                } else {
                    Outcome::Ok
                },
                client: std::net::Ipv4Addr::from(client).into(),
                client_port: 40_000 + (x % 20_000) as u16,
                server: std::net::Ipv4Addr::from(server).into(),
                server_port: 443,
                end_ns: 1_000_000_000 + i as u64,
                rtt_ns: Some(rtt),
                local_ns: Some(rtt / 100),
                total_ns: Some(rtt),
                retrans: 0,
                synack_retrans: None,
                cgroup_id: None,
                process: None,
                reason: None,
                reason_from: None,
            }
        })
        .collect();
    let rates: Vec<f64> = (0..rounds)
        .map(|_| {
            let mut s = Summary::new(
                SummaryConfig {
                    by: by.clone(),
                    v4_prefix: 24,
                    v6_prefix: 48,
                    max_groups: 4096,
                    hist: case.hist,
                    json: false,
                    interval: None,
                    grace: Duration::from_secs(1),
                },
                0,
            );
            let start = Instant::now();
            for r in records.iter().cycle().take(n) {
                s.add(black_box(r));
            }
            black_box(s.finish(2_000_000_000));
            n as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    median_f64(&rates)
}

/// What a scrape costs flowlat with the largest label set `--metrics-by
/// server-port` allows by default: 256 ports of their own and `other`, both
/// directions, on one interface. Returns (median ms per render, bytes).
pub fn scrape_render(rounds: usize) -> (f64, usize) {
    use flowlat::probe::{AggKey, AggValue, Dir};
    use flowlat::sinks::metrics::{Gauges, Metrics, MetricsConfig};
    let cfg = MetricsConfig {
        by_port: true,
        by_cgroup: false,
        by_workload: false,
        max_series: 256,
    };
    let mut m = Metrics::new(cfg, &[(2, "eth0".to_string())]);
    let mut kernel = Vec::new();
    for port in 1..=300u16 {
        for dir in [Dir::Out, Dir::In] {
            let mut v = AggValue {
                results: [u64::from(port) * 10, 2, 1, 0, 0],
                ..AggValue::default()
            };
            for b in 0..v.rtt.buckets.len() {
                v.rtt.buckets[b] = u64::from(port) + b as u64;
                v.local.buckets[b] = b as u64;
            }
            kernel.push((
                AggKey {
                    ifindex: 2,
                    dir,
                    server_port: Some(port),
                    cgroup_id: None,
                    other: false,
                },
                v,
            ));
        }
    }
    let gauges = Gauges::default();
    let mut bytes = 0;
    let times: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            m.set_kernel(kernel.clone());
            let text = m.render(&mut |_| None, &gauges);
            bytes = black_box(text).len();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    (median_f64(&times), bytes)
}
