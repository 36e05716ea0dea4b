/* The handshake: what each segment of one does to its attempt in the table,
 * the measurement contract (bpf/probe.c) as code. Apart from the parsing
 * before it (bpf/parse.h) and the report after it (bpf/report.h), so that a
 * build can stop between them (bpf/ablate/). */
#ifndef FLOWLAT_HANDSHAKE_H
#define FLOWLAT_HANDSHAKE_H

#include "maps.h"
#include "table.h"
#include "gate.h"
#include "filter.h"
#include "parse.h"
#include "report.h"
#include "procs.h"

/* act() has taken no attempt out of the table (struct flowlat_event.result). */
#define NOTHING_ENDED 0xff

/* Takes an attempt that ended out of the table into *ev, to be reported,
 * unless user space's timeout sweep removed it first: whoever deletes the
 * entry reports the attempt, so it is reported exactly once. The entry is
 * copied before it is deleted, because the element's memory may be reused as
 * soon as it is freed; *ev is then the only copy.
 *
 * Where the client may still send the attempt's SYN, the entry becomes a
 * tombstone in place instead (user space's sweep removes it once the client
 * has been quiet for its hold), so that those SYNs count on the reported
 * attempt rather than start one that would time out:
 * - after an ICMP error (FLOWLAT_STATE_REPORTED, as a timeout's): see
 *   on_icmp_error();
 * - after an end config.late_answer_us or more after the first SYN
 *   (FLOWLAT_STATE_ANSWERED): the client may have retransmitted its SYN
 *   before the answer reached it, and that copy can arrive after the answer,
 *   overtaken by the client's ACK (a veth's backlogs on two CPUs reorder
 *   them, and so can a network). A quick answer, the common case, leaves
 *   none: no copy can be on its way.
 * A new ISN leaves none: the key is the new attempt's. */
static __always_inline int take(const struct flowlat_key *key, const struct table_ref *ref,
				struct flowlat_event *ev, __u64 end_ns, __u8 result, __u8 reason)
{
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->p = *ref->p;
	int icmp = reason >= FLOWLAT_REASON_ICMP4_UNREACH;
	int taken;
	if (reason != FLOWLAT_REASON_NEW_ISN &&
	    (icmp || end_ns - ev->p.first_syn_ns >= (__u64)config.late_answer_us * 1000)) {
		/* The tombstone is the record's copy with two fields changed,
		 * written from the record and changed back: a copy of its own
		 * would not fit the stack beside the record. */
		__u8 state = ev->p.state;
		__u64 last_syn_ns = ev->p.last_syn_ns;
		ev->p.state = icmp ? FLOWLAT_STATE_REPORTED : FLOWLAT_STATE_ANSWERED;
		ev->p.last_syn_ns = end_ns;
		taken = table_replace(key, ref, &ev->p) == 0;
		ev->p.state = state;
		ev->p.last_syn_ns = last_syn_ns;
		/* Counted as a new entry, which user space's sweep removes. */
		if (taken)
			count(FLOWLAT_STAT_CREATED);
	} else {
		taken = table_remove(key, ref) == 0;
	}
	if (!taken) {
		ev->result = NOTHING_ENDED;
		return 0;
	}
	count(FLOWLAT_STAT_REMOVED);
	if (ev->p.state == FLOWLAT_STATE_SYNACK)
		gate_add(ev->p.bank, key_slot(key), 0);
	ev->key = *key;
	ev->end_ns = end_ns;
	ev->result = result;
	ev->reason = reason;
	return 1;
}

/* Whether an entry is a tombstone: an attempt reported already, kept so that
 * its client's copies of the same SYN start no second record. */
static __always_inline int reported(const struct flowlat_pending *p)
{
	return p->state == FLOWLAT_STATE_REPORTED || p->state == FLOWLAT_STATE_ANSWERED;
}

/* A client's SYN: a new attempt, a retransmission (same ISN), or a new attempt
 * that replaces an earlier one on the same tuple (new ISN). Most SYNs are new
 * attempts, so the entry is inserted first and looked up only when the tuple
 * already has one: one hash-table operation instead of two. */
static __always_inline void on_syn(struct __sk_buff *skb, const int egress,
				   const struct flowlat_key *key, __u32 isn, __u16 len,
				   struct flowlat_event *ev, struct flowlat_pending *n)
{
	__u64 now = bpf_ktime_get_ns();
	__builtin_memset(n, 0, sizeof(*n));
	n->first_syn_ns = now;
	n->last_syn_ns = now;
	n->client_isn = isn;
	n->syns = 1;
	n->syn_len = len;
	n->state = FLOWLAT_STATE_SYN;
	/* out: the SYN leaves from the connecting socket. An arriving SYN has no
	 * local socket yet; "in" takes the listener's from our SYN-ACK. */
	if (egress) {
		n->cgroup_id = bpf_skb_cgroup_id(skb);
		if (config.flags & FLOWLAT_CFG_PROCS)
			proc_of_socket(skb, &n->proc);
		if ((filter.kinds & FLOWLAT_FILTER_PROC) && !proc_kept(&n->proc)) {
			count_dropped_syn(key, isn);
			return;
		}
	}
	/* An arriving SYN's answer leaves at once, from the same CPU, and reads
	 * its gate slot's line: start loading it now, beside the table's bucket,
	 * so that one wait covers both misses. (After the clock, which would
	 * wait for it.) */
	else
		gate_touch(key_slot(key));
	if (table_add(key, n) == 0) {
		count(FLOWLAT_STAT_CREATED);
		return;
	}
	struct table_ref ref;
	struct flowlat_pending *p = table_find(key, &ref);
	/* Removed in between by the other hook or the sweep, or being rewritten
	 * there (see bucket_holds()): the attempt has ended, and a SYN that
	 * crossed its end is a copy of its own. */
	if (!p)
		return;
	if (p->client_isn == isn) {
		p->syns += 1;
		if (len > p->syn_len)
			p->syn_len = len;
		/* "in" keeps the last SYN before our first SYN-ACK; a reported
		 * attempt's retransmissions keep its tombstone alive. */
		if (p->state != FLOWLAT_STATE_SYNACK)
			p->last_syn_ns = now;
		return;
	}
	if (reported(p)) {
		if (table_remove(key, &ref) == 0)
			count(FLOWLAT_STAT_REMOVED);
	} else if (!egress && in_unattributed(p)) {
		drop_filtered(key, &ref);
	} else {
		take(key, &ref, ev, now, FLOWLAT_RESULT_ABANDONED, FLOWLAT_REASON_NEW_ISN);
	}
	if (table_add(key, n) == 0)
		count(FLOWLAT_STAT_CREATED);
}

/* Whether a SYN-ACK or RST acknowledges the client's SYN: ISN+1, or up to
 * ISN+1+len when the SYN carried data (TCP Fast Open) the server accepted. */
static __always_inline int acks_syn(const struct flowlat_pending *p, __u32 ack)
{
	return ack - (p->client_isn + 1) <= p->syn_len;
}

/* out: the server's SYN-ACK or RST arrives for our client's SYN. */
static __always_inline void on_answer_out(const struct flowlat_key *key, const struct segment *sg,
					  __u8 result, struct flowlat_event *ev)
{
	struct table_ref ref;
	struct flowlat_pending *p = table_find(key, &ref);
	if (!p || p->state != FLOWLAT_STATE_SYN || !acks_syn(p, sg->ack))
		return;
	__u64 now = bpf_ktime_get_ns();
	__u8 reason = result == FLOWLAT_RESULT_OK ? FLOWLAT_REASON_NONE : FLOWLAT_REASON_RST;
	if (!take(key, &ref, ev, now, result, reason))
		return;
	ev->p.first_synack_ns = now;
	ev->p.last_synack_ns = now;
	ev->p.synacks = 1;
	if (result == FLOWLAT_RESULT_OK)
		ev->p.server_isn = sg->seq;
}

/* in: this side's SYN-ACK leaves for the client's SYN. */
static __always_inline void on_synack_in(struct __sk_buff *skb, const struct flowlat_key *key,
					 const struct segment *sg)
{
	struct table_ref ref;
	struct flowlat_pending *p = table_find(key, &ref);
	if (!p || reported(p) || !acks_syn(p, sg->ack))
		return;
	__u64 now = bpf_ktime_get_ns();
	if (p->synacks == 0) {
		if ((filter.kinds & FLOWLAT_FILTER_CGROUP) && !in_cgroups(skb)) {
			drop_filtered(key, &ref);
			return;
		}
		/* The gate's line and the bank's are both cold here: load the
		 * slot's pair first, so that the two misses overlap and the atomic
		 * add below waits for one of them, not for both in turn. */
		__u32 slot = key_slot(key);
		gate_touch(slot);
		/* User space switches banks through its mapping: read it once. */
		__u32 bank = *(volatile __u32 *)&config.bank & 1;
		p->first_synack_ns = now;
		p->server_isn = sg->seq;
		p->bank = bank;
		p->state = FLOWLAT_STATE_SYNACK;
		/* The SYN-ACK's socket is a request sock, which the helper
		 * resolves to its listener. */
		p->cgroup_id = bpf_skb_cgroup_id(skb);
		if (config.flags & FLOWLAT_CFG_PROCS) {
			proc_of_listener(skb, &p->proc);
			/* A listener no hook of ours saw is looked up by user
			 * space, which applies the filter then. */
			if ((filter.kinds & FLOWLAT_FILTER_PROC) && p->proc.pid &&
			    !proc_kept(&p->proc)) {
				drop_filtered(key, &ref);
				return;
			}
		}
		gate_add(bank, slot, 1);
		port_mark(bank, key->server_port);
	}
	p->last_synack_ns = now;
	p->synacks += 1;
}

/* in: this side refuses the client's SYN with a RST. */
static __always_inline void on_rst_in(const struct flowlat_key *key, __u32 ack,
				      struct flowlat_event *ev)
{
	struct table_ref ref;
	struct flowlat_pending *p = table_find(key, &ref);
	if (!p || p->state != FLOWLAT_STATE_SYN || !acks_syn(p, ack))
		return;
	/* The kernel's RST for a closed port has no socket to attribute it to. */
	if (in_unattributed(p)) {
		drop_filtered(key, &ref);
		return;
	}
	take(key, &ref, ev, bpf_ktime_get_ns(), FLOWLAT_RESULT_REFUSED, FLOWLAT_REASON_RST);
}

/* in: the client's ACK of our SYN-ACK completes the handshake. */
static __always_inline void on_ack_in(const struct flowlat_key *key, __u32 ack,
				      struct flowlat_event *ev)
{
	struct table_ref ref;
	struct flowlat_pending *p = table_find(key, &ref);
	if (!p || p->state != FLOWLAT_STATE_SYNACK || ack != p->server_isn + 1)
		return;
	take(key, &ref, ev, bpf_ktime_get_ns(), FLOWLAT_RESULT_OK, FLOWLAT_REASON_NONE);
}

/* in: the client resets our SYN-ACK (it gave up before our answer came, or
 * its address was spoofed). A reset answering a segment that has ACK on takes
 * its sequence number from that segment's acknowledgment field (RFC 9293,
 * 3.10.7.1 for a socket already closed, 3.10.7.3 in SYN-SENT): our SYN-ACK's,
 * the client's ISN+1 (up to ISN+1+data after a SYN with data), with ACK off,
 * which is what Linux sends. A client that took our SYN-ACK and then aborts
 * acknowledges it instead (ack = our ISN+1). A RST that fits no attempt in
 * this state changes nothing. */
static __always_inline void on_client_rst(const struct flowlat_key *key, const struct segment *sg,
					  struct flowlat_event *ev)
{
	struct table_ref ref;
	struct flowlat_pending *p = table_find(key, &ref);
	if (!p || p->state != FLOWLAT_STATE_SYNACK)
		return;
	/* A plain RST takes its number from what our SYN-ACK acknowledged; one
	 * with an ACK must acknowledge our SYN-ACK. */
	int fits = (sg->flags & TCP_ACK) ? sg->ack == p->server_isn + 1 : acks_syn(p, sg->seq);
	if (!fits)
		return;
	take(key, &ref, ev, bpf_ktime_get_ns(), FLOWLAT_RESULT_ABANDONED,
	     FLOWLAT_REASON_CLIENT_RESET);
}

/* The key of the other side's attempt on the same connection. */
static __always_inline void swap_ends(struct flowlat_key *key)
{
	__u8 a[16];
	__builtin_memcpy(a, key->client, sizeof(a));
	__builtin_memcpy(key->client, key->server, sizeof(a));
	__builtin_memcpy(key->server, a, sizeof(a));
	__u16 port = key->client_port;
	key->client_port = key->server_port;
	key->server_port = port;
}

/* An ICMP error quoting the client's SYN: arriving, it answers our client
 * (out); leaving, this host rejects a client beyond (in). Only while no
 * SYN-ACK was seen, and only for the SYN's own ISN.
 *
 * The client may send the same SYN again after the error: Linux does when
 * the error came while connect() held the socket (it is then a soft error),
 * and other systems take most errors as soft and keep trying. Those SYNs
 * belong to the attempt just reported, so take() leaves a tombstone in its
 * place, as a timeout's: its retransmissions, and the errors they draw, start
 * no second record. */
static __always_inline void on_icmp_error(const struct flowlat_key *key, const struct segment *sg,
					  struct flowlat_event *ev)
{
	struct table_ref ref;
	struct flowlat_pending *p = table_find(key, &ref);
	if (!p || p->state != FLOWLAT_STATE_SYN || p->client_isn != sg->seq)
		return;
	/* Rejected by this host's firewall before any listener answered: no
	 * socket to hold against a cgroup filter, as with a RST. */
	if (key->dir == FLOWLAT_DIR_IN && in_unattributed(p)) {
		drop_filtered(key, &ref);
		return;
	}
	if (!take(key, &ref, ev, bpf_ktime_get_ns(), sg->result, sg->reason))
		return;
	__builtin_memcpy(FLOWLAT_EVENT_FROM(ev), sg->from, sizeof(sg->from));
}

/* Acts on a segment of a handshake that a pass described. Returns whether
 * that ended an attempt, which it took out of the table into *ev: the caller
 * reports it, so that a build can stop before the report. */
static __always_inline int act(struct __sk_buff *skb, const int egress, struct segment *sg,
			       struct flowlat_scratch *s)
{
	struct flowlat_event *ev = &s->ev;
	struct flowlat_key *key = &sg->key;
	/* Kept in memory: clang would otherwise carry its fields in registers
	 * and merge them, undefined where nothing ended, which the verifier
	 * rejects. */
	asm volatile("" : : "r"(ev) : "memory");
	ev->result = NOTHING_ENDED;
	int kind = sg->kind;
	if (kind == SEG_CLIENT_RST) {
		key->dir = FLOWLAT_DIR_IN;
		on_client_rst(key, sg, ev);
		/* A RST|ACK with sequence number 0 that reset no SYN-ACK of ours
		 * may still refuse our SYN: looked up below as the server's, with
		 * the ends the other way round. */
		if (ev->result != NOTHING_ENDED || sg->seq != 0 || !(sg->flags & TCP_ACK))
			return ev->result != NOTHING_ENDED;
		swap_ends(key);
		kind = SEG_RST;
	}
	if (kind == SEG_ICMP) {
		key->dir = egress ? FLOWLAT_DIR_IN : FLOWLAT_DIR_OUT;
		on_icmp_error(key, sg, ev);
	} else if (kind == SEG_SYN) {
		key->dir = egress ? FLOWLAT_DIR_OUT : FLOWLAT_DIR_IN;
		__u32 kinds = filter.kinds;
		if (kinds && !syn_kept(skb, egress, key, kinds))
			count_dropped_syn(key, sg->seq);
		else
			on_syn(skb, egress, key, sg->seq, sg->syn_len, ev, &s->n);
	} else if (kind == SEG_RST && !(sg->flags & TCP_ACK)) {
		/* Not an answer: a RST answering a SYN carries ACK = ISN+1. */
	} else if (egress) {
		key->dir = FLOWLAT_DIR_IN;
		if (kind == SEG_SYNACK)
			on_synack_in(skb, key, sg);
		else
			on_rst_in(key, sg->ack, ev);
	} else if (kind == SEG_ACK) {
		key->dir = FLOWLAT_DIR_IN;
		on_ack_in(key, sg->ack, ev);
	} else {
		key->dir = FLOWLAT_DIR_OUT;
		on_answer_out(key, sg, kind == SEG_SYNACK ? FLOWLAT_RESULT_OK : FLOWLAT_RESULT_REFUSED,
			      ev);
	}
	return ev->result != NOTHING_ENDED;
}

/* This CPU's scratch record and new attempt (struct flowlat_scratch). */
static __always_inline struct flowlat_scratch *scratch_space(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&scratch, &zero);
}

/* The handshake's part of a program: acts on a segment of one, and reports
 * the attempt that ended, if any. */
static __always_inline void handshake(struct __sk_buff *skb, const int egress, struct segment *sg)
{
	struct flowlat_scratch *s = scratch_space();
	if (s && act(skb, egress, sg, s))
		report(skb, &s->ev);
}

#endif
