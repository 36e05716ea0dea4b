/* scripts/ablate.sh's classifier that keeps the table: flowlat's parsing and
 * handshake (its table's add, finds and removal, the clock reads, the cgroup
 * read, the ACK gate), with no record and no aggregate (bpf/report.h). Built
 * in bpf/probe.c's place with FLOWLAT_ABLATE=table (build.rs); it measures
 * nothing. */
#include "parse.h"
#include "handshake.h"
#include "programs.h"

/* handshake() up to the report: an attempt that ended is still copied out of
 * its entry. A test clang cannot decide keeps it from dropping the copy
 * unused; it never passes. */
static __always_inline void unreported(struct __sk_buff *skb, const int egress,
				       struct segment *sg)
{
	struct flowlat_scratch *s = scratch_space();
	if (s && act(skb, egress, sg, s) && *(volatile __u32 *)&config.agg_keys == ~0u)
		report(skb, &s->ev);
}

static __always_inline int classify(struct __sk_buff *skb, const int egress, const int l2)
{
	struct segment sg;
	if (parse(skb, egress, l2, &sg) == SEGMENT)
		unreported(skb, egress, &sg);
	return TC_ACT_UNSPEC;
}

FLOWLAT_PROGRAMS(classify)
