/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Constants shared with user space, the first third of the contract (with structs.h and maps.h).
 * flexsfc/dataplane/maps.py mirrors them, and tests/unit/dataplane/test_contract.py compares that
 * mirror with the compiled object's BTF. They are enums, not #defines, because a #define leaves no
 * trace in the object; see xc_contract_btf() below for how the enums get into its BTF.
 *
 * Enumerators have type int in C, exactly as the integer literals they replace, so using them
 * generates the same code.
 */
#ifndef XC_CONSTS_H
#define XC_CONSTS_H

/* Capacities fixed at build time (maps.MAP_CAPACITIES checks them against pinned maps on reopen). */
enum xc_limits {
	MAX_XC = 1024,           /* cross-connection ids 1..MAX_XC-1 */
	MAX_PORTS = 4096,        /* replica ports (host veths) across all cross-connections */
	MAX_NEIGHBOURS = 8192,   /* programmed neighbour addresses: 4 per (xc, side) */
	PORT_INDEX_SIZE = 65536, /* ifindexes below this are found by array index, not hashing */
	POOL_SLOTS = 1 << 22,    /* Maglev slots shared by all tables (32 MiB) */
	FLOW_CACHE_SIZE = 4096,  /* flow cache entries per CPU, a power of two (flow_cache.h) */
	/* A cached entry is used for at most this many jiffies after its last pass through the session
	 * tables (64: 0.26 s at HZ = 250, 0.64 s at HZ = 100), which keeps the confirmed session's
	 * last-seen time within about a second of the flow's last packet and brings the entry back in
	 * line with the tables. Jiffies because bpf_jiffies64() is inlined by the verifier: one load. */
	FLOW_CACHE_REFRESH_JIFFIES = 64,
	NAME_LEN = 256,          /* control-plane names (xc_registry keys, port_identity values), NUL padded */
	MAX_NODES = 1024,        /* nodes allowed to send tunnel packets (tunnel.h) */
};

/* Session clock: last_seen (struct session_value) is bpf_ktime_get_coarse_ns() >> SESSION_CLOCK_SHIFT,
 * CLOCK_MONOTONIC_COARSE in units of 2^30 ns (1.07 s), the same clock user space reads. A confirmed
 * session's stamp is written only when that unit changes: at most one write per second per session,
 * never one per packet. The agent reclaims confirmed sessions idle for longer than their timeout. */
enum xc_session_clock {
	SESSION_CLOCK_SHIFT = 30,
};

/* session_value.flags */
enum xc_session_flags {
	SESSION_F_FULL = 1, /* unconfirmed: the confirmed table was full at tick last_seen (retried on the next) */
};

/* Filter tag (the low 16 bits of the cls_bpf classid, all the kernel passes on): port slot + 1 in
 * the low bits (0 = untagged), the top bit asks for bpf_redirect instead of bpf_redirect_peer. */
enum xc_tag {
	TAG_SLOT_MASK = 0x1fff,
	TAG_TUNNEL = 0x4000, /* the filter at ingress of the node's VXLAN device (tunnel.h) */
	TAG_PLAIN_REDIRECT = 0x8000,
};

/* A replica on another node has a port slot like a local one; its port reference's ifindex is a
 * key of the control plane's with this bit set (never a real ifindex), so one test of the target's
 * ifindex tells a tunnel delivery from a local redirect (tunnel.h). */
enum xc_remote {
	REMOTE_PORT_BIT = (int)0x80000000,
};
_Static_assert(MAX_PORTS < TAG_SLOT_MASK, "every port slot + 1 must fit in the tag");

enum xc_side {
	SIDE_A = 0,
	SIDE_B = 1,
};

/* config.redirect_mode, and what the tag's top bit selects. */
enum xc_redirect_mode {
	MODE_PEER = 0,
	MODE_REDIRECT = 1,
};

/* Port states (maps.PORT_*). Active and draining ports are valid targets of their sessions (the
 * Maglev table alone decides who gets new ones); a leaving port is a source only. */
enum xc_port_state {
	PORT_ACTIVE = 0,
	PORT_DRAINING = 1,
	PORT_LEAVING = 2,
};

enum xc_family {
	FAMILY_ARP = 0, /* pseudo family: ARP conversations share the session machinery */
	FAMILY_V4 = 4,
	FAMILY_V6 = 6,
};

/* Keys of the `drops` map (maps.DropReason). */
enum xc_drop_reason {
	DROP_UNKNOWN_PORT = 0, /* program attached to an interface the control plane does not know */
	DROP_NOT_IP,           /* neither IPv4, IPv6 nor ARP */
	DROP_MALFORMED,        /* truncated or inconsistent headers */
	DROP_NO_REPLICA,       /* destination side has no active replica */
	DROP_FRAG_UNKNOWN,     /* non-first fragment whose first fragment was never seen */
	DROP_IPV6_EXT,         /* more IPv6 extension headers than we walk */
	DROP_ARP_UNSUPPORTED,  /* ARP that is not Ethernet/IPv4 */
	DROP_TUNNEL_UNKNOWN_NODE,   /* tunnel packet from an address that is no known node */
	DROP_TUNNEL_UNKNOWN_TARGET, /* tunnel key naming no live local port (of the sender's xc) */
	DROP_TUNNEL_BAD_KEY,        /* tunnel packet without usable tunnel metadata */
	DROP_TUNNEL_SEND,           /* a remote target whose tunnel endpoint is not (yet) programmed */
	DROP_MAX,
};

/* Keys of the `events` map (maps.Event). */
enum xc_event {
	EV_SESSION_CREATED = 0, /* a new flow: its first packet entered the `unconfirmed` table */
	EV_SESSION_REHASHED, /* session whose replica was gone, re-hashed on its next packet */
	EV_ARP_REPLIED,
	EV_ND_REPLIED,
	EV_FRAG_FOLLOWED, /* non-first fragment sent after its first fragment */
	EV_NEIGH_LEARNED,
	EV_ICMP_ERROR_FOLLOWED, /* ICMP/ICMPv6 error sent to the replica of the session it is about */
	EV_SESSION_COLLISION,   /* packet of an established session from a second live replica of one
				 * side (same flow key from two replicas, e.g. NAT): forwarded, session kept */
	EV_SESSION_CONFIRMED,   /* an unconfirmed flow answered from the other side: moved to `sessions` */
	EV_SESSION_TABLE_FULL,  /* a flow could not be confirmed, `sessions` was full: it stays unconfirmed */
	EV_EVENTS_LOST,         /* a flow event not written: the ring buffer was full (events.h) */
	EV_EVENTS_SUPPRESSED,   /* a drop event not written: over this CPU's drop budget (events.h) */
	EV_TUNNEL_SENT,         /* a packet handed to the tunnel, toward a replica on another node */
	EV_TUNNEL_RECEIVED,     /* a tunnel packet delivered to a local replica */
	EV_TUNNEL_SENDER_UNKNOWN, /* delivered, but its sender is not known here yet: no session recorded */
	EV_MAX,
};

/* An enum reaches the object's BTF only through a type that an emitted variable or function uses,
 * and the program uses the enumerators as plain ints. So this function takes one of every enum
 * above: the compiled object then describes each shared value itself, which is what the contract
 * test reads. It is never called, and libbpf loads only the subprograms a program calls: it costs
 * two instructions in the ELF file and nothing in the kernel. (A variable in a section of its own
 * would carry the types too, but libbpf logs every section it does not know on each load.) Add any
 * new shared enum here. */
struct xc_contract {
	enum xc_limits limits;
	enum xc_tag tag;
	enum xc_remote remote;
	enum xc_side side;
	enum xc_redirect_mode redirect_mode;
	enum xc_port_state port_state;
	enum xc_family family;
	enum xc_drop_reason drop_reason;
	enum xc_event event;
	enum xc_session_clock session_clock;
	enum xc_session_flags session_flags;
};

static __attribute__((used, noinline)) int xc_contract_btf(const struct xc_contract *contract)
{
	return 0;
}

#endif /* XC_CONSTS_H */
