"""Typed keys and values of the eBPF maps, mirroring the contract headers bpf/lib/{consts,structs,maps}.h.

Change both sides together: tests/unit/dataplane/test_contract.py compares every struct, constant and
map here with the compiled object's BTF.
"""

import ctypes
from enum import IntEnum

MAX_XC = 1024
MAX_PORTS = 4096
MAX_NEIGHBOURS = 8192
PORT_INDEX_SIZE = 65536
POOL_SLOTS = 1 << 22
FLOW_CACHE_SIZE = 4096  # entries per CPU
# A cached entry older than this (jiffies, since it last went through the session tables) is not used.
FLOW_CACHE_REFRESH_JIFFIES = 64
NAME_LEN = 256
MAX_NODES = 1024  # nodes allowed to send tunnel packets

FAMILY_ARP = 0
FAMILY_V4 = 4
FAMILY_V6 = 6

SIDE_INDEX = {"A": 0, "B": 1}
MODE_PEER = 0
MODE_REDIRECT = 1
# Filter tag (classid) layout, as the program reads it from skb->tc_classid.
TAG_SLOT_MASK = 0x1FFF
TAG_TUNNEL = 0x4000  # the filter at ingress of the node's VXLAN device
TAG_PLAIN_REDIRECT = 0x8000
# Port keys of replicas on other nodes (never a real ifindex): in `ports`, port slots and references.
REMOTE_PORT_BIT = 0x80000000
PORT_ACTIVE = 0
PORT_DRAINING = 1
PORT_LEAVING = 2  # a source only: its sessions re-hash, what its replica still sends gets out
# SessionValue.last_seen is CLOCK_MONOTONIC_COARSE (ns) >> SESSION_CLOCK_SHIFT: units of 2^30 ns (1.07 s).
SESSION_CLOCK_SHIFT = 30
SESSION_F_FULL = 1  # unconfirmed: the confirmed table was full at tick last_seen

# Every map of the object, in the order they are pinned (file name = map name).
MAP_NAMES = (
    "config",
    "ports",
    "ports_by_index",
    "port_slots",
    "maglev_tables",
    "maglev_pool",
    "sessions",
    "sessions6",
    "unconfirmed",
    "unconfirmed6",
    "session_counts",
    "session_reclaims",
    "session_clocks",
    "flow_cache",
    "frags",
    "neighbours",
    "neighbours_learned",
    "drops",
    "events",
    "xc_registry",
    "port_identity",
    # The flow event stream (bpf/lib/events.h, flexsfc.dataplane.events).
    "flow_events",
    "events_ctl",
    "events_cpu",
    # Multi-node (bpf/lib/tunnel.h, flexsfc.dataplane.tunnels).
    "tunnel_ports",
    "tunnel_targets",
    "tunnel_senders",
    "tunnel_nodes",
    "tunnel_device",
    "tunnel_scratch",
)
# Ring buffers have no key or value: only their size (bytes) is mirrored.
RING_BUFFERS = ("flow_events",)
PROGRAM_NAME = "xconnect"
# The program at ingress of the node's VXLAN device (multi-node); pinned before PROGRAM_NAME.
TUNNEL_PROGRAM_NAME = "xtunnel"
# Confirmed sessions inserted per xc by the program (per CPU), deleted per xc by the agent's sweep.
SESSION_COUNTERS = ("session_counts", "session_reclaims")


def filter_tag(slot: int, redirect_mode: int) -> int:
    """The classid of a port's filter: its slot + 1 (0 means untagged) and the redirect mode."""
    assert slot + 1 <= TAG_SLOT_MASK
    return (slot + 1) | (TAG_PLAIN_REDIRECT if redirect_mode == MODE_REDIRECT else 0)


class DropReason(IntEnum):
    UNKNOWN_PORT = 0
    NOT_IP = 1
    MALFORMED = 2
    NO_REPLICA = 3
    FRAG_UNKNOWN = 4
    IPV6_EXT = 5
    ARP_UNSUPPORTED = 6
    TUNNEL_UNKNOWN_NODE = 7  # a tunnel packet from an address that is no known node
    TUNNEL_UNKNOWN_TARGET = 8  # a tunnel key naming no live local port (of the sender's xc)
    TUNNEL_BAD_KEY = 9  # a tunnel packet without usable tunnel metadata
    TUNNEL_SEND = 10  # a remote target whose tunnel endpoint is not programmed (yet)


class Event(IntEnum):
    SESSION_CREATED = 0
    SESSION_REHASHED = 1
    ARP_REPLIED = 2
    ND_REPLIED = 3
    FRAG_FOLLOWED = 4
    NEIGH_LEARNED = 5
    ICMP_ERROR_FOLLOWED = 6  # an ICMP/ICMPv6 error went to the replica of the session it is about
    SESSION_COLLISION = 7  # a packet of a session came from a second live replica of one side (NAT)
    SESSION_CONFIRMED = 8  # an unconfirmed flow was answered from the other side: now in `sessions`
    SESSION_TABLE_FULL = 9  # a flow could not be confirmed, `sessions` was full (it stays unconfirmed)
    EVENTS_LOST = 10  # a flow event not written: the ring buffer was full (a reader too slow)
    EVENTS_SUPPRESSED = 11  # a drop event not written: over the CPU's drop budget (rate limit)
    TUNNEL_SENT = 12  # a packet handed to the tunnel toward a replica on another node
    TUNNEL_RECEIVED = 13  # a tunnel packet delivered to a local replica
    TUNNEL_SENDER_UNKNOWN = 14  # delivered, its sender not known here yet: no session recorded


class Config(ctypes.Structure):
    _fields_ = [("seed", ctypes.c_uint32), ("redirect_mode", ctypes.c_uint32)]


class PortInfo(ctypes.Structure):
    _fields_ = [
        ("xc", ctypes.c_uint32),
        ("slot", ctypes.c_uint32),
        ("side", ctypes.c_uint8),
        ("state", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
    ]


class PortCounters(ctypes.Structure):
    _fields_ = [
        ("from_packets", ctypes.c_uint64),
        ("from_bytes", ctypes.c_uint64),
        ("to_packets", ctypes.c_uint64),
        ("to_bytes", ctypes.c_uint64),
        ("sessions_created", ctypes.c_uint64),
    ]


class FlowKey4(ctypes.Structure):
    """Key of `sessions` (IPv4 and ARP)."""

    _fields_ = [
        ("xc", ctypes.c_uint32),
        ("proto", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
        ("addr_lo", ctypes.c_uint8 * 4),
        ("addr_hi", ctypes.c_uint8 * 4),
        ("port_lo", ctypes.c_uint16),  # network byte order
        ("port_hi", ctypes.c_uint16),
    ]


class FlowKey(ctypes.Structure):
    """Key of `sessions6` (IPv6)."""

    _fields_ = [
        ("xc", ctypes.c_uint32),
        ("proto", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
        ("addr_lo", ctypes.c_uint8 * 16),
        ("addr_hi", ctypes.c_uint8 * 16),
        ("port_lo", ctypes.c_uint16),  # network byte order
        ("port_hi", ctypes.c_uint16),
    ]


class PortRef(ctypes.Structure):
    _fields_ = [("ifindex", ctypes.c_uint32), ("slot", ctypes.c_uint32)]


class PortSlot(ctypes.Structure):
    """One CPU's copy of a `port_slots` entry: the occupant (same on every CPU) and its counters.

    `port_slots` is a plain mmapable array laid out [cpu][slot] (numpy view: ports.states.PORT_SLOT_DTYPE).
    """

    _fields_ = [
        ("ifindex", ctypes.c_uint32),
        ("xc", ctypes.c_uint32),
        ("side", ctypes.c_uint8),
        ("state", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
        ("pad2", ctypes.c_uint32),
        ("counters", PortCounters),
        ("pad3", ctypes.c_uint64),
    ]


class Session(ctypes.Structure):
    _fields_ = [("side", PortRef * 2)]


class SessionValue(ctypes.Structure):
    """Value of the session tables (confirmed `sessions`/`sessions6`, `unconfirmed`/`unconfirmed6`)."""

    _fields_ = [
        ("pair", Session),
        ("last_seen", ctypes.c_uint32),  # session clock (SESSION_CLOCK_SHIFT)
        ("origin", ctypes.c_uint8),  # side of the flow's first packet
        ("flags", ctypes.c_uint8),  # SESSION_F_*
        ("pad", ctypes.c_uint16),
    ]


class SessionClockCache(ctypes.Structure):
    """One CPU's entry of `session_clocks`, [cpu]: the session clock read at a jiffies value."""

    _fields_ = [
        ("jiffies", ctypes.c_uint64),
        ("tick", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("pad2", ctypes.c_uint64 * 6),
    ]


class FlowCacheEntry(ctypes.Structure):
    _fields_ = [("key", FlowKey), ("session", Session), ("stamp", ctypes.c_uint32)]


def pool_entry(ifindex: int, slot: int) -> int:
    """A Maglev pool slot as the program reads it: struct port_ref {ifindex; slot} on little endian."""
    return (slot << 32) | ifindex


class NeighKey(ctypes.Structure):
    _fields_ = [
        ("xc", ctypes.c_uint32),
        ("side", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
        ("addr", ctypes.c_uint8 * 16),
    ]


class NeighVal(ctypes.Structure):
    _fields_ = [("mac", ctypes.c_uint8 * 6), ("pad", ctypes.c_uint16)]


class XcRecord(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint32),
        ("table_size", ctypes.c_uint32),
        ("pool_base", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


Name = ctypes.c_char * NAME_LEN
U32 = ctypes.c_uint32
U64 = ctypes.c_uint64


class FragKey(ctypes.Structure):
    _fields_ = [
        ("xc", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("proto", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
        ("src", ctypes.c_uint8 * 16),
        ("dst", ctypes.c_uint8 * 16),
    ]


# ---- the flow event stream (bpf/lib/events.h) ----------------------------------------------------------

FLOW_EVENTS_SIZE = 1 << 21  # ring buffer bytes
DROP_SNAPLEN = 128  # bytes of a dropped frame in its event
EVENTS_DROP_BUDGET = 200  # default drop events per CPU per window
EVENTS_WINDOW_SHIFT = 30  # the drop budget's window: CLOCK_MONOTONIC_COARSE ns >> this
EVENT_READERS = 8  # reader slots in events_ctl


class FlowEventKind(IntEnum):
    CREATED = 1  # a new flow chose a replica
    REHASHED = 2  # a session's destination replica was gone: re-hashed (moved)
    FOLLOWED = 3  # a flow came from another replica of its own side (moved upstream): followed
    COLLISION = 4  # a second live replica of one side sent a session's flow
    ICMP_ERROR = 5  # an ICMP error went to the replica of the session it quotes
    DROP = 6  # a dropped packet; its first bytes follow the record


class MoveReason(IntEnum):
    REMOVED = 0  # the replica's port was removed
    LEAVING = 1  # the replica's port is leaving (its pod is going away)


class FlowEvent(ctypes.Structure):
    _fields_ = [
        ("time_ns", ctypes.c_uint64),  # CLOCK_MONOTONIC
        ("kind", ctypes.c_uint8),  # FlowEventKind
        ("reason", ctypes.c_uint8),  # DropReason for drops, MoveReason for moves
        ("side", ctypes.c_uint8),  # side of the ingress port
        ("moved_side", ctypes.c_uint8),
        ("ifindex", ctypes.c_uint32),  # ingress port
        ("old_ifindex", ctypes.c_uint32),
        ("ifindex_a", ctypes.c_uint32),  # the session's replicas after the event
        ("ifindex_b", ctypes.c_uint32),
        ("pkt_len", ctypes.c_uint16),
        ("snap_len", ctypes.c_uint16),
        ("key", FlowKey),
    ]


class FlowEventDrop(ctypes.Structure):
    _fields_ = [("ev", FlowEvent), ("packet", ctypes.c_uint8 * DROP_SNAPLEN)]


class EventsCtl(ctypes.Structure):
    """The stream's switch, written by readers (flexsfc.dataplane.events), read by the program."""

    _fields_ = [
        ("lease", ctypes.c_uint64),  # CLOCK_MONOTONIC_COARSE ns: emit while now < lease (0: off)
        ("drop_budget", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("reader_lease", ctypes.c_uint64 * EVENT_READERS),
        ("reader_pid", ctypes.c_uint32 * EVENT_READERS),
    ]


class EventsCpu(ctypes.Structure):
    _fields_ = [
        ("jiffies", ctypes.c_uint64),
        ("now", ctypes.c_uint64),
        ("window", ctypes.c_uint32),
        ("tokens", ctypes.c_uint32),
        ("drop_reason", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class TunnelPort(ctypes.Structure):
    """`tunnel_ports` by slot: a remote port's endpoint, and every port's sender id."""

    _fields_ = [
        ("node", ctypes.c_uint32),  # IPv4, host order
        ("vni", ctypes.c_uint32),
        ("device", ctypes.c_uint32),
        ("sender", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
    ]


class TunnelSenderKey(ctypes.Structure):
    _fields_ = [
        ("node", ctypes.c_uint32),
        ("xc", ctypes.c_uint32),
        ("sender", ctypes.c_uint16),
        ("side", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


class TunnelScratch(ctypes.Structure):
    """Per-CPU scratch of the tunnel paths (never read here; mirrored for the contract)."""

    _fields_ = [
        ("tunnel_key", ctypes.c_uint32 * 12),
        ("fresh", SessionValue),
        ("key4", FlowKey4),
    ]


# (key, value) of every map as this code reads and writes them: checked against pinned maps on
# reopen, so state pinned by an incompatible version is refused instead of misread.
MAP_LAYOUTS: dict[str, tuple[type, type]] = {
    "config": (U32, Config),
    "ports": (U32, PortInfo),
    "ports_by_index": (U32, PortInfo),
    "port_slots": (U32, PortSlot),
    "maglev_tables": (U32, U64),
    "maglev_pool": (U32, PortRef),
    "sessions": (FlowKey4, SessionValue),
    "sessions6": (FlowKey, SessionValue),
    "unconfirmed": (FlowKey4, SessionValue),
    "unconfirmed6": (FlowKey, SessionValue),
    "session_counts": (U32, U64),
    "session_reclaims": (U32, U64),
    "session_clocks": (U32, SessionClockCache),
    "flow_cache": (U32, FlowCacheEntry),
    "frags": (FragKey, PortRef),
    "neighbours": (NeighKey, NeighVal),
    "neighbours_learned": (NeighKey, NeighVal),
    "drops": (U32, U64),
    "events": (U32, U64),
    "xc_registry": (Name, XcRecord),
    "port_identity": (U32, Name),
    "events_ctl": (U32, EventsCtl),
    "events_cpu": (U32, EventsCpu),
    "tunnel_ports": (U32, TunnelPort),
    "tunnel_targets": (U32, U32),
    "tunnel_senders": (TunnelSenderKey, U32),
    "tunnel_nodes": (U32, U32),
    "tunnel_device": (U32, U32),
    "tunnel_scratch": (U32, TunnelScratch),
}


# max_entries fixed at build time that this code relies on (array sizes it indexes or mmaps,
# capacities it checks against): checked against pinned maps on reopen like the layouts.
def map_capacities(ncpu: int) -> dict[str, int]:
    """MAP_CAPACITIES plus the arrays laid out [cpu][entry]."""
    return {
        **MAP_CAPACITIES,
        "port_slots": MAX_PORTS * ncpu,
        "flow_cache": FLOW_CACHE_SIZE * ncpu,
        "session_clocks": ncpu,
    }


MAP_CAPACITIES: dict[str, int] = {
    "ports": MAX_PORTS,
    "ports_by_index": PORT_INDEX_SIZE,
    "maglev_tables": MAX_XC * 2,
    "maglev_pool": POOL_SLOTS,
    "neighbours": MAX_NEIGHBOURS,
    "xc_registry": MAX_XC,
    "port_identity": MAX_PORTS,
    "session_counts": MAX_XC,
    "session_reclaims": MAX_XC,
    "flow_events": FLOW_EVENTS_SIZE,
    "events_ctl": 1,
    "tunnel_ports": MAX_PORTS,
    "tunnel_targets": MAX_PORTS,
    "tunnel_senders": MAX_PORTS,
    "tunnel_nodes": MAX_NODES,
    "tunnel_device": 1,
    "tunnel_scratch": 1,
}
