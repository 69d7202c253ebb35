// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * flexsfc cross-connection: one TC direct-action program attached at ingress of the host-side veth
 * of every NF data-plane interface. A packet emitted by a replica of side A of a cross-connection
 * (xc) goes to one replica of side B, and vice versa:
 *   1. session table (LRU, key = xc + normalized 5-tuple, so both directions share one entry);
 *   2. else the Maglev table of the destination side, indexed by a symmetric seeded hash.
 * ARP requests / IPv6 neighbour solicitations for the other side's addresses are answered in place.
 * Packet headers of forwarded packets are never modified.
 *
 * Built with uapi + libbpf headers only (see flexsfc/dataplane/build.py). The layouts below are
 * mirrored in flexsfc/dataplane/maps.py: change both together.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define MAX_XC 1024        /* cross-connection ids 1..MAX_XC-1 */
#define MAX_PORTS 4096     /* replica ports (host veths) across all cross-connections */
#define MAX_NEIGHBOURS 8192 /* programmed neighbour addresses: 4 per (xc, side) */
#define PORT_INDEX_SIZE 65536 /* ifindexes below this are found by array index, not hashing */
#define POOL_SLOTS (1 << 22) /* Maglev slots shared by all tables (32 MiB) */
#define MAX_IPV6_EXT 4     /* extension headers walked before giving up */
#define MAGLEV_PROBES 16   /* table entries tried when the first one's port is no target */

/* Filter tag (the low 16 bits of the cls_bpf classid, all the kernel passes on): port slot + 1 in
 * the low bits (0 = untagged), the top bit asks for bpf_redirect instead of bpf_redirect_peer. */
#define TAG_SLOT_MASK 0x1fff
#define TAG_PLAIN_REDIRECT 0x8000
_Static_assert(MAX_PORTS < TAG_SLOT_MASK, "every port slot + 1 must fit in the tag");

#define SIDE_A 0
#define SIDE_B 1
#define MODE_PEER 0
#define MODE_REDIRECT 1

/* Port states (maps.PORT_*). Active and draining ports are valid targets of their sessions (the
 * Maglev table alone decides who gets new ones); a leaving port is a source only. */
#define PORT_ACTIVE 0
#define PORT_DRAINING 1
#define PORT_LEAVING 2

#define ARPHRD_ETHER 1
#define ARPOP_REQUEST 1
#define ARPOP_REPLY 2

#define NEXTHDR_HOP 0
#define IPPROTO_ICMPV6 58 /* linux/in6.h needs libc headers */
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_DEST 60
#define ICMPV6_NS 135
#define ICMPV6_NA 136
#define ND_OPT_SOURCE_LL 1
#define ND_OPT_TARGET_LL 2

#define FAMILY_ARP 0 /* pseudo family: ARP conversations share the session machinery */
#define FAMILY_V4 4
#define FAMILY_V6 6

enum drop_reason {
	DROP_UNKNOWN_PORT = 0, /* program attached to an interface the control plane does not know */
	DROP_NOT_IP,           /* neither IPv4, IPv6 nor ARP */
	DROP_MALFORMED,        /* truncated or inconsistent headers */
	DROP_NO_REPLICA,       /* destination side has no active replica */
	DROP_FRAG_UNKNOWN,     /* non-first fragment whose first fragment was never seen */
	DROP_IPV6_EXT,         /* more IPv6 extension headers than we walk */
	DROP_ARP_UNSUPPORTED,  /* ARP that is not Ethernet/IPv4 */
	DROP_MAX,
};

enum event {
	EV_SESSION_CREATED = 0,
	EV_SESSION_REHASHED, /* session whose replica was gone, re-hashed on its next packet */
	EV_ARP_REPLIED,
	EV_ND_REPLIED,
	EV_FRAG_FOLLOWED, /* non-first fragment sent after its first fragment */
	EV_NEIGH_LEARNED,
	EV_MAX,
};

struct config {
	__u32 seed;
	__u32 redirect_mode;
};

struct port_info {
	__u32 xc;
	__u32 slot; /* index in port_slots */
	__u8 side;
	__u8 state; /* PORT_*: only informational here, the slot's copy is the one the program reads */
	__u16 pad;
};

struct port_counters {
	__u64 from_packets;
	__u64 from_bytes;
	__u64 to_packets;
	__u64 to_bytes;
	__u64 sessions_created;
};

/* Parsers build this (IPv4 addresses in word 0); IPv6 sessions use it as their key. */
struct flow_key {
	__u32 xc;
	__u8 proto;
	__u8 family;
	__u16 pad;
	__u32 addr_lo[4];
	__u32 addr_hi[4];
	__u16 port_lo;
	__u16 port_hi;
};

/* IPv4 and ARP sessions use a 20-byte key: the kernel hashes and compares less than half as much
 * as for the 44-byte key, which is measurable on every packet. */
struct flow_key4 {
	__u32 xc;
	__u8 proto;
	__u8 family;
	__u16 pad;
	__u32 addr_lo;
	__u32 addr_hi;
	__u16 port_lo;
	__u16 port_hi;
};

/* The ingress port of the packet being handled (from the filter's tag or the port maps). */
struct ingress {
	__u32 xc;
	__u32 slot;
	__u8 side;
	__u8 mode; /* MODE_PEER or MODE_REDIRECT */
	__u16 pad;
};

/* A replica port as the data path refers to it: host ifindex and its slot (counters, liveness). */
struct port_ref {
	__u32 ifindex;
	__u32 slot;
};

struct session {
	struct port_ref side[2]; /* [SIDE_A], [SIDE_B] */
};

/* What occupies a port slot now (cleared when the port leaves, so stale references fail) and the
 * port's counters: one lookup of this CPU's copy checks a target and counts it. */
struct port_slot {
	__u32 ifindex;
	__u32 xc;
	__u8 side;
	__u8 state;
	__u16 pad;
	__u32 pad2;
	struct port_counters counters;
	__u64 pad3; /* a slot is one whole cache line: at 56 bytes, 6 of 8 slots straddled two */
};
_Static_assert(sizeof(struct port_slot) == 64, "one cache line per port slot");

struct frag_key {
	__u32 xc;
	__u32 id;
	__u8 proto;
	__u8 family;
	__u16 pad;
	__u32 src[4];
	__u32 dst[4];
};

struct neigh_key {
	__u32 xc;
	__u8 side; /* side whose NF interface owns the address */
	__u8 family;
	__u16 pad;
	__u32 addr[4];
};

struct neigh_val {
	__u8 mac[6];
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32); /* host ifindex */
	__type(value, struct port_info);
} ports SEC(".maps");

/* The same entries as `ports`, indexed by ifindex when it is below PORT_INDEX_SIZE (xc 0 = none):
 * an array lookup is inlined and touches one cache line, where a hash lookup walks a bucket. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PORT_INDEX_SIZE);
	__type(key, __u32);
	__type(value, struct port_info);
} ports_by_index SEC(".maps");

/* Per-CPU copies of every slot in a plain array, [cpu][slot] (the loader sets max_entries to
 * MAX_PORTS x possible CPUs): one load reaches a port's occupant and this CPU's counters, where a
 * per-CPU array first loads the per-CPU pointer (two dependent cache misses in the live path). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32);
	__type(value, struct port_slot);
} port_slots SEC(".maps");

/* Maglev tables: per (xc, side) a descriptor {offset (low 32 bits), size (high 32 bits)} into the
 * slot pool. The control plane writes a new table into the idle half of the (xc, side) double buffer
 * through mmap, then publishes it with one aligned 8-byte store: a packet sees the old or the new
 * table, never a mix (see docs/dataplane.md). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, MAX_XC * 2);
	__type(key, __u32);
	__type(value, __u64);
} maglev_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, POOL_SLOTS);
	__type(key, __u32);
	__type(value, struct port_ref);
} maglev_pool SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 20); /* set at load time by the loader */
	__type(key, struct flow_key4);
	__type(value, struct session);
} sessions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 18); /* set at load time by the loader */
	__type(key, struct flow_key);
	__type(value, struct session);
} sessions6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct frag_key);
	__type(value, struct port_ref); /* where the first fragment went */
} frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_NEIGHBOURS);
	__type(key, struct neigh_key);
	__type(value, struct neigh_val);
} neighbours SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct neigh_key);
	__type(value, struct neigh_val);
} neighbours_learned SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_MAX);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EV_MAX);
	__type(key, __u32);
	__type(value, __u64);
} events SEC(".maps");

/* Control-plane state, pinned with the rest so a restarted agent finds it again; the program never
 * reads these two. */
#define NAME_LEN 256

struct xc_record {
	__u32 id;
	__u32 table_size; /* Maglev M */
	__u32 pool_base;  /* first of the 4 * M pool slots: [side][half] double buffers */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_XC);
	__type(key, char[NAME_LEN]); /* CrossConnection name, NUL padded */
	__type(value, struct xc_record);
} xc_registry SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32);
	__type(value, char[NAME_LEN]); /* replica identity (orders the Maglev table) */
} port_identity SEC(".maps");

/* On-wire headers we parse, declared here to stay independent of kernel headers. */
struct eth_hdr {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
} __attribute__((packed));

struct ipv4_hdr {
	__u8 ihl_version;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__sum16 check;
	__be32 saddr;
	__be32 daddr;
};

struct ipv6_hdr {
	__be32 ver_tc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u32 saddr[4];
	__u32 daddr[4];
};

struct ipv6_opt_hdr {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 id;
};

struct arp_eth_ipv4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[6];
	__u8 spa[4];
	__u8 tha[6];
	__u8 tpa[4];
} __attribute__((packed));

struct nd_msg {
	__u8 type;
	__u8 code;
	__sum16 csum;
	__be32 flags;
	__u32 target[4];
};

struct nd_opt_ll {
	__u8 type;
	__u8 len; /* in units of 8 bytes */
	__u8 mac[6];
};

/* Neighbour advertisement as sent: checksum input = pseudo header followed by the ICMPv6 body. */
struct na_reply {
	__u32 src[4];
	__u32 dst[4];
	__be32 len;
	__be32 nexthdr;
	struct nd_msg msg;
	struct nd_opt_ll opt;
};

static __always_inline void count_drop(__u32 reason)
{
	__u64 *c = bpf_map_lookup_elem(&drops, &reason);
	if (c)
		*c += 1;
}

static __always_inline int drop(__u32 reason)
{
	count_drop(reason);
	return TC_ACT_SHOT;
}

static __always_inline void count_event(__u32 ev)
{
	__u64 *c = bpf_map_lookup_elem(&events, &ev);
	if (c)
		*c += 1;
}

static __always_inline __u32 rotl32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

static __always_inline __u32 murmur_mix(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = rotl32(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = rotl32(h, 13);
	return h * 5 + 0xe6546b64;
}

/* Symmetric because the key is normalized; the xc id is left out so that both cross-connections
 * around an NF pick the same replica for the same tuple. */
static __noinline __u32 flow_hash(const struct flow_key *k, __u32 seed)
{
	__u32 h = seed;
#pragma unroll
	for (int i = 0; i < 4; i++)
		h = murmur_mix(h, k->addr_lo[i]);
#pragma unroll
	for (int i = 0; i < 4; i++)
		h = murmur_mix(h, k->addr_hi[i]);
	h = murmur_mix(h, ((__u32)k->port_lo << 16) | k->port_hi);
	h = murmur_mix(h, ((__u32)k->family << 8) | k->proto);
	h ^= 40;
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* Orders (addr, port) endpoints so both directions of a conversation build the same key. */
static __always_inline void set_endpoints(struct flow_key *k, const __u32 *a, __u16 pa, const __u32 *b,
					  __u16 pb, int words)
{
	int a_first = 1;
	int decided = 0;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		if (!decided && i < words && a[i] != b[i]) {
			a_first = a[i] < b[i];
			decided = 1;
		}
	}
	if (!decided)
		a_first = pa <= pb;
	const __u32 *lo = a_first ? a : b;
	const __u32 *hi = a_first ? b : a;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		k->addr_lo[i] = i < words ? lo[i] : 0;
		k->addr_hi[i] = i < words ? hi[i] : 0;
	}
	k->port_lo = a_first ? pa : pb;
	k->port_hi = a_first ? pb : pa;
}

static __always_inline int redirect_to(__u32 ifindex, __u8 mode)
{
	if (mode == MODE_REDIRECT)
		return bpf_redirect(ifindex, 0);
	return bpf_redirect_peer(ifindex, 0);
}

/* This CPU's copy of a port slot. */
static __always_inline struct port_slot *port_slot(__u32 slot)
{
	if (slot >= MAX_PORTS)
		return 0;
	__u32 index = bpf_get_smp_processor_id() * MAX_PORTS + slot;
	return bpf_map_lookup_elem(&port_slots, &index);
}

/* A reference is live while its slot still holds that port in (xc, side), active or draining.
 * Removed ports (slot cleared or reused) and leaving ones fail, so their sessions re-hash. A leaving
 * port still forwards what its replica sends (the slot keeps its ifindex): packets already inside
 * the replica when it left get out. One array lookup, one cache line. */
static __always_inline struct port_slot *ref_live(const struct port_ref *ref, __u32 xc, __u8 side)
{
	struct port_slot *p = port_slot(ref->slot);
	if (p && ref->ifindex && p->ifindex == ref->ifindex && p->xc == xc && p->side == side &&
	    p->state != PORT_LEAVING)
		return p;
	return 0;
}

static __always_inline struct port_slot *maglev_pick(__u32 xc, __u8 side, __u32 hash, struct port_ref *out)
{
	__u32 idx = xc * 2 + side;
	__u64 *desc = bpf_map_lookup_elem(&maglev_tables, &idx);
	if (!desc)
		return 0;
	__u64 d = *(volatile __u64 *)desc; /* one load: offset and size of the same table */
	__u32 offset = (__u32)d;
	__u32 size = (__u32)(d >> 32);
	if (size == 0)
		return 0;
	/* Normally the first entry is live. It is not when its port was marked leaving by another
	 * process (the CNI plugin on DEL) before the agent rebuilt the table: then more entries, each
	 * chosen by re-mixing the hash (a fixed stride would follow the arithmetic progressions Maglev
	 * fills a table with, and keep hitting the same replica), so every packet of a flow still lands
	 * on the same replica. Even a table being recycled can never send outside (xc, side): ref_live
	 * checks every entry. */
	__u32 h = hash;
#pragma nounroll
	for (int probe = 0; probe < MAGLEV_PROBES; probe++) {
		__u32 slot = offset + h % size;
		struct port_ref *ref = bpf_map_lookup_elem(&maglev_pool, &slot);
		if (!ref)
			return 0;
		*out = *ref;
		struct port_slot *live = ref_live(out, xc, side);
		if (live)
			return live;
		h = (h ^ (h >> 15)) * 0x2c1b3c6d + 0x9e3779b9;
		h ^= h >> 16;
	}
	return 0;
}

static __always_inline void count_to(struct port_slot *p, __u32 len, int created)
{
	p->counters.to_packets += 1;
	p->counters.to_bytes += len;
	if (created)
		p->counters.sessions_created += 1;
}

/* Explicit branches: an index computed from `side` into a stack struct upsets the verifier. */
static __always_inline void set_pair(struct session *s, __u8 src_side, const struct port_ref *ingress,
				     const struct port_ref *target)
{
	if (src_side == SIDE_A) {
		s->side[SIDE_A] = *ingress;
		s->side[SIDE_B] = *target;
	} else {
		s->side[SIDE_B] = *ingress;
		s->side[SIDE_A] = *target;
	}
}

#define CHOSEN_NEW 1    /* a session created or re-hashed now */
#define CHOSEN_SESSION 2 /* an established session */

/* Chooses the destination port of a flow: session first, else Maglev (and remembers the choice).
 * Returns CHOSEN_* with *out set, or 0 with *reason set. */
static __always_inline int choose_target(void *table, const void *session_key, const struct flow_key *key,
					 __u8 src_side, const struct port_ref *ingress,
					 __u32 len, __u32 *reason, struct port_ref *out)
{
	__u8 dst_side = src_side ^ 1;
	struct session *s = bpf_map_lookup_elem(table, session_key);

	if (s) {
		struct port_ref *there = &s->side[dst_side & 1];
		struct port_ref *here = &s->side[src_side & 1];
		struct port_slot *dst = ref_live(there, key->xc, dst_side);
		if (dst) {
			/* The flow may have moved on our side (re-hashed upstream): follow it. */
			if (here->ifindex != ingress->ifindex || here->slot != ingress->slot)
				*here = *ingress;
			*out = *there;
			count_to(dst, len, 0);
			return CHOSEN_SESSION;
		}
		/* else its replica is gone: re-hash lazily, now. */
	}

	/* A miss: only now is the configuration (the seed) needed. */
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg) {
		*reason = DROP_MALFORMED;
		return 0;
	}
	struct port_slot *picked = maglev_pick(key->xc, dst_side, flow_hash(key, cfg->seed), out);
	if (!picked) {
		*reason = DROP_NO_REPLICA;
		return 0;
	}
	if (s) {
		set_pair(s, src_side, ingress, out);
		count_event(EV_SESSION_REHASHED);
		count_to(picked, len, 1);
		return CHOSEN_NEW;
	}
	struct session fresh = {};
	set_pair(&fresh, src_side, ingress, out);
	if (bpf_map_update_elem(table, session_key, &fresh, BPF_NOEXIST) != 0) {
		/* The other direction created it on another CPU a moment ago: use that one. */
		s = bpf_map_lookup_elem(table, session_key);
		if (s) {
			struct port_ref *there = &s->side[dst_side & 1];
			struct port_slot *dst = ref_live(there, key->xc, dst_side);
			if (dst) {
				*out = *there;
				count_to(dst, len, 0);
				return CHOSEN_NEW;
			}
		}
	} else {
		count_event(EV_SESSION_CREATED);
	}
	count_to(picked, len, 1);
	return CHOSEN_NEW;
}

static __always_inline struct neigh_val *find_neighbour(__u32 xc, __u8 side, __u8 family, const __u32 *addr,
							 int words)
{
	struct neigh_key nk = {.xc = xc, .side = side, .family = family};
#pragma unroll
	for (int i = 0; i < 4; i++)
		nk.addr[i] = i < words ? addr[i] : 0;
	struct neigh_val *v = bpf_map_lookup_elem(&neighbours, &nk);
	if (v)
		return v;
	return bpf_map_lookup_elem(&neighbours_learned, &nk);
}

static __always_inline int same_mac(const __u8 *a, const __u8 *b)
{
	int diff = 0;
#pragma unroll
	for (int i = 0; i < 6; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

static __always_inline void learn_neighbour(__u32 xc, __u8 side, __u8 family, const __u32 *addr, int words,
					    const __u8 *mac)
{
	struct neigh_key nk = {.xc = xc, .side = side, .family = family};
#pragma unroll
	for (int i = 0; i < 4; i++)
		nk.addr[i] = i < words ? addr[i] : 0;
	if (bpf_map_lookup_elem(&neighbours, &nk))
		return; /* programmed addresses win */
	struct neigh_val *old = bpf_map_lookup_elem(&neighbours_learned, &nk);
	if (old && same_mac(old->mac, mac))
		return;
	struct neigh_val v = {};
	__builtin_memcpy(v.mac, mac, 6);
	bpf_map_update_elem(&neighbours_learned, &nk, &v, BPF_ANY);
	count_event(EV_NEIGH_LEARNED);
}

/* Flow cache: a small direct-mapped copy of recently used sessions per CPU, in front of the session
 * tables (an exact-match cache, as in Open vSwitch). A hit costs one cache line and no kernel hash
 * table walk; it is used only when the packet comes from the port the session has on this side and
 * the other side's port is still live, so re-hashing, draining and removal behave exactly as with the
 * session table alone. Every FLOW_CACHE_REFRESH-th hit of an entry goes through the session table
 * anyway, which keeps that table's LRU order true. Sessions enter on their second packet: one-packet
 * conversations never displace anything. */
#define FLOW_CACHE_SIZE 4096    /* entries per CPU, a power of two */
#define FLOW_CACHE_REFRESH 64   /* a power of two */

struct flow_cache_entry {
	struct flow_key key;
	struct session session;
	__u32 hits;
};
_Static_assert(sizeof(struct flow_cache_entry) == 64, "one cache line per entry");

/* [cpu][entry]: the loader sets max_entries to FLOW_CACHE_SIZE x possible CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, FLOW_CACHE_SIZE);
	__type(key, __u32);
	__type(value, struct flow_cache_entry);
} flow_cache SEC(".maps");

static __always_inline struct flow_cache_entry *flow_cache_entry(const struct flow_key *k)
{
	/* Not the seeded flow hash: only this CPU's cache placement depends on it. */
	__u32 h = (k->xc ^ k->addr_lo[0] ^ k->addr_lo[3]) * 0x9e3779b1;
	h = (h ^ k->addr_hi[0] ^ k->addr_hi[3]) * 0x85ebca77;
	h = (h ^ (((__u32)k->port_lo << 16) | k->port_hi) ^ k->proto) * 0xc2b2ae3d;
	h ^= h >> 16;
	__u32 index = bpf_get_smp_processor_id() * FLOW_CACHE_SIZE + (h & (FLOW_CACHE_SIZE - 1));
	return bpf_map_lookup_elem(&flow_cache, &index);
}

static __always_inline int same_flow(const struct flow_key *a, const struct flow_key *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
	__u32 diff = 0;
#pragma unroll
	for (int i = 0; i < sizeof(struct flow_key) / 4; i++)
		diff |= x[i] ^ y[i];
	return diff == 0;
}

/* The destination of a cached session, when the entry may be used for this packet. */
static __always_inline struct port_slot *flow_cache_hit(struct flow_cache_entry *e, const struct flow_key *key,
							 __u8 src_side, const struct port_ref *ingress)
{
	if (!same_flow(&e->key, key))
		return 0;
	if ((++e->hits & (FLOW_CACHE_REFRESH - 1)) == 0)
		return 0;
	struct port_ref *here = &e->session.side[src_side & 1];
	if (here->ifindex != ingress->ifindex || here->slot != ingress->slot)
		return 0;
	return ref_live(&e->session.side[(src_side ^ 1) & 1], key->xc, src_side ^ 1);
}

/* One shared copy of the session logic for every path (IPv4, IPv6, ARP, ND, first fragments): a
 * subprogram keeps the JIT image small (~11 KB instead of ~36 KB with everything inlined) and each
 * call chain within the 512-byte combined stack, for a call's few ns. IPv4 and ARP sessions use the
 * short key. When `first_fragment` is set, the choice is remembered for the fragments that follow. */
static __noinline int forward(struct __sk_buff *skb, struct flow_key *key, const struct ingress *in,
			      struct frag_key *first_fragment)
{
	__u32 reason = DROP_NO_REPLICA;
	struct port_ref ingress = {.ifindex = skb->ifindex, .slot = in->slot};
	struct port_ref target;
	int found;
	struct flow_cache_entry *cached = first_fragment ? 0 : flow_cache_entry(key);
	if (cached) {
		struct port_slot *dst = flow_cache_hit(cached, key, in->side, &ingress);
		if (dst) {
			count_to(dst, skb->len, 0);
			return redirect_to(cached->session.side[(in->side ^ 1) & 1].ifindex, in->mode);
		}
	}
	if (key->family == FAMILY_V6) {
		found = choose_target(&sessions6, key, key, in->side, &ingress, skb->len, &reason, &target);
	} else {
		struct flow_key4 key4 = {
			.xc = key->xc,
			.proto = key->proto,
			.family = key->family,
			.addr_lo = key->addr_lo[0],
			.addr_hi = key->addr_hi[0],
			.port_lo = key->port_lo,
			.port_hi = key->port_hi,
		};
		found = choose_target(&sessions, &key4, key, in->side, &ingress, skb->len, &reason, &target);
	}
	if (cached) {
		/* The entry follows the session table: refreshed, re-hashed or moved, it takes the table's
		 * answer; one that has no answer any more is forgotten. */
		int mine = same_flow(&cached->key, key);
		if (found == CHOSEN_SESSION || (found && mine)) {
			cached->key = *key;
			set_pair(&cached->session, in->side, &ingress, &target);
			cached->hits = 0;
		} else if (mine) {
			cached->key.xc = 0;
		}
	}
	if (!found)
		return drop(reason);
	if (first_fragment)
		bpf_map_update_elem(&frags, first_fragment, &target, BPF_ANY);
	return redirect_to(target.ifindex, in->mode);
}

static __noinline int handle_arp(struct __sk_buff *skb, const struct ingress *in)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct eth_hdr *eth = data;
	struct arp_eth_ipv4 *arp = (void *)(eth + 1);

	if ((void *)(arp + 1) > end)
		return drop(DROP_MALFORMED);
	if (arp->htype != bpf_htons(ARPHRD_ETHER) || arp->ptype != bpf_htons(ETH_P_IP) || arp->hlen != 6 ||
	    arp->plen != 4)
		return drop(DROP_ARP_UNSUPPORTED);

	__u32 spa = 0, tpa = 0;
	__builtin_memcpy(&spa, arp->spa, 4);
	__builtin_memcpy(&tpa, arp->tpa, 4);
	__u8 other = in->side ^ 1;

	if (arp->op == bpf_htons(ARPOP_REQUEST) && spa != tpa) {
		struct neigh_val *n = find_neighbour(in->xc, other, FAMILY_V4, &tpa, 1);
		if (n) {
			/* Answer in place and send it back where it came from. */
			__u8 requester[6];
			__builtin_memcpy(requester, arp->sha, 6);
			__builtin_memcpy(eth->dst, requester, 6);
			__builtin_memcpy(eth->src, n->mac, 6);
			arp->op = bpf_htons(ARPOP_REPLY);
			__builtin_memcpy(arp->tha, requester, 6);
			__builtin_memcpy(arp->tpa, &spa, 4);
			__builtin_memcpy(arp->sha, n->mac, 6);
			__builtin_memcpy(arp->spa, &tpa, 4);
			count_event(EV_ARP_REPLIED);
			return bpf_redirect(skb->ifindex, 0);
		}
	}
	if (spa) {
		__u8 sha[6];
		__builtin_memcpy(sha, arp->sha, 6);
		learn_neighbour(in->xc, in->side, FAMILY_V4, &spa, 1, sha);
	}

	/* Learned fallback: the conversation (sender, target) goes to one replica like a flow. */
	struct flow_key key = {.xc = in->xc, .family = FAMILY_ARP};
	set_endpoints(&key, &spa, 0, &tpa, 0, 1);
	return forward(skb, &key, in, 0);
}

/* Answers a neighbour solicitation for the other side's address with a neighbour advertisement,
 * rebuilt as a fixed-size frame and sent back out of the ingress port. */
static __noinline int answer_ns(struct __sk_buff *skb, const __u32 *requester, const __u32 *target,
				     const __u8 *requester_mac, const struct neigh_val *n)
{
	struct eth_hdr eth = {};
	struct ipv6_hdr ip6 = {};
	struct na_reply na = {};
	__u32 frame_len = sizeof(eth) + sizeof(ip6) + sizeof(struct nd_msg) + sizeof(struct nd_opt_ll);

	__builtin_memcpy(eth.dst, requester_mac, 6);
	__builtin_memcpy(eth.src, n->mac, 6);
	eth.proto = bpf_htons(ETH_P_IPV6);
	ip6.ver_tc_flow = bpf_htonl(0x60000000);
	ip6.payload_len = bpf_htons(sizeof(struct nd_msg) + sizeof(struct nd_opt_ll));
	ip6.nexthdr = IPPROTO_ICMPV6;
	ip6.hop_limit = 255;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		ip6.saddr[i] = target[i];
		ip6.daddr[i] = requester[i];
		na.src[i] = target[i];
		na.dst[i] = requester[i];
		na.msg.target[i] = target[i];
	}
	na.len = bpf_htonl(sizeof(struct nd_msg) + sizeof(struct nd_opt_ll));
	na.nexthdr = bpf_htonl(IPPROTO_ICMPV6);
	na.msg.type = ICMPV6_NA;
	na.msg.flags = bpf_htonl(0x60000000); /* solicited + override */
	na.opt.type = ND_OPT_TARGET_LL;
	na.opt.len = 1;
	__builtin_memcpy(na.opt.mac, n->mac, 6);

	__s64 sum = bpf_csum_diff(0, 0, (__be32 *)&na, sizeof(na), 0);
	if (sum < 0)
		return drop(DROP_MALFORMED);
	__u32 folded = (__u32)sum;
	folded = (folded & 0xffff) + (folded >> 16);
	folded = (folded & 0xffff) + (folded >> 16);
	na.msg.csum = (__sum16)~folded;

	if (bpf_skb_change_tail(skb, frame_len, 0))
		return drop(DROP_MALFORMED);
	if (bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0) ||
	    bpf_skb_store_bytes(skb, sizeof(eth), &ip6, sizeof(ip6), 0) ||
	    bpf_skb_store_bytes(skb, sizeof(eth) + sizeof(ip6), &na.msg,
				sizeof(struct nd_msg) + sizeof(struct nd_opt_ll), 0))
		return drop(DROP_MALFORMED);
	count_event(EV_ND_REPLIED);
	return bpf_redirect(skb->ifindex, 0);
}

#define ND_NOT_ANSWERED -1

/* Neighbour solicitation or advertisement right after the IPv6 header (ND never uses extension
 * headers). Returns a verdict when answered (or malformed), else ND_NOT_ANSWERED with `key` set for
 * forwarding: kept out of the forward() call chain to fit the 512-byte combined stack. */
static __noinline int handle_nd(struct __sk_buff *skb, const struct ingress *in, struct flow_key *key)
{
	void *end = (void *)(long)skb->data_end;
	struct ipv6_hdr *ip6 = (void *)(long)skb->data + sizeof(struct eth_hdr);
	struct nd_msg *nd = (void *)(ip6 + 1);
	if ((void *)(nd + 1) > end)
		return drop(DROP_MALFORMED);
	__u32 requester[4], target[4];
	__u8 other = in->side ^ 1;
	__builtin_memcpy(target, nd->target, 16);

	if (nd->type == ICMPV6_NS) {
		__builtin_memcpy(requester, ip6->saddr, 16);
		int dad = !(requester[0] | requester[1] | requester[2] | requester[3]);
		struct neigh_val *n = dad ? 0 : find_neighbour(in->xc, other, FAMILY_V6, target, 4);
		if (n && ip6->hop_limit == 255 && nd->code == 0) {
			struct eth_hdr *eth = (void *)(long)skb->data;
			if ((void *)(eth + 1) > (void *)(long)skb->data_end)
				return drop(DROP_MALFORMED);
			__u8 requester_mac[6];
			__builtin_memcpy(requester_mac, eth->src, 6);
			return answer_ns(skb, requester, target, requester_mac, n);
		}
	} else {
		/* NA: learn the advertised address when it carries its link-layer address. */
		__builtin_memcpy(requester, ip6->daddr, 16);
		struct nd_opt_ll *opt = (void *)(nd + 1);
		if ((void *)(opt + 1) <= end && opt->type == ND_OPT_TARGET_LL && opt->len == 1) {
			__u8 mac[6];
			__builtin_memcpy(mac, opt->mac, 6);
			learn_neighbour(in->xc, in->side, FAMILY_V6, target, 4, mac);
		}
	}
	/* Not answered: solicitation and advertisement share the (requester, target) conversation. */
	key->xc = in->xc;
	key->family = FAMILY_V6;
	key->proto = IPPROTO_ICMPV6;
	set_endpoints(key, requester, 0, target, 0, 4);
	return ND_NOT_ANSWERED;
}

static __always_inline int has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

/* Fragments: a first fragment is forwarded like its flow and remembered under {addresses, protocol,
 * id}; a later fragment (no L4 header) goes where its first fragment went. `id_first` packs the
 * fragment id (network order) above the first-fragment bit. A subprogram: rare, and it keeps the
 * fragment key off the hot path's stack. */
static __noinline int handle_fragment(struct __sk_buff *skb, const struct ingress *in,
				      struct flow_key *key, __u64 id_first)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct frag_key fk = {.xc = in->xc, .id = (__u32)(id_first >> 1), .proto = key->proto};

	if (key->family == FAMILY_V4) {
		struct ipv4_hdr *ip = data + sizeof(struct eth_hdr);
		if ((void *)(ip + 1) > end)
			return drop(DROP_MALFORMED);
		fk.family = FAMILY_V4;
		fk.src[0] = ip->saddr;
		fk.dst[0] = ip->daddr;
	} else {
		struct ipv6_hdr *ip6 = data + sizeof(struct eth_hdr);
		if ((void *)(ip6 + 1) > end)
			return drop(DROP_MALFORMED);
		fk.family = FAMILY_V6;
		__builtin_memcpy(fk.src, ip6->saddr, 16);
		__builtin_memcpy(fk.dst, ip6->daddr, 16);
	}
	if (id_first & 1)
		return forward(skb, key, in, &fk);

	struct port_ref *seen = bpf_map_lookup_elem(&frags, &fk);
	if (!seen)
		return drop(DROP_FRAG_UNKNOWN);
	struct port_ref target = *seen;
	struct port_slot *dst = ref_live(&target, in->xc, in->side ^ 1);
	if (!dst)
		return drop(DROP_FRAG_UNKNOWN);
	count_to(dst, skb->len, 0);
	count_event(EV_FRAG_FOLLOWED);
	return redirect_to(target.ifindex, in->mode);
}

/* Inlined into the entry point: IPv4 is the hot path, one call (forward) is enough. */
static __always_inline int handle_ipv4(struct __sk_buff *skb, const struct ingress *in)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ipv4_hdr *ip = data + sizeof(struct eth_hdr);

	if ((void *)(ip + 1) > end)
		return drop(DROP_MALFORMED);
	__u32 ihl = (ip->ihl_version & 0x0f) * 4;
	if ((ip->ihl_version >> 4) != 4 || ihl < sizeof(*ip))
		return drop(DROP_MALFORMED);

	struct flow_key key = {.xc = in->xc, .family = FAMILY_V4, .proto = ip->protocol};
	__u32 saddr = ip->saddr, daddr = ip->daddr;
	__u16 frag = bpf_ntohs(ip->frag_off);
	int fragmented = frag & 0x3fff; /* MF or an offset */
	int first = (frag & 0x1fff) == 0;
	__u16 sport = 0, dport = 0;

	if (first && has_ports(ip->protocol)) {
		__be16 *l4 = (void *)ip + ihl;
		if ((void *)(l4 + 2) > end)
			return drop(DROP_MALFORMED);
		sport = l4[0];
		dport = l4[1];
	}
	set_endpoints(&key, &saddr, sport, &daddr, dport, 1);
	if (!fragmented)
		return forward(skb, &key, in, 0);

	return handle_fragment(skb, in, &key, (__u64)ip->id << 1 | first);
}

static __noinline int handle_ipv6(struct __sk_buff *skb, const struct ingress *in)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ipv6_hdr *ip6 = data + sizeof(struct eth_hdr);

	if ((void *)(ip6 + 1) > end)
		return drop(DROP_MALFORMED);
	if ((bpf_ntohl(ip6->ver_tc_flow) >> 28) != 6)
		return drop(DROP_MALFORMED);

	__u8 nh = ip6->nexthdr;
	void *cur = ip6 + 1;
	int fragmented = 0, first = 1, extended = 0;
	__be32 frag_id = 0;

#pragma unroll
	for (int i = 0; i < MAX_IPV6_EXT; i++) {
		if (nh == NEXTHDR_HOP || nh == NEXTHDR_ROUTING || nh == NEXTHDR_DEST) {
			struct ipv6_opt_hdr *o = cur;
			if ((void *)(o + 1) > end)
				return drop(DROP_MALFORMED);
			nh = o->nexthdr;
			cur += ((__u32)o->hdrlen + 1) * 8;
			extended = 1;
		} else if (nh == NEXTHDR_FRAGMENT) {
			struct ipv6_frag_hdr *f = cur;
			if ((void *)(f + 1) > end)
				return drop(DROP_MALFORMED);
			nh = f->nexthdr;
			__u16 off = bpf_ntohs(f->frag_off);
			fragmented = 1;
			first = (off & 0xfff8) == 0;
			frag_id = f->id;
			cur = f + 1;
			extended = 1;
		}
	}
	if (nh == NEXTHDR_HOP || nh == NEXTHDR_ROUTING || nh == NEXTHDR_DEST || nh == NEXTHDR_FRAGMENT)
		return drop(DROP_IPV6_EXT);

	struct flow_key key = {.xc = in->xc, .family = FAMILY_V6, .proto = nh};
	__u16 sport = 0, dport = 0;

	if (first && has_ports(nh)) {
		__be16 *l4 = cur;
		if ((void *)(l4 + 2) > end)
			return drop(DROP_MALFORMED);
		sport = l4[0];
		dport = l4[1];
	} else if (!extended && nh == IPPROTO_ICMPV6) {
		struct nd_msg *nd = cur;
		if ((void *)(nd + 1) <= end && (nd->type == ICMPV6_NS || nd->type == ICMPV6_NA)) {
			int verdict = handle_nd(skb, in, &key);
			return verdict == ND_NOT_ANSWERED ? forward(skb, &key, in, 0) : verdict;
		}
	}

	set_endpoints(&key, ip6->saddr, sport, ip6->daddr, dport, 4);
	if (!fragmented)
		return forward(skb, &key, in, 0);

	return handle_fragment(skb, in, &key, (__u64)frag_id << 1 | first);
}

/* The ingress port of an untagged filter (BPF_PROG_TEST_RUN cannot set a classid; a filter attached
 * by an older agent has none): its ifindex through the port maps, the mode from the configuration. */
static __always_inline int untagged_ingress(__u32 ifindex, struct ingress *in)
{
	struct port_info *info;
	if (ifindex < PORT_INDEX_SIZE) {
		info = bpf_map_lookup_elem(&ports_by_index, &ifindex);
		if (info && info->xc == 0)
			info = 0;
	} else {
		info = bpf_map_lookup_elem(&ports, &ifindex);
	}
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!info || !cfg)
		return 0;
	in->slot = info->slot;
	in->mode = cfg->redirect_mode == MODE_REDIRECT ? MODE_REDIRECT : MODE_PEER;
	return 1;
}

SEC("tc")
int xconnect(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	/* cls_bpf hands the filter's classid minor to the program: the control plane tags every filter
	 * with its port (see TAG_*), so the hot path needs no port lookup and no configuration. */
	__u32 tag = skb->tc_classid;
	struct ingress in = {};

	if (tag & TAG_SLOT_MASK) {
		in.slot = (tag & TAG_SLOT_MASK) - 1;
		in.mode = tag & TAG_PLAIN_REDIRECT ? MODE_REDIRECT : MODE_PEER;
	} else if (!untagged_ingress(ifindex, &in)) {
		return drop(DROP_UNKNOWN_PORT);
	}
	struct port_slot *self = port_slot(in.slot);
	/* The slot must hold this very interface: a stale tag or entry never forwards. */
	if (!self || self->ifindex != ifindex || self->xc == 0)
		return drop(DROP_UNKNOWN_PORT);
	in.xc = self->xc;
	in.side = self->side;
	self->counters.from_packets += 1;
	self->counters.from_bytes += skb->len;

	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct eth_hdr *eth = data;
	if ((void *)(eth + 1) > end)
		return drop(DROP_MALFORMED);

	switch (eth->proto) {
	case bpf_htons(ETH_P_IP):
		return handle_ipv4(skb, &in);
	case bpf_htons(ETH_P_IPV6):
		return handle_ipv6(skb, &in);
	case bpf_htons(ETH_P_ARP):
		return handle_arp(skb, &in);
	default:
		return drop(DROP_NOT_IP);
	}
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
