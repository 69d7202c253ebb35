/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * On-wire headers and protocol numbers, declared here to stay independent of kernel headers
 * (linux/in6.h, for one, needs libc headers).
 */
#ifndef XC_WIRE_H
#define XC_WIRE_H

#include <linux/in.h>
#include <linux/types.h>

#define ARPHRD_ETHER 1
#define ARPOP_REQUEST 1
#define ARPOP_REPLY 2

#define NEXTHDR_HOP 0
#define IPPROTO_ICMPV6 58
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_DEST 60
#define ICMPV6_NS 135
#define ICMPV6_NA 136
#define ND_OPT_SOURCE_LL 1
#define ND_OPT_TARGET_LL 2

/* ICMP and ICMPv6 errors: each carries (the start of) the packet it is about, after 8 bytes of
 * type, code, checksum and a word of its own (unused, next-hop MTU or pointer). */
#define ICMP_DEST_UNREACH 3
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_TIME_EXCEED 3
#define ICMPV6_PARAMPROB 4
#define ICMP_ERROR_HDR_LEN 8

/* Protocols whose flows are keyed by ports as well as addresses. */
static __always_inline int has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

#define MAX_IPV6_EXT 4 /* IPv6 extension headers walked before giving up */

static __always_inline int is_ipv6_ext(__u8 nh)
{
	return nh == NEXTHDR_HOP || nh == NEXTHDR_ROUTING || nh == NEXTHDR_DEST || nh == NEXTHDR_FRAGMENT;
}

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

#endif /* XC_WIRE_H */
