//! Per-CPU perf rings that carry `bpf_perf_event_output` records to user space.
//!
//! [`PerfBuffers::open`] makes one `PERF_COUNT_SW_BPF_OUTPUT` event per online CPU,
//! maps its ring and stores its fd in a `BPF_MAP_TYPE_PERF_EVENT_ARRAY` at the CPU's
//! index, where `bpf_perf_event_output(.., BPF_F_CURRENT_CPU, ..)` looks it up.
//! The record parser (`Ring`) works on any memory laid out like the mapping, so
//! it is tested on rings built in memory, without the kernel.

use std::future::poll_fn;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::slice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use nix::unistd::{sysconf, SysconfVar};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::map::{Map, Update};
use super::mmap::Mapping;
use super::{cpu, BpfError};

/// `PERF_TYPE_SOFTWARE`.
const PERF_TYPE_SOFTWARE: u32 = 1;
/// `PERF_COUNT_SW_BPF_OUTPUT`: the software event `bpf_perf_event_output` writes to.
const PERF_COUNT_SW_BPF_OUTPUT: u64 = 10;
/// `PERF_SAMPLE_RAW`: samples carry `{ u32 size; char data[size]; }`.
const PERF_SAMPLE_RAW: u64 = 1 << 10;
/// `PERF_FLAG_FD_CLOEXEC`.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
/// `PERF_EVENT_IOC_ENABLE`, `_IO('$', 0)`. `libc::Ioctl` is `c_ulong` on glibc, `c_int` on musl.
const PERF_EVENT_IOC_ENABLE: libc::Ioctl = 0x2400;

/// `PERF_RECORD_LOST`: `{ header; u64 id; u64 lost; }`.
const PERF_RECORD_LOST: u32 = 2;
/// `PERF_RECORD_SAMPLE`: with `PERF_SAMPLE_RAW` only, `{ header; u32 size; char data[size]; }`.
const PERF_RECORD_SAMPLE: u32 = 9;

/// Offsets of the ring control fields in `struct perf_event_mmap_page`.
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;
const DATA_OFFSET: usize = 1040;
const DATA_SIZE: usize = 1048;
/// The control fields end here; the data area cannot start before.
const CONTROL_END: usize = DATA_SIZE + 8;

/// The `watermark` bit of `perf_event_attr`'s flags word (bit 14).
const PERF_ATTR_FLAG_WATERMARK: u64 = 1 << 14;

/// `sizeof(struct perf_event_header)`: `{ u32 type; u16 misc; u16 size; }`.
const HEADER_LEN: usize = 8;
/// Header plus the `u32` raw size: where a sample's raw data starts.
const RAW_START: usize = HEADER_LEN + 4;

/// `struct perf_event_attr` as of `PERF_ATTR_SIZE_VER5` (112 bytes); the kernel
/// takes the fields it knows from the `size` we pass. `flags` is the bitfield
/// word (`disabled`, `inherit`, ...); only `watermark` is set here, which makes
/// `wakeup_events` mean `wakeup_watermark`.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
}

/// Counters of what the readers saw in the rings' `PERF_RECORD_*` records,
/// summed over all CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerfStats {
    /// Samples handed to the callback.
    pub samples: u64,
    /// Samples the kernel dropped because a ring was full: the sum of the `lost`
    /// fields of `PERF_RECORD_LOST` records.
    pub lost: u64,
    /// `PERF_RECORD_SAMPLE` records whose raw size did not match the expected
    /// sample size (skipped).
    pub wrong_size: u64,
    /// Records of any other `PERF_RECORD_*` type (skipped).
    pub other_records: u64,
    /// Times a ring held a record header that cannot be right (size below the header
    /// or beyond the published data); the rest of that ring's data was skipped.
    pub corrupt: u64,
}

/// One perf ring: a `struct perf_event_mmap_page` followed by its data area.
struct Ring {
    meta: NonNull<u8>,
    data: NonNull<u8>,
    size: u64,
}

// SAFETY: a Ring is a view of memory shared only with the kernel; it holds no
// thread-bound state, so it may move to another thread with its owner.
unsafe impl Send for Ring {}

impl Ring {
    /// Finds the data area from `data_offset`/`data_size`, or, on kernels older
    /// than 4.1 that leave them zero, as everything after the first page.
    ///
    /// # Safety
    ///
    /// `meta` must be 8-byte aligned and point to `len` bytes that stay readable and
    /// writable for the life of the `Ring`, laid out as `struct perf_event_mmap_page`
    /// plus data area, and written concurrently only by a producer that follows the
    /// perf ring protocol (it writes data only between head and tail + size, then
    /// publishes it by storing `data_head`).
    unsafe fn new(meta: NonNull<u8>, len: usize, page_size: usize) -> Result<Ring, BpfError> {
        let mut ring = Ring {
            meta,
            data: meta,
            size: 0,
        };
        if len < CONTROL_END {
            return Err(bad_layout(format!(
                "a perf ring mapping of {len} bytes is too small"
            )));
        }
        let (mut offset, mut size) = (
            ring.word(DATA_OFFSET).load(Ordering::Relaxed),
            ring.word(DATA_SIZE).load(Ordering::Relaxed),
        );
        if size == 0 {
            (offset, size) = (page_size as u64, len.saturating_sub(page_size) as u64);
        }
        let fits = offset
            .checked_add(size)
            .is_some_and(|end| end <= len as u64);
        if !fits || size == 0 || offset < CONTROL_END as u64 || !offset.is_multiple_of(8) {
            return Err(bad_layout(format!(
                "perf ring data area at offset {offset}, {size} bytes, does not fit its {len}-byte mapping"
            )));
        }
        // SAFETY: offset + size <= len was checked just above.
        ring.data = unsafe { meta.add(offset as usize) };
        ring.size = size;
        Ok(ring)
    }

    /// A `u64` control field of `struct perf_event_mmap_page`.
    fn word(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset.is_multiple_of(8) && offset < CONTROL_END);
        // SAFETY: the offsets used are 8-aligned fields inside the control page (checked
        // in `new`), valid for the Ring's life; the kernel accesses them only as whole
        // aligned u64s, so they can be treated as atomics.
        unsafe { AtomicU64::from_ptr(self.meta.as_ptr().add(offset).cast()) }
    }

    /// The bytes of `[pos, pos + len)` in ring order: the part up to the end of the
    /// data area, then the part wrapped to its start (empty unless the range wraps).
    /// Callers ask only for published bytes, between `data_tail` and `data_head`:
    /// the kernel does not write those until `data_tail` moves past them.
    fn span(&self, pos: u64, len: usize) -> (&[u8], &[u8]) {
        let size = self.size as usize;
        let start = (pos % self.size) as usize;
        let len = len.min(size);
        let first = len.min(size - start);
        // SAFETY: start + first <= size and len - first <= size, so both slices lie in
        // the data area, which is valid for the Ring's life; see above for why nothing
        // writes them while borrowed.
        unsafe {
            (
                slice::from_raw_parts(self.data.as_ptr().add(start), first),
                slice::from_raw_parts(self.data.as_ptr(), len - first),
            )
        }
    }

    /// The record at `pos`, in place, or copied into `scratch` when it wraps.
    fn record<'a>(&'a self, pos: u64, len: usize, scratch: &'a mut Vec<u8>) -> &'a [u8] {
        match self.span(pos, len) {
            (whole, []) => whole,
            (first, rest) => {
                scratch.clear();
                scratch.extend_from_slice(first);
                scratch.extend_from_slice(rest);
                scratch
            }
        }
    }

    /// Whether the kernel has published records not yet consumed.
    fn pending(&self) -> bool {
        self.word(DATA_HEAD).load(Ordering::Acquire) != self.word(DATA_TAIL).load(Ordering::Relaxed)
    }

    /// The type and size of the record at `pos`, or `None` when no valid record can
    /// start there: fewer than a header's bytes published, or a size smaller than the
    /// header or larger than what is published.
    fn header(&self, pos: u64, avail: u64, scratch: &mut Vec<u8>) -> Option<(u32, u64)> {
        if avail < HEADER_LEN as u64 {
            return None;
        }
        let header = self.record(pos, HEADER_LEN, scratch);
        let size = u64::from(u16::from_ne_bytes(bytes_at(header, 6)?));
        (HEADER_LEN as u64..=avail)
            .contains(&size)
            .then_some((u32::from_ne_bytes(bytes_at(header, 0)?), size))
    }

    /// Consumes every record published so far, hands the first `sample_size` raw
    /// bytes of each well-sized sample to `on_sample`, and returns how many it handed.
    fn read(
        &self,
        sample_size: usize,
        stats: &mut PerfStats,
        scratch: &mut Vec<u8>,
        on_sample: &mut dyn FnMut(&[u8]),
    ) -> usize {
        // Acquire pairs with the kernel's store of data_head after it wrote the
        // records: everything below head is complete.
        let head = self.word(DATA_HEAD).load(Ordering::Acquire);
        // Only this reader stores data_tail. Both counters only grow; wrapping
        // arithmetic keeps the distance right should they ever pass 2^64.
        let mut tail = self.word(DATA_TAIL).load(Ordering::Relaxed);
        let mut delivered = 0;
        if head.wrapping_sub(tail) > self.size {
            // More published than the ring holds: the counters themselves are bad.
            stats.corrupt += 1;
            tail = head;
        }
        while tail != head {
            let Some((kind, size)) = self.header(tail, head.wrapping_sub(tail), scratch) else {
                // Without a trustworthy size there is no next record boundary: skip
                // what is published and start again at head, rather than parse garbage.
                stats.corrupt += 1;
                tail = head;
                break;
            };
            let record = self.record(tail, size as usize, scratch);
            if parse(kind, record, sample_size, stats, on_sample) {
                delivered += 1;
            }
            tail = tail.wrapping_add(size);
        }
        // Release orders our reads of the records before the kernel may reuse their space.
        self.word(DATA_TAIL).store(tail, Ordering::Release);
        delivered
    }
}

/// Accounts for one whole record; returns whether it was a sample handed on.
fn parse(
    kind: u32,
    record: &[u8],
    sample_size: usize,
    stats: &mut PerfStats,
    on_sample: &mut dyn FnMut(&[u8]),
) -> bool {
    match kind {
        PERF_RECORD_SAMPLE => {
            // The kernel pads the raw data so that 4 + size is a multiple of 8.
            match bytes_at(record, HEADER_LEN).map(|b| u32::from_ne_bytes(b) as usize) {
                Some(n)
                    if (sample_size..=sample_size.saturating_add(7)).contains(&n)
                        && RAW_START + n <= record.len() =>
                {
                    stats.samples += 1;
                    on_sample(&record[RAW_START..RAW_START + sample_size]);
                    return true;
                }
                _ => stats.wrong_size += 1,
            }
        }
        PERF_RECORD_LOST => match bytes_at(record, HEADER_LEN + 8).map(u64::from_ne_bytes) {
            Some(lost) => stats.lost += lost,
            None => stats.other_records += 1,
        },
        _ => stats.other_records += 1,
    }
    false
}

/// `N` bytes of `record` at `at`, if it holds them.
fn bytes_at<const N: usize>(record: &[u8], at: usize) -> Option<[u8; N]> {
    record.get(at..at + N)?.try_into().ok()
}

/// `perf_event_open(attr, pid = -1, cpu, group_fd = -1, PERF_FLAG_FD_CLOEXEC)`:
/// an event counting on `cpu` for every process.
fn perf_event_open(attr: &PerfEventAttr, cpu: u32) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a live `struct perf_event_attr` of the size its `size` field
    // states; the other arguments are integers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *const PerfEventAttr,
            -1 as libc::c_long,
            libc::c_long::from(cpu),
            -1 as libc::c_long,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ret` is a new fd the kernel just returned; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as libc::c_int) })
}

/// `ioctl(PERF_EVENT_IOC_ENABLE)`.
fn perf_event_enable(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: PERF_EVENT_IOC_ENABLE reads no argument and touches no user memory.
    if unsafe { libc::ioctl(fd.as_raw_fd(), PERF_EVENT_IOC_ENABLE, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The size of a memory page.
pub(crate) fn page_size() -> Result<usize, BpfError> {
    match sysconf(SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => Ok(n as usize),
        Ok(_) => Err(BpfError::sys(
            "querying the page size",
            io::Error::other("no value"),
        )),
        Err(e) => Err(BpfError::sys("querying the page size", e.into())),
    }
}

/// The length of the mapping of a ring of `pages` data pages: one control
/// page (`struct perf_event_mmap_page`) before them. The kernel wants a
/// power of two of data pages.
fn ring_len(pages: usize, page_size: usize) -> Result<NonZeroUsize, BpfError> {
    if !pages.is_power_of_two() {
        return Err(BpfError::Invalid(format!(
            "a perf ring needs a power-of-two number of data pages, not {pages}"
        )));
    }
    pages
        .checked_add(1)
        .and_then(|n| n.checked_mul(page_size))
        .and_then(NonZeroUsize::new)
        .ok_or_else(|| BpfError::Invalid(format!("a perf ring of {pages} pages is too large")))
}

/// A ring whose control page describes a data area its mapping cannot hold:
/// what the kernel wrote there is not what this reader understands.
fn bad_layout(detail: String) -> BpfError {
    BpfError::sys(
        "reading the layout of a perf ring",
        io::Error::new(io::ErrorKind::InvalidData, detail),
    )
}

/// The ring of one CPU. `ring` views `_mapping`'s memory, so the two live and die together.
struct CpuRing {
    cpu: u32,
    ring: Ring,
    _mapping: Mapping,
}

/// The perf rings of a `BPF_MAP_TYPE_PERF_EVENT_ARRAY`, one per online CPU, and
/// their readers. Dropping it closes the events and unmaps the rings (the map keeps
/// its own reference to each event until the map is closed).
pub struct PerfBuffers {
    rings: Vec<CpuRing>,
    /// Event fds not yet registered with the tokio reactor: registration needs a
    /// runtime, opening must not.
    fds: Vec<OwnedFd>,
    registered: Vec<AsyncFd<OwnedFd>>,
    sample_size: usize,
    scratch: Vec<u8>,
    stats: PerfStats,
}

impl PerfBuffers {
    /// Opens a `PERF_COUNT_SW_BPF_OUTPUT` event with a ring of `pages` data pages (a
    /// power of two) on each online CPU, and stores each event in `event_array` at
    /// its CPU number. `event_array` must be a `BPF_MAP_TYPE_PERF_EVENT_ARRAY` with at
    /// least as many entries as there are possible CPUs. `sample_size` is the size of
    /// the struct the program passes to `bpf_perf_event_output`; samples of any
    /// other size are skipped and counted in [`PerfStats::wrong_size`].
    ///
    /// Needs no tokio runtime; [`PerfBuffers::readable`] does.
    pub fn open(event_array: &Map, pages: usize, sample_size: usize) -> Result<Self, BpfError> {
        let page_size = page_size()?;
        let len = ring_len(pages, page_size)?;
        // Wake the reader when a quarter of a ring has filled, not on every
        // record: each wakeup is an irq_work, a self-interrupt that costs the
        // classifier microseconds per record in a virtual machine. Records
        // below the watermark are for the caller's periodic `drain`.
        let watermark = (pages * page_size / 4).clamp(1, u32::MAX as usize) as u32;
        let attr = PerfEventAttr {
            kind: PERF_TYPE_SOFTWARE,
            size: size_of::<PerfEventAttr>() as u32,
            config: PERF_COUNT_SW_BPF_OUTPUT,
            sample_period: 1,
            sample_type: PERF_SAMPLE_RAW,
            flags: PERF_ATTR_FLAG_WATERMARK,
            wakeup_events: watermark,
            ..Default::default()
        };
        let mut bufs = PerfBuffers {
            rings: Vec::new(),
            fds: Vec::new(),
            registered: Vec::new(),
            sample_size,
            scratch: Vec::new(),
            stats: PerfStats::default(),
        };
        for cpu in cpu::online_cpus()? {
            let fd = perf_event_open(&attr, cpu).map_err(|e| {
                BpfError::sys(format!("opening the BPF output perf event on CPU {cpu}"), e)
            })?;
            let mapping = Mapping::new(fd.as_fd(), len).map_err(|e| {
                BpfError::sys(
                    format!("mapping the {pages}-page perf ring of CPU {cpu}"),
                    e,
                )
            })?;
            // SAFETY: the mapping is page-aligned, `len` bytes long, read-write, laid out
            // by the kernel as perf_event_mmap_page plus data, and outlives the Ring
            // (both go into the same CpuRing).
            let ring = unsafe { Ring::new(mapping.ptr(), mapping.len(), page_size) }?;
            let value = (fd.as_raw_fd() as u32).to_ne_bytes();
            if let Err(e) = event_array.update(&cpu.to_ne_bytes(), &value, Update::Any) {
                return Err(match e {
                    BpfError::Sys { source, .. } => BpfError::sys(
                        format!(
                            "storing the perf event of CPU {cpu} in the perf event array \
                             (it needs an entry per possible CPU)"
                        ),
                        source,
                    ),
                    other => other,
                });
            }
            perf_event_enable(fd.as_fd())
                .map_err(|e| BpfError::sys(format!("enabling the perf event of CPU {cpu}"), e))?;
            bufs.rings.push(CpuRing {
                cpu,
                ring,
                _mapping: mapping,
            });
            bufs.fds.push(fd);
        }
        Ok(bufs)
    }

    /// The number of rings, one per CPU that was online at [`PerfBuffers::open`].
    pub fn cpus(&self) -> usize {
        self.rings.len()
    }

    /// What the readers have seen so far.
    pub fn stats(&self) -> PerfStats {
        self.stats
    }

    /// Reads every record now in the rings, without blocking, and calls
    /// `on_sample(cpu, bytes)` for each sample of the expected size, `bytes` being
    /// exactly `sample_size` long. Returns the number of samples delivered.
    pub fn drain(&mut self, mut on_sample: impl FnMut(u32, &[u8])) -> usize {
        let mut delivered = 0;
        for r in &self.rings {
            let cpu = r.cpu;
            delivered += r.ring.read(
                self.sample_size,
                &mut self.stats,
                &mut self.scratch,
                &mut |s| on_sample(cpu, s),
            );
        }
        delivered
    }

    /// Waits until at least one ring holds unread records; returns at once if one
    /// already does. Follow it with [`PerfBuffers::drain`]. The kernel wakes the
    /// fds only once a quarter of a ring has filled, so callers that want records
    /// promptly also `drain` on a timer.
    ///
    /// The first call registers the event fds with the current tokio runtime.
    ///
    /// # Panics
    ///
    /// When polled outside a tokio runtime with IO enabled.
    pub async fn readable(&mut self) -> Result<(), BpfError> {
        self.register()?;
        let (registered, rings) = (&self.registered, &self.rings);
        poll_fn(|cx| {
            for fd in registered {
                // Use up the readiness tokio has seen, so that the final Pending leaves
                // our waker registered for the next wakeup of every fd.
                loop {
                    match fd.poll_read_ready(cx) {
                        Poll::Ready(Ok(mut guard)) => guard.clear_ready(),
                        Poll::Ready(Err(e)) => {
                            return Poll::Ready(Err(BpfError::sys("waiting for perf ring data", e)))
                        }
                        Poll::Pending => break,
                    }
                }
            }
            // Looked at only now that the wakers are in place: a ring that fills past
            // its watermark after this check wakes us.
            if rings.iter().any(|r| r.ring.pending()) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await
    }

    fn register(&mut self) -> Result<(), BpfError> {
        while let Some(fd) = self.fds.pop() {
            // SAFETY: an OwnedFd stays open, and names the same open file, until dropped,
            // which the AsyncFd that now owns it does only after deregistering.
            match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
                Ok(fd) => self.registered.push(fd),
                Err(e) => {
                    let (fd, source) = e.into_parts();
                    self.fds.push(fd);
                    return Err(BpfError::sys(
                        "registering the perf event fds with the tokio reactor",
                        source,
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    const PAGE: usize = 4096;

    /// A ring in ordinary memory, with a test standing in for the kernel. Atomics
    /// give the test and the Ring shared, writable access without aliasing trouble.
    struct FakeRing {
        mem: Vec<AtomicU64>,
        size: u64,
    }

    impl FakeRing {
        /// A ring whose data area of `size` bytes starts at `PAGE`, as
        /// `data_offset`/`data_size` say when `describe` is set.
        fn new(size: usize, describe: bool) -> FakeRing {
            let fake = FakeRing {
                mem: (0..(PAGE + size) / 8).map(|_| AtomicU64::new(0)).collect(),
                size: size as u64,
            };
            if describe {
                fake.set(DATA_OFFSET, PAGE as u64);
                fake.set(DATA_SIZE, size as u64);
            }
            fake
        }

        fn ring(&self) -> Ring {
            let base = NonNull::from(&self.mem[..]).cast::<u8>();
            // SAFETY: the memory is 8-aligned, lives as long as `self` (tests drop the Ring
            // first), and is only written through atomics by the test, between reads.
            unsafe { Ring::new(base, self.mem.len() * 8, PAGE) }.unwrap()
        }

        fn get(&self, offset: usize) -> u64 {
            self.mem[offset / 8].load(Ordering::Relaxed)
        }

        fn set(&self, offset: usize, value: u64) {
            self.mem[offset / 8].store(value, Ordering::Relaxed);
        }

        /// Starts the ring empty at position `pos`, to place records across the end.
        fn start_at(&self, pos: u64) {
            self.set(DATA_HEAD, pos);
            self.set(DATA_TAIL, pos);
        }

        /// Writes `record` at head, wrapping, and publishes it.
        fn push(&self, record: &[u8]) {
            let head = self.get(DATA_HEAD);
            for (i, &b) in record.iter().enumerate() {
                let at = PAGE + ((head + i as u64) % self.size) as usize;
                let mut word = self.get(at / 8 * 8).to_ne_bytes();
                word[at % 8] = b;
                self.set(at / 8 * 8, u64::from_ne_bytes(word));
            }
            self.set(DATA_HEAD, head + record.len() as u64);
        }

        /// Reads it all with `sample_size`, returning the samples and the counters.
        fn drain(&self, sample_size: usize) -> (Vec<Vec<u8>>, PerfStats) {
            let mut stats = PerfStats::default();
            let mut got = Vec::new();
            let n = self
                .ring()
                .read(sample_size, &mut stats, &mut Vec::new(), &mut |s| {
                    got.push(s.to_vec())
                });
            assert_eq!(n, got.len());
            assert_eq!(
                self.get(DATA_TAIL),
                self.get(DATA_HEAD),
                "tail must reach head"
            );
            (got, stats)
        }
    }

    fn header(kind: u32, size: usize) -> Vec<u8> {
        let mut r = kind.to_ne_bytes().to_vec();
        r.extend_from_slice(&0u16.to_ne_bytes());
        r.extend_from_slice(&(size as u16).to_ne_bytes());
        r
    }

    /// A PERF_RECORD_SAMPLE with `data` padded as the kernel pads it.
    fn sample(data: &[u8]) -> Vec<u8> {
        let raw = (4 + data.len()).next_multiple_of(8) - 4;
        let mut r = header(PERF_RECORD_SAMPLE, RAW_START + raw);
        r.extend_from_slice(&(raw as u32).to_ne_bytes());
        r.extend_from_slice(data);
        r.resize(RAW_START + raw, 0);
        r
    }

    fn lost(n: u64) -> Vec<u8> {
        let mut r = header(PERF_RECORD_LOST, 24);
        r.extend_from_slice(&7u64.to_ne_bytes());
        r.extend_from_slice(&n.to_ne_bytes());
        r
    }

    fn payload(seed: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
    }

    #[test]
    fn attr_matches_perf_attr_size_ver5() {
        assert_eq!(size_of::<PerfEventAttr>(), 112);
        assert_eq!(offset_of!(PerfEventAttr, sample_period), 16);
        assert_eq!(offset_of!(PerfEventAttr, flags), 40);
        assert_eq!(offset_of!(PerfEventAttr, wakeup_events), 48);
        assert_eq!(offset_of!(PerfEventAttr, config1), 56);
        assert_eq!(offset_of!(PerfEventAttr, sample_stack_user), 88);
        assert_eq!(offset_of!(PerfEventAttr, sample_regs_intr), 96);
        assert_eq!(offset_of!(PerfEventAttr, reserved_2), 110);
    }

    #[test]
    fn reads_one_sample() {
        let fake = FakeRing::new(256, true);
        fake.push(&sample(&payload(1, 24)));
        let (got, stats) = fake.drain(24);
        assert_eq!(got, vec![payload(1, 24)]);
        assert_eq!(
            stats,
            PerfStats {
                samples: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn reads_many_samples_and_strips_kernel_padding() {
        // 13 bytes arrive padded to a raw size of 20 (32-byte records); the callback
        // sees 13. Starting at 8 puts a record across the end on every lap.
        let fake = FakeRing::new(256, true);
        fake.start_at(8);
        let (mut want, mut got) = (Vec::new(), Vec::new());
        for round in 0..20u8 {
            for i in 0..7u8 {
                let data = payload(round * 7 + i, 13);
                fake.push(&sample(&data));
                want.push(data);
            }
            got.extend(fake.drain(13).0);
        }
        assert_eq!(got, want);
    }

    #[test]
    fn reads_a_sample_whose_header_wraps() {
        let fake = FakeRing::new(128, true);
        fake.start_at(128 * 3 - 4);
        fake.push(&sample(&payload(9, 36)));
        assert_eq!(fake.drain(36).0, vec![payload(9, 36)]);
    }

    #[test]
    fn reads_a_sample_whose_payload_wraps() {
        let fake = FakeRing::new(128, true);
        fake.start_at(128 - 16);
        fake.push(&sample(&payload(9, 36)));
        fake.push(&sample(&payload(50, 36)));
        assert_eq!(fake.drain(36).0, vec![payload(9, 36), payload(50, 36)]);
    }

    #[test]
    fn counts_lost_records() {
        let fake = FakeRing::new(256, true);
        fake.push(&lost(5));
        fake.push(&sample(&payload(0, 4)));
        fake.push(&lost(1 << 40));
        let (got, stats) = fake.drain(4);
        assert_eq!(got.len(), 1);
        assert_eq!(stats.lost, 5 + (1 << 40));
        assert_eq!(stats.other_records, 0);
    }

    #[test]
    fn skips_samples_of_the_wrong_size() {
        let fake = FakeRing::new(256, true);
        fake.push(&sample(&payload(0, 40)));
        fake.push(&sample(&payload(0, 4)));
        fake.push(&sample(&payload(3, 20)));
        let (got, stats) = fake.drain(20);
        assert_eq!(got, vec![payload(3, 20)]);
        assert_eq!(stats.wrong_size, 2);
    }

    #[test]
    fn skips_a_sample_claiming_more_raw_data_than_it_holds() {
        let fake = FakeRing::new(256, true);
        let mut bad = sample(&payload(0, 20));
        bad[8..12].copy_from_slice(&100u32.to_ne_bytes());
        fake.push(&bad);
        let (got, stats) = fake.drain(100);
        assert!(got.is_empty());
        assert_eq!(stats.wrong_size, 1);
    }

    #[test]
    fn skips_other_record_types() {
        let fake = FakeRing::new(256, true);
        let mut comm = header(3, 32);
        comm.resize(32, b'x');
        fake.push(&comm);
        fake.push(&sample(&payload(4, 12)));
        let (got, stats) = fake.drain(12);
        assert_eq!(got, vec![payload(4, 12)]);
        assert_eq!(stats.other_records, 1);
    }

    #[test]
    fn resyncs_after_a_zero_size_header() {
        let fake = FakeRing::new(256, true);
        fake.push(&sample(&payload(1, 12)));
        fake.push(&[0u8; 16]);
        fake.push(&sample(&payload(2, 12)));
        let (got, stats) = fake.drain(12);
        assert_eq!(got, vec![payload(1, 12)]);
        assert_eq!(stats.corrupt, 1);
        // The ring goes on from head.
        fake.push(&sample(&payload(3, 12)));
        assert_eq!(fake.drain(12).0, vec![payload(3, 12)]);
    }

    #[test]
    fn resyncs_after_a_size_beyond_the_published_data() {
        let fake = FakeRing::new(256, true);
        let mut rec = sample(&payload(1, 12));
        rec[6..8].copy_from_slice(&200u16.to_ne_bytes());
        fake.push(&rec);
        let (got, stats) = fake.drain(12);
        assert!(got.is_empty());
        assert_eq!(stats.corrupt, 1);
    }

    #[test]
    fn resyncs_when_head_runs_more_than_a_ring_ahead() {
        let fake = FakeRing::new(256, true);
        fake.set(DATA_HEAD, 10_000);
        let (got, stats) = fake.drain(12);
        assert!(got.is_empty());
        assert_eq!(stats.corrupt, 1);
    }

    #[test]
    fn pending_follows_head_and_tail() {
        let fake = FakeRing::new(256, true);
        assert!(!fake.ring().pending());
        fake.push(&sample(&payload(1, 12)));
        assert!(fake.ring().pending());
        fake.drain(12);
        assert!(!fake.ring().pending());
    }

    #[test]
    fn falls_back_to_the_page_after_the_control_page() {
        // Kernels before 4.1 leave data_offset and data_size zero.
        let fake = FakeRing::new(2 * PAGE, false);
        let ring = fake.ring();
        assert_eq!(ring.size, 2 * PAGE as u64);
        assert_eq!(
            ring.data.as_ptr() as usize - ring.meta.as_ptr() as usize,
            PAGE
        );
        fake.start_at(2 * PAGE as u64 - 8);
        fake.push(&sample(&payload(1, 12)));
        assert_eq!(fake.drain(12).0, vec![payload(1, 12)]);
    }

    #[test]
    fn rejects_a_data_area_outside_the_mapping() {
        let fake = FakeRing::new(256, true);
        fake.set(DATA_SIZE, 512);
        let base = NonNull::from(&fake.mem[..]).cast::<u8>();
        // SAFETY: as in FakeRing::ring.
        assert!(unsafe { Ring::new(base, fake.mem.len() * 8, PAGE) }.is_err());
    }

    #[test]
    fn open_rejects_page_counts_that_are_not_powers_of_two() {
        for pages in [0, 3, 12] {
            let err = ring_len(pages, PAGE).expect_err("must fail");
            assert!(matches!(err, BpfError::Invalid(_)), "{err:?}");
            assert!(err.to_string().contains("power-of-two"), "{err}");
        }
        assert!(ring_len(usize::MAX / 2 + 1, PAGE).is_err(), "too large");
        assert_eq!(
            ring_len(8, PAGE).map(NonZeroUsize::get).ok(),
            Some(9 * PAGE)
        );
    }

    /// Whether an fd is open on a perf event, and whether a perf ring is mapped at
    /// an address: checked per fd and address, so that other tests making perf
    /// events at the same time do not disturb the count.
    fn perf_fd_open(fd: i32) -> bool {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .is_ok_and(|l| l.to_string_lossy().contains("[perf_event]"))
    }

    fn perf_ring_mapped(addr: usize) -> bool {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let start = format!("{addr:x}-");
        maps.lines()
            .any(|l| l.starts_with(&start) && l.contains("[perf_event]"))
    }

    #[test]
    fn opens_a_ring_per_online_cpu_and_closes_them_all() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test creates perf events and BPF maps: run it as root"
        );
        let possible = cpu::possible_cpus().unwrap();
        let online = cpu::online_cpus().unwrap();
        let map = Map::create(
            &crate::bpf::map::MapAttr {
                map_type: crate::bpf::map::BPF_MAP_TYPE_PERF_EVENT_ARRAY,
                key_size: 4,
                value_size: 4,
                max_entries: possible,
                map_flags: 0,
            },
            "perf_test",
        )
        .unwrap();
        let mut bufs = PerfBuffers::open(&map, 8, 16).unwrap();
        assert_eq!(bufs.cpus(), online.len());
        let cpus: Vec<u32> = bufs.rings.iter().map(|r| r.cpu).collect();
        assert_eq!(cpus, online);
        let fds: Vec<i32> = bufs.fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let rings: Vec<usize> = bufs
            .rings
            .iter()
            .map(|r| r._mapping.ptr().as_ptr() as usize)
            .collect();
        assert!(fds.iter().all(|&fd| perf_fd_open(fd)), "{fds:?}");
        assert!(rings.iter().all(|&a| perf_ring_mapped(a)), "{rings:x?}");
        for r in &bufs.rings {
            assert_eq!(r.ring.size, 8 * page_size().unwrap() as u64);
        }

        // No program writes, so there is nothing to read and nothing to wake us.
        assert_eq!(bufs.drain(|_, _| panic!("no samples expected")), 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let wait = std::time::Duration::from_millis(50);
        let waited = rt.block_on(async { tokio::time::timeout(wait, bufs.readable()).await });
        assert!(
            waited.is_err(),
            "readable() returned with empty rings: {waited:?}"
        );
        assert!(bufs.fds.is_empty() && bufs.registered.len() == online.len());
        assert_eq!(bufs.stats(), PerfStats::default());

        drop(bufs);
        assert!(
            !fds.iter().any(|&fd| perf_fd_open(fd)),
            "perf fds left open"
        );
        assert!(
            !rings.iter().any(|&a| perf_ring_mapped(a)),
            "perf rings left mapped"
        );
    }
}
