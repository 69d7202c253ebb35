/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flow cache: a small direct-mapped copy of recently used sessions per CPU, in front of the session
 * tables (an exact-match cache, as in Open vSwitch). A hit costs one cache line and no kernel hash
 * table walk; it is used only when the packet comes from the port the session has on this side and
 * the other side's port is still live, so re-hashing, draining and removal behave exactly as with the
 * session tables alone. An entry older than FLOW_CACHE_REFRESH_JIFFIES sends its flow's next packet
 * through the tables, which refreshes the session's last-seen stamp (the agent's idle timeouts read
 * it) and the entry. Sessions enter on their second packet: one-packet conversations never displace
 * anything.
 */
#ifndef XC_FLOW_CACHE_H
#define XC_FLOW_CACHE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "ports.h"

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

/* The entry's stamp: jiffies in the upper 30 bits; bit 0 set for an unconfirmed flow, whose packets
 * only from the side in bit 1 may be served here. */
#define FLOW_CACHE_UNCONFIRMED 1
#define FLOW_CACHE_STAMP_BITS 3

static __always_inline __u32 flow_cache_stamp(int unconfirmed, __u8 side)
{
	__u32 now = (__u32)bpf_jiffies64() & ~FLOW_CACHE_STAMP_BITS;
	return unconfirmed ? now | FLOW_CACHE_UNCONFIRMED | ((__u32)(side & 1) << 1) : now;
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
	/* Time, not a hit count: a slow flow must not be served from here for minutes while its
	 * confirmed session's last-seen stamp ages towards its idle timeout. */
	__u32 stamp = e->stamp;
	if (((__u32)bpf_jiffies64() & ~FLOW_CACHE_STAMP_BITS) - (stamp & ~FLOW_CACHE_STAMP_BITS) >=
	    FLOW_CACHE_REFRESH_JIFFIES)
		return 0;
	/* An unconfirmed flow's first packet from the other side must reach the tables to confirm it. */
	if ((stamp & FLOW_CACHE_UNCONFIRMED) && ((stamp >> 1) & 1) != src_side)
		return 0;
	struct port_ref *here = &e->session.side[src_side & 1];
	if (here->ifindex != ingress->ifindex || here->slot != ingress->slot)
		return 0;
	return ref_live(&e->session.side[(src_side ^ 1) & 1], key->xc, src_side ^ 1);
}

#endif /* XC_FLOW_CACHE_H */
