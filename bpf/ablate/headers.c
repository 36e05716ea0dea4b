/* scripts/ablate.sh's least classifier: a look at an untagged IPv4 TCP frame's
 * headers and one global, the least any classifier of handshakes does. Built
 * in bpf/probe.c's place with FLOWLAT_ABLATE=headers (build.rs), with the
 * probe's maps, globals and programs, so that flowlat loads it as it loads
 * the probe; it measures nothing. */
#include "maps.h"
#include "table.h"
#include "parse.h"
#include "programs.h"

static __always_inline int classify(struct __sk_buff *skb, const int egress, const int l2)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (data + ETH_HLEN + sizeof(struct ipv4_head) + sizeof(struct tcp_head) > end)
		return TC_ACT_UNSPEC;
	struct eth_head *eth = data;
	struct ipv4_head *ip = data + ETH_HLEN;
	struct tcp_head *th = data + ETH_HLEN + sizeof(struct ipv4_head);
	__u32 seen = *(volatile __u32 *)&config.flags;
	if (eth->proto == bpf_htons(ETH_P_IP) && ip->protocol == IPPROTO_TCP)
		seen += th->flags;
	OPAQUE(seen);
	return TC_ACT_UNSPEC;
}

FLOWLAT_PROGRAMS(classify)
