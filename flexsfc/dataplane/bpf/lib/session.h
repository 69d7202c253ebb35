/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Sessions: the normalized flow key, the choice of a flow's destination (session table, else
 * Maglev) and forward(), the one shared path from a parsed packet to its redirect.
 */
#ifndef XC_SESSION_H
#define XC_SESSION_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "flow_cache.h"
#include "maglev.h"
#include "maps.h"
#include "ports.h"
#include "stats.h"
#include "tunnel.h"
#include "wire.h"

/* Orders (addr, port) endpoints so both directions of a conversation build the same key. */
static __always_inline void set_endpoints(struct flow_key *k, const __u32 *a, __u16 pa, const __u32 *b,
					  __u16 pb, int words)
{
	int a_first = 1;
	int decided = 0;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		if (!decided && i < words && a[i] != b[i]) {
			a_first = a[i] < b[i];
			decided = 1;
		}
	}
	if (!decided)
		a_first = pa <= pb;
	const __u32 *lo = a_first ? a : b;
	const __u32 *hi = a_first ? b : a;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		k->addr_lo[i] = i < words ? lo[i] : 0;
		k->addr_hi[i] = i < words ? hi[i] : 0;
	}
	k->port_lo = a_first ? pa : pb;
	k->port_hi = a_first ? pb : pa;
}

/* Explicit branches: an index computed from `side` into a stack struct upsets the verifier. */
static __always_inline void set_pair(struct session *s, __u8 src_side, const struct port_ref *ingress,
				     const struct port_ref *target)
{
	if (src_side == SIDE_A) {
		s->side[SIDE_A] = *ingress;
		s->side[SIDE_B] = *target;
	} else {
		s->side[SIDE_B] = *ingress;
		s->side[SIDE_A] = *target;
	}
}

#define CHOSEN_NEW 1       /* a session created or re-hashed now */
#define CHOSEN_SESSION 2   /* an established session */
#define CHOSEN_COLLISION 3 /* an established session, sent by a second live replica: left as it is */
#define CHOSEN_KIND 3
#define CHOSEN_UNCONFIRMED 4 /* flag: the flow is (still) unconfirmed after this packet */

#define XC_EEXIST 17 /* errno: the key is there already */

/* The session clock (SESSION_CLOCK_SHIFT): CLOCK_MONOTONIC_COARSE in units of 2^30 ns, read through
 * this CPU's cache: the coarse clock only moves at a tick, when jiffies does, so the helper call is
 * made once per jiffy per CPU instead of on every pass through the session tables. */
static __always_inline __u32 session_clock(void)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct session_clock_cache *c = bpf_map_lookup_elem(&session_clocks, &cpu);
	__u64 now = bpf_jiffies64();
	if (!c)
		return (__u32)(bpf_ktime_get_coarse_ns() >> SESSION_CLOCK_SHIFT);
	if (c->jiffies != now) {
		c->tick = (__u32)(bpf_ktime_get_coarse_ns() >> SESSION_CLOCK_SHIFT);
		c->jiffies = now;
	}
	return c->tick;
}

/* Moves an unconfirmed flow, now seen from both sides, to the confirmed table (BPF_NOEXIST: a
 * confirmed entry is never overwritten) and forgets the unconfirmed copy. When the confirmed table is
 * full the flow stays unconfirmed, still forwarded by its LRU entry, and is retried on the next tick
 * of the session clock (not on every packet: each try is a failed insert and a count). */
static __always_inline int confirm(void *confirmed, void *unconfirmed, const void *session_key,
				   struct session_value *s, __u32 xc)
{
	__u32 now = session_clock();
	if ((s->flags & SESSION_F_FULL) && s->last_seen == now)
		return CHOSEN_UNCONFIRMED;
	/* The unconfirmed entry itself is the value inserted (a map value may be passed to the
	 * update): no copy on the stack, whose 512 bytes the deepest call chain nearly fills. */
	s->last_seen = now;
	s->flags = 0;
	long rc = bpf_map_update_elem(confirmed, session_key, s, BPF_NOEXIST);
	if (rc == 0) {
		count_event(EV_SESSION_CONFIRMED);
		__u64 *n = bpf_map_lookup_elem(&session_counts, &xc);
		if (n)
			*n += 1;
		bpf_map_delete_elem(unconfirmed, session_key);
	} else if (rc == -XC_EEXIST) {
		bpf_map_delete_elem(unconfirmed, session_key); /* confirmed on another CPU a moment ago */
	} else {
		s->flags |= SESSION_F_FULL;
		count_event(EV_SESSION_TABLE_FULL);
		return CHOSEN_UNCONFIRMED;
	}
	return 0;
}

/* Chooses the destination port of a flow: a confirmed session, else an unconfirmed one, else Maglev
 * (the choice is then remembered as unconfirmed). A packet of an unconfirmed flow from the side that
 * did not send its first packet confirms it. Returns CHOSEN_* with *out set, or 0 with *reason set. */
static __always_inline int choose_target(void *confirmed, void *unconfirmed, const void *session_key,
					 const struct flow_key *key, __u8 src_side,
					 const struct port_ref *ingress, __u32 len, __u32 *reason,
					 struct port_ref *out)
{
	__u8 dst_side = src_side ^ 1;
	int pending = 0; /* found unconfirmed */
	struct session_value *s = bpf_map_lookup_elem(confirmed, session_key);

	if (s) {
		/* At most one write per tick: a write per packet would bounce the entry's cache line
		 * between the CPUs serving the two directions. (The clock is read where it is used: kept
		 * in a register across the calls below, it would be spilled to the stack, whose 512
		 * bytes the deepest call chain nearly fills.) */
		__u32 now = session_clock();
		if (s->last_seen != now)
			s->last_seen = now;
	} else {
		s = bpf_map_lookup_elem(unconfirmed, session_key);
		pending = s != 0;
	}
	if (s) {
		struct port_ref *there = &s->pair.side[dst_side & 1];
		struct port_ref *here = &s->pair.side[src_side & 1];
		struct port_slot *dst = ref_live(there, key->xc, dst_side);
		if (dst) {
			int chosen = CHOSEN_SESSION;
			if (here->ifindex != ingress->ifindex || here->slot != ingress->slot) {
				/* Another replica of our side sends this flow. If the recorded one is gone
				 * (removed, leaving), the flow was re-hashed upstream: follow it, so the
				 * return path does too. If it is still live, two replicas emit the same
				 * 5-tuple for different conversations (a NAT's replicas sharing one IP and
				 * picking the same source port): flipping would send each one's return
				 * traffic to the other on every packet. Keep the first, forward this one and
				 * count it. Port-less keys (ICMP, ARP, ND: addresses only) are shared by every
				 * conversation between two addresses by design and keep following. A leaving
				 * replica's last packets of a flow already re-hashed away from it are no
				 * collision either: forwarded, not counted, and the session stays. */
				if (has_ports(key->proto) && ref_live(here, key->xc, src_side)) {
					struct port_slot *self = port_slot(ingress->slot);
					if (self && self->state != PORT_LEAVING)
						count_event(EV_SESSION_COLLISION);
					events_session(EVENT_WHAT(FLOW_EV_COLLISION, src_side, ingress->slot), key, &s->pair, ingress->ifindex, 0);
					chosen = CHOSEN_COLLISION;
				} else {
					events_session(EVENT_WHAT(FLOW_EV_FOLLOWED, src_side, ingress->slot), key, &s->pair, ingress->ifindex, 0);
					*here = *ingress;
				}
			}
			*out = *there;
			count_to(dst, len, 0);
			if (!pending)
				return chosen;
			if (src_side != s->origin)
				return chosen | confirm(confirmed, unconfirmed, session_key, s, key->xc);
			return chosen | CHOSEN_UNCONFIRMED;
		}
		/* else its replica is gone: re-hash lazily, now. */
	}

	/* A miss: only now is the configuration (the seed) needed. */
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg) {
		*reason = DROP_MALFORMED;
		return 0;
	}
	struct port_slot *picked = maglev_pick(key->xc, dst_side, flow_hash(key, cfg->seed), out);
	if (!picked) {
		*reason = DROP_NO_REPLICA;
		return 0;
	}
	if (s) {
		events_session(EVENT_WHAT(FLOW_EV_REHASHED, src_side, ingress->slot), key, &s->pair, ingress->ifindex, out);
		set_pair(&s->pair, src_side, ingress, out);
		count_event(EV_SESSION_REHASHED);
		count_to(picked, len, 1);
		if (!pending)
			return CHOSEN_NEW;
		if (src_side != s->origin)
			return CHOSEN_NEW | confirm(confirmed, unconfirmed, session_key, s, key->xc);
		return CHOSEN_NEW | CHOSEN_UNCONFIRMED;
	}
	struct session_value fresh = {.last_seen = session_clock(), .origin = src_side};
	set_pair(&fresh.pair, src_side, ingress, out);
	if (bpf_map_update_elem(unconfirmed, session_key, &fresh, BPF_NOEXIST) != 0) {
		/* The other direction created it on another CPU a moment ago: use that one. */
		s = bpf_map_lookup_elem(unconfirmed, session_key);
		if (s) {
			struct port_ref *there = &s->pair.side[dst_side & 1];
			struct port_slot *dst = ref_live(there, key->xc, dst_side);
			if (dst) {
				*out = *there;
				count_to(dst, len, 0);
				return CHOSEN_NEW | CHOSEN_UNCONFIRMED;
			}
		}
	} else {
		count_event(EV_SESSION_CREATED);
		events_session(EVENT_WHAT(FLOW_EV_CREATED, src_side, ingress->slot), key, 0, ingress->ifindex, out);
	}
	count_to(picked, len, 1);
	return CHOSEN_NEW | CHOSEN_UNCONFIRMED;
}

/* The session of a packet that came through the tunnel: the sending node chose both ports, so this
 * node's entry takes them (a reply then goes back to the very replica that sent). Two live replicas
 * of the sender's side with one flow key (a collision, as in choose_target) leave the entry as it is. */
static __always_inline void record_tunnel_session(void *confirmed, void *unconfirmed, const void *session_key,
						  __u32 xc, __u8 src_side, int ports,
						  const struct port_ref *sender, const struct port_ref *target)
{
	struct session_value *s = bpf_map_lookup_elem(confirmed, session_key);
	int pending = 0;
	if (!s) {
		s = bpf_map_lookup_elem(unconfirmed, session_key);
		pending = s != 0;
	}
	if (s) {
		struct port_ref *here = &s->pair.side[src_side & 1];
		struct port_ref *there = &s->pair.side[(src_side ^ 1) & 1];
		if (here->ifindex != sender->ifindex || here->slot != sender->slot) {
			if (ports && ref_live(here, xc, src_side)) {
				count_event(EV_SESSION_COLLISION);
				return;
			}
			*here = *sender;
		}
		if (there->ifindex != target->ifindex || there->slot != target->slot)
			*there = *target;
		if (pending) {
			if (src_side != s->origin)
				confirm(confirmed, unconfirmed, session_key, s, xc);
		} else {
			__u32 now = session_clock();
			if (s->last_seen != now)
				s->last_seen = now;
		}
		return;
	}
	__u32 zero = 0;
	struct tunnel_scratch *scratch = bpf_map_lookup_elem(&tunnel_scratch, &zero);
	if (!scratch)
		return;
	struct session_value *fresh = &scratch->fresh;
	__builtin_memset(fresh, 0, sizeof(*fresh));
	fresh->last_seen = session_clock();
	fresh->origin = src_side;
	set_pair(&fresh->pair, src_side, sender, target);
	bpf_map_update_elem(unconfirmed, session_key, fresh, BPF_NOEXIST);
}

/* Delivers a tunnel packet of a known sender (tunnel_ingress) to the local port it names, and
 * records its session. `key` is 0 for packets without a flow (later fragments, ARP). */
static __noinline int tunnel_deliver(struct __sk_buff *skb, const struct flow_key *key, const struct ingress *in)
{
	struct port_slot *from = port_slot(in->slot);
	struct port_ref target = {.slot = (__u32)(in->target & INGRESS_TARGET) - 1};
	struct port_slot *dst = tunnel_target(target.slot);
	if (!from || !dst || dst->xc != in->xc || dst->side != (in->side ^ 1))
		return drop(DROP_TUNNEL_UNKNOWN_TARGET);
	struct port_ref sender = {.ifindex = from->ifindex, .slot = in->slot};
	target.ifindex = dst->ifindex;
	if (key && key->family == FAMILY_V6) {
		record_tunnel_session(&sessions6, &unconfirmed6, key, key->xc, in->side, has_ports(key->proto),
				      &sender, &target);
	} else if (key) {
		__u32 zero = 0;
		struct tunnel_scratch *scratch = bpf_map_lookup_elem(&tunnel_scratch, &zero);
		if (!scratch)
			return drop(DROP_TUNNEL_UNKNOWN_TARGET);
		struct flow_key4 *key4 = &scratch->key4;
		key4->xc = key->xc;
		key4->proto = key->proto;
		key4->family = key->family;
		key4->pad = 0;
		key4->addr_lo = key->addr_lo[0];
		key4->addr_hi = key->addr_hi[0];
		key4->port_lo = key->port_lo;
		key4->port_hi = key->port_hi;
		record_tunnel_session(&sessions, &unconfirmed, key4, key->xc, in->side, has_ports(key->proto),
				      &sender, &target);
	}
	count_event(EV_TUNNEL_RECEIVED);
	count_to(dst, skb->len, 0);
	return redirect_to(target.ifindex, in->mode);
}

/* One shared copy of the session logic for every path (IPv4, IPv6, ARP, ND, first fragments): a
 * subprogram keeps the JIT image small (~11 KB instead of ~36 KB with everything inlined) and each
 * call chain within the 512-byte combined stack, for a call's few ns. IPv4 and ARP sessions use the
 * short key. When `first_fragment` is set, the choice is remembered for the fragments that follow. */
static __noinline int forward(struct __sk_buff *skb, struct flow_key *key, const struct ingress *in,
			      struct frag_key *first_fragment)
{
	__u32 reason = DROP_NO_REPLICA;
	__u32 ingress_ifindex = skb->ifindex;
	/* Keeps the compiler from selecting between the two pointers and loading once: the verifier
	 * refuses a load through a modified context pointer. */
	barrier_var(ingress_ifindex);
	if (in->target) { /* a re-hashed tunnel packet: the ingress is the sender's remote port */
		struct port_slot *sender = port_slot(in->slot);
		if (!sender)
			return drop(DROP_TUNNEL_UNKNOWN_TARGET);
		ingress_ifindex = sender->ifindex;
	}
	struct port_ref ingress = {.ifindex = ingress_ifindex, .slot = in->slot};
	struct port_ref target;
	int found;
	struct flow_cache_entry *cached = first_fragment ? 0 : flow_cache_entry(key);
	if (cached) {
		struct port_slot *dst = flow_cache_hit(cached, key, in->side, &ingress);
		if (dst) {
			count_to(dst, skb->len, 0);
			const struct port_ref *there = &cached->session.side[(in->side ^ 1) & 1];
			return deliver(skb, there->ifindex, there->slot, in);
		}
	}
	if (key->family == FAMILY_V6) {
		found = choose_target(&sessions6, &unconfirmed6, key, key, in->side, &ingress, skb->len, &reason,
				      &target);
	} else {
		struct flow_key4 key4 = {
			.xc = key->xc,
			.proto = key->proto,
			.family = key->family,
			.addr_lo = key->addr_lo[0],
			.addr_hi = key->addr_hi[0],
			.port_lo = key->port_lo,
			.port_hi = key->port_hi,
		};
		found = choose_target(&sessions, &unconfirmed, &key4, key, in->side, &ingress, skb->len,
				      &reason, &target);
	}
	int kind = found & CHOSEN_KIND;
	if (cached && kind != CHOSEN_COLLISION) {
		/* The entry follows the session table: refreshed, re-hashed or moved, it takes the table's
		 * answer; one that has no answer any more is forgotten. A collision left the table as it
		 * was, and so is the entry (the ingress is not the session's port). */
		int mine = same_flow(&cached->key, key);
		if (kind == CHOSEN_SESSION || (kind && mine)) {
			cached->key = *key;
			set_pair(&cached->session, in->side, &ingress, &target);
			cached->stamp = flow_cache_stamp(found & CHOSEN_UNCONFIRMED, in->side);
		} else if (mine) {
			cached->key.xc = 0;
		}
	}
	if (!kind)
		return drop(reason);
	if (first_fragment)
		bpf_map_update_elem(&frags, first_fragment, &target, BPF_ANY);
	return deliver(skb, target.ifindex, target.slot, in);
}

/* A parsed packet to its destination: the port a tunnel packet names (from tunnel_ingress), else the
 * session logic. The tunnel path is called here, not from forward(): below forward() its frame would
 * not fit in the deepest call chain's 512 bytes of stack. */
static __always_inline int forward_packet(struct __sk_buff *skb, struct flow_key *key, const struct ingress *in,
					  struct frag_key *first_fragment)
{
	if (in->target & INGRESS_TARGET)
		return tunnel_deliver(skb, key, in);
	return forward(skb, key, in, first_fragment);
}

#endif /* XC_SESSION_H */
