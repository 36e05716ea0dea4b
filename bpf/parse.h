/* Parsing: a packet's Ethernet header, VLAN tags, IPv4 or IPv6 header (and
 * IPv6 extension headers) and TCP header, read into a struct segment, what the
 * handshake needs of it. Segments of established connections, most of all
 * traffic, end here, some of them at the ACK gate (bpf/gate.h). Apart from
 * the handshake, because this part is the same for every segment, and the
 * bench's cut-short classifiers (bpf/ablate/) measure it alone. */
#ifndef FLOWLAT_PARSE_H
#define FLOWLAT_PARSE_H

#include "maps.h"
#include "gate.h"

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define IPPROTO_TCP 6
#define IPPROTO_ICMP 1
#define IPPROTO_ICMPV6 58

#define IPV6_HOPOPTS 0
#define IPV6_ROUTING 43
#define IPV6_FRAGMENT 44
#define IPV6_AH 51
#define IPV6_DSTOPTS 60

/* VLAN tags read from the packet (the kernel may hold one more in metadata). */
#define MAX_VLAN 2
/* IPv6 extension headers walked before a packet is skipped and counted. */
#define MAX_EXT 6
/* No header of interest starts beyond this offset. */
#define MAX_L4_OFF 1024

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

struct eth_head {
	__u8 dst[6];
	__u8 src[6];
	__u16 proto; /* at offset 12: aligned, so one 16-bit load */
};

struct vlan_head {
	__u16 tci;
	__u16 proto;
};

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
	__u32 saddr[4];
	__u32 daddr[4];
};

/* The first 8 bytes of any IPv6 extension header (all of a fragment header). */
struct ext_head {
	__u8 nexthdr;
	__u8 len;
	__u16 frag_off; /* fragment header only: offset in the high 13 bits */
	__u32 rest;
};

/* The ICMP and ICMPv6 header, up to what an error quotes. */
struct icmp_head {
	__u8 type;
	__u8 code;
	__u16 check;
	__u32 rest;
};

/* The first 8 bytes of the TCP header an ICMP error quotes: all RFC 792
 * promises, and all that names the attempt. */
struct tcp_quote {
	__u16 source;
	__u16 dest;
	__u32 seq;
};

/* Room for headers that are not in the linear data. */
union hdr_buf {
	struct ipv4_head v4;
	struct ipv6_head v6;
	struct ext_head ext;
	struct tcp_head tcp;
};

/* Headers are read in one of two passes. The direct pass reads them in place
 * from the linear data, the common case and the fast one; when a header is not
 * there (paged data, or a packet cut short) it gives up with NEED_SLOW before
 * anything was changed, and the copying pass reads every header again with
 * bpf_skb_load_bytes, which also reads paged data. Neither pulls (linearises)
 * the skb. Two whole passes, rather than a choice at each header, keep the
 * paths the verifier has to explore few, and so the program quick to load. */
#define NEED_SLOW 1
/* Returned by the direct walk over IPv6 extension headers for an arriving ACK
 * that the gate lets through: the copying pass completes the handshake. (Other
 * ACKs the gate lets through are handled in the direct pass itself.) */
#define GATE_OPEN 2
/* Returned by a pass that found a segment of a handshake, which it described
 * in a struct segment: classify acts on it once, after the passes, so that the
 * code that changes the table exists once in a program, not once per pass. */
#define SEGMENT 3

/* Points *at to len header bytes at off; false when the direct pass cannot
 * read them in place or the copying pass finds the packet too short. (A flag,
 * not a NULL pointer, so that no NULL check follows every header.) */
static __always_inline int header(struct __sk_buff *skb, __u32 off, void *buf, const __u32 len,
				  const int direct, void **at)
{
	if (off > MAX_L4_OFF)
		return 0;
	if (direct) {
		void *data = (void *)(long)skb->data;
		void *data_end = (void *)(long)skb->data_end;
		if (data + off + len > data_end)
			return 0;
		*at = data + off;
		return 1;
	}
	if (bpf_skb_load_bytes(skb, off, buf, len) < 0)
		return 0;
	*at = buf;
	return 1;
}

/* What to return when a header is missing: try again copying, or give up. */
#define MISSING (direct ? NEED_SLOW : TC_ACT_UNSPEC)

/* What a pass found out about a segment of a handshake, in host order. */
struct segment {
	struct flowlat_key key; /* the direction is set when acting on it */
	__u32 seq;
	__u32 ack;
	__u32 syn_len;
	__u8 kind;  /* SEG_* */
	__u8 flags;
	/* SEG_ICMP: the result and FLOWLAT_REASON_* of the error, and its
	 * sender (network order, as the key's addresses). */
	__u8 result;
	__u8 reason;
	__u8 from[16];
};

/* What a TCP segment is to the handshake tracker. */
#define SEG_OTHER 0
#define SEG_SYN 1    /* SYN without ACK: a client opening */
#define SEG_SYNACK 2 /* a server answering */
#define SEG_RST 3
#define SEG_ACK 4    /* anything else with ACK: may complete an "in" handshake */
/* An arriving RST to a port and slot where an "in" attempt waits for its
 * ACK: the client may be resetting our SYN-ACK. */
#define SEG_CLIENT_RST 5
/* An ICMP or ICMPv6 error quoting a TCP segment, which may be our SYN (out,
 * arriving) or the client's SYN that this host rejects (in, leaving). */
#define SEG_ICMP 6

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

/* Reads one TCP segment whose header starts at l4 and, if it is part of a
 * handshake, describes it in *sg for act(). saddr/daddr point to the packet's
 * addresses (4 or 16 bytes). The IP header claims ip_len bytes from ip_start
 * on; only a SYN needs that (for the length of its data). */
static __always_inline int on_tcp(struct __sk_buff *skb, const int egress, const int direct,
				  __u8 family, const void *saddr, const void *daddr, __u32 a32,
				  __u32 b32, __u32 l4, __u32 ip_start, __u32 ip_len,
				  struct segment *sg)
{
	union hdr_buf buf;
	struct tcp_head *th;
	if (!header(skb, l4, &buf, sizeof(struct tcp_head), direct, (void **)&th))
		return MISSING;
	__u8 flags = th->flags;
	/* Segments of established connections, most of all traffic, end here:
	 * leaving ones at once (egress only starts "out" attempts and answers "in"
	 * ones), arriving ones unless an "in" attempt on their port and in their
	 * slot waits for its ACK. */
	if (!(flags & (TCP_SYN | TCP_RST))) {
		if (egress || !(flags & TCP_ACK))
			return TC_ACT_UNSPEC;
		if (!port_open(th->dest) || !gate_open(gate_slot(a32, b32, th->source, th->dest)))
			return TC_ACT_UNSPEC;
	}
	int kind = segment_kind(flags);
	/* A reset answering a SYN carries sequence number 0 (RFC 9293, 3.10.7.1:
	 * the SYN has no ACK to take one from). Every other reset is one of a
	 * connection, the common kind, and needs no lookup: a miss in a table the
	 * rest of the stack has pushed out of the caches costs several hundred ns.
	 * Unless it arrives where the gate says an "in" attempt waits for its
	 * ACK: then it may be the client's answer to our SYN-ACK, whatever its
	 * sequence number (our ISN+1, or the client's own with ACK, either of
	 * which may be 0); act() still looks a RST|ACK with sequence number 0
	 * that resets no SYN-ACK up as an answer to our SYN. */
	if (kind == SEG_RST) {
		if (!egress && port_open(th->dest) &&
		    gate_open(gate_slot(a32, b32, th->source, th->dest)))
			kind = SEG_CLIENT_RST;
		else if (th->seq != 0)
			return TC_ACT_UNSPEC;
	}
	/* A TCP header shorter than 20 bytes, or cut short, is malformed: the
	 * stack will drop it, and so do we. */
	__u32 hlen = (th->doff_res >> 4) * 4;
	if (hlen < 20 || skb->len < l4 + hlen)
		return TC_ACT_UNSPEC;

	/* The client is the packet's source for SYNs and the client's ACK and
	 * RST, its destination for SYN-ACKs and the server's RSTs. */
	int client_is_src = kind == SEG_SYN || kind == SEG_ACK || kind == SEG_CLIENT_RST;
	struct flowlat_key *key = &sg->key;
	__builtin_memset(key, 0, sizeof(*key));
	key->family = family;
	key->ifindex = skb->ifindex;
	if (family == 4) {
		__builtin_memcpy(key->client, client_is_src ? saddr : daddr, 4);
		__builtin_memcpy(key->server, client_is_src ? daddr : saddr, 4);
	} else {
		__builtin_memcpy(key->client, client_is_src ? saddr : daddr, 16);
		__builtin_memcpy(key->server, client_is_src ? daddr : saddr, 16);
	}
	key->client_port = client_is_src ? th->source : th->dest;
	key->server_port = client_is_src ? th->dest : th->source;

	/* The SYN's data: what the IP length leaves after both headers. */
	__u32 headers = l4 - ip_start + hlen;
	__u32 syn_len = ip_len > headers ? ip_len - headers : 0;
	if (syn_len > 0xffff)
		syn_len = 0xffff;
	sg->seq = bpf_ntohl(th->seq);
	sg->ack = bpf_ntohl(th->ack_seq);
	sg->syn_len = syn_len;
	sg->kind = kind;
	sg->flags = flags;
	return SEGMENT;
}

/* The reason and result of an ICMP error (FLOWLAT_REASON_*), or 0 for a
 * message that answers no SYN (an echo, a redirect, a packet too big, ...).
 * Port and protocol unreachable are refusals, as connect() reports them
 * (ECONNREFUSED); every other error makes the peer unreachable. */
static __always_inline __u8 icmp_reason(__u8 family, __u8 type, __u8 code, __u8 *result)
{
	*result = FLOWLAT_RESULT_UNREACHABLE;
	if (family == 4) {
		if (type == 3 && code < 16) {
			if (code == 2 || code == 3)
				*result = FLOWLAT_RESULT_REFUSED;
			return FLOWLAT_REASON_ICMP4_UNREACH + code;
		}
		if (type == 11 && code < 2)
			return FLOWLAT_REASON_TIME_EXCEEDED + code;
		return 0;
	}
	if (type == 1 && code < 8) {
		if (code == 4)
			*result = FLOWLAT_RESULT_REFUSED;
		return FLOWLAT_REASON_ICMP6_UNREACH + code;
	}
	if (type == 3 && code < 2)
		return FLOWLAT_REASON_TIME_EXCEEDED + code;
	return 0;
}

/* Reads an ICMP or ICMPv6 error whose header starts at l4 and that quotes a
 * TCP segment: SEGMENT with the quoted segment's key and sequence number in
 * *sg, for act() to match against an attempt's SYN (its ISN: a blind or
 * stale error ends nothing, RFC 5927). from: the error's sender, 4 or 16
 * bytes. Only in the copying pass: errors are rare, and kept out of the
 * direct pass the fast path stays as it was. */
static __always_inline int on_icmp(struct __sk_buff *skb, __u8 family, const void *from, __u32 l4,
				   struct segment *sg)
{
	union hdr_buf buf;
	struct icmp_head *ih;
	if (!header(skb, l4, &buf, sizeof(struct icmp_head), 0, (void **)&ih))
		return TC_ACT_UNSPEC;
	__u8 result;
	__u8 reason = icmp_reason(family, ih->type, ih->code, &result);
	if (!reason)
		return TC_ACT_UNSPEC;
	struct flowlat_key *key = &sg->key;
	__builtin_memset(key, 0, sizeof(*key));
	key->family = family;
	key->ifindex = skb->ifindex;
	__u32 q = l4 + sizeof(struct icmp_head);
	if (family == 4) {
		struct ipv4_head *ip;
		if (!header(skb, q, &buf, sizeof(struct ipv4_head), 0, (void **)&ip))
			return TC_ACT_UNSPEC;
		__u32 ihl = (ip->ver_ihl & 0xf) * 4;
		if ((ip->ver_ihl >> 4) != 4 || ihl < 20 || ip->protocol != IPPROTO_TCP)
			return TC_ACT_UNSPEC;
		/* The quoted SYN went from the client to the server. */
		__builtin_memcpy(key->client, &ip->saddr, 4);
		__builtin_memcpy(key->server, &ip->daddr, 4);
		__builtin_memset(sg->from, 0, sizeof(sg->from));
		__builtin_memcpy(sg->from, from, 4);
		q += ihl;
	} else {
		struct ipv6_head *ip;
		if (!header(skb, q, &buf, sizeof(struct ipv6_head), 0, (void **)&ip))
			return TC_ACT_UNSPEC;
		/* A SYN behind extension headers is not looked for in a quote. */
		if ((ip->ver_tc_flow & 0xf0) != 0x60 || ip->nexthdr != IPPROTO_TCP)
			return TC_ACT_UNSPEC;
		__builtin_memcpy(key->client, ip->saddr, 16);
		__builtin_memcpy(key->server, ip->daddr, 16);
		__builtin_memcpy(sg->from, from, 16);
		q += sizeof(struct ipv6_head);
	}
	struct tcp_quote *tq;
	if (!header(skb, q, &buf, sizeof(struct tcp_quote), 0, (void **)&tq))
		return TC_ACT_UNSPEC;
	key->client_port = tq->source;
	key->server_port = tq->dest;
	sg->seq = bpf_ntohl(tq->seq);
	sg->ack = 0;
	sg->syn_len = 0;
	sg->kind = SEG_ICMP;
	sg->flags = 0;
	sg->result = result;
	sg->reason = reason;
	return SEGMENT;
}

static __always_inline int on_ipv4(struct __sk_buff *skb, const int egress, const int direct,
				   __u32 off, struct segment *sg)
{
	union hdr_buf buf;
	struct ipv4_head *ip;
	if (!header(skb, off, &buf, sizeof(struct ipv4_head), direct, (void **)&ip))
		return MISSING;
	if (ip->protocol != IPPROTO_TCP) {
		if (ip->protocol != IPPROTO_ICMP)
			return TC_ACT_UNSPEC;
		if (direct)
			return NEED_SLOW;
		__u32 ihl = (ip->ver_ihl & 0xf) * 4;
		if ((ip->ver_ihl >> 4) != 4 || ihl < 20 || (ip->frag_off & bpf_htons(0x1fff)))
			return TC_ACT_UNSPEC;
		return on_icmp(skb, 4, &ip->saddr, off + ihl, sg);
	}
	__u32 ihl = (ip->ver_ihl & 0xf) * 4;
	/* Only IPv4 headers of a sane length, and never a non-first fragment
	 * (it has no TCP header). */
	if ((ip->ver_ihl >> 4) != 4 || ihl < 20 || (ip->frag_off & bpf_htons(0x1fff)))
		return TC_ACT_UNSPEC;
	return on_tcp(skb, egress, direct, 4, &ip->saddr, &ip->daddr, ip->saddr, ip->daddr,
		      off + ihl, off, bpf_ntohs(ip->tot_len), sg);
}

/* 1 when x == 0, else 0, for x < 2^31, without a branch. */
static __always_inline __u32 is_zero(__u32 x)
{
	OPAQUE(x);
	return (x - 1) >> 31;
}

/* The extension headers flowlat walks: hop-by-hop (0), routing (43),
 * fragment (44), AH (51), destination options (60). */
#define EXT_MASK ((1ULL << IPV6_HOPOPTS) | (1ULL << IPV6_ROUTING) | (1ULL << IPV6_FRAGMENT) | \
		  (1ULL << IPV6_AH) | (1ULL << IPV6_DSTOPTS))

/* The direct pass over IPv6 extension headers. It exists so that segments of
 * established connections behind such headers leave as cheaply as any other;
 * everything else (a SYN, a RST, an ACK the gate lets through, a header not
 * in the linear data) is left to the copying pass, which does the real work.
 *
 * This pass may be wrong about a packet that is not a TCP segment of interest,
 * as long as it can only let it pass or hand it on: a non-first fragment's
 * payload read as a TCP header either passes (what the copying pass would
 * do with it too) or goes to the copying pass, which skips it. So fragments
 * are not told apart here.
 *
 * Each header is stepped over without a branch that rejoins: the verifier
 * explores every path through a branch separately when the offset it leads
 * to is exact, so a branch per header kind would multiply the paths by five
 * per header. Here every branch leaves the function, and the only path on
 * through each header is the one the next header starts from. */
static __always_inline int ext_direct(struct __sk_buff *skb, const int egress, __u32 next, __u32 l4,
				      const struct ipv6_head *ip)
{
	/* Read once: nothing in the walk can move the packet. */
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
#pragma unroll
	for (int i = 0; i < MAX_EXT; i++) {
		if (next == IPPROTO_TCP)
			break;
		/* (next & 63 may alias a number of 64 or more to an extension
		 * header; such a packet is not TCP, and see below.) */
		if (!((EXT_MASK >> (next & 63)) & 1))
			return TC_ACT_UNSPEC; /* ESP, no next header, or not TCP */
		if (l4 > MAX_L4_OFF)
			return NEED_SLOW;
		struct ext_head *ext = data + l4;
		if ((void *)(ext + 1) > data_end)
			return NEED_SLOW;
		__u32 frag = is_zero(next ^ IPV6_FRAGMENT);
		__u32 ah = is_zero(next ^ IPV6_AH);
		/* A fragment header's length byte is reserved: its length is 8. */
		__u32 units = ext->len & (frag - 1);
		/* AH counts 4-byte units less 2, the others 8-byte units less 1. */
		l4 += (units << (3 - ah)) + 8;
		/* The verifier knows nothing of l4 after the shift: keep clang from
		 * moving the bound check above to a register it derived l4 from. */
		OPAQUE(l4);
		next = ext->nexthdr;
	}
	if (next != IPPROTO_TCP || l4 > MAX_L4_OFF)
		return NEED_SLOW; /* the copying pass counts a chain too long */
	struct tcp_head *th = data + l4;
	if ((void *)(th + 1) > data_end)
		return NEED_SLOW;
	__u8 flags = th->flags;
	if (flags & (TCP_SYN | TCP_RST))
		return NEED_SLOW;
	/* The addresses are read only now: holding them through the walk would
	 * take registers the walk needs. */
	if (egress || !(flags & TCP_ACK) || !port_open(th->dest) ||
	    !gate_open(gate_slot(ip->saddr[3], ip->daddr[3], th->source, th->dest)))
		return TC_ACT_UNSPEC;
	return GATE_OPEN;
}

static __always_inline int on_ipv6(struct __sk_buff *skb, const int egress, const int direct,
				   __u32 off, struct segment *sg)
{
	union hdr_buf buf;
	struct ipv6_head *ip;
	if (!header(skb, off, &buf, sizeof(struct ipv6_head), direct, (void **)&ip))
		return MISSING;
	if ((ip->ver_tc_flow & 0xf0) != 0x60)
		return TC_ACT_UNSPEC;
	__u8 next = ip->nexthdr;
	__u32 l4 = off + sizeof(struct ipv6_head);
	if (next != IPPROTO_TCP) {
		/* An ICMPv6 error right after the fixed header, the way this host's
		 * and routers' are sent. */
		if (next == IPPROTO_ICMPV6)
			return direct ? NEED_SLOW : on_icmp(skb, 6, ip->saddr, l4, sg);
		if (next != IPV6_HOPOPTS && next != IPV6_ROUTING && next != IPV6_DSTOPTS &&
		    next != IPV6_FRAGMENT && next != IPV6_AH)
			return TC_ACT_UNSPEC; /* UDP, ESP, ...: not TCP */
		if (direct)
			return ext_direct(skb, egress, next, l4, ip);
		/* A bounded loop: the verifier accepts it since Linux 5.3. The
		 * extension headers get a buffer of their own: buf holds the IPv6
		 * header, whose addresses are still needed. */
		union hdr_buf ebuf;
		for (int i = 0; i < MAX_EXT; i++) {
			if (next == IPPROTO_TCP)
				break;
			__u32 len;
			struct ext_head *ext;
			if (next != IPV6_HOPOPTS && next != IPV6_ROUTING && next != IPV6_DSTOPTS &&
			    next != IPV6_FRAGMENT && next != IPV6_AH)
				return TC_ACT_UNSPEC; /* ESP, no next header, or not TCP */
			if (!header(skb, l4, &ebuf, sizeof(struct ext_head), 0, (void **)&ext))
				return TC_ACT_UNSPEC;
			if (next == IPV6_FRAGMENT) {
				if (ext->frag_off & bpf_htons(0xfff8))
					return TC_ACT_UNSPEC; /* a non-first fragment */
				len = 8;
			} else if (next == IPV6_AH) {
				len = (ext->len + 2) * 4;
			} else {
				len = (ext->len + 1) * 8;
			}
			next = ext->nexthdr;
			l4 += len;
		}
		if (next != IPPROTO_TCP) {
			/* Still an extension header after MAX_EXT of them. */
			if (next == IPV6_HOPOPTS || next == IPV6_ROUTING || next == IPV6_DSTOPTS ||
			    next == IPV6_FRAGMENT || next == IPV6_AH)
				count(FLOWLAT_STAT_EXT_SKIPPED);
			return TC_ACT_UNSPEC;
		}
	}
	/* The IPv6 payload length counts from the end of the fixed header. */
	return on_tcp(skb, egress, direct, 6, ip->saddr, ip->daddr, ip->saddr[3], ip->daddr[3], l4,
		      off + sizeof(struct ipv6_head), bpf_ntohs(ip->payload_len), sg);
}

static __always_inline int handle(struct __sk_buff *skb, const int egress, const int l2,
				  const int direct, struct segment *sg)
{
	union hdr_buf buf;
	__u16 proto;
	__u32 off = 0;
	if (l2) {
		struct eth_head *eth;
		if (!header(skb, 0, &buf, sizeof(struct eth_head), direct, (void **)&eth))
			return MISSING;
		proto = eth->proto;
		off = ETH_HLEN;
		/* 802.1Q / 802.1ad tags in the packet; a tag the kernel already
		 * moved into the skb's metadata is simply not here. Untagged IPv4,
		 * the most common frame, is told first and goes straight on. */
#pragma unroll
		for (int i = 0; i < MAX_VLAN && proto != bpf_htons(ETH_P_IP); i++) {
			if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
				break;
			struct vlan_head *vh;
			if (!header(skb, off, &buf, sizeof(struct vlan_head), direct, (void **)&vh))
				return MISSING;
			proto = vh->proto;
			off += sizeof(struct vlan_head);
		}
	} else {
		/* L3 devices: the packet starts at the IP header. */
		proto = (__u16)skb->protocol;
	}
	if (proto == bpf_htons(ETH_P_IP))
		return on_ipv4(skb, egress, direct, off, sg);
	if (proto == bpf_htons(ETH_P_IPV6))
		return on_ipv6(skb, egress, direct, off, sg);
	return TC_ACT_UNSPEC;
}

/* Reads a packet's headers, in the direct pass and, if that gives up, in the
 * copying one: SEGMENT when *sg describes a segment of a handshake. */
static __always_inline int parse(struct __sk_buff *skb, const int egress, const int l2,
				 struct segment *sg)
{
	int r = handle(skb, egress, l2, 1, sg);
	/* Most packets end here. Tested first and alone, so that clang sends
	 * every such exit of the pass straight to the return, without first
	 * materialising what it returned. */
	if (r == TC_ACT_UNSPEC)
		return TC_ACT_UNSPEC;
	if (r != SEGMENT)
		r = handle(skb, egress, l2, 0, sg);
	return r;
}

#endif
