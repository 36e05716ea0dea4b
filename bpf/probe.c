/* flowlat's classifier: timestamps TCP handshakes at an interface's clsact
 * ingress and egress hooks. It never changes or drops a packet and always
 * returns TC_ACT_UNSPEC, so the rest of the filter chain runs as before.
 *
 * The measurement contract (README, "What is measured"):
 *   out: SYN on egress ... SYN-ACK (ack == ISN+1) or RST on ingress
 *   in:  SYN on ingress ... SYN-ACK on egress ... ACK (ack == server ISN+1) on ingress,
 *        or RST on egress before any SYN-ACK
 * An attempt is the key (interface, direction, tuple) plus the client's ISN.
 * The classifier emits a record when an attempt completes, is refused or is
 * replaced by a new ISN; user space reports the ones that time out.
 *
 * Each segment is parsed (bpf/parse.h), acted on if it is one of a handshake
 * (bpf/handshake.h) and the attempt it ended reported (bpf/report.h). */
#include "parse.h"
#include "handshake.h"
#include "programs.h"
#include "procs.h"

static __always_inline int classify(struct __sk_buff *skb, const int egress, const int l2)
{
	struct segment sg;
	if (parse(skb, egress, l2, &sg) == SEGMENT)
		handshake(skb, egress, &sg);
	return TC_ACT_UNSPEC;
}

FLOWLAT_PROGRAMS(classify)
FLOWLAT_PROC_PROGRAMS
