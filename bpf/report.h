/* How an attempt that ended leaves the kernel: into its aggregate
 * (bpf/aggregate.h), as a record in this CPU's batch (bpf/batch.h), or both,
 * as config.flags say. Apart from the handshake, which takes ended attempts
 * out of the table and hands them here, so that a build can keep the table
 * and stop short of this (bpf/ablate/). */
#ifndef FLOWLAT_REPORT_H
#define FLOWLAT_REPORT_H

#include "maps.h"
#include "filter.h"
#include "aggregate.h"

/* Adds a record to this CPU's batch, and sends the batch when it is full. */
static __always_inline void send(struct __sk_buff *skb, const struct flowlat_event *ev)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct flowlat_batch *b = bpf_map_lookup_elem(&batches, &cpu);
	if (!b) {
		count(FLOWLAT_STAT_SEND_FAILED);
		return;
	}
	count(FLOWLAT_STAT_SENT);
	__u32 lost = batch_put(skb, &events, b, ev, config.batch);
	if (lost)
		count_n(FLOWLAT_STAT_SEND_FAILED, lost);
}

/* Reports an attempt take() ended: into its aggregate, as a record, or both.
 * One place for it in a program, however many ways an attempt can end. */
static __always_inline void report(struct __sk_buff *skb, struct flowlat_event *ev)
{
	__u32 flags = config.flags;
	if (flags & FLOWLAT_CFG_AGGREGATE)
		aggregate(&ev->key, &ev->p, ev->end_ns, ev->result, ev->reason, flags);
	if (flags & FLOWLAT_CFG_NO_RECORDS)
		return;
	/* --min-rtt: a fast enough answer is counted, not sent. */
	if (ev->result == FLOWLAT_RESULT_OK && (flags & FLOWLAT_CFG_MIN_RTT)) {
		__u64 from = ev->key.dir == FLOWLAT_DIR_OUT ? ev->p.last_syn_ns : ev->p.last_synack_ns;
		if (ev->end_ns - from < filter.min_rtt_ns) {
			count(FLOWLAT_STAT_BELOW_MIN_RTT);
			return;
		}
	}
	send(skb, ev);
}

#endif
