"""The ports of a data plane: their records (`ports`, `ports_by_index`, `port_identity`), their
per-CPU slots (`port_slots`, shared with the program through mmap), and their TC filters.

The in-memory index (ports by ifindex and by (xc, side), free slots) is read from the maps once and
kept current by every write here, so no write walks a whole map.
"""

import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from flexsfc.dataplane import codecs, libbpf, maps, tcfilter
from flexsfc.dataplane.alloc import FreeIds
from flexsfc.dataplane.api import DataplaneError, PortStats, ReplicaPort, ReplicaState
from flexsfc.dataplane.pins import TC_HANDLE, TC_PRIORITY, Pins
from flexsfc.dataplane.ports import states
from flexsfc.dataplane.registry import XcLayout

log = logging.getLogger(__name__)


@dataclass
class Port:
    ifindex: int
    xc: int
    side: int
    state: int
    slot: int
    identity: str


class PortTable:
    def __init__(self, pins: Pins, ncpu: int) -> None:
        self._pins = pins
        slots = maps.MAX_PORTS * ncpu
        # [cpu][slot]: column `slot` holds every CPU's copy of one port slot.
        self.slots: states.Slots = np.frombuffer(
            pins.mmap("port_slots", slots * states.PORT_SLOT_DTYPE.itemsize),
            dtype=states.PORT_SLOT_DTYPE,
            count=slots,
        ).reshape(ncpu, maps.MAX_PORTS)
        self.redirect_mode = maps.MODE_PEER
        self._prog_id = 0
        self.refresh()

    def refresh(self) -> None:
        """Re-read every port from the maps (a reader following another process's writes)."""
        self._ports: dict[int, Port] = {}
        fd = self._pins.fd("ports")
        for key in libbpf.map_keys(fd, maps.U32):
            info, identity = maps.PortInfo(), maps.Name()
            if libbpf.map_lookup(fd, key, info):
                libbpf.map_lookup(self._pins.fd("port_identity"), key, identity)
                self._ports[key.value] = Port(
                    key.value, info.xc, info.side, info.state, info.slot, identity.value.decode()
                )
        self._side_ports: dict[tuple[int, int], dict[int, Port]] = {}
        for port in self._ports.values():
            self._side_ports.setdefault((port.xc, port.side), {})[port.ifindex] = port
        self._free_slots = FreeIds(0, maps.MAX_PORTS, (p.slot for p in self._ports.values()))
        self._prog_id = libbpf.prog_id(self._pins.fd(maps.PROGRAM_NAME))

    @property
    def prog_id(self) -> int:
        """Id of the pinned program the filters run."""
        return self._prog_id

    def __len__(self) -> int:
        return len(self._ports)

    def __iter__(self) -> Iterator[Port]:
        return iter(list(self._ports.values()))

    def get(self, ifindex: int) -> Port | None:
        return self._ports.get(ifindex)

    def __getitem__(self, ifindex: int) -> Port:
        return self._ports[ifindex]

    def of_side(self, xc: int, side: int) -> dict[int, Port]:
        return self._side_ports.get((xc, side), {})

    def follow_leaving(self, port: Port) -> bool:
        """True when the port is leaving, also when another process (the CNI plugin) marked it so."""
        if port.state != maps.PORT_LEAVING and self.slots[0, port.slot]["state"] == maps.PORT_LEAVING:
            port.state = maps.PORT_LEAVING
        return port.state == maps.PORT_LEAVING

    def slot_states(self, ifindex: int) -> list[int]:
        """The state byte of the port's slot as each CPU's copy holds it."""
        return [int(state) for state in self.slots[:, self._ports[ifindex].slot]["state"]]

    def validate(
        self, rec: XcLayout, side: int, replicas: list[ReplicaPort], xc_name: Callable[[int], str]
    ) -> dict[int, ReplicaPort]:
        """The replica set of one side by ifindex, once it is known to fit: each entry well formed,
        no port of another side, room in the Maglev table and in `port_slots` (`xc_name` names the
        cross-connection of an id, for the messages)."""
        wanted: dict[int, ReplicaPort] = {}
        identities: set[str] = set()
        for i, replica in enumerate(replicas):
            field = f"replicas[{i}]"
            if not isinstance(replica, ReplicaPort):
                raise TypeError(f"{field}: expected ReplicaPort, got {type(replica).__name__}")
            if replica.ifindex <= 0:
                raise ValueError(f"{field}.ifindex {replica.ifindex}: must be a positive host ifindex")
            if replica.ifindex in wanted:
                raise ValueError(f"{field}.ifindex {replica.ifindex}: listed twice")
            if replica.identity in identities:
                raise ValueError(
                    f"{field}.identity {replica.identity!r}: listed twice; identities must be unique"
                )
            codecs.encode_name(replica.identity, f"{field}.identity")
            ReplicaState(replica.state)
            owner = self._ports.get(replica.ifindex)
            if owner is not None and (owner.xc != rec.id or owner.side != side):
                raise ValueError(
                    f"{field}.ifindex {replica.ifindex}: already a port of cross-connection "
                    f"{xc_name(owner.xc)!r} side {'AB'[owner.side]}; remove it there first"
                )
            if owner is None and not replica.ifindex & maps.REMOTE_PORT_BIT:
                try:
                    socket.if_indextoname(replica.ifindex)
                except OSError:
                    raise ValueError(
                        f"{field}.ifindex {replica.ifindex}: no such interface in this network namespace"
                    ) from None
            wanted[replica.ifindex] = replica
            identities.add(replica.identity)
        active = sum(1 for r in replicas if r.state == ReplicaState.ACTIVE)
        if active * 10 > rec.table_size:
            raise ValueError(
                f"replicas: {active} active replicas need a Maglev table of at least {active * 10} slots; "
                f"cross-connection {rec.name!r} has {rec.table_size}: recreate it with a larger "
                "maglevTableSize (e.g. 16381)"
            )
        if active * 100 > rec.table_size:
            # Still balanced within a few percent; the design point is M >= 100 x replicas.
            log.warning(
                "cross-connection %s: %d active replicas on a Maglev table of %d slots (< 100 x replicas); "
                "a larger maglevTableSize balances better",
                rec.name,
                active,
                rec.table_size,
            )
        new_ports = sum(1 for ifindex in wanted if ifindex not in self._ports)
        if len(self._ports) + new_ports > maps.MAX_PORTS:
            raise DataplaneError(f"too many ports: at most {maps.MAX_PORTS} per node")
        return wanted

    # ---- writes -------------------------------------------------------------------------------------

    def add(
        self,
        xc: int,
        side: int,
        replica: ReplicaPort,
        prepare: Callable[[int], None] | None = None,
        release: Callable[[int], None] | None = None,
    ) -> None:
        """A new port. `prepare(slot)` runs before anything names the slot, `release(slot)` when
        the add fails after it (the tunnel entries of the port: tunnels.TunnelTable)."""
        slot = self._free_slots.take()
        if slot is None:  # validation counted the ports: only a broken invariant gets here
            raise DataplaneError(f"too many ports: at most {maps.MAX_PORTS} per node")
        prepared = False
        try:
            if prepare is not None:
                prepare(slot)
                prepared = True
            self._claim(xc, side, replica, slot)
        except BaseException:
            if replica.ifindex in self._ports:  # registered, the attach failed: undo it all
                self.remove(replica.ifindex)
            else:
                self._free_slots.give(slot)
            if prepared and release is not None:
                release(slot)
            raise

    def _claim(self, xc: int, side: int, replica: ReplicaPort, slot: int) -> None:
        key = maps.U32(replica.ifindex)
        libbpf.map_update(
            self._pins.fd("port_identity"), key, codecs.encode_name(replica.identity, "identity")
        )
        state = states.STATE[replica.state]
        self._write_slot(slot, replica.ifindex, xc, side, state)
        info = maps.PortInfo(xc=xc, slot=slot, side=side, state=state)
        # The port entry exists before the filter: its first packet is never an unknown port.
        self._write_port_info(replica.ifindex, info)
        port = Port(replica.ifindex, xc, side, state, slot, replica.identity)
        self._ports[replica.ifindex] = port
        self._side_ports.setdefault((xc, side), {})[replica.ifindex] = port
        self.attach(port)

    def attach(self, port: Port) -> None:
        if port.ifindex & maps.REMOTE_PORT_BIT:
            return  # a replica on another node: no interface here, reached through the tunnel
        tcfilter.attach_ingress(
            port.ifindex,
            self._pins.fd(maps.PROGRAM_NAME),
            handle=TC_HANDLE,
            priority=TC_PRIORITY,
            tag=maps.filter_tag(port.slot, self.redirect_mode),
            name=maps.PROGRAM_NAME,
            prog_id=self._prog_id,
        )

    def update(self, port: Port, state: int, identity: str) -> None:
        key = maps.U32(port.ifindex)
        libbpf.map_update(self._pins.fd("port_identity"), key, codecs.encode_name(identity, "identity"))
        self._write_port_info(
            port.ifindex, maps.PortInfo(xc=port.xc, slot=port.slot, side=port.side, state=state)
        )
        # Only the state byte of the slot (rewriting the slot would reset its counters), and never
        # over a leaving mark the CNI plugin wrote since follow_leaving looked.
        if states.set_state(self.slots, port.slot, state) and state != maps.PORT_LEAVING:
            state = maps.PORT_LEAVING
            self._write_port_info(
                port.ifindex, maps.PortInfo(xc=port.xc, slot=port.slot, side=port.side, state=state)
            )
        port.state, port.identity = state, identity

    def remove(self, ifindex: int) -> None:
        if not ifindex & maps.REMOTE_PORT_BIT:
            libbpf.tc_detach_ingress(ifindex, TC_HANDLE, TC_PRIORITY)
        port = self._ports.pop(ifindex, None)
        if port is not None:
            side_ports = self._side_ports.get((port.xc, port.side), {})
            side_ports.pop(ifindex, None)
            if not side_ports:
                self._side_ports.pop((port.xc, port.side), None)
            # Clearing the slot is what makes sessions pointing at this port re-hash.
            self._clear_slot(port.slot)
            self._free_slots.give(port.slot)
        self._write_port_info(ifindex, None)
        libbpf.map_delete(self._pins.fd("port_identity"), maps.U32(ifindex))

    def repair(self) -> list[str]:
        """Make every port's slot, records and filter agree with its `ports` record again; returns
        what was repaired. A writer killed inside a port write leaves some of them behind (the
        record written, the filter not yet attached; a slot claimed, the record not yet written; a
        state byte not yet set) and nothing later would notice: the next pass reads the record and
        finds it as desired."""
        repairs: list[str] = []
        held = set()
        for port in self:
            held.add(port.slot)
            column = self.slots[:, port.slot]
            if (
                (column["ifindex"] != port.ifindex).any()
                or (column["xc"] != port.xc).any()
                or (column["side"] != port.side).any()
            ):
                self._write_slot(port.slot, port.ifindex, port.xc, port.side, port.state)
                repairs.append(f"port {port.ifindex}: slot {port.slot} rewritten")
            self.follow_leaving(port)
            if (column["state"] != port.state).any():
                repairs.append(f"port {port.ifindex}: state byte set to {port.state}")
            # Rewrites the record, its ports_by_index copy, the identity and every CPU's state byte:
            # whichever of them a kill left unwritten (a few map updates: cheap for a once-per-start pass).
            self.update(port, port.state, port.identity)
            if not self._filter_ok(port):
                try:
                    self.attach(port)
                except Exception as exc:  # its veth is gone: the reconciler removes the port
                    repairs.append(f"port {port.ifindex}: filter missing, attach failed: {exc}")
                else:
                    repairs.append(f"port {port.ifindex}: filter re-attached")
        # A slot claimed by an add that died before writing the record: free it (its ifindex would
        # otherwise stay in every CPU's copy until the slot is reused).
        claimed = np.nonzero((self.slots["ifindex"] != 0).any(axis=0))[0]
        for slot in (int(s) for s in claimed):
            if slot not in held:
                self._clear_slot(slot)
                repairs.append(f"slot {slot}: cleared (no port record)")
        identity_fd = self._pins.fd("port_identity")
        for key in libbpf.map_keys(identity_fd, maps.U32):
            if key.value not in self._ports:
                libbpf.map_delete(identity_fd, key)
                repairs.append(f"ifindex {key.value}: stray identity removed")
        return repairs

    def _filter_ok(self, port: Port) -> bool:
        """Our filter sits on the port, runs this data plane's program, and carries the port's tag."""
        if port.ifindex & maps.REMOTE_PORT_BIT:
            return True
        if libbpf.tc_query_ingress(port.ifindex, TC_HANDLE, TC_PRIORITY) != self._prog_id:
            return False
        tag = tcfilter.ingress_tag(port.ifindex, handle=TC_HANDLE, priority=TC_PRIORITY)
        return tag == maps.filter_tag(port.slot, self.redirect_mode)

    def forget(self) -> list[int]:
        """Drop the index (the pins are going away); returns the ifindexes it held."""
        ifindexes = list(self._ports)
        self._ports, self._side_ports = {}, {}
        return ifindexes

    def _write_slot(self, slot: int, ifindex: int, xc: int, side: int, state: int) -> None:
        """Every CPU's copy names the occupant; counters start at zero. The ifindex goes last: the
        program checks it first, so it never pairs the new ifindex with the old xc or side."""
        column = self.slots[:, slot]
        for counter in states.COUNTERS:
            column[counter] = 0
        column["xc"], column["side"], column["state"] = xc, side, state
        column["ifindex"] = ifindex

    def _clear_slot(self, slot: int) -> None:
        """The ifindex goes first: from then on no packet matches the slot (its sessions re-hash)."""
        column = self.slots[:, slot]
        column["ifindex"] = 0
        column["xc"], column["side"], column["state"] = 0, 0, 0

    def _write_port_info(self, ifindex: int, info: maps.PortInfo | None) -> None:
        """`ports` (the record) and, for small ifindexes, `ports_by_index` (what an untagged filter reads)."""
        key = maps.U32(ifindex)
        if info is None:
            if ifindex < maps.PORT_INDEX_SIZE:
                libbpf.map_update(self._pins.fd("ports_by_index"), key, maps.PortInfo())
            libbpf.map_delete(self._pins.fd("ports"), key)
            return
        libbpf.map_update(self._pins.fd("ports"), key, info)
        if ifindex < maps.PORT_INDEX_SIZE:
            libbpf.map_update(self._pins.fd("ports_by_index"), key, info)

    # ---- counters -----------------------------------------------------------------------------------

    def stats(self) -> dict[int, PortStats]:
        """Each port's counters, summed over every CPU's copy of its slot."""
        out = {}
        for port in self._ports.values():
            column = self.slots[:, port.slot]
            sums = [int(column[counter].sum()) for counter in states.COUNTERS]
            out[port.ifindex] = PortStats(port.ifindex, *sums)
        return out
