"""The data plane's contract with the control plane (agent reconciler, benchmarks, metrics).

`flexsfc.dataplane.facade.Dataplane` implements :class:`DataplaneAPI`, which is both sides: the
:class:`DataplaneReader` (what status, metrics and the reconciler's diff read) and the
:class:`DataplaneWriter` (what only the node agent calls). Cross-connections are named by a string
the data plane stores as given: the agent uses `flexsfc.dataplane.naming.xc_key(namespace, name)`
("namespace/name"), so equal names in two namespaces never share an entry. The data plane allocates
the numeric ids it uses in its maps and keeps the name -> id mapping in pinned state, so a restarted
process finds them again.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from flexsfc.model.types import SessionTimeouts, Side

if TYPE_CHECKING:  # sessions.py needs the pins, which need this module
    from flexsfc.dataplane.sessions import SweepReport


class ReplicaState(StrEnum):
    ACTIVE = "active"  # in the Maglev table: receives new sessions
    DRAINING = "draining"  # out of the Maglev table, keeps its established sessions
    # Its pod is going away: no packet is sent to it any more (its sessions re-hash), but what it still
    # sends is forwarded. Listing a replica LEAVING on all its sides before removing it means no packet
    # already inside it is lost on the way out.
    LEAVING = "leaving"


class RedirectMode(StrEnum):
    PEER = "peer"  # bpf_redirect_peer: straight into the pod's netns (faster)
    REDIRECT = "redirect"  # bpf_redirect to the host-side veth's egress


@dataclass(frozen=True)
class RemoteEndpoint:
    """Where a replica on another node is reached: that node's end of the VXLAN underlay."""

    node: str  # node name (for status and messages)
    address: str  # the node's underlay IPv4 address: the tunnel destination


@dataclass(frozen=True)
class ReplicaPort:
    """One replica's interface on one side of a cross-connection, seen from the host.

    A replica on another node has `remote` set; it is given with ifindex 0 and the data plane
    returns it with a key of its own in `ifindex` (bit 31 set: never a real ifindex). Every node
    orders a side's Maglev table by identity, local and remote replicas alike, so all nodes build
    the same table: a remote replica's identity must be the one its own node gives the port.
    """

    ifindex: int  # host-side veth ifindex (in the host network namespace); remote: see above
    identity: str  # stable identity used to order the Maglev table (pod UID or name)
    state: ReplicaState = ReplicaState.ACTIVE
    remote: RemoteEndpoint | None = None


@dataclass(frozen=True)
class Neighbour:
    ip: str  # IPv4 or IPv6 address of the side's NF interface (shared by all its replicas)
    mac: str


@dataclass(frozen=True)
class PortStats:
    ifindex: int
    from_port_packets: int  # emitted by the replica (TC ingress of its host veth)
    from_port_bytes: int
    to_port_packets: int  # delivered to the replica by the cross-connection
    to_port_bytes: int
    sessions_created: int  # sessions whose first packet chose this port


@dataclass(frozen=True)
class SessionEntry:
    xc: str
    proto: int
    addr_lo: str
    port_lo: int
    addr_hi: str
    port_hi: int
    ifindex_a: int
    ifindex_b: int
    # Seen from both sides (kept until idle for its timeout); False: only a flow's first packets so
    # far, in the LRU of unconfirmed flows.
    confirmed: bool = True
    # When a packet of it last went through the session tables, on the session clock
    # (flexsfc.dataplane.sessions.session_clock(): CLOCK_MONOTONIC_COARSE >> SESSION_CLOCK_SHIFT).
    last_seen: int = 0


class DataplaneError(RuntimeError):
    """The data plane refused an operation: a capacity is reached, or the pinned state is unusable."""


class DataplaneReader(Protocol):
    """What can be read from a data plane, also while another process writes it."""

    def list_xcs(self) -> dict[str, int]: ...

    def replicas(self, xc: str, side: Side) -> list[ReplicaPort]: ...

    def neighbours(self, xc: str, side: Side, *, learned: bool = False) -> list[Neighbour]:
        """The addresses programmed for (xc, side), or those the program learned from traffic."""
        ...

    def port_stats(self) -> dict[int, PortStats]: ...

    def drop_stats(self) -> dict[str, int]:
        """Drops by reason name (e.g. "not_ip", "malformed", "no_replica", "unknown_port")."""
        ...

    def event_stats(self) -> dict[str, int]:
        """Events by name (e.g. "session_created", "arp_replied", "frag_followed")."""
        ...

    def session_count(self, xc: str | None = None) -> int: ...

    def session_counts(self) -> dict[str, int]:
        """Sessions per cross-connection, all of them in one walk of the session tables."""
        ...

    def session_counts_by_id(self) -> dict[int, int]:
        """Sessions per cross-connection id, from map descriptors only: safe without the writer's
        lock while the data plane stays open (flexsfc.agent.locked counts this way)."""
        ...

    def session_capacities(self) -> dict[str, int]:
        """Capacity of each confirmed session table by family: "ipv4" (IPv4 and ARP) and "ipv6"
        (none for a data plane without session tables). No walk."""
        ...

    def sessions_expired(self) -> int:
        """Confirmed sessions the agent's sweep freed since the tables were pinned (its reclaim
        counters; one read, no walk)."""
        ...

    def sessions(self, xc: str | None = None, limit: int = 10000) -> list[SessionEntry]: ...


class DataplaneWriter(Protocol):
    """What changes a data plane: the node agent's reconciler, one writer process at a time."""

    def ensure_xc(self, name: str, *, maglev_table_size: int | None = None) -> int:
        """Create the cross-connection if missing (idempotent); returns its numeric id."""
        ...

    def delete_xc(self, name: str) -> None:
        """Remove the cross-connection, its ports, tables and neighbours (idempotent); detach ports."""
        ...

    def rename_xc(self, name: str, new_name: str) -> None:
        """Register the cross-connection under `new_name`; its ports, tables and sessions stay."""
        ...

    def set_replicas(self, xc: str, side: Side, replicas: list[ReplicaPort]) -> None:
        """Make `replicas` the whole replica set of one side (level-triggered).

        ACTIVE ones form the Maglev table (ordered by identity), swapped in atomically; DRAINING ones
        keep their sessions; LEAVING ones only send (their sessions re-hash lazily); ports no longer
        listed are forgotten, and their sessions re-hash lazily. Attaches the TC program to new ports
        and detaches it from removed ones.
        """
        ...

    def converge(self) -> list[str]:
        """Make the pinned state consistent with itself after a writer died mid-update; returns what
        was repaired."""
        ...

    def sweep_sessions(self, timeouts: Mapping[str, SessionTimeouts]) -> "SweepReport":
        """Free the confirmed sessions idle past their timeout (`timeouts` by cross-connection, the
        defaults for the others): the agent's sweep."""
        ...

    def sweep_sessions_by_id(
        self, timeouts: Mapping[int, SessionTimeouts], default: SessionTimeouts
    ) -> "SweepReport":
        """`sweep_sessions` by xc id; map descriptors only, safe without the writer's lock."""
        ...

    def set_neighbours(self, xc: str, side: Side, neighbours: list[Neighbour]) -> None:
        """Addresses of side `side`'s NF interface, answered in place for ARP/ND from the other side."""
        ...

    def set_tunnel(self, device: str | None) -> None:
        """This node's VXLAN device (external mode, gbp; a name in the writer's network namespace):
        remote replicas are reached through it, and the program runs at its ingress. None: none."""
        ...

    def set_nodes(self, nodes: Mapping[str, str]) -> None:
        """Node name -> IPv4 address of every node whose tunnel packets are accepted."""
        ...


class DataplaneAPI(DataplaneReader, DataplaneWriter, Protocol):
    """A whole data plane: its reads, its writes and its lifecycle."""

    def close(self) -> None:
        """Release file descriptors; pinned state and attached programs stay (forwarding goes on)."""
        ...

    def destroy(self) -> None:
        """Detach every port and remove all pinned state."""
        ...
