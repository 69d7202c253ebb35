/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Keys and values of the maps, the second third of the contract: flexsfc/dataplane/maps.py mirrors
 * every struct here as a ctypes.Structure of the same name in CamelCase, field for field, and
 * tests/unit/dataplane/test_contract.py compares sizes and offsets with the compiled object's BTF.
 * Change both sides together.
 */
#ifndef XC_STRUCTS_H
#define XC_STRUCTS_H

#include <linux/types.h>

#include "consts.h"

struct config {
	__u32 seed;
	__u32 redirect_mode; /* MODE_* */
};

struct port_info {
	__u32 xc;
	__u32 slot; /* index in port_slots */
	__u8 side; /* SIDE_* */
	__u8 state; /* PORT_*: only informational here, the slot's copy is the one the program reads */
	__u16 pad;
};

struct port_counters {
	__u64 from_packets;
	__u64 from_bytes;
	__u64 to_packets;
	__u64 to_bytes;
	__u64 sessions_created;
};

/* Parsers build this (IPv4 addresses in word 0); IPv6 sessions use it as their key. */
struct flow_key {
	__u32 xc;
	__u8 proto;
	__u8 family;
	__u16 pad;
	__u32 addr_lo[4];
	__u32 addr_hi[4];
	__u16 port_lo;
	__u16 port_hi;
};

/* IPv4 and ARP sessions use a 20-byte key: the kernel hashes and compares less than half as much
 * as for the 44-byte key, which is measurable on every packet. */
struct flow_key4 {
	__u32 xc;
	__u8 proto;
	__u8 family;
	__u16 pad;
	__u32 addr_lo;
	__u32 addr_hi;
	__u16 port_lo;
	__u16 port_hi;
};

/* A replica port as the data path refers to it: host ifindex and its slot (counters, liveness). */
struct port_ref {
	__u32 ifindex;
	__u32 slot;
};

struct session {
	struct port_ref side[2]; /* [SIDE_A], [SIDE_B] */
};

/* Value of the session tables, confirmed (`sessions`, `sessions6`) and unconfirmed (`unconfirmed`,
 * `unconfirmed6`): the pair of ports, when the flow was last seen, and who spoke first. */
struct session_value {
	struct session pair;
	__u32 last_seen; /* session clock (SESSION_CLOCK_SHIFT): confirmed, refreshed at most once a tick */
	__u8 origin;     /* SIDE_* of the flow's first packet: a packet of the other side confirms it */
	__u8 flags;      /* SESSION_F_* */
	__u16 pad;
};

/* What occupies a port slot now (cleared when the port leaves, so stale references fail) and the
 * port's counters: one lookup of this CPU's copy checks a target and counts it. */
struct port_slot {
	__u32 ifindex;
	__u32 xc;
	__u8 side;
	__u8 state; /* PORT_*: the copy the program reads */
	__u16 pad;
	__u32 pad2;
	struct port_counters counters;
	__u64 pad3; /* a slot is one whole cache line: at 56 bytes, 6 of 8 slots straddled two */
};
_Static_assert(sizeof(struct port_slot) == 64, "one cache line per port slot");

struct frag_key {
	__u32 xc;
	__u32 id;
	__u8 proto;
	__u8 family;
	__u16 pad;
	__u32 src[4];
	__u32 dst[4];
};

struct neigh_key {
	__u32 xc;
	__u8 side; /* side whose NF interface owns the address */
	__u8 family;
	__u16 pad;
	__u32 addr[4];
};

struct neigh_val {
	__u8 mac[6];
	__u16 pad;
};

/* This CPU's copy of the session clock (session.h): bpf_ktime_get_coarse_ns() is a helper call
 * (measured ~19 ns on the session-table path), jiffies is one inlined load; both advance at the
 * tick, so the clock is read once per jiffy per CPU. One cache line per CPU. */
struct session_clock_cache {
	__u64 jiffies;
	__u32 tick; /* session clock (SESSION_CLOCK_SHIFT) read at `jiffies` */
	__u32 pad;
	__u64 pad2[6];
};
_Static_assert(sizeof(struct session_clock_cache) == 64, "one cache line per CPU");

/* A flow cache entry (flow_cache.h): one cache line. */
struct flow_cache_entry {
	struct flow_key key;
	struct session session;
	__u32 stamp; /* jiffies when the entry last went through the session tables, flags in bits 0-1 */
};
_Static_assert(sizeof(struct flow_cache_entry) == 64, "one cache line per entry");

/* Tunnel endpoints of the port in slot i (`tunnel_ports`, an array by slot). A remote port: the node
 * and VNI that reach it, and the VXLAN device. Every port: the 16-bit identity it is known by as a
 * sender (the VXLAN group-policy field), so the receiving node finds its own reference to it. */
struct tunnel_port {
	__u32 node;     /* remote: the node's IPv4 address, host order (bpf_tunnel_key.remote_ipv4) */
	__u32 vni;      /* remote: the target's tunnel id on its node (tunnel_targets there) */
	__u32 device;   /* remote: ifindex of this node's VXLAN device */
	__u16 sender;   /* the port's identity as a sender (remote ports: the one its node sends) */
	__u16 pad;
};

/* Key of `tunnel_senders`: a sender as a receiving node sees it. */
struct tunnel_sender_key {
	__u32 node; /* outer source address, host order */
	__u32 xc;   /* this node's id of the cross-connection (the target's) */
	__u16 sender;
	__u8 side;  /* the sender's side */
	__u8 pad;
};

/* Per-CPU scratch of the tunnel paths (`tunnel_scratch`): they sit at the end of the deepest call
 * chain (xconnect -> handle_ipv6 -> handle_fragment -> forward -> tunnel_*), whose frames together
 * must fit in 512 bytes; these would not. */
struct tunnel_scratch {
	__u32 tunnel_key[12]; /* a struct bpf_tunnel_key (44 bytes) */
	struct session_value fresh;
	struct flow_key4 key4;
};

/* Value of xc_registry: control-plane state only, the program never reads it. */
struct xc_record {
	__u32 id;
	__u32 table_size; /* Maglev M */
	__u32 pool_base;  /* first of the 4 * M pool slots: [side][half] double buffers */
	__u32 pad;
};

#endif /* XC_STRUCTS_H */
