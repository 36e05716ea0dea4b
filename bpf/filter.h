/* The filters (--port, --net, --dir, --cgroup; struct flowlat_filter in
 * bpf/flowlat.h): which attempts are measured at all. Apart from the handshake,
 * which asks them at a SYN and at our first SYN-ACK, because they decide what
 * is measured and the handshake only how. */
#ifndef FLOWLAT_FILTER_H
#define FLOWLAT_FILTER_H

#include "maps.h"
#include "table.h"

/* Whether this packet's socket lies in one of the filter's cgroups, or below. */
static __always_inline int in_cgroups(struct __sk_buff *skb)
{
	__u32 n = filter.cgroups;
#pragma unroll
	for (int i = 0; i < FLOWLAT_MAX_CGROUPS; i++) {
		if (i >= n)
			break;
		if (bpf_skb_ancestor_cgroup_id(skb, filter.cgroup_level[i]) == filter.cgroup_id[i])
			return 1;
	}
	return 0;
}

/* Whether a port (network order) has its bit in the filter's bitmap. */
static __always_inline __u32 port_bit(__u16 port)
{
	__u32 p = bpf_ntohs(port);
	/* Tell the verifier what clang knows: a byte swap's 16 bits. */
	OPAQUE(p);
	p &= 0xffff;
	return (filter.ports[p >> 5] >> (p & 31)) & 1;
}

/* Whether the client's or the server's address is in one of the networks. */
static __always_inline int in_nets(const struct flowlat_key *key)
{
	struct flowlat_net_key nk;
	__builtin_memset(&nk, 0, sizeof(nk));
	nk.prefixlen = 8 + 128;
	nk.family = key->family;
	__builtin_memcpy(nk.addr, key->client, 16);
	if (bpf_map_lookup_elem(&nets, &nk))
		return 1;
	__builtin_memcpy(nk.addr, key->server, 16);
	return bpf_map_lookup_elem(&nets, &nk) != 0;
}

/* Whether the filters keep the attempt a SYN starts, as far as the SYN tells:
 * an arriving SYN has no local socket, so "in" meets the cgroup filter at our
 * SYN-ACK. */
static __always_inline int syn_kept(struct __sk_buff *skb, const int egress,
				    const struct flowlat_key *key, __u32 kinds)
{
	if ((kinds & FLOWLAT_FILTER_DIR) && !((filter.dirs >> key->dir) & 1))
		return 0;
	if ((kinds & FLOWLAT_FILTER_PORT) && !port_bit(key->client_port) &&
	    !port_bit(key->server_port))
		return 0;
	if ((kinds & FLOWLAT_FILTER_NET) && !in_nets(key))
		return 0;
	if (egress && (kinds & FLOWLAT_FILTER_CGROUP) && !in_cgroups(skb))
		return 0;
	return 1;
}

/* Counts a SYN the filters dropped, once per attempt: a slot of the memo
 * remembers the last dropped attempt that hashed there, so its
 * retransmissions are recognised. */
static __always_inline void count_dropped_syn(const struct flowlat_key *key, __u32 isn)
{
	__u32 a, b;
	int at = key->family == 4 ? 0 : 12;
	__builtin_memcpy(&a, key->client + at, 4);
	__builtin_memcpy(&b, key->server + at, 4);
	__u32 h = (a * 0x9E3779B1u) ^ b ^ ((__u32)key->client_port << 16 | key->server_port);
	h = (h ^ key->dir) * 0x85EBCA6Bu;
	h = (h ^ isn) * 0xC2B2AE35u;
	h ^= h >> 16;
	__u32 *slot = &filter.memo[h & (FLOWLAT_FILTER_MEMO - 1)];
	if (*slot == h)
		return;
	*slot = h;
	count(FLOWLAT_STAT_FILTERED);
}

/* Drops an attempt the cgroup filter rejects once its listener is known, or
 * that turned out to have none: no record, counted as filtered. */
static __always_inline void drop_filtered(const struct flowlat_key *key,
					  const struct table_ref *ref)
{
	if (table_remove(key, ref) != 0)
		return;
	count(FLOWLAT_STAT_REMOVED);
	count(FLOWLAT_STAT_FILTERED);
}

/* Whether an "in" attempt must be dropped for want of a listener: the cgroup
 * filter is set, and no SYN-ACK of ours showed one. */
static __always_inline int in_unattributed(const struct flowlat_pending *p)
{
	return p->state == FLOWLAT_STATE_SYN && (filter.kinds & FLOWLAT_FILTER_CGROUP);
}

#endif
