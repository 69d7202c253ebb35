// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * flexsfc cross-connection: one TC direct-action program attached at ingress of the host-side veth
 * of every NF data-plane interface. A packet emitted by a replica of side A of a cross-connection
 * (xc) goes to one replica of side B, and vice versa:
 *   1. session tables (key = xc + normalized 5-tuple, so both directions share one entry): the
 *      confirmed sessions (a hash the agent ages out), then the unconfirmed flows (an LRU);
 *   2. else the Maglev table of the destination side, indexed by a symmetric seeded hash, and the
 *      choice is remembered as unconfirmed until the other side answers.
 * ARP requests / IPv6 neighbour solicitations for the other side's addresses are answered in place.
 * Packet headers of forwarded packets are never modified.
 *
 * This file is the entry point; the rest is in lib/, one header per job:
 *   consts.h, structs.h, maps.h  the contract with user space: constants (as enums), map keys and
 *                                values, maps. flexsfc/dataplane/maps.py mirrors them, and
 *                                tests/unit/dataplane/test_contract.py checks the mirror against
 *                                this object's BTF;
 *   wire.h                       on-wire headers and protocol numbers;
 *   stats.h                      drop, event and port counters;
 *   ports.h                      ingress port, port slots and their liveness, redirect;
 *   maglev.h                     flow hash and Maglev pick;
 *   flow_cache.h                 per-CPU exact-match cache in front of the session tables;
 *   session.h                    flow keys, sessions, forward();
 *   neigh.h                      ARP and ND answering and learning;
 *   frag.h                       fragments;
 *   parse.h                      IPv4 and IPv6 (extension headers) up to L4;
 *   events.h                     the flow event stream (a ring buffer read by `flexsfc flows`);
 *   tunnel.h                     replicas on other nodes: VXLAN out and in (docs/multinode.md).
 *
 * Built with uapi + libbpf headers only (see flexsfc/dataplane/build.py, which rebuilds when any
 * file here changes).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "lib/consts.h"
#include "lib/events.h"
#include "lib/maps.h"
#include "lib/neigh.h"
#include "lib/parse.h"
#include "lib/ports.h"
#include "lib/stats.h"
#include "lib/tunnel.h"
#include "lib/wire.h"

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

/* The IPv4 path of tunnel packets: inlined into xtunnel, its frame would sit under the deepest call
 * chain (handle_ipv6 -> handle_fragment -> forward -> ...), which would no longer fit in 512 bytes. */
static __noinline int handle_ipv4_tunnel(struct __sk_buff *skb, const struct ingress *in)
{
	return handle_ipv4(skb, in);
}

/* Parsed from L2 on: the same for local ports and the tunnel. */
static __always_inline int dispatch(struct __sk_buff *skb, const struct ingress *in, int tunnel)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct eth_hdr *eth = data;
	if ((void *)(eth + 1) > end)
		return drop(DROP_MALFORMED);

	switch (eth->proto) {
	case bpf_htons(ETH_P_IP):
		return tunnel ? handle_ipv4_tunnel(skb, in) : handle_ipv4(skb, in);
	case bpf_htons(ETH_P_IPV6):
		return handle_ipv6(skb, in);
	case bpf_htons(ETH_P_ARP):
		return handle_arp(skb, in);
	default:
		return drop(DROP_NOT_IP);
	}
}

/* A packet at ingress of the node's VXLAN device (tunnel.h). */
static __always_inline int tunnel_packet(struct __sk_buff *skb, __u32 tag)
{
	struct ingress in = {.mode = tag & TAG_PLAIN_REDIRECT ? MODE_REDIRECT : MODE_PEER};
	int verdict = tunnel_ingress(skb, &in);
	if (verdict != TUNNEL_PARSE)
		return verdict;
	struct port_slot *self = port_slot(in.slot); /* the sender's remote port, checked there */
	if (!self)
		return drop(DROP_UNKNOWN_PORT);
	self->counters.from_packets += 1;
	self->counters.from_bytes += skb->len;
	return dispatch(skb, &in, 1);
}

static __always_inline int xconnect_packet(struct __sk_buff *skb)
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
	return dispatch(skb, &in, 0);
}

SEC("tc")
int xconnect(struct __sk_buff *skb)
{
	int verdict = xconnect_packet(skb);
	/* Every drop leaves here: its event (events.h) needs the packet, which drop() does not see.
	 * Forwarded packets pay one compare of the verdict. */
	if (verdict == TC_ACT_SHOT && events_maybe_on())
		events_dropped(skb);
	return verdict;
}

/* The program at ingress of the node's VXLAN device (multi-node, tunnel.h). A program of its own,
 * not a branch of xconnect: the verifier bounds each program's deepest call chain to 512 bytes of
 * stack, and the tunnel's frames on top of the local path's would not fit. */
SEC("tc")
int xtunnel(struct __sk_buff *skb)
{
	int verdict = tunnel_packet(skb, skb->tc_classid);
	if (verdict == TC_ACT_SHOT && events_maybe_on())
		events_dropped(skb);
	return verdict;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
