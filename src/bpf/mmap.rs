//! Shared memory mappings of kernel objects: perf event rings and
//! `BPF_F_MMAPABLE` array maps (`mmap(2)` on their fds, `MAP_SHARED`).

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// A read-write `MAP_SHARED` mapping of an fd from offset 0, unmapped on drop.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is process-wide memory with no thread affinity; whoever owns
// the Mapping may unmap it from any thread.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd`: a perf event's control page and data area, or a
    /// `BPF_F_MMAPABLE` array's values (`max_entries * value_size`, page-rounded).
    pub fn new(fd: BorrowedFd<'_>, len: NonZeroUsize) -> io::Result<Mapping> {
        let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        // SAFETY: a new mapping at an address of the kernel's choosing overlaps no Rust
        // object; it lives until Drop unmaps it.
        let ptr = unsafe { mmap(None, len, prot, MapFlags::MAP_SHARED, fd, 0) }?;
        Ok(Mapping {
            ptr: ptr.cast(),
            len: len.get(),
        })
    }

    /// The start of the mapping (page-aligned).
    pub fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never: `new` takes a non-zero length).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapping as 32-bit words that the kernel updates concurrently (a BPF
    /// program's `__sync_fetch_and_add`), so only atomic access is sound.
    pub fn words(&self) -> &[AtomicU32] {
        // SAFETY: the mapping is page-aligned, so aligned for AtomicU32, holds len / 4
        // whole words, and stays mapped for as long as the returned borrow of self.
        // AtomicU32 has the layout of u32 and every bit pattern is valid.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<AtomicU32>(), self.len / 4) }
    }

    /// The mapping as 64-bit words, for values the kernel changes with 64-bit
    /// atomics (a BPF program's compare-and-exchange).
    pub fn words64(&self) -> &[AtomicU64] {
        // SAFETY: as for `words`: page-aligned, so aligned for AtomicU64, len / 8
        // whole words, mapped for as long as the borrow of self; every bit
        // pattern is a valid u64.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<AtomicU64>(), self.len / 8) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range is exactly the one `new` mapped, and whatever reads it (a
        // perf Ring, a borrow from `words`) cannot outlive this Mapping. munmap can
        // only fail on arguments `new` got right; there is nothing to do about it here.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}
