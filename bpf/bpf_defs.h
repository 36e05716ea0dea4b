/* Our own minimal definitions for BPF programs: fixed-width types, the
 * struct __sk_buff prefix we read, the helpers we call and the map definition
 * format that flowlat's loader (src/bpf/object.rs) understands. Nothing here
 * comes from kernel or libbpf headers, so clang is all a build needs. */
#ifndef FLOWLAT_BPF_DEFS_H
#define FLOWLAT_BPF_DEFS_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef int __s32;
typedef long long __s64;

#define SEC(name) __attribute__((section(name), used))
#define __always_inline inline __attribute__((always_inline))

/* Hides a value's origin from clang, so that it computes with it as written
 * instead of turning the arithmetic back into compares and branches. */
#define OPAQUE(x) asm volatile("" : "+r"(x))

/* A legacy map definition in section "maps"; the symbol's name is the map's name. */
struct flowlat_map_def {
	__u32 type;
	__u32 key_size;
	__u32 value_size;
	__u32 max_entries;
	__u32 map_flags;
};

/* include/uapi/linux/bpf.h: enum bpf_map_type (the ones we use). */
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PERCPU_HASH 5
#define BPF_MAP_TYPE_PERF_EVENT_ARRAY 4
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_MAP_TYPE_LPM_TRIE 11
#define BPF_MAP_TYPE_SK_STORAGE 24

/* Map flags. */
#define BPF_F_NO_PREALLOC (1U << 0)

/* Update flags and perf output flags. */
#define BPF_ANY 0
#define BPF_NOEXIST 1
#define BPF_F_CURRENT_CPU 0xffffffffULL
#define BPF_F_MMAPABLE (1U << 10)
#define BPF_SK_STORAGE_GET_F_CREATE 1ULL

/* include/uapi/linux/pkt_cls.h */
#define TC_ACT_UNSPEC (-1)

/* include/uapi/linux/bpf.h: struct __sk_buff, up to the fields we read. The
 * verifier checks offsets against the kernel's layout, so order matters. */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
	__u32 napi_id;
	__u32 family;
	__u32 remote_ip4;
	__u32 local_ip4;
	__u32 remote_ip6[4];
	__u32 local_ip6[4];
	__u32 remote_port;
	__u32 local_port;
	__u32 data_meta;
	__u64 flow_keys; /* a pointer in the kernel's; 8 bytes, 8-aligned */
	__u64 tstamp;
	__u32 wire_len;
	__u32 gso_segs;
	/* The packet's socket, if any: a full socket, a request or a timewait
	 * one (a pointer in the kernel's struct, 8 bytes). */
	union {
		struct bpf_sock *sk;
		__u64 sk_word;
	} __attribute__((aligned(8)));
};

/* include/uapi/linux/bpf.h: struct bpf_sock, up to the fields we read: the
 * context of cgroup/post_bind programs, and what the socket helpers return. */
struct bpf_sock {
	__u32 bound_dev_if;
	__u32 family;
	__u32 type;
	__u32 protocol;
};

/* include/uapi/linux/bpf.h: struct bpf_sock_addr, the context of
 * cgroup/connect programs, up to the socket. */
struct bpf_sock_addr {
	__u32 user_family;
	__u32 user_ip4;
	__u32 user_ip6[4];
	__u32 user_port;
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 msg_src_ip4;
	__u32 msg_src_ip6[4];
	union {
		struct bpf_sock *sk;
		__u64 sk_word;
	} __attribute__((aligned(8)));
};

#define IPPROTO_TCP 6

/* Helper ids from enum bpf_func_id (include/uapi/linux/bpf.h). */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static __u32 (*bpf_get_smp_processor_id)(void) = (void *)8;
static long (*bpf_perf_event_output)(void *ctx, void *map, __u64 flags, void *data, __u64 size) = (void *)25;
static long (*bpf_skb_load_bytes)(const void *skb, __u32 offset, void *to, __u32 len) = (void *)26;
static __u64 (*bpf_skb_cgroup_id)(const void *skb) = (void *)79;
static __u64 (*bpf_skb_ancestor_cgroup_id)(const void *skb, int level) = (void *)83;
static __u64 (*bpf_get_socket_cookie)(void *ctx) = (void *)46;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static long (*bpf_get_current_comm)(void *buf, __u32 size) = (void *)16;
static struct bpf_sock *(*bpf_get_listener_sock)(struct bpf_sock *sk) = (void *)98;
static void *(*bpf_sk_storage_get)(void *map, void *sk, void *value, __u64 flags) = (void *)107;

#define bpf_htons(x) ((__u16)__builtin_bswap16(x))
#define bpf_ntohs(x) ((__u16)__builtin_bswap16(x))
#define bpf_ntohl(x) ((__u32)__builtin_bswap32(x))

#endif
