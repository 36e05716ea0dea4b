/* scripts/ablate.sh's classifier that parses: flowlat's whole parsing
 * (bpf/parse.h), up to the segment the handshake would act on, and no
 * further. Built in bpf/probe.c's place with FLOWLAT_ABLATE=parse (build.rs);
 * it measures nothing. */
#include "parse.h"
#include "handshake.h"
#include "programs.h"

static __always_inline int classify(struct __sk_buff *skb, const int egress, const int l2)
{
	struct segment sg;
	/* A test clang cannot decide keeps it from dropping the segment unused;
	 * it never passes. */
	if (parse(skb, egress, l2, &sg) == SEGMENT && *(volatile __u32 *)&config.agg_keys == ~0u)
		handshake(skb, egress, &sg);
	return TC_ACT_UNSPEC;
}

FLOWLAT_PROGRAMS(classify)
