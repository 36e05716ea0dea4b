//! Loading the classifier: the embedded object, its maps (named
//! `flowlat_*`), relocation, the programs for each hook and framing.

use std::collections::HashMap;
use std::mem::offset_of;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::abi::{
    Batch, ConfigGlobal, FilterGlobal, CFG_IN_ORDER, GATE_BANKS, GATE_PORT_WORDS, GATE_SLOTS,
    LATE_ANSWER_US,
};
use super::attempts::{Lru, Table, TableMap};
use super::delivery::{MAX_RECORDS_PER_EVENT, STORES_IN_ORDER};
use super::ledger::Delivered;
use super::procs::{ProcPrograms, PROC_PROGRAMS};
use super::slots::{self, SlotTable};
use super::state::Probe;
use crate::bpf::btf::MapBtf;
use crate::bpf::map::{Map, BPF_MAP_TYPE_SK_STORAGE};
use crate::bpf::mmap::Mapping;
use crate::bpf::object::{Object, BSS_MAP};
use crate::bpf::perf::page_size;
use crate::bpf::{cpu, sys, BpfError, ObjectError};
use crate::netlink::tc::Hook;

/// The classifier's ELF object, compiled by `build.rs`. Aligned so that the ELF
/// parser can read its headers in place.
#[repr(C, align(8))]
pub(crate) struct Aligned<T: ?Sized>(T);
pub(crate) static OBJECT: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/probe.o")));
pub(crate) static OBJECT_SLOTS: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/probe_slots.o")));

/// The embedded classifier object of a table (for tests and tools that inspect it).
pub fn object_bytes(table: Table) -> &'static [u8] {
    match table {
        Table::Slots => &OBJECT_SLOTS.0,
        Table::Lru => &OBJECT.0,
    }
}

/// Maps `bytes` (rounded up to whole pages) of a `BPF_F_MMAPABLE` array's
/// values; `what` names it for the error.
pub(crate) fn map_values(
    fd: BorrowedFd<'_>,
    bytes: usize,
    page: usize,
    what: &str,
) -> Result<Mapping, BpfError> {
    let len = NonZeroUsize::new(bytes.div_ceil(page) * page)
        .ok_or_else(|| BpfError::Invalid(format!("{what} has no values to map")))?;
    Mapping::new(fd, len).map_err(|e| BpfError::sys(format!("mapping {what} into memory"), e))
}

/// How an interface's packets start, which picks the program variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// An Ethernet header (Ethernet, veth, bridges, bonds, lo, ...).
    Ethernet,
    /// The IP header itself (tun, WireGuard and other `link/none` devices).
    Ip,
}

/// Settings that size the maps.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Room in the table of attempts in progress.
    pub max_pending: u32,
    /// The table to keep them in; `None`: [`Table::best`].
    pub table: Option<Table>,
}

impl ProbeConfig {
    /// Room for `max_pending` attempts, in the best table this kernel runs.
    pub fn new(max_pending: u32) -> ProbeConfig {
        ProbeConfig {
            max_pending,
            table: None,
        }
    }
}

impl Probe {
    /// Parses the embedded object, creates its maps (named `flowlat_*`), patches the
    /// map references and loads all four programs.
    pub fn load(cfg: &ProbeConfig) -> Result<Probe, BpfError> {
        Probe::load_for(cfg, true)
    }

    /// Like [`Probe::load`], loading the programs for L3 devices only when
    /// `l3` says an interface needs them: the verifier's time is most of
    /// flowlat's start-up.
    pub fn load_for(cfg: &ProbeConfig, l3: bool) -> Result<Probe, BpfError> {
        let table = cfg.table.unwrap_or_else(Table::best);
        Probe::load_from(object_bytes(table), table, cfg, l3)
    }

    pub(super) fn load_from(
        elf: &[u8],
        table: Table,
        cfg: &ProbeConfig,
        l3: bool,
    ) -> Result<Probe, BpfError> {
        let obj = Object::parse(elf)?;
        let buckets = slots::buckets_for(cfg.max_pending);
        // The slot table's front, then its main buckets (see `bpf/flowlat.h`).
        let slot_buckets = slots::FRONT as u32 + buckets;
        let possible_cpus = cpu::possible_cpus()? as usize;
        let mut maps: HashMap<String, Map> = HashMap::new();
        for def in &obj.maps {
            let mut attr = def.attr();
            match def.name.as_str() {
                "pending" => attr.max_entries = cfg.max_pending,
                "slots" => attr.max_entries = slot_buckets,
                "events" | "batches" => attr.max_entries = possible_cpus as u32,
                _ => {}
            }
            // What bpftool lists: flowlat_pending, ..., and flowlat_globals for .bss.
            let name = match def.name.as_str() {
                BSS_MAP => "flowlat_globals".to_string(),
                other => format!("flowlat_{other}"),
            };
            let map = if attr.map_type == BPF_MAP_TYPE_SK_STORAGE {
                Map::create_with_btf(&attr, &name, &MapBtf::load(attr.value_size)?)?
            } else {
                Map::create(&attr, &name)?
            };
            maps.insert(def.name.clone(), map);
        }
        let mut take = |name: &str| {
            maps.remove(name)
                .ok_or_else(|| ObjectError::NoMap { name: name.into() })
        };
        let table_name = table.map_name();
        let (table_fd, events, stats) = (take(table_name)?, take("events")?, take("stats")?);
        let (nets, agg, agg_cpu) = (take("nets")?, take("agg")?, take("agg_cpu")?);
        let fails = take("fails")?;
        let globals_fd = take(BSS_MAP)?;
        let batches_fd = take("batches")?;
        let (procs, scratch) = (take("procs")?, take("scratch")?);
        let conn_procs = take("conn_procs")?;
        let fds: HashMap<&str, BorrowedFd<'_>> = [
            (table_name, table_fd.as_fd()),
            ("events", events.as_fd()),
            ("stats", stats.as_fd()),
            ("nets", nets.as_fd()),
            ("agg", agg.as_fd()),
            ("agg_cpu", agg_cpu.as_fd()),
            ("fails", fails.as_fd()),
            ("batches", batches_fd.as_fd()),
            ("procs", procs.as_fd()),
            ("conn_procs", conn_procs.as_fd()),
            ("scratch", scratch.as_fd()),
            (BSS_MAP, globals_fd.as_fd()),
        ]
        .into_iter()
        .collect();
        let load = |name: &str| -> Result<OwnedFd, BpfError> {
            let prog = obj
                .program(name)
                .ok_or_else(|| ObjectError::NoProgram { name: name.into() })?;
            let insns = prog.relocate(|m| fds.get(m).map(|fd| fd.as_raw_fd()))?;
            sys::prog_load(sys::BPF_PROG_TYPE_SCHED_CLS, &insns, &obj.license, name)
        };
        let word_of = |name: &str, size: usize| {
            let size = size as u64;
            obj.global(name)
                .filter(|g| g.size == size && g.offset % 8 == 0)
                .map(|g| g.offset as usize / 4)
                .ok_or_else(|| ObjectError::NoGlobal {
                    name: name.into(),
                    size,
                    align: 8,
                })
        };
        let gate_word = word_of(
            "gate",
            (GATE_SLOTS + GATE_PORT_WORDS) * 4 * GATE_BANKS as usize,
        )?;
        let config_word = word_of("config", std::mem::size_of::<ConfigGlobal>())?;
        let filter_word = word_of("filter", std::mem::size_of::<FilterGlobal>())?;
        let globals_len = obj
            .map(BSS_MAP)
            .and_then(|m| NonZeroUsize::new(m.value_size as usize))
            .ok_or_else(|| ObjectError::NoMap {
                name: BSS_MAP.into(),
            })?;
        let globals = Mapping::new(globals_fd.as_fd(), globals_len).map_err(|e| {
            BpfError::sys(
                "mapping the probe's globals (flowlat_globals) into memory",
                e,
            )
        })?;
        let page = page_size()?;
        let batches = map_values(
            batches_fd.as_fd(),
            possible_cpus * std::mem::size_of::<Batch>(),
            page,
            "the probe's batches (flowlat_batches)",
        )?;
        // The cgroup programs are optional: a kernel that refuses them
        // (one whose cgroup programs may not read the current process)
        // measures all the same, without processes.
        let proc_programs = PROC_PROGRAMS
            .iter()
            .map(|&(name, prog_type, attach_type)| {
                let prog = obj
                    .program(name)
                    .ok_or_else(|| ObjectError::NoProgram { name: name.into() })?;
                let insns = prog.relocate(|m| fds.get(m).map(|fd| fd.as_raw_fd()))?;
                sys::prog_load_with_attach_type(prog_type, attach_type, &insns, &obj.license, name)
                    .map(|fd| (attach_type, fd))
            })
            .collect::<Result<Vec<_>, BpfError>>()
            .map(|progs| ProcPrograms { progs })
            .map_err(|e| e.to_string());
        let ingress = load("flowlat_ingress")?;
        let egress = load("flowlat_egress")?;
        let (ingress_l3, egress_l3) = if l3 {
            (Some(load("flowlat_in_l3")?), Some(load("flowlat_eg_l3")?))
        } else {
            (None, None)
        };
        drop(fds);
        let table_map = match table {
            Table::Slots => {
                let map = map_values(
                    table_fd.as_fd(),
                    slot_buckets as usize * std::mem::size_of::<slots::Bucket>(),
                    page,
                    "the table of attempts (flowlat_slots)",
                )?;
                TableMap::Slots(SlotTable::new(table_fd.into(), map, slot_buckets))
            }
            Table::Lru => TableMap::Lru(Lru {
                map: table_fd,
                max_pending: cfg.max_pending,
            }),
        };
        let mut probe = Probe {
            ingress,
            egress,
            ingress_l3,
            egress_l3,
            table: table_map,
            events,
            stats,
            globals,
            _globals_fd: globals_fd,
            gate_word,
            config_word,
            filter_word,
            nets,
            agg,
            agg_cpu,
            fails,
            batches,
            _batches_fd: batches_fd,
            _procs: procs,
            _conn_procs: conn_procs,
            _scratch: scratch,
            proc_programs,
            delivered: vec![Delivered::default(); possible_cpus],
            recovered: 0,
            malformed: 0,
            cgroup_filter: false,
            swept_filtered: 0,
            possible_cpus,
            bank: 0,
            rotated_ns: None,
            swept: 0,
            tombstones: 0,
            records_per_event: 0,
        };
        probe.set_records_per_event(MAX_RECORDS_PER_EVENT);
        probe.set_stores_in_order(STORES_IN_ORDER);
        probe.globals.words()[probe.config_word + offset_of!(ConfigGlobal, table_mask) / 4]
            .store(buckets - 1, Ordering::Relaxed);
        probe.set_late_answer(Some(Duration::from_micros(u64::from(LATE_ANSWER_US))));
        Ok(probe)
    }

    /// How long after its first SYN an answer is late, and leaves a tombstone
    /// for the copies of the SYN that may still come (`None`: never; what the
    /// probe loads with is `FLOWLAT_LATE_ANSWER_US`). Tests whose model of
    /// the contract cannot see the kernel's clock turn it off.
    pub fn set_late_answer(&mut self, after: Option<Duration>) {
        let us = after.map_or(u32::MAX, |d| {
            u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
        });
        self.globals.words()[self.config_word + offset_of!(ConfigGlobal, late_answer_us) / 4]
            .store(us, Ordering::Relaxed);
    }

    /// How many records the classifier puts in one perf event, 1 to
    /// [`BATCH`] on x86 and 1 elsewhere (see `MAX_RECORDS_PER_EVENT`), which
    /// is what the probe loads with; with more than 1, [`Probe::drain`] also
    /// reads the batches that have not filled. Tests set 1 to run the other
    /// CPUs' path.
    pub fn set_records_per_event(&mut self, n: u32) {
        let n = n.clamp(1, MAX_RECORDS_PER_EVENT);
        self.globals.words()[self.config_word + offset_of!(ConfigGlobal, batch) / 4]
            .store(n, Ordering::Relaxed);
        self.records_per_event = n;
    }

    /// Whether the slot table's classifier publishes a new attempt with a
    /// plain store (`true`, what the probe loads with on x86) or with a
    /// compare-and-exchange (elsewhere). Tests set `false` to run the other
    /// CPUs' path; `true` is only sound on CPUs that keep stores in order.
    pub fn set_stores_in_order(&mut self, on: bool) {
        let flags = &self.globals.words()[self.config_word + offset_of!(ConfigGlobal, flags) / 4];
        if on && STORES_IN_ORDER {
            flags.fetch_or(CFG_IN_ORDER, Ordering::SeqCst);
        } else {
            flags.fetch_and(!CFG_IN_ORDER, Ordering::SeqCst);
        }
    }

    /// The program for a hook of an Ethernet interface, to attach with `cls_bpf`.
    pub fn program(&self, hook: Hook) -> BorrowedFd<'_> {
        match hook {
            Hook::Ingress => self.ingress.as_fd(),
            Hook::Egress => self.egress.as_fd(),
        }
    }

    /// The program for a hook of an interface with the given framing; `None`
    /// for L3 framing when the probe was loaded without it.
    pub fn program_for(&self, hook: Hook, framing: Framing) -> Option<BorrowedFd<'_>> {
        match (hook, framing) {
            (_, Framing::Ethernet) => Some(self.program(hook)),
            (Hook::Ingress, Framing::Ip) => self.ingress_l3.as_ref().map(|fd| fd.as_fd()),
            (Hook::Egress, Framing::Ip) => self.egress_l3.as_ref().map(|fd| fd.as_fd()),
        }
    }

    /// Runs a program once on `packet` through `BPF_PROG_TEST_RUN` (tests, benches).
    #[cfg(any(test, feature = "testing"))]
    pub fn test_run(
        &self,
        hook: Hook,
        packet: &[u8],
        repeat: u32,
    ) -> Result<sys::TestRun, BpfError> {
        sys::prog_test_run(self.program(hook), packet, None, repeat)
    }

    /// Like [`Probe::test_run`], for an interface of the given framing.
    #[cfg(any(test, feature = "testing"))]
    pub fn test_run_framed(
        &self,
        hook: Hook,
        framing: Framing,
        packet: &[u8],
        repeat: u32,
    ) -> Result<sys::TestRun, BpfError> {
        let prog = self.program_for(hook, framing).ok_or_else(|| {
            BpfError::Invalid("the probe was loaded without its L3 programs".to_string())
        })?;
        sys::prog_test_run(prog, packet, None, repeat)
    }
}
