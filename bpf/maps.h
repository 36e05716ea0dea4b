/* The classifier's maps and globals, and its license: all of its object that
 * is not code. User space opens the maps by name and maps section .bss, whose
 * layout the order here sets (src/probe/load.rs). One place, so that every
 * build of the classifier, the bench's cut-short ones (bpf/ablate/) too,
 * declares the same. The table of attempts is bpf/table.h's, included after
 * this. */
#ifndef FLOWLAT_MAPS_H
#define FLOWLAT_MAPS_H

#include "flowlat.h"
#include "batch.h"

struct flowlat_map_def events SEC("maps") = {
	.type = BPF_MAP_TYPE_PERF_EVENT_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 1, /* user space sets the number of possible CPUs */
};

FLOWLAT_BATCHES_MAP(batches);

struct flowlat_map_def stats SEC("maps") = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = FLOWLAT_STAT_MAX * sizeof(__u64),
	.max_entries = 1,
};

/* The ACK gate, and the settings user space changes as it runs: globals. The
 * loader makes section .bss one mmapable map, which user space writes through
 * its mapping, and the classifier reaches them with no lookup, a load of their
 * address (BPF_PSEUDO_MAP_VALUE). Every arriving segment checks the gate, so
 * that matters. 8-byte alignment makes each pair of gate counters one word. */
struct flowlat_gate gate __attribute__((aligned(8)));
struct flowlat_config config __attribute__((aligned(8)));
struct flowlat_filter filter __attribute__((aligned(8)));

/* The networks of the filter (FLOWLAT_FILTER_NET); the value is unused. */
struct flowlat_map_def nets SEC("maps") = {
	.type = BPF_MAP_TYPE_LPM_TRIE,
	.key_size = sizeof(struct flowlat_net_key),
	.value_size = sizeof(__u8),
	.max_entries = FLOWLAT_MAX_NETS,
	.map_flags = BPF_F_NO_PREALLOC, /* required of an LPM trie */
};

/* Kernel aggregation (FLOWLAT_CFG_AGGREGATE). Per CPU, so updates need no
 * atomics; user space sums the CPUs. Entries are allocated as keys appear. */
struct flowlat_map_def agg SEC("maps") = {
	.type = BPF_MAP_TYPE_PERCPU_HASH,
	.key_size = sizeof(struct flowlat_agg_key),
	.value_size = sizeof(struct flowlat_agg),
	.max_entries = FLOWLAT_AGG_KEYS + FLOWLAT_AGG_RESERVE,
	.map_flags = BPF_F_NO_PREALLOC,
};

struct flowlat_map_def agg_cpu SEC("maps") = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct flowlat_agg_slot),
	.max_entries = FLOWLAT_AGG_FAST,
};

struct flowlat_map_def fails SEC("maps") = {
	.type = BPF_MAP_TYPE_PERCPU_HASH,
	.key_size = sizeof(struct flowlat_fail_key),
	.value_size = sizeof(__u64),
	.max_entries = FLOWLAT_FAIL_KEYS,
	.map_flags = BPF_F_NO_PREALLOC,
};

/* The process behind each TCP listener a cgroup hook of ours saw bound
 * (bpf/procs.h): socket storage, so an entry is freed with its socket and
 * the map needs no bound or sweep. The kernel asks a BTF description of key and value, which
 * the loader makes (src/probe/load.rs). */
struct flowlat_map_def procs SEC("maps") = {
	.type = BPF_MAP_TYPE_SK_STORAGE,
	.key_size = sizeof(__s32),
	.value_size = sizeof(struct flowlat_proc),
	.max_entries = 0,
	.map_flags = BPF_F_NO_PREALLOC,
};

/* The process of each connect(), by socket cookie (see bpf/flowlat.h). */
struct flowlat_map_def conn_procs SEC("maps") = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct flowlat_proc_slot),
	.max_entries = FLOWLAT_PROC_SLOTS,
};

/* Where the record of an attempt that ended, and a SYN's new attempt, are
 * put together: beside the parsed segment and the table's words they would
 * not fit the stack. One per CPU, as programs on a CPU do not nest. */
struct flowlat_scratch {
	struct flowlat_event ev;
	struct flowlat_pending n;
};

struct flowlat_map_def scratch SEC("maps") = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct flowlat_scratch),
	.max_entries = 1,
};

/* What a new key of "agg" starts from: too big for the stack beside the
 * rest, and a map value is as good a source for an update. Never written. */
struct flowlat_agg agg_zero __attribute__((aligned(8)));

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Adds to one of the counters user space reads (FLOWLAT_STAT_*). */
static __always_inline void count_n(__u32 idx, __u64 n)
{
	__u32 zero = 0;
	__u64 *v = bpf_map_lookup_elem(&stats, &zero);
	if (v && idx < FLOWLAT_STAT_MAX)
		v[idx] += n;
}

static __always_inline void count(__u32 idx)
{
	count_n(idx, 1);
}

#endif
