/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ICMP and ICMPv6 errors (destination unreachable, fragmentation needed / packet too big, time
 * exceeded, parameter problem) go to the replica that holds the session they are about.
 *
 * An error's own addresses are those of whoever sent it (a router, a host further on) and of the
 * flow's endpoint; hashed like any other ICMP packet, all errors towards one endpoint would land
 * on one replica, which has no state for most of the flows they are about. A stateful NF (a
 * conntrack router, a firewall) then drops them as unrelated, and path-MTU discovery black-holes
 * every flow of the other replicas. So, as Cilium and Katran do, the error is keyed by the packet
 * it quotes: that packet went the other way, so its source and destination are swapped compared
 * with the error, and because flow keys are normalized (set_endpoints), its key is the key of the
 * session itself, whichever direction the quoted packet took.
 *
 * The quoted packet comes from the wire and may be truncated, forged or inconsistent: it is read
 * with bpf_skb_load_bytes at offsets derived from the outer headers, every read checked against
 * the packet's length by the helper, every length field bounded here, and the extension header walk
 * capped. Anything that does not lead to a live session returns ICMP_ERROR_UNMATCHED and the error
 * takes the normal path (hashed by its own addresses): never a drop for a reason the normal path
 * would not drop for.
 */
#ifndef XC_ICMP_H
#define XC_ICMP_H

#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "ports.h"
#include "session.h"
#include "stats.h"
#include "wire.h"

#define ICMP_ERROR_UNMATCHED -2 /* not a TC verdict: the caller forwards the error as a flow */

static __always_inline int is_icmp_error(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED || type == ICMP_PARAMETERPROB;
}

static __always_inline int is_icmpv6_error(__u8 type)
{
	return type == ICMPV6_DEST_UNREACH || type == ICMPV6_PKT_TOOBIG || type == ICMPV6_TIME_EXCEED ||
	       type == ICMPV6_PARAMPROB;
}

/* The flow key of the packet quoted by an ICMP error whose ICMP header starts at `icmp_off`.
 * Returns 0 when there is no usable quoted packet (truncated, not IP of the error's own family, a
 * non-first fragment, too many extension headers). */
static __always_inline int quoted_flow_key(struct __sk_buff *skb, __u32 icmp_off, __u8 family,
					   struct flow_key *key)
{
	__u32 off = icmp_off + ICMP_ERROR_HDR_LEN;
	__u8 proto;
	__u32 src[4] = {}, dst[4] = {};
	int words;

	if (family == FAMILY_V4) {
		struct ipv4_hdr ip;
		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
			return 0;
		__u32 ihl = (ip.ihl_version & 0x0f) * 4; /* at most 60 */
		if ((ip.ihl_version >> 4) != 4 || ihl < sizeof(ip))
			return 0;
		/* A non-first fragment quotes no ports; keyed without them it would be another flow. */
		if ((bpf_ntohs(ip.frag_off) & 0x1fff) != 0)
			return 0;
		proto = ip.protocol;
		src[0] = ip.saddr;
		dst[0] = ip.daddr;
		off += ihl;
		words = 1;
	} else {
		struct ipv6_hdr ip6;
		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0)
			return 0;
		if ((bpf_ntohl(ip6.ver_tc_flow) >> 28) != 6)
			return 0;
		proto = ip6.nexthdr;
		__builtin_memcpy(src, ip6.saddr, 16);
		__builtin_memcpy(dst, ip6.daddr, 16);
		off += sizeof(ip6);
		/* The same walk as the outer header's (parse.h), with the same cap; each step reads at
		 * most 8 bytes and moves at most 2048. Not unrolled: this is no hot path, and the loop
		 * body with its helper calls is a fifth of the subprogram. */
#pragma nounroll
		for (int i = 0; i < MAX_IPV6_EXT; i++) {
			if (proto == NEXTHDR_HOP || proto == NEXTHDR_ROUTING || proto == NEXTHDR_DEST) {
				struct ipv6_opt_hdr o;
				if (bpf_skb_load_bytes(skb, off, &o, sizeof(o)) < 0)
					return 0;
				proto = o.nexthdr;
				off += ((__u32)o.hdrlen + 1) * 8;
			} else if (proto == NEXTHDR_FRAGMENT) {
				struct ipv6_frag_hdr f;
				if (bpf_skb_load_bytes(skb, off, &f, sizeof(f)) < 0)
					return 0;
				if ((bpf_ntohs(f.frag_off) & 0xfff8) != 0)
					return 0; /* what follows is fragment data, not headers */
				proto = f.nexthdr;
				off += sizeof(f);
			}
		}
		if (is_ipv6_ext(proto))
			return 0;
		words = 4;
	}

	/* Ports as the normal path reads them: the first 4 bytes of the L4 header (an error quotes at
	 * least 8 bytes of it). ICMP and other protocols are keyed by addresses only. */
	__u16 ports[2] = {};
	if (has_ports(proto) && bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
		return 0;
	key->family = family;
	key->proto = proto;
	set_endpoints(key, src, ports[0], dst, ports[1], words);
	return 1;
}

/* Whether an IPv4 ICMP packet may be an error, without a call: for the usual 20-byte header the
 * type is at a constant offset, and echo requests and replies (the common ICMP) stay on the inlined
 * path. Headers with options, or too short to tell, are left to follow_icmp_error. */
static __always_inline int maybe_icmp_error(const struct ipv4_hdr *ip, const void *end)
{
	const __u8 *type = (const void *)(ip + 1);
	if (ip->ihl_version != 0x45 || (const void *)(type + 1) > end)
		return 1;
	return is_icmp_error(*type);
}

/* Where the ICMP header of an unfragmented ICMP (v4) or ICMPv6 error starts, or 0 when the packet
 * is none: IPv4 is checked here (the caller saw protocol ICMP only), IPv6 by the caller (ICMPv6
 * right after the IPv6 header, not fragmented, an error type), re-checked here. */
static __always_inline __u32 icmp_error_offset(struct __sk_buff *skb, __u8 family)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 off;

	if (family == FAMILY_V4) {
		struct ipv4_hdr *ip = data + sizeof(struct eth_hdr);
		if ((void *)(ip + 1) > end)
			return 0;
		__u32 ihl = (ip->ihl_version & 0x0f) * 4;
		if ((ip->ihl_version >> 4) != 4 || ihl < sizeof(*ip))
			return 0;
		if (ip->frag_off & bpf_htons(0x3fff)) /* fragmented: left to the normal path */
			return 0;
		off = sizeof(struct eth_hdr) + ihl;
	} else {
		off = sizeof(struct eth_hdr) + sizeof(struct ipv6_hdr);
	}
	__u8 *type = data + off;
	if ((void *)(type + 1) > end)
		return 0;
	if (family == FAMILY_V4 ? !is_icmp_error(*type) : !is_icmpv6_error(*type))
		return 0;
	return off;
}

/* Sends an ICMP error to the replica that the session of the quoted packet has on the other side.
 * Read-only: the session is neither created nor changed (an error is no sign that the flow moved,
 * and the replica that sent it may be any of its side's), and the flow cache is left alone. */
static __noinline int follow_icmp_error(struct __sk_buff *skb, const struct ingress *in, __u8 family)
{
	struct flow_key key = {.xc = in->xc};
	struct session_value *s;

	__u32 icmp_off = icmp_error_offset(skb, family);
	if (!icmp_off || !quoted_flow_key(skb, icmp_off, family, &key))
		return ICMP_ERROR_UNMATCHED;
	if (family == FAMILY_V6) {
		s = bpf_map_lookup_elem(&sessions6, &key);
		if (!s) /* e.g. a port unreachable for a flow that never got an answer */
			s = bpf_map_lookup_elem(&unconfirmed6, &key);
	} else {
		struct flow_key4 key4 = {
			.xc = key.xc,
			.proto = key.proto,
			.family = key.family,
			.addr_lo = key.addr_lo[0],
			.addr_hi = key.addr_hi[0],
			.port_lo = key.port_lo,
			.port_hi = key.port_hi,
		};
		s = bpf_map_lookup_elem(&sessions, &key4);
		if (!s)
			s = bpf_map_lookup_elem(&unconfirmed, &key4);
	}
	if (!s)
		return ICMP_ERROR_UNMATCHED;
	__u8 dst_side = in->side ^ 1;
	struct port_ref target = s->pair.side[dst_side & 1];
	struct port_slot *dst = ref_live(&target, in->xc, dst_side);
	if (!dst)
		return ICMP_ERROR_UNMATCHED;
	count_to(dst, skb->len, 0);
	count_event(EV_ICMP_ERROR_FOLLOWED);
	events_session(EVENT_WHAT(FLOW_EV_ICMP_ERROR, in->side, in->slot), &key, &s->pair, skb->ifindex, &target);
	return deliver(skb, target.ifindex, target.slot, in);
}

#endif /* XC_ICMP_H */
