/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv4 and IPv6 fragments.
 */
#ifndef XC_FRAG_H
#define XC_FRAG_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "ports.h"
#include "session.h"
#include "stats.h"
#include "wire.h"

/* Fragments: a first fragment is forwarded like its flow and remembered under {addresses, protocol,
 * id}; a later fragment (no L4 header) goes where its first fragment went. `id_first` packs the
 * fragment id (network order) above the first-fragment bit. A subprogram: rare, and it keeps the
 * fragment key off the hot path's stack. */
static __noinline int handle_fragment(struct __sk_buff *skb, const struct ingress *in,
				      struct flow_key *key, __u64 id_first)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct frag_key fk = {.xc = in->xc, .id = (__u32)(id_first >> 1)};

	if (key->family == FAMILY_V4) {
		struct ipv4_hdr *ip = data + sizeof(struct eth_hdr);
		if ((void *)(ip + 1) > end)
			return drop(DROP_MALFORMED);
		fk.family = FAMILY_V4;
		fk.proto = key->proto; /* RFC 791: a packet is (source, destination, protocol, id) */
		fk.src[0] = ip->saddr;
		fk.dst[0] = ip->daddr;
	} else {
		struct ipv6_hdr *ip6 = data + sizeof(struct eth_hdr);
		if ((void *)(ip6 + 1) > end)
			return drop(DROP_MALFORMED);
		/* RFC 8200: source, destination and id, no protocol. The fragments' only common
		 * protocol value is the Fragment header's next header, and the first fragment's key
		 * has the upper layer's, which can sit behind more headers (Destination Options). */
		fk.family = FAMILY_V6;
		__builtin_memcpy(fk.src, ip6->saddr, 16);
		__builtin_memcpy(fk.dst, ip6->daddr, 16);
	}
	if (id_first & 1)
		return forward_packet(skb, key, in, &fk);
	if (in->target & INGRESS_TARGET) /* from the tunnel: the sender followed the first fragment */
		return tunnel_deliver(skb, 0, in);

	struct port_ref *seen = bpf_map_lookup_elem(&frags, &fk);
	if (!seen)
		return drop(DROP_FRAG_UNKNOWN);
	struct port_ref target = *seen;
	struct port_slot *dst = ref_live(&target, in->xc, in->side ^ 1);
	if (!dst)
		return drop(DROP_FRAG_UNKNOWN);
	count_to(dst, skb->len, 0);
	count_event(EV_FRAG_FOLLOWED);
	return deliver(skb, target.ifindex, target.slot, in);
}

#endif /* XC_FRAG_H */
