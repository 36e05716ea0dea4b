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
 * Four programs are built from one body: ingress and egress, each for
 * interfaces with an Ethernet header and for L3 devices (tun, WireGuard) whose
 * packets start at the IP header. */
#include "handshake.h"

static __always_inline int classify(struct __sk_buff *skb, const int egress, const int l2)
{
#ifdef FLOWLAT_ABLATE_HEADERS
	/* scripts/ablate.sh: a look at an untagged IPv4 TCP frame's headers and
	 * one global, the least any classifier of handshakes does. */
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
#endif
	struct segment sg;
	if (parse(skb, egress, l2, &sg) == SEGMENT)
		handshake(skb, egress, &sg);
	return TC_ACT_UNSPEC;
}

SEC("tc/ingress")
int flowlat_ingress(struct __sk_buff *skb)
{
	return classify(skb, 0, 1);
}

SEC("tc/egress")
int flowlat_egress(struct __sk_buff *skb)
{
	return classify(skb, 1, 1);
}

SEC("tc/ingress_l3")
int flowlat_in_l3(struct __sk_buff *skb)
{
	return classify(skb, 0, 0);
}

SEC("tc/egress_l3")
int flowlat_eg_l3(struct __sk_buff *skb)
{
	return classify(skb, 1, 0);
}
