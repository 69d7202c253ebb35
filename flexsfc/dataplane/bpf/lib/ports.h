/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Ports as the data path sees them: the ingress port of a packet, this CPU's copy of a port slot,
 * the liveness of a port reference, and the redirect to a port.
 */
#ifndef XC_PORTS_H
#define XC_PORTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"

/* The ingress port of the packet being handled (from the filter's tag or the port maps). */
struct ingress {
	__u32 xc;
	__u32 slot;
	__u8 side;
	__u8 mode; /* MODE_PEER or MODE_REDIRECT */
	/* From the tunnel (tunnel.h), else 0: slot + 1 of the local port the sending node chose
	 * (INGRESS_TARGET), or INGRESS_REHASH when that port is leaving; `slot` is then this node's
	 * remote port of the sender. 16 bits, not more: this struct sits in the entry point's frame, on
	 * the deepest call chain. */
	__u16 target;
};

#define INGRESS_TARGET 0x7fff
#define INGRESS_REHASH 0x8000

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

#endif /* XC_PORTS_H */
