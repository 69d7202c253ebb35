/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ARP and IPv6 neighbour discovery: requests for the other side's addresses are answered in place,
 * senders' addresses are learned, and what is not answered is forwarded like a flow.
 */
#ifndef XC_NEIGH_H
#define XC_NEIGH_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "session.h"
#include "stats.h"
#include "wire.h"

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

	/* Not for tunnel packets: the sending node answers its replicas' requests itself. */
	if (!in->target && arp->op == bpf_htons(ARPOP_REQUEST) && spa != tpa) {
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
	return forward_packet(skb, &key, in, 0);
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
		/* Not for tunnel packets: the sending node answers its replicas' solicitations itself. */
		struct neigh_val *n = dad || in->target ? 0 : find_neighbour(in->xc, other, FAMILY_V6, target, 4);
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

#endif /* XC_NEIGH_H */
