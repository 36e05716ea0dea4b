/* The contract between the classifier (bpf/probe.c) and user space
 * (src/probe/abi.rs mirrors every struct here with #[repr(C)]; a test checks that
 * sizes and offsets agree). Change both together. */
#ifndef FLOWLAT_H
#define FLOWLAT_H

#include "bpf_defs.h"

/* Which side the client is on, seen from the interface. */
#define FLOWLAT_DIR_OUT 0 /* client here: its SYN leaves on egress */
#define FLOWLAT_DIR_IN 1  /* client beyond: its SYN arrives on ingress */

/* How an attempt ended. TIMEOUT is only ever produced by user space. */
#define FLOWLAT_RESULT_OK 0
#define FLOWLAT_RESULT_REFUSED 1
#define FLOWLAT_RESULT_TIMEOUT 2
#define FLOWLAT_RESULT_ABANDONED 3 /* the client gave up: a new ISN on the tuple, or its RST */
/* An ICMP or ICMPv6 error quoting the SYN answered it: no route, a firewall's
 * rejection, a host down behind its last router, a loop. (Port and protocol
 * unreachable are REFUSED, as connect() reports them.) */
#define FLOWLAT_RESULT_UNREACHABLE 4
#define FLOWLAT_RESULTS 5

/* Why an attempt that did not complete ended (struct flowlat_event.reason).
 * The kernel sets all but the timeouts', which user space's sweep finds. */
#define FLOWLAT_REASON_NONE 0        /* ok */
#define FLOWLAT_REASON_RST 1         /* refused by a RST */
#define FLOWLAT_REASON_NEW_ISN 2     /* abandoned: a SYN with a new ISN on the tuple */
#define FLOWLAT_REASON_CLIENT_RESET 3 /* abandoned: the client reset our SYN-ACK */
#define FLOWLAT_REASON_NO_ANSWER 4   /* timeout: no SYN-ACK (user space) */
#define FLOWLAT_REASON_NO_ACK 5      /* timeout, in: our SYN-ACK left, no ACK came (user space) */
/* ICMP errors, by type and code: IPv4 destination unreachable codes 0-15 at
 * 16 + code, time exceeded (IPv4 type 11, ICMPv6 type 3) codes 0-1 at
 * 32 + code, ICMPv6 destination unreachable codes 0-7 at 40 + code. */
#define FLOWLAT_REASON_ICMP4_UNREACH 16
#define FLOWLAT_REASON_TIME_EXCEEDED 32
#define FLOWLAT_REASON_ICMP6_UNREACH 40
#define FLOWLAT_REASONS 48

/* State of a pending attempt. */
#define FLOWLAT_STATE_SYN 0    /* SYN seen, no SYN-ACK yet */
#define FLOWLAT_STATE_SYNACK 1 /* in: SYN-ACK sent, waiting for the client's ACK */
/* Reported (as a timeout by user space, or ended by an ICMP error) and kept
 * for a while, so that the client's later retransmissions of the same SYN
 * start no second record. */
#define FLOWLAT_STATE_REPORTED 2
/* Reported when an answer ended it late, config.late_answer_us or more after
 * its first SYN, and kept by the classifier until user space's sweep removes
 * it a moment later: a copy of the SYN the client retransmitted before the
 * answer reached it may still be on its way, overtaken by the client's ACK,
 * and must start no second record. */
#define FLOWLAT_STATE_ANSWERED 3
/* What user space sets config.late_answer_us to. Clients retransmit a SYN
 * first a second after it (RFC 6298; Linux); 200 ms, Linux's smallest
 * retransmission timeout, leaves room for others. */
#define FLOWLAT_LATE_ANSWER_US 200000

/* Per-CPU counters: indices into the "stats" map's one value, an array of
 * FLOWLAT_STAT_MAX __u64 (one value, so that a CPU's counters share a cache
 * line; an element per counter would put each in a line of its own). */
#define FLOWLAT_STAT_SENT 0        /* records put in their CPU's batch */
#define FLOWLAT_STAT_SEND_FAILED 1 /* records of batches the perf ring had no room for */
#define FLOWLAT_STAT_CREATED 2     /* pending entries inserted */
#define FLOWLAT_STAT_REMOVED 3     /* pending entries the classifier removed */
#define FLOWLAT_STAT_EXT_SKIPPED 4 /* IPv6 packets with more extension headers than we walk */
#define FLOWLAT_STAT_FILTERED 5    /* attempts the filters dropped */
#define FLOWLAT_STAT_BELOW_MIN_RTT 6 /* ok attempts that sent no record: rtt under min_rtt_ns */
#define FLOWLAT_STAT_AGG_FAILED 7  /* ended attempts the aggregation map had no room for */
#define FLOWLAT_STAT_MAX 8

/* The ACK gate: most packets arriving at a server are ACKs of established
 * connections, and only the one completing an "in" handshake matters. Before
 * looking an ACK up, the classifier checks a counter for its connection's slot
 * (a symmetric hash of addresses and ports): the number of "in" attempts in
 * that slot waiting for their ACK. Counters go up at our first SYN-ACK and down
 * when the attempt completes or is replaced. Attempts that time out or are
 * evicted never count down; to bound that, there are two banks: new attempts
 * count in the active one, and user space zeroes the other one and makes it
 * active once every --syn-timeout + 1 s, when nothing counted there can still
 * be waiting. A slot's count is the sum over both banks. */
#define FLOWLAT_GATE_SLOTS 32768 /* a power of two */
#define FLOWLAT_GATE_BANKS 2
/* Before its slot, an arriving ACK's local port is checked, by groups of 32
 * ports: a group's word in a bank is non-zero once our first SYN-ACK of an
 * attempt that counts in that bank left one of its ports, and is zeroed with
 * the bank. An ACK to a port this host answered no SYN on (an "out"
 * connection's, at the client's end, whose ports are ephemeral ones) cannot
 * complete an "in" attempt, and its slot's cache line, cold for a connection's
 * first arriving segment, is not read; the 16 KiB of group words stay in the
 * cache. (Words, not bits: setting a bit atomically needs Linux 5.12.) */
#define FLOWLAT_GATE_PORT_WORDS (65536 / 32)

/* The global "gate" (in .bss), which user space mmaps to zero a bank.
 * A slot's two bank counters sit side by side, so that the check of an ACK is
 * one aligned 8-byte load from one cache line; so do a port word's two banks. */
struct flowlat_gate {
	__u32 n[FLOWLAT_GATE_SLOTS][FLOWLAT_GATE_BANKS];
	__u32 ports[FLOWLAT_GATE_PORT_WORDS][FLOWLAT_GATE_BANKS];
};

/* Settings user space changes as it runs: the global "config" (in .bss). */
struct flowlat_config {
	__u32 bank;  /* the gate bank new attempts count in */
	__u32 flags; /* FLOWLAT_CFG_*, read when an attempt ends */
	/* Keys with a server port or a cgroup the classifier has added to the
	 * "agg" map: beyond FLOWLAT_AGG_KEYS, attempts go to their "other" key. */
	__u32 agg_keys;
	/* Records per perf event, 1 to FLOWLAT_BATCH (0 reads as FLOWLAT_BATCH).
	 * User space reads part-filled batches from their slots only where the
	 * CPU makes the classifier's plain stores visible in program order (x86);
	 * elsewhere it sets 1, and every record goes out at once, alone in its
	 * batch. */
	__u32 batch;
	/* The slot table's buckets less one (a power of two less one); unused
	 * with the LRU table. */
	__u32 table_mask;
	/* An attempt that ends this long after its first SYN leaves a tombstone
	 * (FLOWLAT_STATE_ANSWERED); tests that cannot know the kernel's clock
	 * set it out of reach. */
	__u32 late_answer_us;
};

/* config.flags. Zero (the .bss default) is flowlat's plain mode: a record
 * per attempt, no aggregation. */
#define FLOWLAT_CFG_MIN_RTT 1    /* ok attempts under filter.min_rtt_ns send no record */
#define FLOWLAT_CFG_AGGREGATE 2  /* each ended attempt is added to the "agg" map */
#define FLOWLAT_CFG_NO_RECORDS 4 /* no record per attempt (aggregates only) */
#define FLOWLAT_CFG_AGG_PORT 8   /* the aggregation key has the server port */
#define FLOWLAT_CFG_AGG_CGROUP 16 /* the aggregation key has the cgroup id */
/* This CPU makes plain stores visible in the order they were made (x86): the
 * slot table publishes a new attempt with a plain store, not an atomic one. */
#define FLOWLAT_CFG_IN_ORDER 32
/* Copy the process from the socket's "procs" storage into the attempt:
 * cleared by --no-process, when no hook fills the storage. */
#define FLOWLAT_CFG_PROCS 64

/* Kernel aggregation: the per-CPU hash "agg", one value per key, which the
 * classifier updates when an attempt ends (ok, refused, abandoned; user space
 * adds the timeouts it finds). Histogram bucket i counts durations
 * v <= FLOWLAT_HIST_BOUNDS[i] (and above the bound before it); the last
 * bucket, FLOWLAT_HIST_N, counts the rest (+Inf). Bounds: 1-2-5 per decade,
 * 5 us to 50 s, in nanoseconds. */
#define FLOWLAT_HIST_BOUNDS(X)                                                              \
	X(5000ULL) X(10000ULL) X(20000ULL) X(50000ULL) X(100000ULL) X(200000ULL) X(500000ULL) \
	X(1000000ULL) X(2000000ULL) X(5000000ULL) X(10000000ULL) X(20000000ULL)             \
	X(50000000ULL) X(100000000ULL) X(200000000ULL) X(500000000ULL) X(1000000000ULL)     \
	X(2000000000ULL) X(5000000000ULL) X(10000000000ULL) X(20000000000ULL)               \
	X(50000000000ULL)
#define FLOWLAT_HIST_N 22

/* Keys with a server port or a cgroup; and room kept besides for the keys
 * with neither and the "other" keys, two per interface and direction: four
 * per interface, so 512 interfaces (a node's pods' veths). Entries are
 * allocated as keys appear, so the room costs nothing until used. */
#define FLOWLAT_AGG_KEYS 1024
#define FLOWLAT_AGG_RESERVE 2048

struct flowlat_agg_key {
	__u32 ifindex;
	__u8 dir;
	__u8 other;        /* 1: an attempt beyond FLOWLAT_AGG_KEYS (port and cgroup 0) */
	__u16 server_port; /* host order; 0 unless FLOWLAT_CFG_AGG_PORT */
	__u64 cgroup_id;   /* 0 unless FLOWLAT_CFG_AGG_CGROUP, or no socket */
};

/* Failures by reason (FLOWLAT_CFG_AGGREGATE): the per-CPU hash "fails",
 * counts of ended attempts that did not complete, by interface, direction
 * and FLOWLAT_REASON_*. At most FLOWLAT_FAIL_KEYS keys: interfaces times
 * directions times reasons seen, a bounded set; beyond it a failure is
 * counted in its aggregate's results only. */
#define FLOWLAT_FAIL_KEYS 4096

struct flowlat_fail_key {
	__u32 ifindex;
	__u8 dir;
	__u8 reason;
	__u16 pad;
};

struct flowlat_hist {
	__u64 buckets[FLOWLAT_HIST_N + 1];
	__u64 sum_ns;
};

struct flowlat_agg {
	__u64 results[FLOWLAT_RESULTS]; /* by FLOWLAT_RESULT_* */
	__u64 retrans;    /* client SYNs beyond the first */
	struct flowlat_hist rtt;   /* ok attempts: the record's rtt */
	struct flowlat_hist local; /* in and ok: first SYN-ACK - last SYN before it */
};

/* Each CPU's cache of aggregates: the per-CPU array "agg_cpu", where a key
 * goes to slot agg_hash(key) & (FLOWLAT_AGG_FAST - 1) (bpf/aggregate.h). A free slot
 * takes the first key that hashes there once the "agg" map holds it, and
 * counts for it from then on; other keys of that slot go on to the map. So
 * a key's aggregate is its "agg" values plus its slots', which user space
 * adds up; the map lookup, several cold cache lines in real traffic, is left
 * to keys that share a slot. A slot is free while its key's ifindex is 0. */
#define FLOWLAT_AGG_FAST 256

struct flowlat_agg_slot {
	struct flowlat_agg_key key;
	struct flowlat_agg v;
};

/* Which attempts are measured at all: the global "filter" (in .bss), which
 * user space writes before the programs are attached. Kinds combine with
 * AND, the values of one kind with OR. Everything but the cgroup of an "in"
 * attempt is decided at the client's SYN, so an attempt filtered out takes
 * no table entry; "in" learns its listener at our first SYN-ACK, and is
 * dropped then (or, refused or never answered, for want of one). */
#define FLOWLAT_FILTER_PORT 1   /* client or server port has its bit in ports */
#define FLOWLAT_FILTER_NET 2    /* client or server address is in the "nets" trie */
#define FLOWLAT_FILTER_DIR 4    /* the direction has its bit (1 << FLOWLAT_DIR_*) in dirs */
#define FLOWLAT_FILTER_CGROUP 8 /* the socket's cgroup is one of cgroup_id[] or below it */
/* The process is one of pids[] or has one of comms[] (--pid, --comm): out at
 * the SYN; in at our first SYN-ACK when the listener's process is known in
 * the kernel, otherwise in user space once it has looked the listener up. */
#define FLOWLAT_FILTER_PROC 16
#define FLOWLAT_MAX_PROCS 8

#define FLOWLAT_MAX_CGROUPS 8
#define FLOWLAT_MAX_NETS 256
/* Fingerprints of filtered-out SYNs, so that a retransmission of one is not
 * counted as another attempt (two such attempts in one slot at once count
 * again: the count is of attempts, within that). A power of two. */
#define FLOWLAT_FILTER_MEMO 4096

struct flowlat_filter {
	__u32 kinds; /* FLOWLAT_FILTER_*; 0 measures everything */
	__u32 dirs;
	__u32 cgroups; /* how many of cgroup_id[] and cgroup_level[] are set */
	__u32 pad;
	__u64 min_rtt_ns; /* with FLOWLAT_CFG_MIN_RTT */
	/* bpf_skb_ancestor_cgroup_id(skb, cgroup_level[i]) == cgroup_id[i] */
	__u64 cgroup_id[FLOWLAT_MAX_CGROUPS];
	__u32 cgroup_level[FLOWLAT_MAX_CGROUPS];
	__u32 ports[65536 / 32]; /* bit p of the bitmap: port p (host order) */
	__u32 memo[FLOWLAT_FILTER_MEMO];
	__u32 pids;  /* how many of pid[] are set */
	__u32 comms; /* how many of comm[] are set */
	__u32 pid[FLOWLAT_MAX_PROCS];
	__u8 comm[FLOWLAT_MAX_PROCS][16]; /* NUL-padded, as the kernel's */
};

/* The key of the "nets" LPM trie: the family byte, then the address, so one
 * trie holds both families. A network a/p is stored with prefixlen 8 + p. */
struct flowlat_net_key {
	__u32 prefixlen;
	__u8 family; /* 4 or 6 */
	__u8 addr[16]; /* network order; IPv4 in the first 4 bytes */
	__u8 pad[3];
};

/* One attempt's identity: the interface, the direction and the exact
 * connection. Addresses are in network order; IPv4 uses the first 4 bytes. */
struct flowlat_key {
	__u8 client[16];
	__u8 server[16];
	__u16 client_port; /* network order */
	__u16 server_port; /* network order */
	__u32 ifindex;
	__u8 family; /* 4 or 6 */
	__u8 dir;    /* FLOWLAT_DIR_* */
	__u8 pad[6];
};

/* The process behind a socket, which the cgroup hooks note in the calling
 * process's context (bpf/procs.h): for a listener, the value of the "procs"
 * socket storage map (BPF_MAP_TYPE_SK_STORAGE), written at bind(), whose
 * entry lives and dies with its socket; for a client's socket, a slot of
 * "conn_procs", written at connect(). */
struct flowlat_proc {
	__u32 pid; /* thread group id, in the initial PID namespace; 0: none */
	__u32 pad;
	__u8 comm[16]; /* the process's name as the kernel has it, NUL-padded */
};

/* The process that called connect() on a socket, by the socket's cookie:
 * the array "conn_procs", slot cookie & (FLOWLAT_PROC_SLOTS - 1). The connect
 * hook writes it and the SYN that connect() sends within the same call
 * reads it; the cookie tells a slot a later connect took over. One array for
 * all CPUs: the task may be moved to another CPU between the hook and its
 * SYN (a per-CPU array lost those under load). A fixed array, so that the
 * hook, which runs on every connect() of the host, allocates nothing: socket
 * storage costs an allocation per socket (measured: about 500 ns a
 * connect). */
#define FLOWLAT_PROC_SLOTS 4096

struct flowlat_proc_slot {
	__u64 cookie; /* 0: empty */
	struct flowlat_proc proc;
};

/* What is known of a pending attempt; timestamps are bpf_ktime_get_ns(). */
struct flowlat_pending {
	__u64 first_syn_ns;
	__u64 last_syn_ns; /* the last SYN before the first SYN-ACK */
	__u64 first_synack_ns;
	__u64 last_synack_ns;
	__u32 client_isn; /* host order */
	__u32 server_isn; /* host order, from the first SYN-ACK */
	__u16 syns;
	__u16 synacks;
	__u8 state;    /* FLOWLAT_STATE_* */
	__u8 bank;     /* in: the gate bank our first SYN-ACK counted in */
	__u16 syn_len; /* the longest SYN payload (TCP Fast Open) */
	/* The cgroup v2 id of the local socket (bpf_skb_cgroup_id at egress):
	 * out, the connecting socket's, from its SYN; in, the listener's, from our
	 * first SYN-ACK. 0 when there is none (a RST the kernel sent for a closed
	 * port, forwarded traffic, SYN cookies) or it was not seen. */
	__u64 cgroup_id;
	/* The process behind the local socket (FLOWLAT_CFG_PROCS): out, the one
	 * that called connect(), copied at its first SYN from "conn_procs"; in,
	 * the listener's, from its "procs" storage at our first SYN-ACK. pid 0
	 * when there was none (no socket, or one no hook of ours saw). */
	struct flowlat_proc proc;
};

/* The table of attempts in progress comes in two builds of the classifier.
 * Where the kernel has compare-and-exchange in BPF (Linux 5.12) it is
 * "slots", an array of buckets that user space mmaps; elsewhere it is
 * "pending", an LRU hash of struct flowlat_key to struct flowlat_pending. In
 * real traffic the hash table's insert, lookups and delete cost about twice
 * what the slots' do: locks, lists and element memory in several cold cache
 * lines, where a bucket is two or three.
 *
 * The array holds FLOWLAT_FRONT front buckets, then config.table_mask + 1
 * main ones. A key has one bucket of each: front bucket flowlat_hash(key) &
 * (FLOWLAT_FRONT - 1) and main bucket FLOWLAT_FRONT + (flowlat_hash(key) &
 * config.table_mask), and lives in one of their FLOWLAT_WAYS ways. A new
 * attempt takes a free way of its front bucket; when there is none it goes
 * to its main bucket, taking a free way or else evicting the oldest attempt
 * (first SYN) there, and the front bucket's spill counts it. A lookup reads
 * the main bucket only while its front bucket's spill is not 0. The front
 * (117 KB) stays in the caches (and its translations in the TLB) while a
 * host has up to a few hundred handshakes in flight (rate times round trip),
 * where one random bucket of the whole table comes from far away: on a storm
 * through a veth pair, a table of 64 attempts cost 350 to 470 ns a handshake
 * less than one of 65,536 at the clients' end. Its size is a trade: a front
 * of 16 buckets cost 9 to 253 ns less than this one with nothing else in
 * flight, and 220 to 560 ns more with 200 attempts waiting beside the storm,
 * when its buckets are full and every new attempt spills (more than the
 * table without a front paid). Each way's word says what its
 * entry is: FLOWLAT_SLOT_LIVE (an attempt), FLOWLAT_SLOT_BUSY (being written
 * or taken: skip it), a generation in bits 2 to 31 that every change of owner
 * moves on, and in bits 32 to 63 the key's hash, so that a lookup compares
 * keys only where the hash matches. Whoever changes a word from what it read
 * (compare-and-exchange) owns the entry: the classifier to write a new attempt
 * or to take an ended one, user space to time one out; it then makes the
 * word live or free again, and being the only one who may change a busy word
 * it can do so with a plain store where the CPU keeps stores in order
 * (FLOWLAT_CFG_IN_ORDER). So an attempt is reported exactly once, as with the
 * hash table's delete. An entry's fields
 * are changed in place otherwise (a retransmission, our first SYN-ACK), as in
 * the hash table. */
#define FLOWLAT_WAYS 4
#define FLOWLAT_FRONT 256
#define FLOWLAT_SLOT_LIVE 1ULL
#define FLOWLAT_SLOT_BUSY 2ULL

struct flowlat_entry {
	struct flowlat_key key;
	struct flowlat_pending p;
};

struct flowlat_bucket {
	__u64 word[FLOWLAT_WAYS];
	/* Front buckets only: the attempts of this bucket's keys that went to
	 * their main bucket, and are still there (live or busy). */
	__u64 spill;
	struct flowlat_entry e[FLOWLAT_WAYS];
};

/* One record per attempt, sent through the perf ring. */
struct flowlat_event {
	struct flowlat_key key;
	struct flowlat_pending p;
	__u64 end_ns; /* the packet that ended it: SYN-ACK (out), ACK (in), RST, or new SYN */
	__u8 result;  /* FLOWLAT_RESULT_* */
	__u8 reason;  /* FLOWLAT_REASON_* */
	__u8 pad[6];
};

/* An attempt an ICMP error ended had no SYN-ACK, so the 16 bytes of its
 * record's p.first_synack_ns and p.last_synack_ns carry the error's sender
 * instead (a router on the way, or the server; network order, as the key's
 * addresses): every record keeps its size, and so the cost of sending it.
 * User space names the sender of a RST or a SYN itself. */
#define FLOWLAT_EVENT_FROM(ev) ((__u8 *)&(ev)->p.first_synack_ns)

/* Records reach user space in batches of this many, one perf event each. */
#define FLOWLAT_BATCH 8

/* A CPU's batch of records: its slot of the "batches" map, and what one perf
 * event carries when full. A perf event costs the classifier about as much
 * per call as the rest of a handshake, whatever it carries, so a CPU collects
 * records in its slot and sends them FLOWLAT_BATCH at a time. The classifier
 * writes ev[n], then counts it in n; when the batch is full it sends the
 * whole struct, counts the batch in seq and starts again at n = 0, in that
 * order. Only that CPU's classifier writes a slot (programs on one CPU do not
 * nest). User space reads the slots as well, at every
 * drain, so that no record waits longer than a drain for its batch to fill:
 * a read is good when seq is the same before and after it, and then
 * ev[0..n) belong to batch seq. */
struct flowlat_batch {
	__u64 seq; /* batches this CPU filled before this one */
	__u32 n;   /* records in ev */
	__u32 pad;
	struct flowlat_event ev[FLOWLAT_BATCH];
};

#endif
