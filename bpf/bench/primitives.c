/* The kernel operations a handshake is made of, each alone, for `cargo bench`:
 * they set the floor under what a whole handshake can cost on a machine. Each
 * program returns 0 when its operation did what it should, so the bench can
 * check that it measured the operation and not a failure. */
#include "flowlat.h"
#include "batch.h"

/* The pending table as the probe declares it: same type, key and value. */
struct flowlat_map_def table SEC("maps") = {
	.type = BPF_MAP_TYPE_LRU_HASH,
	.key_size = sizeof(struct flowlat_key),
	.value_size = sizeof(struct flowlat_pending),
	.max_entries = 65536, /* the bench sets the probe's default */
};

struct flowlat_map_def events SEC("maps") = {
	.type = BPF_MAP_TYPE_PERF_EVENT_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 1, /* the bench sets the number of possible CPUs */
};

/* Each CPU's batch of records, as the probe declares them. */
FLOWLAT_BATCHES_MAP(batches);

/* For comparison only: flowlat sends its records through perf rings. */
#define BPF_MAP_TYPE_RINGBUF 27
#define BPF_RB_NO_WAKEUP 1
struct flowlat_map_def ring SEC("maps") = {
	.type = BPF_MAP_TYPE_RINGBUF,
	.max_entries = 1 << 24,
};

/* The probe's slot table, its own code (bpf/table.h), sized as the probe
 * sizes it for its default --max-pending. */
#define FLOWLAT_TABLE_SLOTS
#define FLOWLAT_TABLE_MASK (65536 / FLOWLAT_WAYS - 1)
/* As flowlat runs it on x86, the machine these figures come from (batch_record
 * below assumes the same). */
#define FLOWLAT_TABLE_IN_ORDER 1
#include "table.h"

static __u32 (*bpf_get_prandom_u32)(void) = (void *)7;
static long (*bpf_ringbuf_output)(void *ring, void *data, __u64 size, __u64 flags) = (void *)130;

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* A key no run has used: a new connection, as a SYN brings. */
static __always_inline void new_key(struct flowlat_key *k)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->family = 4;
	__u32 a = bpf_get_prandom_u32(), b = bpf_get_prandom_u32();
	__builtin_memcpy(k->client, &a, 4);
	__builtin_memcpy(k->server, &b, 4);
	k->client_port = (__u16)a;
}

SEC("tc/empty")
int empty(struct __sk_buff *skb)
{
	return 0;
}

/* The baseline of the table operations: the key made, nothing done with it. */
SEC("tc/make_key")
int make_key(struct __sk_buff *skb)
{
	struct flowlat_key k;
	new_key(&k);
	asm volatile("" : : "r"(&k) : "memory");
	return 0;
}

SEC("tc/ktime")
int ktime(struct __sk_buff *skb)
{
	__u64 t = bpf_ktime_get_ns();
	asm volatile("" : : "r"(t));
	return 0;
}

/* The cgroup of the packet's socket, as an out SYN and an in SYN-ACK read it.
 * Test-run gives the skb a socket of its own, in the caller's cgroup, so the
 * helper does the whole walk from socket to cgroup id. */
SEC("tc/cgroup_id")
int cgroup_id(struct __sk_buff *skb)
{
	__u64 id = bpf_skb_cgroup_id(skb);
	asm volatile("" : : "r"(id));
	return id ? 0 : 1;
}

/* A SYN's insert of a new attempt. */
static __always_inline long insert_new(struct flowlat_key *k)
{
	struct flowlat_pending p;
	new_key(k);
	__builtin_memset(&p, 0, sizeof(p));
	return bpf_map_update_elem(&table, k, &p, BPF_NOEXIST);
}

/* Fills the table with attempts of other clients (the bench runs it 10,000
 * times first), so that lookups and inserts search a table of realistic size. */
SEC("tc/insert")
int insert(struct __sk_buff *skb)
{
	struct flowlat_key k;
	return insert_new(&k) == 0 ? 0 : 1;
}

/* A SYN's entry inserted, then the answer's delete. */
SEC("tc/insert_delete")
int insert_delete(struct __sk_buff *skb)
{
	struct flowlat_key k;
	if (insert_new(&k) != 0)
		return 1;
	return bpf_map_delete_elem(&table, &k) == 0 ? 0 : 2;
}

/* The lookup of a tuple that has no entry, as every RST and stray answer does. */
SEC("tc/lookup_miss")
int lookup_miss(struct __sk_buff *skb)
{
	struct flowlat_key k;
	new_key(&k);
	return bpf_map_lookup_elem(&table, &k) ? 1 : 0;
}

/* One record, as flowlat sends it. */
SEC("tc/perf_output")
int perf_output(struct __sk_buff *skb)
{
	struct flowlat_event ev;
	__builtin_memset(&ev, 0, sizeof(ev));
	ev.end_ns = skb->len;
	return bpf_perf_event_output(skb, &events, BPF_F_CURRENT_CPU, &ev, sizeof(ev)) == 0 ? 0 : 1;
}

/* One record, as flowlat sends it now: into its CPU's batch, which goes
 * through the perf ring as one event when FLOWLAT_BATCH records are in it
 * (the probe's send(), without its counters). */
SEC("tc/batch_record")
int batch_record(struct __sk_buff *skb)
{
	struct flowlat_event ev;
	__builtin_memset(&ev, 0, sizeof(ev));
	ev.end_ns = skb->len;
	__u32 cpu = bpf_get_smp_processor_id();
	struct flowlat_batch *b = bpf_map_lookup_elem(&batches, &cpu);
	if (!b)
		return 1;
	return batch_put(skb, &events, b, &ev, FLOWLAT_BATCH) == 0 ? 0 : 1;
}

/* The same record into a BPF ring buffer, which nothing reads: the bench
 * sizes the ring to hold every record of the run. */
SEC("tc/ringbuf_output")
int ringbuf_output(struct __sk_buff *skb)
{
	struct flowlat_event ev;
	__builtin_memset(&ev, 0, sizeof(ev));
	ev.end_ns = skb->len;
	return bpf_ringbuf_output(&ring, &ev, sizeof(ev), BPF_RB_NO_WAKEUP) == 0 ? 0 : 1;
}

/* A SYN's new attempt into the slot table, as insert_new into the LRU one. */
static __always_inline int slot_add_new(struct flowlat_key *k)
{
	struct flowlat_pending p;
	new_key(k);
	__builtin_memset(&p, 0, sizeof(p));
	return table_add(k, &p);
}

/* Fills the slot table as insert fills the LRU one (10,000 attempts first). */
SEC("tc/slot_insert")
int slot_insert(struct __sk_buff *skb)
{
	struct flowlat_key k;
	return slot_add_new(&k) == 0 ? 0 : 1;
}

/* A SYN's new attempt into the slot table, then its answer finding it by key
 * and taking it out: insert_delete and a lookup, with the probe's slot table. */
SEC("tc/slot_add_find_remove")
int slot_add_find_remove(struct __sk_buff *skb)
{
	struct flowlat_key k;
	if (slot_add_new(&k) != 0)
		return 1;
	struct table_ref ref;
	if (!table_find(&k, &ref))
		return 2;
	return table_remove(&k, &ref) == 0 ? 0 : 3;
}
