/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Counters: drop reasons and events (per-CPU arrays), and the per-port counters of a target in
 * its slot.
 */
#ifndef XC_STATS_H
#define XC_STATS_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "events.h"
#include "maps.h"

static __always_inline void count_drop(__u32 reason)
{
	__u64 *c = bpf_map_lookup_elem(&drops, &reason);
	if (c)
		*c += 1;
}

static __always_inline int drop(__u32 reason)
{
	count_drop(reason);
	events_note_drop(reason); /* events.h: one load while the stream is off */
	return TC_ACT_SHOT;
}

static __always_inline void count_event(__u32 ev)
{
	__u64 *c = bpf_map_lookup_elem(&events, &ev);
	if (c)
		*c += 1;
}

static __always_inline void count_to(struct port_slot *p, __u32 len, int created)
{
	p->counters.to_packets += 1;
	p->counters.to_bytes += len;
	if (created)
		p->counters.sessions_created += 1;
}

#endif /* XC_STATS_H */
