/* Which process is behind a socket. The cgroup hooks (attached to the root
 * of the cgroup v2 tree by src/host/process_hook.rs, beside any other
 * programs there) run in the context of the process that calls connect() or
 * bind(), and note it: a connect in the "conn_procs" slot of the socket's
 * cookie, a bind in the socket's "procs" storage. The classifier,
 * which runs where no process context is to be had, copies it into the
 * attempt: from the slot of a SYN's socket (out), or from the storage of a
 * SYN-ACK's listener (in). The slots are shared by all CPUs (see
 * FLOWLAT_PROC_SLOTS).
 *
 * The connect hook runs on every connect() of the host, so it does the
 * least it can: the cookie, one array slot, the pid and the name; it
 * allocates nothing. A bind is rarer, and a listener lives long: its
 * storage is allocated once. The hooks never change a call's outcome: they
 * return 1. */
#ifndef FLOWLAT_PROCS_H
#define FLOWLAT_PROCS_H

#include "maps.h"

/* Notes the calling process in a TCP socket's storage. */
static __always_inline void note_process(void *sk)
{
	struct flowlat_proc *v = bpf_sk_storage_get(&procs, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!v)
		return;
	v->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(v->comm, sizeof(v->comm));
}

/* connect(): the process that calls it owns the attempt its SYN starts,
 * which it sends within the same call. The slot's cookie is cleared
 * while it is written, so that a classifier run in between (for another
 * socket) takes nothing half written for its own. */
static __always_inline int on_connect(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	__u32 i = cookie & (FLOWLAT_PROC_SLOTS - 1);
	struct flowlat_proc_slot *s = bpf_map_lookup_elem(&conn_procs, &i);
	if (!s)
		return 1;
	s->cookie = 0;
	asm volatile("" : : : "memory");
	s->proc.pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(s->proc.comm, sizeof(s->proc.comm));
	asm volatile("" : : : "memory");
	s->cookie = cookie;
	return 1;
}

/* bind(): for a listener, the process that made it (pre-forked workers
 * inherit it from that one); a client's socket bound before its connect()
 * is noted again by the connect. */
static __always_inline int on_post_bind(struct bpf_sock *sk)
{
	if (sk->protocol == IPPROTO_TCP)
		note_process(sk);
	return 1;
}

#define FLOWLAT_PROC_PROGRAMS                                                  \
	SEC("cgroup/connect4") int flowlat_connect4(struct bpf_sock_addr *ctx) \
	{                                                                      \
		return on_connect(ctx);                                        \
	}                                                                      \
	SEC("cgroup/connect6") int flowlat_connect6(struct bpf_sock_addr *ctx) \
	{                                                                      \
		return on_connect(ctx);                                        \
	}                                                                      \
	SEC("cgroup/post_bind4") int flowlat_bind4(struct bpf_sock *sk)        \
	{                                                                      \
		return on_post_bind(sk);                                       \
	}                                                                      \
	SEC("cgroup/post_bind6") int flowlat_bind6(struct bpf_sock *sk)        \
	{                                                                      \
		return on_post_bind(sk);                                       \
	}

/* out: the process that called connect() on the SYN's socket, from the
 * slot of its cookie. */
static __always_inline void proc_of_socket(struct __sk_buff *skb, struct flowlat_proc *to)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	if (!cookie)
		return;
	__u32 i = cookie & (FLOWLAT_PROC_SLOTS - 1);
	struct flowlat_proc_slot *s = bpf_map_lookup_elem(&conn_procs, &i);
	if (s && s->cookie == cookie)
		*to = s->proc;
}

/* in: the listener's process, at our SYN-ACK, whose socket is the request
 * sock of the listener (none with SYN cookies). */
static __always_inline void proc_of_listener(struct __sk_buff *skb, struct flowlat_proc *to)
{
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return;
	sk = bpf_get_listener_sock(sk);
	if (!sk)
		return;
	struct flowlat_proc *v = bpf_sk_storage_get(&procs, sk, 0, 0);
	if (v)
		*to = *v;
}

/* Whether the filter's processes (--pid, --comm) hold an attempt's. */
static __always_inline int proc_kept(const struct flowlat_proc *pr)
{
	if (pr->pid == 0)
		return 0;
	__u32 n = filter.pids;
#pragma unroll
	for (int i = 0; i < FLOWLAT_MAX_PROCS; i++) {
		if (i >= n)
			break;
		if (filter.pid[i] == pr->pid)
			return 1;
	}
	__u64 a, b;
	__builtin_memcpy(&a, pr->comm, 8);
	__builtin_memcpy(&b, pr->comm + 8, 8);
	n = filter.comms;
#pragma unroll
	for (int i = 0; i < FLOWLAT_MAX_PROCS; i++) {
		if (i >= n)
			break;
		__u64 c, d;
		__builtin_memcpy(&c, filter.comm[i], 8);
		__builtin_memcpy(&d, filter.comm[i] + 8, 8);
		if (a == c && b == d)
			return 1;
	}
	return 0;
}

#endif
