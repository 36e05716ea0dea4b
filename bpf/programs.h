/* The four programs user space loads by name (src/probe/load.rs), all from
 * one body, classify(skb, egress, l2): ingress and egress, each for interfaces
 * with an Ethernet header (l2) and for L3 devices (tun, WireGuard) whose
 * packets start at the IP header. A macro, so that the bench's cut-short
 * classifiers (bpf/ablate/) are loaded and attached as the probe is. */
#ifndef FLOWLAT_PROGRAMS_H
#define FLOWLAT_PROGRAMS_H

#include "bpf_defs.h"

#define FLOWLAT_PROGRAM(section, name, classify, egress, l2) \
	SEC(section)                                         \
	int name(struct __sk_buff *skb)                      \
	{                                                    \
		return classify(skb, egress, l2);            \
	}

#define FLOWLAT_PROGRAMS(classify)                                      \
	FLOWLAT_PROGRAM("tc/ingress", flowlat_ingress, classify, 0, 1)  \
	FLOWLAT_PROGRAM("tc/egress", flowlat_egress, classify, 1, 1)    \
	FLOWLAT_PROGRAM("tc/ingress_l3", flowlat_in_l3, classify, 0, 0) \
	FLOWLAT_PROGRAM("tc/egress_l3", flowlat_eg_l3, classify, 1, 0)

#endif
