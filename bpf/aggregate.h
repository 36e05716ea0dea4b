/* Kernel aggregation (FLOWLAT_CFG_AGGREGATE; bpf/flowlat.h): an ended attempt
 * added to its key's counts and histograms, each CPU's own. Apart from the
 * report that asks for it (bpf/report.h), because it is the kernel's one copy
 * of this arithmetic, which must agree with user space's (src/probe/record.rs,
 * src/probe/aggregate.rs). */
#ifndef FLOWLAT_AGGREGATE_H
#define FLOWLAT_AGGREGATE_H

#include "maps.h"

/* The histogram bucket of a duration: how many bounds lie below it. Each
 * comparison is a subtraction's sign bit, not a branch, so that the verifier
 * walks one path with the bucket known to lie in [0, FLOWLAT_HIST_N]. */
static __always_inline __u64 hist_bucket(__u64 v)
{
	/* Durations are far below 2^62 ns; the sign bit needs room. */
	if (v > (1ULL << 62))
		v = 1ULL << 62;
	OPAQUE(v);
	__u64 i = 0;
#define ABOVE(b) i += ((b) - v) >> 63;
	FLOWLAT_HIST_BOUNDS(ABOVE)
#undef ABOVE
	return i;
}

static __always_inline void hist_add(struct flowlat_hist *h, __u64 v)
{
	h->buckets[hist_bucket(v)] += 1;
	h->sum_ns += v;
}

/* The value of an aggregation key, inserted if new. Keys with a port or a
 * cgroup are capped at FLOWLAT_AGG_KEYS (CPUs inserting at the same moment
 * can pass it by a few, which the reserve absorbs); beyond that, and if the
 * map is full, the attempt counts in the "other" key of its interface and
 * direction. */
static __always_inline struct flowlat_agg *agg_value(struct flowlat_agg_key *k)
{
	struct flowlat_agg *v = bpf_map_lookup_elem(&agg, k);
	if (v)
		return v;
	int capped = k->server_port || k->cgroup_id;
	if (capped && *(volatile __u32 *)&config.agg_keys >= FLOWLAT_AGG_KEYS)
		goto other;
	/* A failure may be EEXIST, another CPU having added it meanwhile: the
	 * lookup below tells. (The count's add returns nothing: an atomic that
	 * returns the old value needs Linux 5.12.) */
	if (bpf_map_update_elem(&agg, k, &agg_zero, BPF_NOEXIST) == 0 && capped)
		__sync_fetch_and_add(&config.agg_keys, 1);
	v = bpf_map_lookup_elem(&agg, k);
	if (v)
		return v;
other:
	k->server_port = 0;
	k->cgroup_id = 0;
	k->other = 1;
	v = bpf_map_lookup_elem(&agg, k);
	if (v)
		return v;
	bpf_map_update_elem(&agg, k, &agg_zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&agg, k);
}

/* A slot of each CPU's cache of aggregates (FLOWLAT_AGG_FAST). */
static __always_inline __u32 agg_hash(const struct flowlat_agg_key *k)
{
	__u32 h = k->ifindex;
	h = (h ^ (h >> 16)) * 0x85EBCA6Bu;
	h ^= (__u32)k->dir << 16 | k->server_port;
	h = (h ^ (h >> 13)) * 0xC2B2AE35u;
	h ^= (__u32)k->cgroup_id ^ (__u32)(k->cgroup_id >> 32);
	h = (h ^ (h >> 16)) * 0x85EBCA6Bu;
	return h ^ (h >> 13);
}

static __always_inline int agg_key_eq(const struct flowlat_agg_key *a,
				      const struct flowlat_agg_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;
	return ((x[0] ^ y[0]) | (x[1] ^ y[1])) == 0;
}

/* The aggregate to add to: this CPU's cached slot of the key, or the key's
 * value in "agg" (see FLOWLAT_AGG_FAST). */
static __always_inline struct flowlat_agg *agg_of(struct flowlat_agg_key *k)
{
	__u32 i = agg_hash(k) & (FLOWLAT_AGG_FAST - 1);
	struct flowlat_agg_slot *f = bpf_map_lookup_elem(&agg_cpu, &i);
	if (f && agg_key_eq(&f->key, k))
		return &f->v;
	struct flowlat_agg *v = agg_value(k);
	/* Only once the map holds the key, so that its cap counts it and user
	 * space sees it; an attempt sent to "other" changed k. */
	if (v && f && f->key.ifindex == 0 && !k->other) {
		f->key = *k;
		return &f->v;
	}
	return v;
}

/* Counts a failure by its reason (FLOWLAT_FAIL_KEYS). */
static __always_inline void fail_add(const struct flowlat_key *key, __u8 reason)
{
	struct flowlat_fail_key k = {
		.ifindex = key->ifindex,
		.dir = key->dir,
		.reason = reason,
	};
	__u64 *n = bpf_map_lookup_elem(&fails, &k);
	if (n) {
		*n += 1;
		return;
	}
	/* The key is one element for every CPU: when another CPU inserts it
	 * between our lookup and our insert (client RSTs come in bursts), ours
	 * fails, and this CPU's count goes to the element that CPU made. */
	__u64 zero = 0;
	bpf_map_update_elem(&fails, &k, &zero, BPF_NOEXIST);
	n = bpf_map_lookup_elem(&fails, &k);
	if (n)
		*n += 1;
}

/* Adds an ended attempt to its aggregate: the same arithmetic as
 * Record::from_event (src/probe/record.rs) and AggValue::add_record
 * (src/probe/aggregate.rs). */
static __always_inline void aggregate(const struct flowlat_key *key,
				      const struct flowlat_pending *p, __u64 end_ns, __u8 result,
				      __u8 reason, __u32 flags)
{
	struct flowlat_agg_key k;
	__builtin_memset(&k, 0, sizeof(k));
	k.ifindex = key->ifindex;
	k.dir = key->dir;
	if (flags & FLOWLAT_CFG_AGG_PORT)
		k.server_port = bpf_ntohs(key->server_port);
	if (flags & FLOWLAT_CFG_AGG_CGROUP)
		k.cgroup_id = p->cgroup_id;
	struct flowlat_agg *v = agg_of(&k);
	if (!v) {
		count(FLOWLAT_STAT_AGG_FAILED);
		return;
	}
	if (result < FLOWLAT_RESULTS)
		v->results[result] += 1;
	v->retrans += p->syns ? p->syns - 1 : 0;
	if (result != FLOWLAT_RESULT_OK) {
		fail_add(key, reason);
		return;
	}
	__u64 from = key->dir == FLOWLAT_DIR_OUT ? p->last_syn_ns : p->last_synack_ns;
	if (end_ns >= from)
		hist_add(&v->rtt, end_ns - from);
	if (key->dir == FLOWLAT_DIR_IN && p->first_synack_ns >= p->last_syn_ns)
		hist_add(&v->local, p->first_synack_ns - p->last_syn_ns);
}

#endif
