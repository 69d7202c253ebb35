"""The Dataplane facade: cross-connections, replica sets, neighbours and stats over pinned eBPF maps.

The orchestration only: each map family has its own module (pins: loading, reopening and removing
the pinned state; registry: cross-connection ids and pool regions; ports: port records, slots and
filters; tables: Maglev tables; neighbours; stats: counters and sessions). One process at a time may
write (the node agent); readers may open the same pins concurrently.
"""

import ctypes
import functools
import socket
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from flexsfc.dataplane import codecs, libbpf, maps
from flexsfc.dataplane.api import (
    DataplaneError,
    Neighbour,
    RedirectMode,
    RemoteEndpoint,
    ReplicaPort,
    ReplicaState,
)
from flexsfc.dataplane.maglev import is_prime
from flexsfc.dataplane.neighbours import NeighbourTable
from flexsfc.dataplane.pins import TC_HANDLE, TC_PRIORITY, Pins, destroy_pinned
from flexsfc.dataplane.ports.states import REPLICA_STATE, STATE
from flexsfc.dataplane.ports.table import PortTable
from flexsfc.dataplane.registry import XcLayout, XcRegistry
from flexsfc.dataplane.sessions import SessionCounters
from flexsfc.dataplane.stats import Counters, SessionReader
from flexsfc.dataplane.tables import MaglevTables
from flexsfc.dataplane.traffic_reads import TrafficReads
from flexsfc.dataplane.tunnels import TunnelTable, endpoint_address, keyed_replica
from flexsfc.model.constants import (
    ALLOWED_MAGLEV_TABLE_SIZES,
    DEFAULT_MAGLEV_TABLE_SIZE,
    DEFAULT_PIN_DIR,
    DEFAULT_SESSION_CAPACITY,
)
from flexsfc.model.types import Side

__all__ = ["TC_HANDLE", "TC_PRIORITY", "Dataplane", "DataplaneError", "XcLayout"]

_SIDE = {Side.A: 0, Side.B: 1}
_MODE = {RedirectMode.PEER: maps.MODE_PEER, RedirectMode.REDIRECT: maps.MODE_REDIRECT}


class Dataplane(TrafficReads):
    """Implements flexsfc.dataplane.api.DataplaneAPI on the pinned maps under `pin_dir`."""

    def __init__(
        self,
        pin_dir: str = DEFAULT_PIN_DIR,
        *,
        session_capacity: int = DEFAULT_SESSION_CAPACITY,
        redirect_mode: RedirectMode | None = None,
        seed: int | None = None,
        session_capacity_v6: int | None = None,
        upgrade: bool = False,
        unconfirmed_capacity: int | None = None,
    ) -> None:
        if session_capacity < 1:
            raise ValueError(f"session_capacity {session_capacity}: must be >= 1")
        # Unconfirmed flows (first packets, one-way floods) have an LRU of their own, a quarter of
        # the confirmed capacity unless told otherwise (docs/dataplane.md, "Sessions and churn").
        unconfirmed = (
            unconfirmed_capacity if unconfirmed_capacity is not None else max(session_capacity // 4, 1024)
        )
        if unconfirmed < 1:
            raise ValueError(f"unconfirmed_capacity {unconfirmed}: must be >= 1")
        # IPv6 sessions live in their own table (a 44-byte key); a quarter of the IPv4 capacity
        # unless told otherwise keeps the default memory near 120 MB.
        capacity_v6 = (
            session_capacity_v6 if session_capacity_v6 is not None else max(session_capacity // 4, 1024)
        )
        if capacity_v6 < 1:
            raise ValueError(f"session_capacity_v6 {capacity_v6}: must be >= 1")
        if seed is not None and not 0 <= seed < 2**32:
            raise ValueError(f"seed {seed}: must fit in 32 bits")
        self.pin_dir = pin_dir
        # upgrade: a writer (the node agent) moves pinned state to this version's program
        # (flexsfc.dataplane.upgrade); readers never load anything into a pinned data plane.
        capacities = (session_capacity, capacity_v6, unconfirmed, max(unconfirmed // 4, 1024))
        self._pins = Pins(pin_dir, capacities, seed, upgrade=upgrade)
        self.reopened = self._pins.reopened
        self.upgrade_report = self._pins.upgrade
        try:
            self._tables = MaglevTables(self._pins)
        except BaseException:
            self._pins.close()
            raise
        try:
            ncpu = libbpf.possible_cpus()
            entries = maps.FLOW_CACHE_SIZE * ncpu
            # Only the cache entries' xc ids are read here (to forget a deleted cross-connection).
            self._flow_cache: npt.NDArray[np.uint32] = np.frombuffer(
                self._pins.mmap("flow_cache", entries * ctypes.sizeof(maps.FlowCacheEntry)), dtype=np.uint32
            ).reshape(entries, ctypes.sizeof(maps.FlowCacheEntry) // 4)
            self._xcs = XcRegistry(self._pins)
            self._ports = PortTable(self._pins, ncpu)
            self._tunnels = TunnelTable(self._pins)
            self._remote_nodes: dict[int, str] = {}  # remote port key -> node name (status only)
            self._neighbours = NeighbourTable(self._pins)
            self._counters = Counters(self._pins, ncpu)
            self._sessions = SessionReader(self._pins)
            self._session_counters = SessionCounters(self._pins)
            if self._pins.recount:  # an upgrade was interrupted while re-pinning the session maps
                self._session_counters.recount(self._sessions.counts_by_id())
                self._pins.recounted()
            self._ports.redirect_mode = self._config().redirect_mode
            # None keeps what is pinned (PEER on a fresh load): a reader never flips the mode.
            if redirect_mode is not None:
                self.set_redirect_mode(redirect_mode)
        except BaseException:
            self.close()
            raise

    @property
    def prog_fd(self) -> int:
        return self._pins.fd(maps.PROGRAM_NAME)

    def map_fd(self, name: str) -> int:
        return self._pins.fd(name)

    def refresh(self) -> None:
        """Re-read cross-connections, ports and programmed neighbours from the maps (for a reader
        while another process writes; the writer's own view is always current).

        The in-memory indexes built here (ports and neighbours per (xc, side), free xc ids, port
        slots and pool regions) are kept up to date by every write, so no call walks a whole map.
        """
        self._xcs.refresh()
        self._ports.refresh()
        self._tunnels.refresh()
        self._tables.forget()
        self._neighbours.refresh()
        self._ports.redirect_mode = self._config().redirect_mode

    # ---- configuration -------------------------------------------------------------------------------

    @property
    def seed(self) -> int:
        return int(self._config().seed)

    def _config(self) -> maps.Config:
        cfg = maps.Config()
        libbpf.map_lookup(self._pins.fd("config"), maps.U32(0), cfg)
        return cfg

    @property
    def redirect_mode(self) -> RedirectMode:
        current = self._config().redirect_mode
        return next(mode for mode, value in _MODE.items() if value == current)

    def set_redirect_mode(self, mode: RedirectMode) -> None:
        """Switch every port: the mode lives in each filter's tag, so each filter is replaced."""
        cfg = self._config()
        wanted = _MODE[RedirectMode(mode)]
        if cfg.redirect_mode == wanted:
            return
        cfg.redirect_mode = wanted
        libbpf.map_update(self._pins.fd("config"), maps.U32(0), cfg)
        self._ports.redirect_mode = wanted
        for port in self._ports:
            self._ports.attach(port)
        if self._tunnels.device:
            self._tunnels.attach(self._tunnels.device, wanted)

    @property
    def session_capacity(self) -> int:
        """Capacity of the IPv4 (and ARP) session table."""
        return self._sessions.capacity

    @property
    def session_capacity_v6(self) -> int:
        return self._sessions.capacity_v6

    @property
    def unconfirmed_capacity(self) -> tuple[int, int]:
        """Capacities of the unconfirmed-flow LRUs (IPv4/ARP, IPv6)."""
        return self._sessions.capacity_unconfirmed

    # ---- cross-connections ---------------------------------------------------------------------------

    def ensure_xc(self, name: str, *, maglev_table_size: int | None = None) -> int:
        size = maglev_table_size or DEFAULT_MAGLEV_TABLE_SIZE
        codecs.encode_name(name, "cross-connection name")
        if not is_prime(size) or size not in ALLOWED_MAGLEV_TABLE_SIZES:
            raise ValueError(
                f"maglev_table_size {size}: use one of the primes "
                f"{', '.join(map(str, ALLOWED_MAGLEV_TABLE_SIZES))}"
            )
        existing = self._xcs.get(name)
        if existing is not None:
            if maglev_table_size is not None and existing.table_size != size:
                raise ValueError(
                    f"maglev_table_size {size}: cross-connection {name!r} already uses "
                    f"{existing.table_size}; delete and recreate it to change the size"
                )
            return existing.id
        xc = self._xcs.allocate(name, size)
        try:
            self._tables.publish_empty(xc)
            self._xcs.register(xc)
        except BaseException:
            self._xcs.release(xc)
            raise
        return xc.id

    def delete_xc(self, name: str) -> None:
        xc = self._xcs.get(name)
        if xc is None:
            return
        for side in (Side.A, Side.B):
            self.set_replicas(name, side, [])
            self.set_neighbours(name, side, [])
        self._neighbours.delete_learned(xc.id)
        # Its cached sessions would only ever fail their liveness check, unless the id and the very
        # same ports came back: forget them (the xc id is the entry's first word).
        self._flow_cache[self._flow_cache[:, 0] == xc.id] = 0
        self._xcs.release(xc)

    def rename_xc(self, name: str, new_name: str) -> None:
        """Register cross-connection `name` as `new_name`: only its registry key changes (id,
        tables, ports, neighbours and sessions are by id), so forwarding is not touched. For the
        agent's one-time move from bare names to namespaced keys (naming.xc_key)."""
        codecs.encode_name(new_name, "cross-connection name")
        self._xcs.rename(self._xc(name), new_name)

    def list_xcs(self) -> dict[str, int]:
        return self._xcs.ids()

    def xc_layout(self, name: str) -> XcLayout:
        """Id, Maglev table size and pool region of a cross-connection."""
        return self._xc(name)

    def _xc(self, name: str) -> XcLayout:
        xc = self._xcs.get(name)
        if xc is None:
            raise ValueError(f"cross-connection {name!r}: unknown, call ensure_xc first")
        return xc

    # ---- replicas ------------------------------------------------------------------------------------

    def set_replicas(self, xc: str, side: Side, replicas: list[ReplicaPort]) -> None:
        rec = self._xc(xc)
        side_i = _SIDE[Side(side)]
        # Replicas on other nodes get their port key here (tunnels.remote_key).
        replicas = [keyed_replica(rec.name, side_i, r, f"replicas[{i}]") for i, r in enumerate(replicas)]
        wanted = self._ports.validate(rec, side_i, replicas, self._xcs.name_of)
        current = dict(self._ports.of_side(rec.id, side_i))

        added: list[int] = []
        try:
            for ifindex, replica in wanted.items():
                if ifindex not in current:
                    # The tunnel entries first: a session still naming this remote port (removed
                    # and added back: same key, often the same slot) must never find the slot live
                    # and them missing.
                    self._ports.add(
                        rec.id,
                        side_i,
                        replica,
                        prepare=functools.partial(self._register_tunnel, rec.id, rec.name, side_i, replica),
                        release=functools.partial(self._tunnels.remove, xc_id=rec.id, side=side_i),
                    )
                    added.append(ifindex)
        except BaseException:
            for ifindex in added:
                self._remove_port(ifindex)
            raise
        for ifindex, replica in wanted.items():
            port = self._ports[ifindex]
            # Leaving is final: the CNI plugin may have marked the port while its pod was still
            # listed as running or draining here; its veth is about to go (or gone).
            state = maps.PORT_LEAVING if self._ports.follow_leaving(port) else STATE[replica.state]
            if port.state != state or port.identity != replica.identity:
                if port.identity != replica.identity:  # its tunnel ids derive from the identity
                    self._register_tunnel(rec.id, rec.name, side_i, replica, port.slot)
                self._ports.update(port, state, replica.identity)
            elif replica.remote is not None and endpoint_address(self._tunnels.endpoint(port.slot)) != (
                replica.remote.address
            ):  # the node's address changed
                self._register_tunnel(rec.id, rec.name, side_i, replica, port.slot)

        active = sorted(
            (r.identity, r.ifindex)
            for r in replicas
            if r.state == ReplicaState.ACTIVE and self._ports[r.ifindex].state == maps.PORT_ACTIVE
        )
        entries = [maps.pool_entry(ifindex, self._ports[ifindex].slot) for _, ifindex in active]
        self._tables.swap(rec, side_i, active, entries)
        # Only once the new table is live: forget removed ports; their sessions re-hash lazily.
        for ifindex in current:
            if ifindex not in wanted:
                self._remove_port(ifindex)

    def _register_tunnel(self, xc_id: int, xc: str, side: int, replica: ReplicaPort, slot: int) -> None:
        """Write (or overwrite in place) the tunnel entries of the port in `slot`."""
        if replica.remote is None:
            self._tunnels.add_local(slot, xc, side, replica.identity)
        else:
            self._tunnels.add_remote(slot, xc_id, xc, side, replica.identity, replica.remote.address)
            self._remote_nodes[replica.ifindex] = replica.remote.node

    def _remove_port(self, ifindex: int) -> None:
        port = self._ports.get(ifindex)
        self._ports.remove(ifindex)
        if port is not None:  # after the slot is cleared: nothing reaches it through these any more
            self._tunnels.remove(port.slot, port.xc, port.side)
            self._remote_nodes.pop(ifindex, None)

    def replicas(self, xc: str, side: Side) -> list[ReplicaPort]:
        rec, side_i = self._xc(xc), _SIDE[Side(side)]
        ports = self._ports.of_side(rec.id, side_i).values()
        for port in ports:
            self._ports.follow_leaving(port)
        return [
            ReplicaPort(p.ifindex, p.identity, REPLICA_STATE[p.state], self._remote(p.ifindex, p.slot))
            for p in sorted(ports, key=lambda p: p.identity)
        ]

    def _remote(self, ifindex: int, slot: int) -> RemoteEndpoint | None:
        if not ifindex & maps.REMOTE_PORT_BIT:
            return None
        address = endpoint_address(self._tunnels.endpoint(slot))
        return RemoteEndpoint(self._remote_nodes.get(ifindex, ""), address)

    # ---- multi-node ----------------------------------------------------------------------------------

    def set_tunnel(self, device: str | None) -> None:
        """Attach the program at ingress of this node's VXLAN device (external mode, gbp), named in
        the caller's network namespace; None detaches it. Remote ports send through it."""
        if device is None:
            self._tunnels.detach()
            return
        try:
            ifindex = socket.if_nametoindex(device)
        except OSError:
            raise ValueError(
                f"tunnel device {device!r}: no such interface in this network namespace"
            ) from None
        self._tunnels.attach(ifindex, self._config().redirect_mode)

    def set_nodes(self, nodes: Mapping[str, str]) -> None:
        """Node name -> IPv4 address of every node whose tunnel packets are accepted."""
        self._tunnels.set_nodes(nodes)

    @property
    def tunnel_device(self) -> int:
        """ifindex of the VXLAN device the program is attached to (0: none)."""
        return self._tunnels.device

    def tunnel_nodes(self) -> set[str]:
        return self._tunnels.nodes()

    def tunnel_conflicts(self) -> list[str]:
        """Tunnel id collisions met so far (ports that cannot be told apart across nodes)."""
        return list(self._tunnels.conflicts)

    def maglev_table(self, xc: str, side: Side) -> list[int]:
        """The live lookup table of one side (host ifindexes), as the program sees it."""
        rec = self._xc(xc)
        return [entry & 0xFFFFFFFF for entry in self._tables.entries(rec.id, _SIDE[Side(side)])]

    def live_table_region(self, xc: str, side: Side) -> tuple[int, int]:
        """(offset, size) in the Maglev pool of the live table of one side: which half is live."""
        return self._tables.live(self._xc(xc).id, _SIDE[Side(side)])

    def attached(self, ifindex: int) -> bool:
        """Whether our filter sits at ingress of `ifindex` (in this thread's network namespace)."""
        return libbpf.tc_query_ingress(ifindex, TC_HANDLE, TC_PRIORITY) is not None

    def port_slot(self, ifindex: int) -> int:
        """The slot of a port in `port_slots` (its filter's tag is slot + 1)."""
        port = self._ports.get(ifindex)
        if port is None:
            raise ValueError(f"ifindex {ifindex}: not a port")
        return port.slot

    def port_slot_states(self, ifindex: int) -> list[int]:
        """The state byte of a port's slot (maps.PORT_*) as each CPU's copy holds it."""
        self.port_slot(ifindex)
        return self._ports.slot_states(ifindex)

    def converge(self) -> list[str]:
        """Make the pinned state consistent with itself again; returns what was repaired (empty when
        nothing was wrong). For the first pass of a writer after (re)opening the pins: a writer
        killed between two steps of a replica update (a port record written, its filter or the new
        Maglev table not yet) leaves state that the next diff cannot see, since the records already
        read as desired. Each port's slot, records and filter are checked against its record, and
        every side's table is rebuilt from the records and published when it differs."""
        repairs = self._ports.repair()
        for port in self._ports:  # the tunnel entries of every port, rewritten (idempotent)
            remote = self._remote(port.ifindex, port.slot)
            if remote is not None and remote.address == "0.0.0.0":
                continue  # its entry never got written: the next set_replicas writes it
            replica = ReplicaPort(port.ifindex, port.identity, remote=remote)
            self._register_tunnel(port.xc, self._xcs.name_of(port.xc), port.side, replica, port.slot)
        self._tables.forget()  # compare every live table with a fresh build, not with our memory
        for name in sorted(self._xcs.ids()):
            rec = self._xc(name)
            for side_i in (0, 1):
                ports = self._ports.of_side(rec.id, side_i).values()
                active = sorted((p.identity, p.ifindex) for p in ports if p.state == maps.PORT_ACTIVE)
                entries = [maps.pool_entry(ifindex, self._ports[ifindex].slot) for _, ifindex in active]
                before = self._tables.live(rec.id, side_i)
                self._tables.swap(rec, side_i, active, entries)
                if self._tables.live(rec.id, side_i) != before:
                    repairs.append(f"{name}/{'AB'[side_i]}: Maglev table rebuilt and published")
        return repairs

    # ---- neighbours ----------------------------------------------------------------------------------

    def set_neighbours(self, xc: str, side: Side, neighbours: list[Neighbour]) -> None:
        self._neighbours.set(self._xc(xc).id, _SIDE[Side(side)], neighbours)

    def neighbours(self, xc: str, side: Side, *, learned: bool = False) -> list[Neighbour]:
        """Programmed neighbours of (xc, side) from the index, or the learned ones from their map."""
        return self._neighbours.get(self._xc(xc).id, _SIDE[Side(side)], learned=learned)

    # ---- lifecycle -----------------------------------------------------------------------------------

    def close(self) -> None:
        self._tables.release()  # drop the pool view so the mapping can close
        self._pins.close()

    def destroy(self) -> None:
        # Works after close() too: the filters are found by handle, not through our descriptors.
        ports = self._ports.forget()
        self.close()
        destroy_pinned(self.pin_dir, ports)

    def __enter__(self) -> "Dataplane":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
