/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The seeded symmetric flow hash and the Maglev pick of a destination replica.
 */
#ifndef XC_MAGLEV_H
#define XC_MAGLEV_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "ports.h"

#define MAGLEV_PROBES 16 /* table entries tried when the first one's port is no target */

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
	/* A loop, not unrolled: unrolled, the compiler hoisted the eight loads and spilled them, an
	 * 80-byte frame on the deepest call chain (xconnect -> handle_ipv6 -> handle_fragment ->
	 * forward -> flow_hash), which must fit in 512 bytes. Same values: addr_lo then addr_hi. */
#pragma nounroll
	for (int i = 0; i < 8; i++)
		h = murmur_mix(h, i < 4 ? k->addr_lo[i & 3] : k->addr_hi[i & 3]);
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

#endif /* XC_MAGLEV_H */
