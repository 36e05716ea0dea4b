/* The ACK gate (bpf/flowlat.h): counters that let an arriving ACK of an
 * established connection, most of a server's packets, pass without a look at
 * the table. Parsing reads it (bpf/parse.h) and the handshake keeps its counts
 * (bpf/handshake.h): one header, so that both hash a connection to the same
 * slot. */
#ifndef FLOWLAT_GATE_H
#define FLOWLAT_GATE_H

#include "maps.h"

/* The gate slot of a connection: the same for both directions of it. */
static __always_inline __u32 gate_slot(__u32 a, __u32 b, __u16 pa, __u16 pb)
{
	return ((a ^ b ^ (__u32)(pa ^ pb)) * 0x9E3779B1u) >> (32 - 15);
}

static __always_inline __u32 key_slot(const struct flowlat_key *key)
{
	__u32 a, b;
	int at = key->family == 4 ? 0 : 12;
	__builtin_memcpy(&a, key->client + at, 4);
	__builtin_memcpy(&b, key->server + at, 4);
	return gate_slot(a, b, key->client_port, key->server_port);
}

/* Whether any "in" attempt in this slot waits for its ACK: both banks' counters
 * in one aligned 8-byte load. */
static __always_inline int gate_open(__u32 slot)
{
	slot &= FLOWLAT_GATE_SLOTS - 1;
	return *(__u64 *)__builtin_assume_aligned(gate.n[slot], 8) != 0;
}

/* The group of 32 local ports (port in network order) an ACK's or a
 * SYN-ACK's port belongs to. */
static __always_inline __u32 port_group(__u16 port)
{
	__u32 p = bpf_ntohs(port);
	/* Tell the verifier what clang knows: a byte swap's 16 bits. */
	OPAQUE(p);
	return (p & 0xffff) >> 5;
}

/* Whether an "in" attempt may wait for its ACK on a port of this one's group,
 * in either bank: both banks' words in one aligned 8-byte load. */
static __always_inline int port_open(__u16 port)
{
	return *(__u64 *)__builtin_assume_aligned(gate.ports[port_group(port)], 8) != 0;
}

/* Marks a local port's group as one that "in" attempts wait on, in a bank.
 * Read first: a server's few groups are marked once per bank, and their line
 * is then only read. Two CPUs marking at once make it 2, no matter. */
static __always_inline void port_mark(__u32 bank, __u16 port)
{
	__u32 *w = &gate.ports[port_group(port)][bank & 1];
	if (*(volatile __u32 *)w == 0)
		__sync_fetch_and_add(w, 1);
}

/* Loads a slot's pair of counters, for nothing but to have its cache line
 * on the way. */
static __always_inline void gate_touch(__u32 slot)
{
	slot &= FLOWLAT_GATE_SLOTS - 1;
	(void)*(volatile __u64 *)__builtin_assume_aligned(gate.n[slot], 8);
}

static __always_inline void gate_add(__u32 bank, __u32 slot, int up)
{
	bank &= 1;
	slot &= FLOWLAT_GATE_SLOTS - 1;
	if (up)
		__sync_fetch_and_add(&gate.n[slot][bank], 1);
	else
		__sync_fetch_and_sub(&gate.n[slot][bank], 1);
}

#endif
