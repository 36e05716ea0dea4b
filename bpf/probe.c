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
 * replaced by a new ISN; user space reports the ones that time out. */
#include "flowlat.h"

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

struct flowlat_map_def pending SEC("maps") = {
	.type = BPF_MAP_TYPE_LRU_HASH,
	.key_size = sizeof(struct flowlat_key),
	.value_size = sizeof(struct flowlat_pending),
	.max_entries = 65536, /* user space sets --max-pending */
};

struct flowlat_map_def events SEC("maps") = {
	.type = BPF_MAP_TYPE_PERF_EVENT_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 1, /* user space sets the number of possible CPUs */
};

struct flowlat_map_def stats SEC("maps") = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = FLOWLAT_STAT_MAX,
};

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* The TCP header up to the flags: all a handshake needs. */
struct tcp_head {
	__u16 source;
	__u16 dest;
	__u32 seq;
	__u32 ack_seq;
	__u8 doff_res; /* data offset in the high nibble */
	__u8 flags;
	__u16 window;
};

struct ipv4_head {
	__u8 ver_ihl;
	__u8 tos;
	__u16 tot_len;
	__u16 id;
	__u16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__u32 saddr;
	__u32 daddr;
};

struct ipv6_head {
	__u32 ver_tc_flow;
	__u16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += 1;
}

/* Copies len header bytes at off: straight from the linear data when they are
 * there (the common case), else through bpf_skb_load_bytes, which also reads
 * paged data. Never pulls (linearises) the skb. */
static __always_inline int read_at(struct __sk_buff *skb, __u32 off, void *to, const __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (data + off + len <= data_end) {
		__builtin_memcpy(to, data + off, len);
		return 0;
	}
	return bpf_skb_load_bytes(skb, off, to, len);
}

static __always_inline void emit(struct __sk_buff *skb, const struct flowlat_key *key,
				 const struct flowlat_pending *p, __u64 end_ns, __u8 result)
{
	struct flowlat_event ev;
	__builtin_memset(&ev, 0, sizeof(ev));
	ev.key = *key;
	ev.p = *p;
	ev.end_ns = end_ns;
	ev.result = result;
	if (bpf_perf_event_output(skb, &events, BPF_F_CURRENT_CPU, &ev, sizeof(ev)) == 0)
		count(FLOWLAT_STAT_SENT);
	else
		count(FLOWLAT_STAT_SEND_FAILED);
}

/* Removes the entry and reports it, unless user space's timeout sweep removed
 * it first: whoever deletes the entry reports the attempt, so it is reported
 * exactly once. The value is copied before the delete because the element's
 * memory may be reused as soon as it is freed. */
static __always_inline void finish(struct __sk_buff *skb, const struct flowlat_key *key,
				   const struct flowlat_pending *p, __u64 end_ns, __u8 result)
{
	struct flowlat_pending copy = *p;
	if (bpf_map_delete_elem(&pending, key) != 0)
		return;
	count(FLOWLAT_STAT_REMOVED);
	emit(skb, key, &copy, end_ns, result);
}

/* A client's SYN: a new attempt, a retransmission (same ISN), or a new attempt
 * that replaces an earlier one on the same tuple (new ISN). */
static __always_inline void on_syn(struct __sk_buff *skb, const struct flowlat_key *key, __u32 isn)
{
	__u64 now = bpf_ktime_get_ns();
	struct flowlat_pending *p = bpf_map_lookup_elem(&pending, key);
	if (p) {
		if (p->client_isn == isn) {
			p->syns += 1;
			/* "in" keeps the last SYN before our first SYN-ACK; a reported
			 * attempt's retransmissions keep its tombstone alive. */
			if (p->state != FLOWLAT_STATE_SYNACK)
				p->last_syn_ns = now;
			return;
		}
		if (p->state == FLOWLAT_STATE_REPORTED) {
			if (bpf_map_delete_elem(&pending, key) == 0)
				count(FLOWLAT_STAT_REMOVED);
		} else {
			finish(skb, key, p, now, FLOWLAT_RESULT_ABANDONED);
		}
	}
	struct flowlat_pending n;
	__builtin_memset(&n, 0, sizeof(n));
	n.first_syn_ns = now;
	n.last_syn_ns = now;
	n.client_isn = isn;
	n.syns = 1;
	n.state = FLOWLAT_STATE_SYN;
	if (bpf_map_update_elem(&pending, key, &n, BPF_NOEXIST) == 0)
		count(FLOWLAT_STAT_CREATED);
}

/* out: the server's SYN-ACK or RST arrives for our client's SYN. */
static __always_inline void on_answer_out(struct __sk_buff *skb, const struct flowlat_key *key,
					  const struct tcp_head *th, __u8 result)
{
	struct flowlat_pending *p = bpf_map_lookup_elem(&pending, key);
	if (!p || p->state != FLOWLAT_STATE_SYN || bpf_ntohl(th->ack_seq) != p->client_isn + 1)
		return;
	__u64 now = bpf_ktime_get_ns();
	struct flowlat_pending copy = *p;
	copy.first_synack_ns = now;
	copy.last_synack_ns = now;
	copy.synacks = 1;
	if (result == FLOWLAT_RESULT_OK)
		copy.server_isn = bpf_ntohl(th->seq);
	finish(skb, key, &copy, now, result);
}

/* in: this side's SYN-ACK leaves for the client's SYN. */
static __always_inline void on_synack_in(const struct flowlat_key *key, const struct tcp_head *th)
{
	struct flowlat_pending *p = bpf_map_lookup_elem(&pending, key);
	if (!p || p->state == FLOWLAT_STATE_REPORTED || bpf_ntohl(th->ack_seq) != p->client_isn + 1)
		return;
	__u64 now = bpf_ktime_get_ns();
	if (p->synacks == 0) {
		p->first_synack_ns = now;
		p->server_isn = bpf_ntohl(th->seq);
		p->state = FLOWLAT_STATE_SYNACK;
	}
	p->last_synack_ns = now;
	p->synacks += 1;
}

/* in: this side refuses the client's SYN with a RST. */
static __always_inline void on_rst_in(struct __sk_buff *skb, const struct flowlat_key *key,
				      const struct tcp_head *th)
{
	struct flowlat_pending *p = bpf_map_lookup_elem(&pending, key);
	if (!p || p->state != FLOWLAT_STATE_SYN || bpf_ntohl(th->ack_seq) != p->client_isn + 1)
		return;
	finish(skb, key, p, bpf_ktime_get_ns(), FLOWLAT_RESULT_REFUSED);
}

/* in: the client's ACK of our SYN-ACK completes the handshake. */
static __always_inline void on_ack_in(struct __sk_buff *skb, const struct flowlat_key *key,
				      const struct tcp_head *th)
{
	struct flowlat_pending *p = bpf_map_lookup_elem(&pending, key);
	if (!p || p->state != FLOWLAT_STATE_SYNACK || bpf_ntohl(th->ack_seq) != p->server_isn + 1)
		return;
	finish(skb, key, p, bpf_ktime_get_ns(), FLOWLAT_RESULT_OK);
}

/* What a TCP segment is to the handshake tracker. */
#define SEG_OTHER 0
#define SEG_SYN 1    /* SYN without ACK: a client opening */
#define SEG_SYNACK 2 /* a server answering */
#define SEG_RST 3
#define SEG_ACK 4    /* anything else with ACK: may complete an "in" handshake */

static __always_inline int segment_kind(__u8 flags)
{
	if (flags & TCP_RST)
		return SEG_RST;
	if (flags & TCP_SYN)
		return (flags & TCP_ACK) ? SEG_SYNACK : SEG_SYN;
	if (flags & TCP_ACK)
		return SEG_ACK;
	return SEG_OTHER;
}

static __always_inline int handle(struct __sk_buff *skb, const int egress)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (data + ETH_HLEN > data_end)
		return TC_ACT_UNSPEC;
	__u16 proto = *(__u16 *)(data + 12);

	struct flowlat_key key;
	struct tcp_head th;
	union {
		struct ipv4_head v4;
		struct ipv6_head v6;
	} ip;
	__u8 family;
	__u32 l4;

	if (proto == bpf_htons(ETH_P_IP)) {
		if (read_at(skb, ETH_HLEN, &ip.v4, sizeof(ip.v4)) < 0)
			return TC_ACT_UNSPEC;
		__u8 ihl = ip.v4.ver_ihl & 0xf;
		/* Only TCP, only IPv4 headers of a sane length, and never a
		 * non-first fragment (it has no TCP header). */
		if (ip.v4.protocol != IPPROTO_TCP || (ip.v4.ver_ihl >> 4) != 4 || ihl < 5 ||
		    (ip.v4.frag_off & bpf_htons(0x1fff)))
			return TC_ACT_UNSPEC;
		l4 = ETH_HLEN + ihl * 4;
		if (read_at(skb, l4, &th, sizeof(th)) < 0)
			return TC_ACT_UNSPEC;
		family = 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		if (read_at(skb, ETH_HLEN, &ip.v6, sizeof(ip.v6)) < 0)
			return TC_ACT_UNSPEC;
		if (ip.v6.nexthdr != IPPROTO_TCP || (ip.v6.ver_tc_flow & 0xf0) != 0x60)
			return TC_ACT_UNSPEC;
		l4 = ETH_HLEN + sizeof(ip.v6);
		if (read_at(skb, l4, &th, sizeof(th)) < 0)
			return TC_ACT_UNSPEC;
		family = 6;
	} else {
		return TC_ACT_UNSPEC;
	}

	int kind = segment_kind(th.flags);
	/* Egress only starts "out" attempts and answers "in" ones; plain ACKs
	 * leaving (most egress traffic) end here. */
	if (kind == SEG_OTHER || (egress && kind == SEG_ACK))
		return TC_ACT_UNSPEC;
	/* A TCP header shorter than 20 bytes, or cut short, is malformed: the
	 * stack will drop it, and so do we. */
	__u32 doff = th.doff_res >> 4;
	if (doff < 5 || skb->len < l4 + doff * 4)
		return TC_ACT_UNSPEC;

	/* The client is the packet's source for SYNs and the client's ACK, its
	 * destination for SYN-ACKs and RSTs. */
	int client_is_src = kind == SEG_SYN || kind == SEG_ACK;
	__builtin_memset(&key, 0, sizeof(key));
	key.family = family;
	key.ifindex = skb->ifindex;
	if (family == 4) {
		__builtin_memcpy(key.client, client_is_src ? &ip.v4.saddr : &ip.v4.daddr, 4);
		__builtin_memcpy(key.server, client_is_src ? &ip.v4.daddr : &ip.v4.saddr, 4);
	} else {
		__builtin_memcpy(key.client, client_is_src ? ip.v6.saddr : ip.v6.daddr, 16);
		__builtin_memcpy(key.server, client_is_src ? ip.v6.daddr : ip.v6.saddr, 16);
	}
	key.client_port = client_is_src ? th.source : th.dest;
	key.server_port = client_is_src ? th.dest : th.source;

	if (egress) {
		if (kind == SEG_SYN) {
			key.dir = FLOWLAT_DIR_OUT;
			on_syn(skb, &key, bpf_ntohl(th.seq));
		} else {
			key.dir = FLOWLAT_DIR_IN;
			if (kind == SEG_SYNACK)
				on_synack_in(&key, &th);
			else if (th.flags & TCP_ACK) /* a RST answering a SYN carries ACK = ISN+1 */
				on_rst_in(skb, &key, &th);
		}
	} else {
		if (kind == SEG_SYN) {
			key.dir = FLOWLAT_DIR_IN;
			on_syn(skb, &key, bpf_ntohl(th.seq));
		} else if (kind == SEG_ACK) {
			key.dir = FLOWLAT_DIR_IN;
			on_ack_in(skb, &key, &th);
		} else if (kind == SEG_SYNACK) {
			key.dir = FLOWLAT_DIR_OUT;
			on_answer_out(skb, &key, &th, FLOWLAT_RESULT_OK);
		} else if (th.flags & TCP_ACK) {
			key.dir = FLOWLAT_DIR_OUT;
			on_answer_out(skb, &key, &th, FLOWLAT_RESULT_REFUSED);
		}
	}
	return TC_ACT_UNSPEC;
}

SEC("tc/ingress")
int flowlat_ingress(struct __sk_buff *skb)
{
	return handle(skb, 0);
}

SEC("tc/egress")
int flowlat_egress(struct __sk_buff *skb)
{
	return handle(skb, 1);
}
