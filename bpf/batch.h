/* Records in batches (struct flowlat_batch in flowlat.h): the probe sends its
 * records this way, and the bench's primitive measures this very code. */
#ifndef FLOWLAT_BATCH_H
#define FLOWLAT_BATCH_H

#include "flowlat.h"

/* One slot per possible CPU, which user space maps (BPF_F_MMAPABLE) to read
 * the batches that have not filled. */
#define FLOWLAT_BATCHES_MAP(name)                                           \
	struct flowlat_map_def name SEC("maps") = {                         \
		.type = BPF_MAP_TYPE_ARRAY,                                 \
		.key_size = sizeof(__u32),                                  \
		.value_size = sizeof(struct flowlat_batch),                 \
		.max_entries = 1, /* user space sets the number of possible CPUs */ \
		.map_flags = BPF_F_MMAPABLE,                                \
	}

/* Keeps clang from moving memory accesses across it. */
#define BATCH_BARRIER() asm volatile("" : : : "memory")

/* Puts a record in b, this CPU's batch, and sends the batch through the perf
 * event array as one event once it holds max records (1 to FLOWLAT_BATCH;
 * anything else reads as FLOWLAT_BATCH). Returns how many records were lost:
 * those of a batch the ring had no room for, else 0. */
static __always_inline __u32 batch_put(void *ctx, void *events, struct flowlat_batch *b,
				       const struct flowlat_event *ev, __u32 max)
{
	__u32 n = b->n;
	if (n >= FLOWLAT_BATCH)
		return 1; /* cannot happen: only this code writes n */
	b->ev[n] = *ev;
	/* User space reads the slot while it is written (see struct
	 * flowlat_batch): the record must be in memory before n counts it, and
	 * the new seq before n = 0 and the next batch's records. Plain stores in
	 * that order, which clang must keep (hence the barriers) and x86 makes
	 * visible in that order; the atomics that would say so on any CPU need
	 * Linux 5.12. Elsewhere user space reads no slot and sends each record
	 * alone (max 1). */
	BATCH_BARRIER();
	*(volatile __u32 *)&b->n = n + 1;
	if (n + 1 < (max - 1 < FLOWLAT_BATCH ? max : FLOWLAT_BATCH))
		return 0;
	long r = bpf_perf_event_output(ctx, events, BPF_F_CURRENT_CPU, b, sizeof(*b));
	*(volatile __u64 *)&b->seq = b->seq + 1;
	BATCH_BARRIER();
	*(volatile __u32 *)&b->n = 0;
	return r == 0 ? 0 : n + 1;
}

#endif
