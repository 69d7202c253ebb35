/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * L3/L4 parsing: IPv4 and IPv6 (extension headers walked) up to the ports, handing the flow key to
 * forward(), to the fragment path or, for ND, to neigh.h.
 */
#ifndef XC_PARSE_H
#define XC_PARSE_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "frag.h"
#include "icmp.h"
#include "neigh.h"
#include "session.h"
#include "stats.h"
#include "wire.h"

/* Inlined into the entry point: IPv4 is the hot path, one call (forward) is enough. */
static __always_inline int handle_ipv4(struct __sk_buff *skb, const struct ingress *in)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ipv4_hdr *ip = data + sizeof(struct eth_hdr);

	if ((void *)(ip + 1) > end)
		return drop(DROP_MALFORMED);
	/* One compare on the hot path: ICMP goes through follow_icmp_error (icmp.h), which looks at
	 * the rest itself, so that nothing but the packet pointers stays alive across the call (the
	 * entry point's frame is on the deepest call chain: xconnect -> handle_ipv6 ->
	 * handle_fragment -> forward -> flow_hash). */
	if (ip->protocol == IPPROTO_ICMP && !in->target && maybe_icmp_error(ip, end)) {
		int verdict = follow_icmp_error(skb, in, FAMILY_V4);
		if (verdict != ICMP_ERROR_UNMATCHED)
			return verdict;
	}
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
		return forward_packet(skb, &key, in, 0);

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
			/* In a non-first fragment, what follows the Fragment header is a slice of the
			 * fragmentable part (a Destination Options header after it, common with tunnels,
			 * is in the first fragment only): nothing more to walk. */
			if (!first)
				break;
		}
	}
	if (first && is_ipv6_ext(nh))
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
		/* ICMPv6 errors are followed when the ICMPv6 header comes right after the IPv6 header,
		 * as routers and hosts send them: follow_icmp_error finds it at a constant offset, and
		 * this subprogram (on the deepest call chain too) keeps no offset alive through the walk.
		 * Not those from the tunnel: the sending node followed them and names the target. ND from
		 * the tunnel does go to handle_nd (which answers only local ports): its session must take
		 * the (requester, target) key the sending node used, or the advertisement answering a
		 * remote replica's solicitation finds no session and is hashed to any replica. */
		struct nd_msg *nd = cur;
		if ((void *)(nd + 1) <= end && is_icmpv6_error(nd->type)) {
			if (!in->target) {
				int verdict = follow_icmp_error(skb, in, FAMILY_V6);
				if (verdict != ICMP_ERROR_UNMATCHED)
					return verdict;
			}
		} else if ((void *)(nd + 1) <= end && (nd->type == ICMPV6_NS || nd->type == ICMPV6_NA)) {
			int verdict = handle_nd(skb, in, &key);
			return verdict == ND_NOT_ANSWERED ? forward_packet(skb, &key, in, 0) : verdict;
		}
	}

	set_endpoints(&key, ip6->saddr, sport, ip6->daddr, dport, 4);
	if (!fragmented)
		return forward_packet(skb, &key, in, 0);

	return handle_fragment(skb, in, &key, (__u64)frag_id << 1 | first);
}

#endif /* XC_PARSE_H */
