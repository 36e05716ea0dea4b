//! User space's side of the slot table of attempts in progress (`struct
//! flowlat_bucket` in `bpf/flowlat.h`): the `slots` array, mapped, read and
//! changed with the same compare-and-exchange on each way's word that the
//! classifier uses, so that an attempt that times out while its answer arrives
//! is taken by one side only.

use std::mem::{offset_of, size_of};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};

use super::abi::{as_bytes, from_bytes, Key, Pending};
use crate::bpf::mmap::Mapping;

/// `FLOWLAT_WAYS`: entries per bucket.
pub const WAYS: usize = 4;
/// `FLOWLAT_FRONT`: the front buckets, before the main ones.
pub const FRONT: usize = 256;
/// The attempts the front holds beside the main buckets' room.
#[cfg(any(test, feature = "testing"))]
pub const FRONT_WAYS: usize = FRONT * WAYS;
/// `FLOWLAT_SLOT_LIVE`: the way holds an attempt (or a tombstone).
pub const LIVE: u64 = 1;
/// `FLOWLAT_SLOT_BUSY`: its owner is writing or taking it.
pub const BUSY: u64 = 2;
const GEN_MASK: u64 = 0x3fff_ffff;

/// `struct flowlat_entry`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Entry {
    pub key: Key,
    pub p: Pending,
}

/// `struct flowlat_bucket`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Bucket {
    pub word: [u64; WAYS],
    pub spill: u64,
    pub e: [Entry; WAYS],
}

/// The main buckets for room for `max_pending` attempts: a power of two, so
/// that a hash's low bits choose one. The table holds [`FRONT`] buckets more.
pub fn buckets_for(max_pending: u32) -> u32 {
    (max_pending.div_ceil(WAYS as u32))
        .max(1)
        .next_power_of_two()
}

/// `table_hash` of `bpf/table.h`: the bucket of a key is its low bits, the
/// word keeps all of it.
pub fn hash(k: &Key) -> u32 {
    let words = |a: &[u8; 16]| {
        a.chunks_exact(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .fold(0, |x, w| x ^ w)
    };
    let mut h = words(&k.client);
    h = (h ^ (h >> 16)).wrapping_mul(0x85EB_CA6B);
    h ^= words(&k.server);
    h = (h ^ (h >> 13)).wrapping_mul(0xC2B2_AE35);
    h ^= (u32::from(k.client_port) << 16) | u32::from(k.server_port);
    h = (h ^ (h >> 16)).wrapping_mul(0x85EB_CA6B);
    h ^= k.ifindex ^ (u32::from(k.dir) << 31);
    h = (h ^ (h >> 13)).wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

/// A live entry as [`SlotTable::entries`] found it.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    /// Its bucket and way.
    pub bucket: usize,
    pub way: usize,
    /// Its word when it was read: a change of owner since makes it stale.
    pub word: u64,
    pub key: Key,
    pub p: Pending,
}

/// The mapped `slots` map.
pub struct SlotTable {
    map: Mapping,
    buckets: usize,
    _fd: OwnedFd,
}

const BUCKET_WORDS: usize = size_of::<Bucket>() / 8;
const SPILL_AT: usize = offset_of!(Bucket, spill) / 8;
const ENTRY_WORDS: usize = size_of::<Entry>() / 8;
const PENDING_AT: usize = offset_of!(Entry, p) / 8;

impl SlotTable {
    /// The `slots` array of `buckets` buckets (front and main), and its mapping.
    pub fn new(fd: OwnedFd, map: Mapping, buckets: u32) -> SlotTable {
        SlotTable {
            map,
            buckets: buckets as usize,
            _fd: fd,
        }
    }

    fn bucket(&self, b: usize) -> &[AtomicU64] {
        &self.map.words64()[b * BUCKET_WORDS..(b + 1) * BUCKET_WORDS]
    }

    fn entry_words(&self, b: usize, way: usize) -> &[AtomicU64] {
        let at = offset_of!(Bucket, e) / 8 + way * ENTRY_WORDS;
        &self.bucket(b)[at..at + ENTRY_WORDS]
    }

    /// Every live entry whose word stayed the same while it was read (one
    /// being written is skipped: it is new, not due for the sweep).
    ///
    /// The main buckets are read only when a front bucket's spill says one
    /// holds an attempt: a main bucket's entry is counted in its front
    /// bucket's spill before it is published, and until it is freed (the
    /// classifier's own lookups rely on that), so with every spill at 0 the
    /// main buckets are empty. A host with few attempts in flight then reads
    /// 256 buckets a sweep, not the whole table (16,640 cache lines at the
    /// default room), which was most of flowlat's CPU when idle.
    pub fn entries(&self) -> Vec<Found> {
        let mut out = Vec::new();
        let front = FRONT.min(self.buckets);
        let spilled = (0..front).any(|b| self.bucket(b)[SPILL_AT].load(Ordering::Acquire) != 0);
        let upto = if spilled { self.buckets } else { front };
        for bucket in 0..upto {
            let words = self.bucket(bucket);
            for (way, at) in words[..WAYS].iter().enumerate() {
                let word = at.load(Ordering::Acquire);
                if word & (LIVE | BUSY) != LIVE {
                    continue;
                }
                let bytes = load_bytes(self.entry_words(bucket, way));
                if at.load(Ordering::Acquire) != word {
                    continue;
                }
                let (k, p) = bytes.split_at(size_of::<Key>());
                if let (Some(key), Some(p)) = (from_bytes::<Key>(k), from_bytes::<Pending>(p)) {
                    out.push(Found {
                        bucket,
                        way,
                        word,
                        key,
                        p,
                    });
                }
            }
        }
        out
    }

    fn word(&self, f: &Found) -> &AtomicU64 {
        &self.bucket(f.bucket)[f.way]
    }

    /// Takes the entry as it was found, for the sweep: false when the
    /// classifier (or a new attempt) has had it since. The entry is then
    /// busy, and must be [`SlotTable::replace`]d or [`SlotTable::free`]d.
    pub fn claim(&self, f: &Found) -> bool {
        self.word(f)
            .compare_exchange(f.word, f.word | BUSY, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }

    /// The pending part of a claimed entry, as it is now: the classifier may
    /// have changed it in place since it was found (our first SYN-ACK).
    pub fn pending_of(&self, f: &Found) -> Option<Pending> {
        from_bytes::<Pending>(&load_bytes(
            &self.entry_words(f.bucket, f.way)[PENDING_AT..],
        ))
    }

    /// Writes `p` into a claimed entry and makes it live again, a new owner's.
    pub fn replace(&self, f: &Found, p: &Pending) {
        let words = &self.entry_words(f.bucket, f.way)[PENDING_AT..];
        for (w, chunk) in words.iter().zip(as_bytes(p).chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            w.store(u64::from_ne_bytes(b), Ordering::Relaxed);
        }
        let live = (f.word & !(GEN_MASK << 2) & !BUSY) | LIVE;
        self.word(f).store(next_gen(f.word, live), Ordering::SeqCst);
    }

    /// Frees a claimed entry's way.
    pub fn free(&self, f: &Found) {
        self.word(f).store(next_gen(f.word, 0), Ordering::SeqCst);
        self.unspill(f);
    }

    /// Removes the entry as it was found (an old tombstone): false when
    /// someone else had it first.
    pub fn remove(&self, f: &Found) -> bool {
        let removed = self
            .word(f)
            .compare_exchange(
                f.word,
                next_gen(f.word, 0),
                Ordering::SeqCst,
                Ordering::Relaxed,
            )
            .is_ok();
        if removed {
            self.unspill(f);
        }
        removed
    }

    /// A main bucket's way was freed: its key's front bucket counts one
    /// spilled attempt less, as the classifier's removal does.
    fn unspill(&self, f: &Found) {
        if f.bucket >= FRONT {
            let front = (f.word >> 32) as usize & (FRONT - 1);
            self.bucket(front)[SPILL_AT].fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Each front bucket's spill (tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn spills(&self) -> Vec<u64> {
        (0..FRONT.min(self.buckets))
            .map(|b| self.bucket(b)[SPILL_AT].load(Ordering::SeqCst))
            .collect()
    }
}

/// The bytes of words the classifier may be writing (an entry's: the word
/// before and after tells whether they are whole).
fn load_bytes(words: &[AtomicU64]) -> Vec<u8> {
    words
        .iter()
        .flat_map(|w| w.load(Ordering::Relaxed).to_ne_bytes())
        .collect()
}

/// `slot_word` of `bpf/table.h`: the generation of `old` moved on, over the
/// hash and state of `rest`.
fn next_gen(old: u64, rest: u64) -> u64 {
    (rest & !(GEN_MASK << 2)) | ((((old >> 2) + 1) & GEN_MASK) << 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, FromRawFd};

    /// A slot table of one bucket in anonymous memory, which the test
    /// changes as the classifier would.
    fn table() -> SlotTable {
        table_of(1)
    }

    fn table_of(buckets: usize) -> SlotTable {
        let page = crate::bpf::perf::page_size().expect("page size");
        let page = (buckets * size_of::<Bucket>()).div_ceil(page) * page;
        // SAFETY: a NUL-terminated name and no flags; the fd it returns is new and
        // owned by nothing else.
        let raw = unsafe { libc::memfd_create(c"flowlat-slots-test".as_ptr(), 0) };
        assert!(raw >= 0, "memfd_create");
        // SAFETY: raw is a valid fd just created, owned from here on by this OwnedFd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        nix::unistd::ftruncate(&fd, page as i64).expect("size the memfd");
        let len = std::num::NonZeroUsize::new(page).expect("a page");
        let map = Mapping::new(fd.as_fd(), len).expect("map it");
        SlotTable::new(fd, map, buckets as u32)
    }

    /// What the classifier does for a new attempt in way 0.
    fn insert(t: &SlotTable, key: Key, p: Pending) -> u64 {
        insert_at(t, 0, key, p)
    }

    fn insert_at(t: &SlotTable, bucket: usize, key: Key, p: Pending) -> u64 {
        let word = &t.bucket(bucket)[0];
        let old = word.load(Ordering::Relaxed);
        let bytes: Vec<u8> = as_bytes(&key).iter().chain(as_bytes(&p)).copied().collect();
        for (w, c) in t.entry_words(bucket, 0).iter().zip(bytes.chunks_exact(8)) {
            w.store(
                u64::from_ne_bytes(c.try_into().expect("8 bytes")),
                Ordering::Relaxed,
            );
        }
        let live = next_gen(old, (u64::from(hash(&key)) << 32) | LIVE);
        word.store(live, Ordering::SeqCst);
        live
    }

    fn attempt(isn: u32) -> (Key, Pending) {
        let mut key = Key {
            family: 4,
            client_port: 40000u16.to_be(),
            ..Key::default()
        };
        key.client[..4].copy_from_slice(&[10, 0, 0, 5]);
        let p = Pending {
            client_isn: isn,
            first_syn_ns: 1,
            ..Pending::default()
        };
        (key, p)
    }

    #[test]
    fn an_entry_the_classifier_took_since_it_was_read_is_not_taken_again() {
        let t = table();
        let (key, p) = attempt(7);
        insert(&t, key, p);
        let found = t.entries();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].p.client_isn, 7);
        // The answer arrives: the classifier releases the way.
        let w = found[0].word;
        t.bucket(0)[0].store(next_gen(w, 0), Ordering::SeqCst);
        assert!(!t.claim(&found[0]), "the sweep must not report it too");
        assert!(t.entries().is_empty());
        // A new attempt in the same way: the old find is still stale.
        insert(&t, key, attempt(8).1);
        assert!(!t.claim(&found[0]));
        assert!(!t.remove(&found[0]));
        assert_eq!(t.entries()[0].p.client_isn, 8);
    }

    #[test]
    fn a_claimed_entry_is_hidden_until_it_is_replaced_or_freed() {
        let t = table();
        let (key, p) = attempt(7);
        insert(&t, key, p);
        let f = t.entries()[0];
        assert!(t.claim(&f));
        assert!(t.entries().is_empty(), "a busy way is skipped");
        assert!(!t.claim(&f), "claimed once");
        // In place while claimed: what the classifier wrote last is read.
        let tomb = Pending {
            state: 2,
            last_syn_ns: 99,
            ..t.pending_of(&f).expect("pending")
        };
        t.replace(&f, &tomb);
        let g = t.entries();
        assert_eq!(g.len(), 1);
        assert_eq!((g[0].p.state, g[0].p.last_syn_ns), (2, 99));
        assert_eq!(g[0].key, key, "the key stays");
        assert_eq!(g[0].word >> 32, u64::from(hash(&key)), "so does its hash");
        assert_ne!(g[0].word, f.word, "a new owner's word");
        assert!(!t.remove(&f), "the old find is stale");
        assert!(t.remove(&g[0]));
        assert!(t.entries().is_empty());
        // Claimed and freed.
        insert(&t, key, p);
        let h = t.entries()[0];
        assert!(t.claim(&h));
        t.free(&h);
        assert!(t.entries().is_empty());
    }

    #[test]
    fn the_main_buckets_are_read_only_while_a_spill_says_they_hold_attempts() {
        let t = table_of(FRONT + 4);
        let (key, p) = attempt(9);
        let front = hash(&key) as usize & (FRONT - 1);
        // An attempt in a front bucket is always found.
        insert(&t, key, p);
        assert_eq!(t.entries().len(), 1);
        // One in a main bucket only with its front bucket's spill counting
        // it, as the classifier counts it before publishing it.
        let (other, q) = attempt(10);
        insert_at(&t, FRONT + 2, other, q);
        assert_eq!(
            t.entries().len(),
            1,
            "every spill at 0: no main bucket read"
        );
        t.bucket(front)[SPILL_AT].store(1, Ordering::SeqCst);
        let found: Vec<usize> = t.entries().iter().map(|f| f.bucket).collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.contains(&(FRONT + 2)));
    }

    #[test]
    fn freeing_a_main_buckets_way_takes_it_off_its_front_buckets_spill() {
        let t = table_of(FRONT + 1);
        let (key, p) = attempt(7);
        let front = hash(&key) as usize & (FRONT - 1);
        // The classifier spilled the attempt into the main bucket.
        t.bucket(front)[SPILL_AT].store(1, Ordering::SeqCst);
        insert_at(&t, FRONT, key, p);
        let f = t.entries()[0];
        assert_eq!((f.bucket, t.spills()[front]), (FRONT, 1));
        assert!(t.claim(&f));
        t.replace(&f, &p);
        assert_eq!(t.spills()[front], 1, "a tombstone stays counted");
        let g = t.entries()[0];
        assert!(t.remove(&g));
        assert_eq!(t.spills()[front], 0, "removed");
        assert!(!t.remove(&g), "once");
        assert_eq!(t.spills()[front], 0, "and counted off once");
        t.bucket(front)[SPILL_AT].store(1, Ordering::SeqCst);
        insert_at(&t, FRONT, key, p);
        let h = t.entries()[0];
        assert!(t.claim(&h));
        t.free(&h);
        assert_eq!(t.spills()[front], 0, "claimed and freed");
        // A front bucket's own entries are no spill.
        insert_at(&t, front, key, p);
        assert!(t.remove(&t.entries()[0]));
        assert!(t.spills().iter().all(|&s| s == 0));
    }

    #[test]
    fn buckets_are_a_power_of_two_with_room_for_the_attempts() {
        assert_eq!(buckets_for(16), 4);
        assert_eq!(buckets_for(65536), 16384);
        assert_eq!(buckets_for(1000), 256);
        assert_eq!(buckets_for(1 << 24), 1 << 22);
    }

    #[test]
    fn a_new_owner_moves_the_generation_on_and_keeps_the_hash() {
        let w = (0xdead_beef_u64 << 32) | (5 << 2) | LIVE;
        let busy = w | BUSY;
        let live = next_gen(busy, (busy & !BUSY) | LIVE);
        assert_eq!(live >> 32, 0xdead_beef);
        assert_eq!(live & (LIVE | BUSY), LIVE);
        assert_eq!((live >> 2) & GEN_MASK, 6);
        assert_eq!(next_gen(w, 0) & (LIVE | BUSY), 0);
        // The generation wraps within its bits, never into the hash.
        let top = (7u64 << 32) | (GEN_MASK << 2) | LIVE;
        assert_eq!(next_gen(top, top) >> 32, 7);
        assert_eq!((next_gen(top, top) >> 2) & GEN_MASK, 0);
    }
}
