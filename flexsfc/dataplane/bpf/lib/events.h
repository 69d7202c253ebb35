/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The flow event stream (issue 19): which replica a new flow got, which sessions moved and why,
 * collisions, ICMP errors followed, drops with the packet that was dropped. Records go to the ring
 * buffer `flow_events`; user space reads it with libbpf's ring_buffer__poll
 * (flexsfc/dataplane/events.py, `flexsfc flows`).
 *
 * Costs nothing measurable when nobody listens: nothing here runs on the established-session path
 * (flow cache or session-table hit), and on the paths that count an event anyway (a new flow, a
 * re-hash, a collision, an ICMP error, a drop) the switch is one load of `events_ctl.lease`, 0 while
 * no reader is attached. A reader sets the lease to CLOCK_MONOTONIC_COARSE + a few seconds and
 * refreshes it every second; the program emits only while now < lease, so a crashed reader turns the
 * stream off by itself. Drop events are rate limited per CPU (a flood of garbage must not flood the
 * ring): at most `drop_budget` per 2^30 ns window and CPU, the rest counted as EV_EVENTS_SUPPRESSED.
 * A full ring (a reader too slow) loses records, counted as EV_EVENTS_LOST.
 *
 * The structs, maps and enums here are part of the contract with user space like those of
 * consts.h/structs.h/maps.h: flexsfc/dataplane/maps.py mirrors them and test_contract.py checks it.
 */
#ifndef XC_EVENTS_H
#define XC_EVENTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "consts.h"
#include "ports.h"
#include "structs.h"

enum xc_events_limits {
	FLOW_EVENTS_SIZE = 1 << 21,   /* ring buffer bytes (2 MiB: ~16k session events, ~8k drops) */
	DROP_SNAPLEN = 128,           /* bytes of a dropped frame copied into its event */
	EVENTS_DROP_BUDGET = 200,     /* default drop events per CPU per window of 2^30 ns */
	EVENTS_WINDOW_SHIFT = 30,     /* the drop budget's window: coarse ns >> this */
	EVENT_READERS = 8,            /* reader slots in events_ctl */
};

/* flow_event.kind */
enum xc_flow_event_kind {
	FLOW_EV_CREATED = 1,    /* a new flow: its first packet chose a replica (Maglev) */
	FLOW_EV_REHASHED = 2,   /* a session's replica on the destination side was gone: re-hashed */
	FLOW_EV_FOLLOWED = 3,   /* a flow arrived from another replica of its own side (re-hashed
				 * upstream, the recorded one gone): the session follows it */
	FLOW_EV_COLLISION = 4,  /* a second live replica of one side sent a session's flow */
	FLOW_EV_ICMP_ERROR = 5, /* an ICMP/ICMPv6 error went to the replica of the session it quotes */
	FLOW_EV_DROP = 6,       /* a dropped packet (reason: DROP_*), its first bytes follow the record */
};

/* flow_event.reason of moves (REHASHED, FOLLOWED): what happened to the replica it had. */
enum xc_move_reason {
	MOVE_REMOVED = 0, /* its port was removed (slot cleared or reused) */
	MOVE_LEAVING = 1, /* its port is leaving (pod going away) */
};

/* One record of the ring. Drop records are followed by DROP_SNAPLEN bytes (struct flow_event_drop). */
struct flow_event {
	__u64 time_ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u8 kind;     /* FLOW_EV_* */
	__u8 reason;   /* FLOW_EV_DROP: DROP_*; moves: MOVE_* */
	__u8 side;     /* side of the ingress port (SIDE_*) */
	__u8 moved_side; /* moves and collisions: the side whose replica changed (or collided) */
	__u32 ifindex;   /* ingress port */
	__u32 old_ifindex; /* moves: the replica the session had; collision: the one it keeps */
	__u32 ifindex_a;   /* the session's replica on side A after the event (0: none) */
	__u32 ifindex_b;   /* ... on side B */
	__u16 pkt_len;     /* drops: length of the frame (capped at 65535) */
	__u16 snap_len;    /* drops: bytes of it that follow */
	struct flow_key key; /* the flow (xc 0 for drops: user space parses the bytes) */
};

struct flow_event_drop {
	struct flow_event ev;
	__u8 packet[DROP_SNAPLEN];
};

/* Written by readers only (through mmap: aligned 8-byte stores), read by the program. */
struct events_ctl {
	__u64 lease;       /* CLOCK_MONOTONIC_COARSE ns: events are emitted while now < lease (0: off) */
	__u32 drop_budget; /* drop events per CPU per window (0: EVENTS_DROP_BUDGET) */
	__u32 pad;
	__u64 reader_lease[EVENT_READERS]; /* each attached reader's own lease (0: free slot) */
	__u32 reader_pid[EVENT_READERS]; /* who holds each slot: pid << 8 | instance */
};

/* This CPU's state: the coarse clock read once per jiffy (a helper call, where jiffies is an inlined
 * load), the drop budget left in this window, and the reason of the last drop on this CPU (+1) for
 * the entry point, which sees the verdict but not the reason. */
struct events_cpu {
	__u64 jiffies;
	__u64 now; /* coarse ns read at `jiffies` */
	__u32 window;
	__u32 tokens;
	__u32 drop_reason; /* DROP_* + 1, 0: none noted */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, FLOW_EVENTS_SIZE);
} flow_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct events_ctl);
} events_ctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct events_cpu);
} events_cpu SEC(".maps");

/* Like xc_contract_btf (consts.h): puts the enums and the record types into the object's BTF for the
 * contract test; never called, so never loaded. */
struct xc_events_contract {
	enum xc_events_limits limits;
	enum xc_flow_event_kind kind;
	enum xc_move_reason move_reason;
	struct flow_event_drop drop_record; /* by value: a pointer would leave only a forward declaration */
};

static __attribute__((used, noinline)) int xc_events_contract_btf(const struct xc_events_contract *contract)
{
	return 0;
}

static __always_inline void events_count(__u32 ev)
{
	__u64 *c = bpf_map_lookup_elem(&events, &ev);
	if (c)
		*c += 1;
}

/* The switch: this CPU's state when a reader holds the lease, else 0. The first load is all a packet
 * pays while the stream is off. */
static __always_inline struct events_cpu *events_on(struct events_ctl **ctl_out)
{
	__u32 zero = 0;
	struct events_ctl *ctl = bpf_map_lookup_elem(&events_ctl, &zero);
	if (!ctl || !ctl->lease)
		return 0;
	struct events_cpu *st = bpf_map_lookup_elem(&events_cpu, &zero);
	if (!st)
		return 0;
	__u64 j = bpf_jiffies64();
	if (st->jiffies != j) {
		st->now = bpf_ktime_get_coarse_ns();
		st->jiffies = j;
	}
	if (st->now >= ctl->lease)
		return 0;
	*ctl_out = ctl;
	return st;
}

/* What the port in `ref` became, for a move's reason: still there but leaving, or gone. */
static __always_inline __u8 move_reason(const struct port_ref *ref)
{
	struct port_slot *p = port_slot(ref->slot);
	if (p && p->ifindex == ref->ifindex && p->state == PORT_LEAVING)
		return MOVE_LEAVING;
	return MOVE_REMOVED;
}

#define EVENT_WHAT(kind, side, slot) ((__u64)(kind) | ((__u64)(side) << 8) | ((__u64)(slot) << 16))

/* A session event. `what` = EVENT_WHAT(kind, side of the ingress port, its slot); `pair` is the
 * session as it was before the event (0 for a new flow), `target` the destination chosen now (0: the
 * session's). A subprogram with a small frame: it sits on the call chains of forward() beside
 * flow_hash, and the record is written straight into the ring, never on the stack. */
static __noinline void events_session(__u64 what, const struct flow_key *key, const struct session *pair,
				      __u32 ingress_ifindex, const struct port_ref *target)
{
	struct events_ctl *ctl = 0;
	if (!events_on(&ctl))
		return;
	__u8 kind = what & 0xff, side = (what >> 8) & 1;
	__u32 slot = (what >> 16) & 0xffff;
	__u32 here = ingress_ifindex, there = 0, old = 0;
	__u8 moved = side, reason = 0;

	if (target)
		there = target->ifindex;
	if (pair) {
		const struct port_ref *own = side == SIDE_A ? &pair->side[SIDE_A] : &pair->side[SIDE_B];
		const struct port_ref *other = side == SIDE_A ? &pair->side[SIDE_B] : &pair->side[SIDE_A];
		if (!target)
			there = other->ifindex;
		if (kind == FLOW_EV_REHASHED) {
			old = other->ifindex;
			moved = side ^ 1;
			reason = move_reason(other);
		} else if (kind == FLOW_EV_FOLLOWED) {
			/* A port-less key (ICMP, ARP, ND: addresses only) follows every sender by design
			 * (session.h): its replica did not move anywhere, it has company. Not reported. */
			if (ref_live(own, key->xc, side))
				return;
			old = own->ifindex;
			reason = move_reason(own);
		} else if (kind == FLOW_EV_COLLISION) {
			/* The last packets of a leaving replica are no collision (session.h). */
			struct port_slot *self = port_slot(slot);
			if (!self || self->state == PORT_LEAVING)
				return;
			old = own->ifindex;
			here = own->ifindex; /* the session keeps the first replica */
		}
	}
	struct flow_event *ev = bpf_ringbuf_reserve(&flow_events, sizeof(*ev), 0);
	if (!ev) {
		events_count(EV_EVENTS_LOST);
		return;
	}
	ev->time_ns = bpf_ktime_get_ns();
	ev->kind = kind;
	ev->reason = reason;
	ev->side = side;
	ev->moved_side = moved;
	ev->ifindex = ingress_ifindex;
	ev->old_ifindex = old;
	ev->ifindex_a = side == SIDE_A ? here : there;
	ev->ifindex_b = side == SIDE_A ? there : here;
	ev->pkt_len = 0;
	ev->snap_len = 0;
	__builtin_memcpy(&ev->key, key, sizeof(ev->key));
	bpf_ringbuf_submit(ev, 0);
}

/* The switch alone, inlined: whether a reader may be attached (its lease not checked yet). What a
 * drop pays at the entry point while the stream is off: one load, no call. */
static __always_inline int events_maybe_on(void)
{
	__u32 zero = 0;
	struct events_ctl *ctl = bpf_map_lookup_elem(&events_ctl, &zero);
	return ctl && ctl->lease;
}

/* Called by drop() (stats.h): remembers the reason for events_dropped, only while the stream is on. */
static __always_inline void events_note_drop(__u32 reason)
{
	__u32 zero = 0;
	struct events_ctl *ctl = bpf_map_lookup_elem(&events_ctl, &zero);
	if (!ctl || !ctl->lease)
		return;
	struct events_cpu *st = bpf_map_lookup_elem(&events_cpu, &zero);
	if (st)
		st->drop_reason = reason + 1;
}

/* Called by the entry point for a packet it drops: a record with the reason and the frame's first
 * bytes (user space parses the flow out of them), within this CPU's drop budget. */
static __noinline void events_dropped(struct __sk_buff *skb)
{
	struct events_ctl *ctl = 0;
	struct events_cpu *st = events_on(&ctl);
	if (!st || !ctl)
		return;
	__u32 reason = st->drop_reason;
	st->drop_reason = 0;
	if (!reason)
		return; /* noted while the stream was off */
	__u32 window = (__u32)(st->now >> EVENTS_WINDOW_SHIFT);
	if (st->window != window) {
		st->window = window;
		st->tokens = ctl->drop_budget ? ctl->drop_budget : EVENTS_DROP_BUDGET;
	}
	if (!st->tokens) {
		events_count(EV_EVENTS_SUPPRESSED);
		return;
	}
	st->tokens -= 1;
	struct flow_event_drop *rec = bpf_ringbuf_reserve(&flow_events, sizeof(*rec), 0);
	if (!rec) {
		events_count(EV_EVENTS_LOST);
		return;
	}
	/* All of it: ring memory holds earlier records, and a short or failed snap must not carry their bytes. */
	__builtin_memset(rec, 0, sizeof(*rec));
	rec->ev.time_ns = bpf_ktime_get_ns();
	rec->ev.kind = FLOW_EV_DROP;
	rec->ev.reason = reason - 1;
	rec->ev.ifindex = skb->ifindex;
	__u32 len = skb->len;
	rec->ev.pkt_len = len > 0xffff ? 0xffff : len;
	if (len > DROP_SNAPLEN)
		len = DROP_SNAPLEN;
	if (len && bpf_skb_load_bytes(skb, 0, rec->packet, len) == 0)
		rec->ev.snap_len = len;
	bpf_ringbuf_submit(rec, 0);
}

#endif /* XC_EVENTS_H */
