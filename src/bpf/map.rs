//! BPF maps as user space holds them: the fd that `BPF_MAP_CREATE` returned,
//! with the sizes the kernel reads and writes through it.
//!
//! The element commands of `bpf(2)` take bare pointers and copy as many bytes
//! as the map's `key_size` and `value_size` say, not as many as the caller
//! has. A [`Map`] knows those sizes, so each of its methods checks the
//! buffers it is given and answers a wrong length with
//! [`BpfError::Buffer`] before the kernel sees a pointer.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::btf::MapBtf;
use super::error::MapBuffer;
use super::sys::{bpf, bpf_fd, obj_name, BPF_OBJ_NAME_LEN, ENOTSUPP};
use super::{cpu, BpfError};

/// `BPF_MAP_TYPE_HASH`.
pub const BPF_MAP_TYPE_HASH: u32 = 1;
/// `BPF_MAP_TYPE_ARRAY`.
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_PERF_EVENT_ARRAY`: one perf event fd per CPU, for `bpf_perf_event_output`.
pub const BPF_MAP_TYPE_PERF_EVENT_ARRAY: u32 = 4;
/// `BPF_MAP_TYPE_PERCPU_HASH`: a hash with one value per possible CPU per key.
pub const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
/// `BPF_MAP_TYPE_PERCPU_ARRAY`: one value per possible CPU per index.
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
/// `BPF_MAP_TYPE_LRU_HASH`: a hash that evicts its least recently used entry when full.
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
/// `BPF_MAP_TYPE_LRU_PERCPU_HASH`: an LRU hash with one value per possible CPU per key.
pub const BPF_MAP_TYPE_LRU_PERCPU_HASH: u32 = 10;
/// `BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE`: cgroup storage with one value per possible CPU.
pub const BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE: u32 = 21;

/// `BPF_MAP_TYPE_SK_STORAGE`: a value per socket, created by programs
/// (`bpf_sk_storage_get`) and freed with the socket; it must be created with
/// BTF ([`Map::create_with_btf`]), `BPF_F_NO_PREALLOC` and `max_entries` 0.
pub const BPF_MAP_TYPE_SK_STORAGE: u32 = 24;

/// `BPF_F_MMAPABLE`: an array map whose values can be `mmap`ed (Linux 5.5).
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_DELETE_ELEM: libc::c_int = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_int = 4;
const BPF_MAP_LOOKUP_BATCH: libc::c_int = 24;

/// `bpf_attr` for `BPF_MAP_CREATE`, as far as `map_name`.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; BPF_OBJ_NAME_LEN],
    map_ifindex: u32,
    btf_fd: u32,
    btf_key_type_id: u32,
    btf_value_type_id: u32,
}

/// `bpf_attr` for the `BPF_MAP_*_ELEM` commands and `BPF_MAP_GET_NEXT_KEY`:
/// `map_fd`, `key`, `value` or `next_key`, `flags`.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value_or_next_key: u64,
    flags: u64,
}

/// `bpf_attr` for the `BPF_MAP_*_BATCH` commands (`struct { ... } batch`).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// What [`Map::create`] needs: the fields of `bpf_attr` for `BPF_MAP_CREATE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapAttr {
    /// `map_type`, a `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    /// `key_size` in bytes.
    pub key_size: u32,
    /// `value_size` in bytes (per CPU for per-CPU maps).
    pub value_size: u32,
    /// `max_entries`.
    pub max_entries: u32,
    /// `map_flags` (`BPF_F_*`).
    pub map_flags: u32,
}

/// The `flags` of `BPF_MAP_UPDATE_ELEM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// `BPF_ANY`: create or replace.
    Any,
    /// `BPF_NOEXIST`: create only; `EEXIST` when the key is there.
    NoExist,
    /// `BPF_EXIST`: replace only; `ENOENT` when the key is not there.
    Exist,
}

impl Update {
    fn flags(self) -> u64 {
        match self {
            Update::Any => 0,
            Update::NoExist => 1,
            Update::Exist => 2,
        }
    }
}

/// Where a walk of a map by [`Map::lookup_batch`] stands: the token of the
/// next batch (`in_batch`/`out_batch`), or the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// Start here.
    Start,
    /// Continue from this token (for hash maps, a bucket index).
    Next(u32),
    /// The walk is over.
    Done,
}

/// Whether the kernel keeps one value per possible CPU for each key of a map
/// of this type, each rounded up to 8 bytes (`bpf_map_value_size`).
fn is_per_cpu(map_type: u32) -> bool {
    matches!(
        map_type,
        BPF_MAP_TYPE_PERCPU_HASH
            | BPF_MAP_TYPE_PERCPU_ARRAY
            | BPF_MAP_TYPE_LRU_PERCPU_HASH
            | BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE
    )
}

/// Whether the kernel's batch token for this map is a `u32`, the size of
/// [`Batch::Next`]: a bucket index for the hash maps; for the generic batch
/// code (arrays) a key, which is 4 bytes only when `key_size` says so.
fn batch_token_is_u32(map_type: u32, key_size: usize) -> bool {
    matches!(
        map_type,
        BPF_MAP_TYPE_HASH
            | BPF_MAP_TYPE_PERCPU_HASH
            | BPF_MAP_TYPE_LRU_HASH
            | BPF_MAP_TYPE_LRU_PERCPU_HASH
    ) || key_size == 4
}

/// A BPF map this process created: the fd `BPF_MAP_CREATE` returned, with the
/// `key_size` and `value_size` (and per-CPU stride) its element commands copy.
/// Closing it (dropping the last fd) frees the map once no program holds it.
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    name: String,
    map_type: u32,
    key_size: usize,
    value_size: usize,
    value_len: usize,
}

impl Map {
    /// `BPF_MAP_CREATE`: creates a map named `name` (the kernel keeps 15 bytes
    /// of it). For a per-CPU type it reads the number of possible CPUs, which
    /// sizes every value buffer of the map.
    pub fn create(attr: &MapAttr, name: &str) -> Result<Map, BpfError> {
        Map::create_described(attr, name, None)
    }

    /// [`Map::create`] with the BTF of its key and value (`btf_fd`,
    /// `btf_key_type_id`, `btf_value_type_id`), which some map types require
    /// ([`BPF_MAP_TYPE_SK_STORAGE`]).
    pub fn create_with_btf(attr: &MapAttr, name: &str, btf: &MapBtf) -> Result<Map, BpfError> {
        Map::create_described(attr, name, Some(btf))
    }

    fn create_described(attr: &MapAttr, name: &str, btf: Option<&MapBtf>) -> Result<Map, BpfError> {
        let value_size = attr.value_size as usize;
        let value_len = if is_per_cpu(attr.map_type) {
            let cpus = cpu::possible_cpus()? as usize;
            // A length that wrapped would let the kernel write past the buffers.
            value_size
                .checked_next_multiple_of(8)
                .and_then(|stride| stride.checked_mul(cpus))
                .ok_or_else(|| {
                    BpfError::Invalid(format!(
                        "BPF map {name}: {value_size}-byte values on {cpus} CPUs \
                         exceed this machine's address space"
                    ))
                })?
        } else {
            value_size
        };
        let mut a = MapCreateAttr {
            map_type: attr.map_type,
            key_size: attr.key_size,
            value_size: attr.value_size,
            max_entries: attr.max_entries,
            map_flags: attr.map_flags,
            map_name: obj_name(name),
            ..Default::default()
        };
        if let Some(btf) = btf {
            a.btf_fd = btf.as_fd().as_raw_fd() as u32;
            a.btf_key_type_id = MapBtf::KEY_TYPE_ID;
            a.btf_value_type_id = MapBtf::VALUE_TYPE_ID;
        }
        // SAFETY: `a` is `bpf_attr` for BPF_MAP_CREATE and holds no pointers; the
        // command returns a new map fd.
        let fd = unsafe { bpf_fd(BPF_MAP_CREATE, &mut a) }
            .map_err(|e| BpfError::sys(format!("creating BPF map {name}"), e))?;
        Ok(Map {
            fd,
            name: name.to_string(),
            map_type: attr.map_type,
            key_size: attr.key_size as usize,
            value_size,
            value_len,
        })
    }

    /// The name it was created with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `map_type`, a `BPF_MAP_TYPE_*`.
    pub fn map_type(&self) -> u32 {
        self.map_type
    }

    /// `key_size`: the length of every key buffer.
    pub fn key_size(&self) -> usize {
        self.key_size
    }

    /// `value_size`: for per-CPU maps, that of one CPU's value.
    pub fn value_size(&self) -> usize {
        self.value_size
    }

    /// The length of every value buffer: `value_size`, or for a per-CPU map
    /// `round_up(value_size, 8)` times the possible CPUs, which is what a
    /// lookup writes and an update reads.
    pub fn value_len(&self) -> usize {
        self.value_len
    }

    /// Refuses a buffer the kernel would read or write past: one element's key
    /// or value must be exactly `need` bytes (a longer one means the caller
    /// has another layout in mind), a batch's keys or values at least that.
    fn check(&self, buffer: MapBuffer, got: usize, need: usize) -> Result<(), BpfError> {
        let fits = match buffer {
            MapBuffer::Key | MapBuffer::Value => got == need,
            MapBuffer::Keys | MapBuffer::Values => got >= need,
        };
        if fits {
            return Ok(());
        }
        Err(BpfError::Buffer {
            map: self.name.clone(),
            buffer,
            need,
            got,
        })
    }

    fn raw_fd(&self) -> u32 {
        self.fd.as_raw_fd() as u32
    }

    /// `BPF_MAP_LOOKUP_ELEM`: copies the value of `key` into `value`, which
    /// must be [`Map::value_len`] bytes. `Ok(false)` when the key is absent.
    pub fn lookup(&self, key: &[u8], value: &mut [u8]) -> Result<bool, BpfError> {
        self.check(MapBuffer::Key, key.len(), self.key_size)?;
        self.check(MapBuffer::Value, value.len(), self.value_len)?;
        let mut a = MapElemAttr {
            map_fd: self.raw_fd(),
            key: key.as_ptr() as u64,
            value_or_next_key: value.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: the kernel reads key_size bytes of `key` and writes value_len bytes
        // to `value`; both lengths were checked above.
        let ret = unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &mut a) };
        absent_is_false(ret, "looking up a BPF map element")
    }

    /// `BPF_MAP_UPDATE_ELEM`: sets the value of `key` to `value`, which must
    /// be [`Map::value_len`] bytes (every CPU's value, for a per-CPU map).
    pub fn update(&self, key: &[u8], value: &[u8], how: Update) -> Result<(), BpfError> {
        self.check(MapBuffer::Key, key.len(), self.key_size)?;
        self.check(MapBuffer::Value, value.len(), self.value_len)?;
        let mut a = MapElemAttr {
            map_fd: self.raw_fd(),
            key: key.as_ptr() as u64,
            value_or_next_key: value.as_ptr() as u64,
            flags: how.flags(),
            ..Default::default()
        };
        // SAFETY: the kernel reads key_size bytes of `key` and value_len bytes of
        // `value`; both lengths were checked above.
        unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut a) }
            .map(|_| ())
            .map_err(|e| BpfError::sys("updating a BPF map element", e))
    }

    /// `BPF_MAP_DELETE_ELEM`. `Ok(false)` when the key was already absent, so
    /// that a caller racing a program knows which side removed the entry.
    pub fn delete(&self, key: &[u8]) -> Result<bool, BpfError> {
        self.check(MapBuffer::Key, key.len(), self.key_size)?;
        let mut a = MapElemAttr {
            map_fd: self.raw_fd(),
            key: key.as_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: the kernel reads key_size bytes of `key`, whose length was checked.
        let ret = unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut a) };
        absent_is_false(ret, "deleting a BPF map element")
    }

    /// `BPF_MAP_GET_NEXT_KEY`: writes the key after `key` (the first key when
    /// `None`) into `next`. `Ok(false)` at the end of the map.
    pub fn next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> Result<bool, BpfError> {
        if let Some(key) = key {
            self.check(MapBuffer::Key, key.len(), self.key_size)?;
        }
        self.check(MapBuffer::Key, next.len(), self.key_size)?;
        let mut a = MapElemAttr {
            map_fd: self.raw_fd(),
            key: key.map_or(0, |k| k.as_ptr() as u64),
            value_or_next_key: next.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: the kernel reads key_size bytes of `key` when it is not null and
        // writes key_size bytes to `next`; both lengths were checked above.
        let ret = unsafe { bpf(BPF_MAP_GET_NEXT_KEY, &mut a) };
        absent_is_false(ret, "walking a BPF map")
    }

    /// One step of `BPF_MAP_LOOKUP_BATCH` (Linux 5.6): copies up to `count`
    /// elements from `at` on into `keys` (room for `count` keys of
    /// [`Map::key_size`]) and `values` (room for `count` values of
    /// [`Map::value_len`]). Returns how many it copied and where to go on.
    /// `Err` with `ENOSPC` means one bucket holds more than `count` elements
    /// (ask for more); one that [`batch_unsupported`] accepts, that this
    /// kernel or map has no batch lookup.
    pub fn lookup_batch(
        &self,
        at: Batch,
        count: u32,
        keys: &mut [u8],
        values: &mut [u8],
    ) -> Result<(u32, Batch), BpfError> {
        let n = count as usize;
        self.check(MapBuffer::Keys, keys.len(), n.saturating_mul(self.key_size))?;
        self.check(
            MapBuffer::Values,
            values.len(),
            n.saturating_mul(self.value_len),
        )?;
        if !batch_token_is_u32(self.map_type, self.key_size) {
            // The kernel would write a token longer than ours: go the other way.
            return Err(BpfError::sys(
                "reading a BPF map in batches",
                io::Error::from_raw_os_error(libc::EOPNOTSUPP),
            ));
        }
        let token = match at {
            Batch::Start => None,
            Batch::Next(t) => Some(t),
            Batch::Done => return Ok((0, Batch::Done)),
        };
        let mut next: u32 = 0;
        let mut a = BatchAttr {
            in_batch: token.as_ref().map_or(0, |t| t as *const u32 as u64),
            out_batch: &mut next as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count,
            map_fd: self.raw_fd(),
            ..Default::default()
        };
        // SAFETY: the kernel writes at most `count` keys and values, for which the
        // buffers were checked to have room, and reads and writes a token of 4
        // bytes, as checked for this map's type and key size.
        match unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut a) } {
            Ok(_) => Ok((a.count, Batch::Next(next))),
            // The end of the map; the elements before it are in the buffers.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok((a.count, Batch::Done)),
            Err(e) => Err(BpfError::sys("reading a BPF map in batches", e)),
        }
    }
}

impl AsFd for Map {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Map> for OwnedFd {
    /// The map's fd alone, for a holder that needs the map kept but never
    /// issues element commands on it.
    fn from(map: Map) -> OwnedFd {
        map.fd
    }
}

/// Whether an error of [`Map::lookup_batch`] means that batch lookups are not
/// available here (before Linux 5.6, or for this map type), so that a caller
/// can fall back to [`Map::next_key`] and [`Map::lookup`].
pub fn batch_unsupported(e: &BpfError) -> bool {
    matches!(e, BpfError::Sys { source, .. }
        if matches!(source.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)))
}

fn absent_is_false(ret: io::Result<libc::c_long>, what: &str) -> Result<bool, BpfError> {
    match ret {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(BpfError::sys(what, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn require_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test creates BPF maps and needs root: run the suite as the README says"
        );
    }

    fn map(map_type: u32, key_size: u32, value_size: u32) -> Map {
        let attr = MapAttr {
            map_type,
            key_size,
            value_size,
            max_entries: 100,
            map_flags: 0,
        };
        Map::create(&attr, "flowlat_test").unwrap_or_else(|e| panic!("{e}"))
    }

    fn is_buffer_error<T>(r: &Result<T, BpfError>, which: MapBuffer) -> bool {
        matches!(r, Err(BpfError::Buffer { buffer, .. }) if *buffer == which)
    }

    #[test]
    fn attr_layouts_match_the_kernel_offsets() {
        use std::mem::{offset_of, size_of};
        assert_eq!(offset_of!(MapCreateAttr, map_name), 28);
        assert_eq!(size_of::<MapElemAttr>(), 32);
        assert_eq!(offset_of!(BatchAttr, count), 32);
        assert_eq!(offset_of!(BatchAttr, flags), 48);
    }

    /// Buffers one byte short or long never reach the kernel: a lookup into
    /// a short value buffer would have the kernel write past it.
    #[test]
    fn wrong_buffer_lengths_are_errors_before_any_syscall() {
        require_root();
        let m = map(BPF_MAP_TYPE_HASH, 4, 8);
        let key = 7u32.to_ne_bytes();
        m.update(&key, &[0xab; 8], Update::Any)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut value = [0u8; 8];
        assert!(is_buffer_error(
            &m.lookup(&key, &mut value[..7]),
            MapBuffer::Value
        ));
        assert_eq!(value, [0; 8], "nothing written on a refused lookup");
        let mut long = [0u8; 9];
        assert!(is_buffer_error(
            &m.lookup(&key, &mut long),
            MapBuffer::Value
        ));
        assert!(is_buffer_error(
            &m.lookup(&key[..3], &mut value),
            MapBuffer::Key
        ));
        assert!(is_buffer_error(
            &m.update(&key, &[1; 7], Update::Any),
            MapBuffer::Value
        ));
        assert!(is_buffer_error(
            &m.update(&[0; 5], &[1; 8], Update::Any),
            MapBuffer::Key
        ));
        assert!(is_buffer_error(&m.delete(&key[..2]), MapBuffer::Key));
        let mut next = [0u8; 3];
        assert!(is_buffer_error(
            &m.next_key(None, &mut next),
            MapBuffer::Key
        ));
        let mut next = [0u8; 4];
        assert!(is_buffer_error(
            &m.next_key(Some(&[0; 8]), &mut next),
            MapBuffer::Key
        ));
        // The right lengths work, and the element is as it was.
        assert!(m.lookup(&key, &mut value).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(value, [0xab; 8]);
        assert!(m
            .next_key(None, &mut next)
            .unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(next, key);
        assert!(m.delete(&key).unwrap_or_else(|e| panic!("{e}")));
        assert!(!m.delete(&key).unwrap_or_else(|e| panic!("{e}")));
        let e = m.lookup(&key, &mut value[..7]).expect_err("a short buffer");
        assert_eq!(
            e.to_string(),
            "BPF map flowlat_test: a value buffer of 7 bytes, where its values take 8"
        );
    }

    /// A per-CPU lookup writes every possible CPU's value, each rounded up to
    /// 8 bytes: a buffer of one CPU's value is refused.
    #[test]
    fn per_cpu_values_take_every_possible_cpu() {
        require_root();
        let cpus = cpu::possible_cpus().expect("cpus") as usize;
        let m = map(BPF_MAP_TYPE_PERCPU_ARRAY, 4, 12);
        assert_eq!(m.value_len(), 16 * cpus);
        let key = 0u32.to_ne_bytes();
        let mut one = [0u8; 12];
        assert!(is_buffer_error(&m.lookup(&key, &mut one), MapBuffer::Value));
        let mut unrounded = vec![0u8; 12 * cpus];
        if cpus > 0 {
            assert!(is_buffer_error(
                &m.lookup(&key, &mut unrounded),
                MapBuffer::Value
            ));
        }
        let all: Vec<u8> = (0..cpus)
            .flat_map(|c| (c as u64).to_ne_bytes().into_iter().chain([0; 8]))
            .collect();
        m.update(&key, &all, Update::Any)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut back = vec![0u8; m.value_len()];
        assert!(m.lookup(&key, &mut back).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(back, all);
    }

    #[test]
    fn batch_lookup_reads_every_key_of_a_per_cpu_hash_in_steps() {
        require_root();
        let cpus = cpu::possible_cpus().expect("cpus") as usize;
        let m = map(BPF_MAP_TYPE_PERCPU_HASH, 4, 8);
        for k in 0..37u32 {
            let v: Vec<u8> = (0..cpus)
                .flat_map(|c| (u64::from(k) * 100 + c as u64).to_ne_bytes())
                .collect();
            m.update(&k.to_ne_bytes(), &v, Update::Any)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let (count, stride) = (8u32, m.value_len());
        assert_eq!(stride, 8 * cpus);
        let mut keys = vec![0u8; 4 * count as usize];
        let mut values = vec![0u8; stride * count as usize];
        let (mut seen, mut at, mut steps) = (Vec::new(), Batch::Start, 0);
        while at != Batch::Done {
            let (n, next) = m
                .lookup_batch(at, count, &mut keys, &mut values)
                .unwrap_or_else(|e| panic!("{e}"));
            for i in 0..n as usize {
                let k = u32::from_ne_bytes(keys[4 * i..4 * i + 4].try_into().expect("4"));
                for c in 0..cpus {
                    let at = i * stride + 8 * c;
                    let v = u64::from_ne_bytes(values[at..at + 8].try_into().expect("8"));
                    assert_eq!(v, u64::from(k) * 100 + c as u64, "key {k} cpu {c}");
                }
                seen.push(k);
            }
            at = next;
            steps += 1;
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..37).collect::<Vec<u32>>());
        assert!(steps > 1, "8 at a time takes several steps");
        // Room for one key less, or one CPU's value less, than asked for.
        let short = m.lookup_batch(Batch::Start, 8, &mut keys[..28], &mut values);
        assert!(is_buffer_error(&short, MapBuffer::Keys), "{short:?}");
        let cut = values.len() - 8;
        let short = m.lookup_batch(Batch::Start, 8, &mut keys, &mut values[..cut]);
        assert!(is_buffer_error(&short, MapBuffer::Values), "{short:?}");
        // A count far beyond the buffers' room is refused too.
        let huge = m.lookup_batch(Batch::Start, u32::MAX, &mut keys, &mut values);
        assert!(is_buffer_error(&huge, MapBuffer::Keys), "{huge:?}");
    }
}
