/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Cross-connections across nodes (docs/multinode.md). A side's Maglev table holds its replicas on
 * every node. A pick on another node is a port slot like a local one, whose reference carries a
 * key with REMOTE_PORT_BIT instead of an ifindex: the packet gets a tunnel key (the node, the
 * target's VNI) and the sender's 16-bit identity (the VXLAN group-policy field), and goes to the
 * node's VXLAN device in external mode. The second program of the object, xtunnel, runs at that
 * device's ingress (its filter tagged TAG_TUNNEL, for the redirect mode): it checks the outer
 * source against the known nodes, finds the local port the VNI names and this node's reference to
 * the sender, records the session with both (so the reply goes back to the exact replica that
 * sent, whatever the tables say by then) and delivers.
 */
#ifndef XC_TUNNEL_H
#define XC_TUNNEL_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "ports.h"
#include "stats.h"

#define TUNNEL_TTL 64
#define TUNNEL_PARSE (-2) /* tunnel_ingress: `in` describes a known sender; parse and deliver */

/* The VXLAN group-policy option as bpf_skb_{get,set}_tunnel_opt see it (the kernel's struct
 * vxlan_metadata); its low 16 bits go on the wire. */
struct vxlan_gbp {
	__u32 gbp;
};
#define VXLAN_GBP_ID_MASK 0xffff

/* A subprogram: the tunnel key stays off the stack of the local path. */
static __noinline int tunnel_send(struct __sk_buff *skb, __u32 target_slot, __u32 sender_slot)
{
	struct tunnel_port *peer = bpf_map_lookup_elem(&tunnel_ports, &target_slot);
	struct tunnel_port *self = bpf_map_lookup_elem(&tunnel_ports, &sender_slot);
	if (!peer || !self || !peer->device || !peer->node)
		return drop(DROP_TUNNEL_SEND);
	__u32 zero = 0;
	struct tunnel_scratch *scratch = bpf_map_lookup_elem(&tunnel_scratch, &zero);
	if (!scratch)
		return drop(DROP_TUNNEL_SEND);
	struct bpf_tunnel_key *key = (struct bpf_tunnel_key *)scratch->tunnel_key;
	__builtin_memset(key, 0, sizeof(*key));
	key->tunnel_id = peer->vni;
	key->remote_ipv4 = peer->node;
	key->tunnel_ttl = TUNNEL_TTL;
	/* No UDP checksum (RFC 7348 allows zero over IPv4): the inner packet has its own. */
	if (bpf_skb_set_tunnel_key(skb, key, sizeof(*key), BPF_F_ZERO_CSUM_TX))
		return drop(DROP_TUNNEL_SEND);
	struct vxlan_gbp md = {.gbp = self->sender};
	if (bpf_skb_set_tunnel_opt(skb, &md, sizeof(md)))
		return drop(DROP_TUNNEL_SEND);
	count_event(EV_TUNNEL_SENT);
	return bpf_redirect(peer->device, 0);
}

/* To a port reference: a local port's veth, or a remote one's node. One test on the local path. */
static __always_inline int deliver(struct __sk_buff *skb, __u32 ifindex, __u32 slot, const struct ingress *in)
{
	if (ifindex & REMOTE_PORT_BIT)
		return tunnel_send(skb, slot, in->slot);
	return redirect_to(ifindex, in->mode);
}

/* The local port a tunnel packet's key names, when it is one (live or leaving: the sender's node
 * chose it while it was live). */
static __always_inline struct port_slot *tunnel_target(__u32 slot)
{
	struct port_slot *t = port_slot(slot);
	if (!t || t->xc == 0 || t->ifindex == 0 || (t->ifindex & REMOTE_PORT_BIT))
		return 0;
	return t;
}

/* A packet at ingress of the VXLAN device: a verdict, or TUNNEL_PARSE with `in` naming this node's
 * remote port of the sender (in->slot) and the target (in->target). A sender this node
 * does not know yet (its agent has not heard of the replica) is delivered without a session. */
static __noinline int tunnel_ingress(struct __sk_buff *skb, struct ingress *in)
{
	__u32 zero = 0;
	struct tunnel_scratch *scratch = bpf_map_lookup_elem(&tunnel_scratch, &zero);
	if (!scratch)
		return drop(DROP_TUNNEL_BAD_KEY);
	struct bpf_tunnel_key *key = (struct bpf_tunnel_key *)scratch->tunnel_key;
	if (bpf_skb_get_tunnel_key(skb, key, sizeof(*key), 0))
		return drop(DROP_TUNNEL_BAD_KEY);
	__u32 node = key->remote_ipv4;
	if (!bpf_map_lookup_elem(&tunnel_nodes, &node))
		return drop(DROP_TUNNEL_UNKNOWN_NODE);
	__u32 vni = key->tunnel_id;
	__u32 *target_slot = bpf_map_lookup_elem(&tunnel_targets, &vni);
	if (!target_slot)
		return drop(DROP_TUNNEL_UNKNOWN_TARGET);
	__u32 slot = *target_slot;
	struct port_slot *t = tunnel_target(slot);
	if (!t)
		return drop(DROP_TUNNEL_UNKNOWN_TARGET);

	struct tunnel_sender_key sk = {.node = node, .xc = t->xc, .side = t->side ^ 1};
	struct vxlan_gbp md = {};
	__u32 *sender = 0;
	if (bpf_skb_get_tunnel_opt(skb, &md, sizeof(md)) == sizeof(md)) {
		sk.sender = md.gbp & VXLAN_GBP_ID_MASK;
		sender = bpf_map_lookup_elem(&tunnel_senders, &sk);
	}
	if (sender) {
		struct port_slot *s = port_slot(*sender);
		if (s && s->xc == t->xc && s->side == (t->side ^ 1) && (s->ifindex & REMOTE_PORT_BIT)) {
			in->xc = t->xc;
			in->side = t->side ^ 1;
			in->slot = *sender;
			/* A target leaving (its pod is being deleted; the sending node has not heard yet):
			 * this node picks another replica for the flow, as for a local leaving port. */
			in->target = t->state == PORT_LEAVING ? INGRESS_REHASH : (__u16)(slot + 1);
			return TUNNEL_PARSE;
		}
	}
	count_event(EV_TUNNEL_SENDER_UNKNOWN);
	count_event(EV_TUNNEL_RECEIVED);
	count_to(t, skb->len, 0);
	return redirect_to(t->ifindex, in->mode);
}

#endif /* XC_TUNNEL_H */
