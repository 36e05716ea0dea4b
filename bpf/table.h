/* The table of attempts in progress (see bpf/flowlat.h): the slot table where
 * the probe is built with FLOWLAT_TABLE_SLOTS, the LRU hash table otherwise.
 * Both behave alike to the classifier: table_find() gives an attempt's entry
 * and where it was found, table_add() inserts a new one unless its key has
 * one, table_remove() takes the entry table_find() found out of the table,
 * and fails when someone else (the other hook, user space's sweep) took it
 * first: whoever removes an attempt reports it. Included after bpf/maps.h,
 * whose config it reads. */
#ifndef FLOWLAT_TABLE_H
#define FLOWLAT_TABLE_H

#include "flowlat.h"

#ifdef FLOWLAT_TABLE_SLOTS

struct flowlat_map_def slots SEC("maps") = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct flowlat_bucket),
	.max_entries = FLOWLAT_FRONT + 16384, /* user space sets it from --max-pending */
	.map_flags = BPF_F_MMAPABLE,
};

struct table_ref {
	struct flowlat_pending *p;
	__u64 *word;
	__u64 seen;   /* the word as it was when the entry was found */
	__u64 *spill; /* a main bucket's entry: its front bucket's spill */
};

/* The main buckets less one: the probe's config.table_mask; the bench's
 * primitives, which have no config, set a constant. */
#ifndef FLOWLAT_TABLE_MASK
#define FLOWLAT_TABLE_MASK config.table_mask
#endif

/* Whether plain stores become visible in program order here; the bench's
 * primitives, which have no config, set a constant. */
#ifndef FLOWLAT_TABLE_IN_ORDER
#define FLOWLAT_TABLE_IN_ORDER (config.flags & FLOWLAT_CFG_IN_ORDER)
#endif

#define SLOT_STATE (FLOWLAT_SLOT_LIVE | FLOWLAT_SLOT_BUSY)
#define SLOT_GEN_MASK 0x3fffffffULL

/* Mirrored by slots::hash in src/probe/slots.rs, which a test holds to it. */
static __always_inline __u32 table_hash(const struct flowlat_key *k)
{
	__u32 c[4], s[4];
	__builtin_memcpy(c, k->client, 16);
	__builtin_memcpy(s, k->server, 16);
	/* Each part's high bits are folded down before a multiplication carries
	 * them up again: the bucket is taken from the low bits, and addresses
	 * differ most in their last bytes, the high ones of a word here. */
	__u32 h = c[0] ^ c[1] ^ c[2] ^ c[3];
	h = (h ^ (h >> 16)) * 0x85EBCA6Bu;
	h ^= s[0] ^ s[1] ^ s[2] ^ s[3];
	h = (h ^ (h >> 13)) * 0xC2B2AE35u;
	h ^= (__u32)k->client_port << 16 | k->server_port;
	h = (h ^ (h >> 16)) * 0x85EBCA6Bu;
	h ^= k->ifindex ^ ((__u32)k->dir << 31);
	h = (h ^ (h >> 13)) * 0xC2B2AE35u;
	return h ^ (h >> 16);
}

static __always_inline struct flowlat_bucket *front_bucket(__u32 h)
{
	__u32 i = h & (FLOWLAT_FRONT - 1);
	return bpf_map_lookup_elem(&slots, &i);
}

static __always_inline struct flowlat_bucket *main_bucket(__u32 h)
{
	__u32 i = FLOWLAT_FRONT + (h & FLOWLAT_TABLE_MASK);
	return bpf_map_lookup_elem(&slots, &i);
}

/* Whether attempts of a front bucket's keys wait in their main buckets. */
static __always_inline int spilled(const struct flowlat_bucket *front)
{
	return *(volatile __u64 *)&front->spill != 0;
}

static __always_inline int key_eq(const struct flowlat_key *a, const struct flowlat_key *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
	__u32 d = 0;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(*a) / 4); i++)
		d |= x[i] ^ y[i];
	return d == 0;
}

/* Whether way i of b, whose word is w, holds the attempt of key (hash h), or
 * is rewriting it: an attempt that ended on another CPU becoming its
 * tombstone, or one the sweep is timing out (busy, and still live: the key
 * stays while the rest is written). A way being filled from free is no
 * one's yet. */
static __always_inline int slot_keeps(const struct flowlat_bucket *b, int i, __u64 w, __u32 h,
				      const struct flowlat_key *key)
{
	return (w & FLOWLAT_SLOT_LIVE) && (__u32)(w >> 32) == h && key_eq(&b->e[i].key, key);
}

/* Whether way i of b, whose word is w, holds the attempt of key (hash h),
 * not busy: one to find. */
static __always_inline int slot_holds(const struct flowlat_bucket *b, int i, __u64 w, __u32 h,
				      const struct flowlat_key *key)
{
	return !(w & FLOWLAT_SLOT_BUSY) && slot_keeps(b, i, w, h, key);
}

/* A word's next owner's: the generation moved on, the hash and state given. */
static __always_inline __u64 slot_word(__u64 old, __u64 hash_and_state)
{
	return hash_and_state | ((((old >> 2) + 1) & SLOT_GEN_MASK) << 2);
}

/* The entry of key (hash h) in bucket b, if any. */
static __always_inline struct flowlat_pending *bucket_find(struct flowlat_bucket *b, __u32 h,
							   const struct flowlat_key *key,
							   struct table_ref *ref)
{
#pragma unroll
	for (int i = 0; i < FLOWLAT_WAYS; i++) {
		__u64 w = *(volatile __u64 *)&b->word[i];
		if (slot_holds(b, i, w, h, key)) {
			ref->p = &b->e[i].p;
			ref->word = &b->word[i];
			ref->seen = w;
			return ref->p;
		}
	}
	return 0;
}

static __always_inline struct flowlat_pending *table_find(const struct flowlat_key *key,
							  struct table_ref *ref)
{
	__u32 h = table_hash(key);
	struct flowlat_bucket *f = front_bucket(h);
	if (!f)
		return 0;
	ref->spill = 0;
	struct flowlat_pending *p = bucket_find(f, h, key, ref);
	if (p || !spilled(f))
		return p;
	struct flowlat_bucket *b = main_bucket(h);
	if (!b)
		return 0;
	ref->spill = &f->spill;
	return bucket_find(b, h, key, ref);
}

/* Claims way i of b, as it was (w), for a new attempt, and writes it. */
static __always_inline int slot_fill(struct flowlat_bucket *b, __u32 i, __u64 w, __u32 h,
				     const struct flowlat_key *key, const struct flowlat_pending *n)
{
	i &= FLOWLAT_WAYS - 1;
	__u64 *word = &b->word[i];
	if ((w & FLOWLAT_SLOT_BUSY) || __sync_val_compare_and_swap(word, w, w | FLOWLAT_SLOT_BUSY) != w)
		return -1;
	struct flowlat_entry *e = &b->e[i];
	e->key = *key;
	e->p = *n;
	__u64 live = slot_word(w, (__u64)h << 32 | FLOWLAT_SLOT_LIVE);
	/* The entry must be written before the word says live. Only the owner
	 * of a busy word changes it (everyone else's compare-and-exchange
	 * expects another word), so where stores become visible in the order
	 * they were made a plain store after the entry's publishes it, without
	 * the wait of a locked instruction for the entry's lines; elsewhere a
	 * compare-and-exchange is the barrier. */
	if (FLOWLAT_TABLE_IN_ORDER) {
		asm volatile("" : : : "memory");
		*(volatile __u64 *)word = live;
	} else {
		__sync_val_compare_and_swap(word, w | FLOWLAT_SLOT_BUSY, live);
	}
	return 0;
}

/* Bucket b's words, into w. */
static __always_inline void bucket_words(const struct flowlat_bucket *b, __u64 *w)
{
#pragma unroll
	for (int i = 0; i < FLOWLAT_WAYS; i++)
		w[i] = *(volatile __u64 *)&b->word[i];
}


/* Whether bucket b holds key (hash h), or is rewriting its entry; its
 * words in w. A SYN must not start a second attempt beside an entry being
 * rewritten: a client's copy of its SYN that crossed the answer arrives on
 * another CPU as the answer ends the attempt there, and a second entry of
 * the key would then take the answers meant for neither and time out. */
static __always_inline int bucket_holds(const struct flowlat_bucket *b, __u64 *w, __u32 h,
					const struct flowlat_key *key)
{
	bucket_words(b, w);
	int held = 0;
#pragma unroll
	for (int i = 0; i < FLOWLAT_WAYS; i++)
		if (slot_keeps(b, i, w[i], h, key))
			held = 1;
	return held;
}

/* 0: inserted; 1: the key has an entry; -1: no way could be claimed. */
static __always_inline int table_add(const struct flowlat_key *key, const struct flowlat_pending *n)
{
	__u32 h = table_hash(key);
	struct flowlat_bucket *f = front_bucket(h);
	if (!f)
		return -1;
	__u64 w[FLOWLAT_WAYS];
	if (bucket_holds(f, w, h, key))
		return 1;
	/* The main bucket's place (no load): while the front bucket has
	 * spilled, the main bucket may hold the key, and is read before
	 * anything is inserted. */
	struct flowlat_bucket *b = main_bucket(h);
	if (!b)
		return -1;
	__u64 v[FLOWLAT_WAYS];
	int spill = spilled(f);
	if (spill && bucket_holds(b, v, h, key))
		return 1;
	__u32 free = FLOWLAT_WAYS;
#pragma unroll
	for (int i = FLOWLAT_WAYS - 1; i >= 0; i--)
		if ((w[i] & SLOT_STATE) == 0)
			free = i;
	/* Two SYNs on two CPUs at once may share a front bucket and read
	 * the same free way: the one whose claim fails goes on to its main
	 * bucket rather than lose its attempt. */
	if (free < FLOWLAT_WAYS && slot_fill(f, free, w[free & (FLOWLAT_WAYS - 1)], h, key, n) == 0)
		return 0;
	if (!spill)
		bucket_words(b, v);
	/* Counted before the entry is published, so that no lookup of the key
	 * can find the spill at 0 while it waits in the main bucket. */
	__sync_fetch_and_add(&f->spill, 1);
	__u32 pick = FLOWLAT_WAYS;
#pragma unroll
	for (int i = FLOWLAT_WAYS - 1; i >= 0; i--)
		if ((v[i] & SLOT_STATE) == 0)
			pick = i;
	if (pick == FLOWLAT_WAYS) {
		/* A full main bucket: the oldest attempt goes, as the LRU table's
		 * least recently used one would (counted as evicted: neither
		 * removed nor swept). */
		pick = 0;
		__u64 oldest = b->e[0].p.first_syn_ns;
#pragma unroll
		for (int i = 1; i < FLOWLAT_WAYS; i++) {
			__u64 t = b->e[i].p.first_syn_ns;
			if (t < oldest) {
				oldest = t;
				pick = i;
			}
		}
	}
	__u64 old = v[pick & (FLOWLAT_WAYS - 1)];
	if (slot_fill(b, pick, old, h, key, n) != 0) {
		__sync_fetch_and_sub(&f->spill, 1);
		return -1;
	}
	/* An evicted attempt leaves its own front bucket's spill. */
	if (old & SLOT_STATE) {
		struct flowlat_bucket *of = front_bucket(old >> 32);
		if (of)
			__sync_fetch_and_sub(&of->spill, 1);
	}
	return 0;
}

static __always_inline int table_remove(const struct flowlat_key *key, const struct table_ref *ref)
{
	(void)key;
	__u64 w = ref->seen;
	if (__sync_val_compare_and_swap(ref->word, w, slot_word(w, 0)) != w)
		return -1;
	if (ref->spill)
		__sync_fetch_and_sub(ref->spill, 1);
	return 0;
}

/* Takes the entry table_find() found, as table_remove() does, and leaves
 * *tomb in its place under the same key (the way, and its bucket's spill,
 * stay taken). */
static __always_inline int table_replace(const struct flowlat_key *key, const struct table_ref *ref,
					 const struct flowlat_pending *tomb)
{
	(void)key;
	__u64 w = ref->seen;
	if (__sync_val_compare_and_swap(ref->word, w, w | FLOWLAT_SLOT_BUSY) != w)
		return -1;
	*ref->p = *tomb;
	/* A new owner's word, as slot_fill() publishes it: the user space
	 * sweep's compare-and-exchange on the word it read fails. */
	__u64 live = slot_word(w, (w & ~0xffffffffULL) | FLOWLAT_SLOT_LIVE);
	if (FLOWLAT_TABLE_IN_ORDER) {
		asm volatile("" : : : "memory");
		*(volatile __u64 *)ref->word = live;
	} else {
		__sync_val_compare_and_swap(ref->word, w | FLOWLAT_SLOT_BUSY, live);
	}
	return 0;
}

#else /* the LRU hash table */

struct flowlat_map_def pending SEC("maps") = {
	.type = BPF_MAP_TYPE_LRU_HASH,
	.key_size = sizeof(struct flowlat_key),
	.value_size = sizeof(struct flowlat_pending),
	.max_entries = 65536, /* user space sets --max-pending */
};

struct table_ref {
	struct flowlat_pending *p;
};

static __always_inline struct flowlat_pending *table_find(const struct flowlat_key *key,
							  struct table_ref *ref)
{
	ref->p = bpf_map_lookup_elem(&pending, key);
	return ref->p;
}

static __always_inline int table_add(const struct flowlat_key *key, const struct flowlat_pending *n)
{
	return bpf_map_update_elem(&pending, key, n, BPF_NOEXIST) == 0 ? 0 : 1;
}

static __always_inline int table_remove(const struct flowlat_key *key, const struct table_ref *ref)
{
	(void)ref;
	return bpf_map_delete_elem(&pending, key) == 0 ? 0 : -1;
}

/* Takes the entry, as table_remove() does, and leaves *tomb under its key
 * (unless a new attempt took the key in between). */
static __always_inline int table_replace(const struct flowlat_key *key, const struct table_ref *ref,
					 const struct flowlat_pending *tomb)
{
	if (table_remove(key, ref) != 0)
		return -1;
	bpf_map_update_elem(&pending, key, tomb, BPF_NOEXIST);
	return 0;
}

#endif
#endif
