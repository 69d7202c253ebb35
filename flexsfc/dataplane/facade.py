"""The Dataplane facade: cross-connections, replica sets, neighbours and stats over pinned eBPF maps.

Opening a pin directory that holds a complete set of pins reuses it (seed, cross-connection ids,
sessions, attached filters: forwarding never stops); otherwise the object is compiled if stale,
loaded with the requested session capacity, and pinned. One process at a time may write (the node
agent); readers may open the same pins concurrently.
"""

import bisect
import contextlib
import ctypes
import errno
import heapq
import ipaddress
import logging
import mmap
import os
import secrets
import socket
from dataclasses import dataclass

import numpy as np

from flexsfc.dataplane import libbpf, maps, slot_state, tcfilter
from flexsfc.dataplane.api import (
    Neighbour,
    PortStats,
    RedirectMode,
    ReplicaPort,
    ReplicaState,
    SessionEntry,
)
from flexsfc.dataplane.build import ensure_built
from flexsfc.dataplane.maglev import build_table, is_prime
from flexsfc.model.constants import (
    ALLOWED_MAGLEV_TABLE_SIZES,
    DEFAULT_MAGLEV_TABLE_SIZE,
    DEFAULT_PIN_DIR,
    DEFAULT_SESSION_CAPACITY,
)
from flexsfc.model.types import Side

# Our cls_bpf filter at TC ingress: removed by exactly this handle/priority, never the whole qdisc.
TC_HANDLE = 0xF5C0
TC_PRIORITY = 0x5C

_SIDE = {Side.A: 0, Side.B: 1}

# A numpy view of maps.PortSlot, laid out from the ctypes mirror itself (what the facade writes through
# mmap and what the CNI plugin's retire path reads must agree byte for byte).
_COUNTERS = [name for name, _ in maps.PortCounters._fields_]
PORT_SLOT_DTYPE = np.dtype(
    {
        "names": ["ifindex", "xc", "side", "state", *_COUNTERS],
        "formats": ["<u4", "<u4", "u1", "u1", *["<u8"] * len(_COUNTERS)],
        "offsets": [
            *(getattr(maps.PortSlot, name).offset for name in ("ifindex", "xc", "side", "state")),
            *(maps.PortSlot.counters.offset + getattr(maps.PortCounters, name).offset for name in _COUNTERS),
        ],
        "itemsize": ctypes.sizeof(maps.PortSlot),
    }
)

_STATE = {
    ReplicaState.ACTIVE: maps.PORT_ACTIVE,
    ReplicaState.DRAINING: maps.PORT_DRAINING,
    ReplicaState.LEAVING: maps.PORT_LEAVING,
}
_MODE = {RedirectMode.PEER: maps.MODE_PEER, RedirectMode.REDIRECT: maps.MODE_REDIRECT}


log = logging.getLogger(__name__)


class DataplaneError(RuntimeError):
    pass


@dataclass
class _Xc:
    name: str
    id: int
    table_size: int
    pool_base: int


@dataclass
class _Port:
    ifindex: int
    xc: int
    side: int
    state: int
    slot: int
    identity: str


class _FreeIds:
    """The free integers of [first, end): the smallest is taken first, as a linear scan would."""

    def __init__(self, first: int, end: int, used: set[int]) -> None:
        self._heap = [i for i in range(first, end) if i not in used]  # ascending: already a heap

    def take(self) -> int | None:
        return heapq.heappop(self._heap) if self._heap else None

    def give(self, value: int) -> None:
        heapq.heappush(self._heap, value)


class _PoolGaps:
    """Free regions [start, end) of the Maglev slot pool, sorted by start; first fit."""

    def __init__(self, size: int, used: list[tuple[int, int]]) -> None:
        self._gaps: list[tuple[int, int]] = []
        start = 0
        for begin, end in sorted(used):
            if begin > start:
                self._gaps.append((start, begin))
            start = max(start, end)
        if start < size:
            self._gaps.append((start, size))

    def take(self, length: int) -> int | None:
        for i, (begin, end) in enumerate(self._gaps):
            if end - begin >= length:
                if end - begin == length:
                    del self._gaps[i]
                else:
                    self._gaps[i] = (begin + length, end)
                return begin
        return None

    def give(self, begin: int, length: int) -> None:
        end = begin + length
        i = bisect.bisect(self._gaps, (begin, end))
        # Merge with the gap just before and just after, so first fit sees one region.
        if i > 0 and self._gaps[i - 1][1] == begin:
            i -= 1
            begin = self._gaps.pop(i)[0]
        if i < len(self._gaps) and self._gaps[i][0] == end:
            end = self._gaps.pop(i)[1]
        self._gaps.insert(i, (begin, end))


class Dataplane:
    """Implements flexsfc.dataplane.api.DataplaneAPI on the pinned maps under `pin_dir`."""

    def __init__(
        self,
        pin_dir: str = DEFAULT_PIN_DIR,
        *,
        session_capacity: int = DEFAULT_SESSION_CAPACITY,
        redirect_mode: RedirectMode | None = None,
        seed: int | None = None,
        session_capacity_v6: int | None = None,
    ) -> None:
        if session_capacity < 1:
            raise ValueError(f"session_capacity {session_capacity}: must be >= 1")
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
        self._fds: dict[str, int] = {}
        self._mmaps: list[mmap.mmap] = []
        self.reopened = self._complete_pins()
        if self.reopened:
            self._open_pins()
            try:
                self._check_layouts()
            except BaseException:
                self.close()
                raise
        else:
            self._load_and_pin(
                (session_capacity, capacity_v6), seed if seed is not None else secrets.randbits(32)
            )
        try:
            self._pool = np.frombuffer(self._mmap("maglev_pool", maps.POOL_SLOTS * 8), dtype=np.uint64)
            self._tables = self._mmap("maglev_tables", maps.MAX_XC * 2 * 8)
            self._ncpu = libbpf.possible_cpus()
            slots = maps.MAX_PORTS * self._ncpu
            # [cpu][slot]: column `slot` holds every CPU's copy of one port slot.
            self._slots = np.frombuffer(
                self._mmap("port_slots", slots * PORT_SLOT_DTYPE.itemsize),
                dtype=PORT_SLOT_DTYPE,
                count=slots,
            ).reshape(self._ncpu, maps.MAX_PORTS)
            entries = maps.FLOW_CACHE_SIZE * self._ncpu
            # Only the cache entries' xc ids are read here (to forget a deleted cross-connection).
            self._flow_cache = np.frombuffer(
                self._mmap("flow_cache", entries * ctypes.sizeof(maps.FlowCacheEntry)), dtype=np.uint32
            ).reshape(entries, ctypes.sizeof(maps.FlowCacheEntry) // 4)
            self.refresh()
            # None keeps what is pinned (PEER on a fresh load): a reader never flips the mode.
            if redirect_mode is not None:
                self.set_redirect_mode(redirect_mode)
        except BaseException:
            self.close()
            raise

    # ---- loading and pinning -------------------------------------------------------------------------

    def _pin_path(self, name: str) -> str:
        return os.path.join(self.pin_dir, name)

    def _complete_pins(self) -> bool:
        names = [*maps.MAP_NAMES, maps.PROGRAM_NAME]
        present = [os.path.exists(self._pin_path(n)) for n in names]
        if all(present):
            return True
        if any(present):
            missing = [n for n, p in zip(names, present, strict=True) if not p]
            raise DataplaneError(
                f"pin_dir {self.pin_dir}: incomplete pinned state (missing {', '.join(missing)}); "
                f"remove it with Dataplane.destroy() or `rm -r {self.pin_dir}` and start again"
            )
        return False

    def _open_pins(self) -> None:
        for name in (*maps.MAP_NAMES, maps.PROGRAM_NAME):
            self._fds[name] = libbpf.obj_get(self._pin_path(name))

    def _check_layouts(self) -> None:
        for name, (key, value) in maps.MAP_LAYOUTS.items():
            info = libbpf.map_info(self._fds[name])
            want = (ctypes.sizeof(key), ctypes.sizeof(value))
            if (info.key_size, info.value_size) != want:
                raise DataplaneError(
                    f"pin_dir {self.pin_dir}: map {name} has key/value sizes "
                    f"{info.key_size}/{info.value_size}, this version expects {want[0]}/{want[1]}: the "
                    "state was pinned by another flexsfc version; destroy it (Dataplane.destroy() or "
                    f"`rm -r {self.pin_dir}`, which interrupts forwarding) and start again"
                )
        for name, capacity in maps.map_capacities(libbpf.possible_cpus()).items():
            entries = libbpf.map_info(self._fds[name]).max_entries
            if entries != capacity:
                raise DataplaneError(
                    f"pin_dir {self.pin_dir}: map {name} holds {entries} entries, this version expects "
                    f"{capacity}: the state was pinned by another flexsfc version; destroy it "
                    f"(Dataplane.destroy() or `rm -r {self.pin_dir}`, which interrupts forwarding) "
                    "and start again"
                )

    def _load_and_pin(self, session_capacity: tuple[int, int], seed: int) -> None:
        _ensure_bpffs(self.pin_dir)
        created_dir = not os.path.isdir(self.pin_dir)
        os.makedirs(self.pin_dir, exist_ok=True)
        try:
            self._load_into_pin_dir(session_capacity, seed)
        except BaseException:
            if created_dir:
                with contextlib.suppress(OSError):
                    os.rmdir(self.pin_dir)
            raise
        self._open_pins()

    def _load_into_pin_dir(self, session_capacity: tuple[int, int], seed: int) -> None:
        obj = libbpf.BpfObject(str(ensure_built()))
        pinned: list[str] = []
        try:
            obj.set_max_entries("sessions", session_capacity[0])
            obj.set_max_entries("sessions6", session_capacity[1])
            obj.set_max_entries("port_slots", maps.MAX_PORTS * libbpf.possible_cpus())
            obj.set_max_entries("flow_cache", maps.FLOW_CACHE_SIZE * libbpf.possible_cpus())
            obj.load()
            for name in maps.MAP_NAMES:
                libbpf.obj_pin(obj.map_fd(name), self._pin_path(name))
                pinned.append(name)
            cfg = maps.Config(seed=seed, redirect_mode=maps.MODE_PEER)
            libbpf.map_update(obj.map_fd("config"), maps.U32(0), cfg)
            # The program pin goes last: its presence marks the state complete.
            libbpf.obj_pin(obj.program_fd(maps.PROGRAM_NAME), self._pin_path(maps.PROGRAM_NAME))
        except BaseException:
            for name in pinned:
                _unlink(self._pin_path(name))
            raise
        finally:
            obj.close()

    def _mmap(self, name: str, length: int) -> mmap.mmap:
        length = -(-length // mmap.PAGESIZE) * mmap.PAGESIZE
        mm = mmap.mmap(self._fds[name], length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._mmaps.append(mm)
        return mm

    def _fd(self, name: str) -> int:
        try:
            return self._fds[name]
        except KeyError:
            raise DataplaneError("dataplane is closed") from None

    @property
    def prog_fd(self) -> int:
        return self._fd(maps.PROGRAM_NAME)

    def map_fd(self, name: str) -> int:
        return self._fd(name)

    def refresh(self) -> None:
        """Re-read cross-connections, ports and programmed neighbours from the maps (for a reader
        while another process writes; the writer's own view is always current).

        The in-memory indexes built here (ports and neighbours per (xc, side), free xc ids, port
        slots and pool regions) are kept up to date by every write, so no call walks a whole map.
        """
        self._xcs = self._read_xcs()
        self._ports = self._read_ports()
        # (xc id, side) -> what the live Maglev table was built from, so an unchanged set is not
        # rebuilt; unknown after a (re)open, then the live table itself is compared.
        self._published: dict[tuple[int, int], tuple[object, ...]] = {}
        self._side_ports: dict[tuple[int, int], dict[int, _Port]] = {}
        for port in self._ports.values():
            self._side_ports.setdefault((port.xc, port.side), {})[port.ifindex] = port
        self._neighbour_index = self._read_neighbours()
        self._redirect_mode = self._config().redirect_mode
        self._prog_id = libbpf.prog_id(self.prog_fd)
        self._neighbour_count = sum(len(entries) for entries in self._neighbour_index.values())
        self._free_xc_ids = _FreeIds(1, maps.MAX_XC, {xc.id for xc in self._xcs.values()})
        self._free_slots = _FreeIds(0, maps.MAX_PORTS, {p.slot for p in self._ports.values()})
        self._pool_gaps = _PoolGaps(
            maps.POOL_SLOTS, [(xc.pool_base, xc.pool_base + 4 * xc.table_size) for xc in self._xcs.values()]
        )

    def _read_xcs(self) -> dict[str, _Xc]:
        out = {}
        for key in libbpf.map_keys(self._fd("xc_registry"), maps.Name):
            rec = maps.XcRecord()
            if libbpf.map_lookup(self._fd("xc_registry"), key, rec):
                name = key.value.decode()
                out[name] = _Xc(name, rec.id, rec.table_size, rec.pool_base)
        return out

    def _read_ports(self) -> dict[int, _Port]:
        out = {}
        for key in libbpf.map_keys(self._fd("ports"), maps.U32):
            info, identity = maps.PortInfo(), maps.Name()
            if libbpf.map_lookup(self._fd("ports"), key, info):
                libbpf.map_lookup(self._fd("port_identity"), key, identity)
                out[key.value] = _Port(
                    key.value, info.xc, info.side, info.state, info.slot, identity.value.decode()
                )
        return out

    def _read_neighbours(self) -> dict[tuple[int, int], dict[bytes, bytes]]:
        """Programmed neighbours per (xc, side): raw key -> raw value, one batched dump."""
        out: dict[tuple[int, int], dict[bytes, bytes]] = {}
        items = libbpf.map_dump_batch(
            self._fd("neighbours"), maps.NeighKey, maps.NeighVal, maps.MAX_NEIGHBOURS
        )
        for key, value in items:
            out.setdefault((key.xc, key.side), {})[bytes(key)] = bytes(value)
        return out

    def _ports_of_side(self, xc: int, side: int) -> dict[int, _Port]:
        return self._side_ports.get((xc, side), {})

    # ---- configuration -------------------------------------------------------------------------------

    @property
    def seed(self) -> int:
        return self._config().seed

    def _config(self) -> maps.Config:
        cfg = maps.Config()
        libbpf.map_lookup(self._fd("config"), maps.U32(0), cfg)
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
        libbpf.map_update(self._fd("config"), maps.U32(0), cfg)
        self._redirect_mode = wanted
        for port in self._ports.values():
            self._attach(port)

    @property
    def session_capacity(self) -> int:
        """Capacity of the IPv4 (and ARP) session table."""
        return libbpf.map_info(self._fd("sessions")).max_entries

    @property
    def session_capacity_v6(self) -> int:
        return libbpf.map_info(self._fd("sessions6")).max_entries

    # ---- cross-connections ---------------------------------------------------------------------------

    def ensure_xc(self, name: str, *, maglev_table_size: int | None = None) -> int:
        size = maglev_table_size or DEFAULT_MAGLEV_TABLE_SIZE
        key = maps.encode_name(name, "cross-connection name")
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
        xc_id = self._free_xc_ids.take()
        if xc_id is None:
            raise DataplaneError(f"too many cross-connections: at most {maps.MAX_XC - 1} per node")
        pool_base = self._pool_gaps.take(4 * size)  # first fit
        if pool_base is None:
            self._free_xc_ids.give(xc_id)
            raise DataplaneError(
                f"Maglev slot pool full ({maps.POOL_SLOTS} slots): delete cross-connections or use "
                "smaller tables"
            )
        xc = _Xc(name, xc_id, size, pool_base)
        try:
            for side in (0, 1):
                self._publish(xc.id, side, xc.pool_base + 2 * side * size, 0)
            rec = maps.XcRecord(id=xc.id, table_size=size, pool_base=xc.pool_base)
            libbpf.map_update(self._fd("xc_registry"), key, rec)
        except BaseException:
            self._free_xc_ids.give(xc_id)
            self._pool_gaps.give(pool_base, 4 * size)
            raise
        self._xcs[name] = xc
        return xc.id

    def delete_xc(self, name: str) -> None:
        xc = self._xcs.get(name)
        if xc is None:
            return
        for side in (Side.A, Side.B):
            self.set_replicas(name, side, [])
            self.set_neighbours(name, side, [])
        self._delete_learned(xc.id)
        # Its cached sessions would only ever fail their liveness check, unless the id and the very
        # same ports came back: forget them (the xc id is the entry's first word).
        self._flow_cache[self._flow_cache[:, 0] == xc.id] = 0
        libbpf.map_delete(self._fd("xc_registry"), maps.encode_name(name, "cross-connection name"))
        del self._xcs[name]
        self._free_xc_ids.give(xc.id)
        self._pool_gaps.give(xc.pool_base, 4 * xc.table_size)

    def list_xcs(self) -> dict[str, int]:
        return {name: xc.id for name, xc in self._xcs.items()}

    def _xc(self, name: str) -> _Xc:
        try:
            return self._xcs[name]
        except KeyError:
            raise ValueError(f"cross-connection {name!r}: unknown, call ensure_xc first") from None

    # ---- replicas ------------------------------------------------------------------------------------

    def set_replicas(self, xc: str, side: Side, replicas: list[ReplicaPort]) -> None:
        rec = self._xc(xc)
        side_i = _SIDE[Side(side)]
        wanted = self._validate_replicas(rec, side_i, replicas)
        current = dict(self._ports_of_side(rec.id, side_i))

        added: list[int] = []
        try:
            for ifindex, replica in wanted.items():
                if ifindex not in current:
                    self._add_port(rec.id, side_i, replica)
                    added.append(ifindex)
        except BaseException:
            for ifindex in added:
                self._remove_port(ifindex)
            raise
        for ifindex, replica in wanted.items():
            port = self._ports[ifindex]
            # Leaving is final: the CNI plugin may have marked the port while its pod was still
            # listed as running or draining here; its veth is about to go (or gone).
            state = maps.PORT_LEAVING if self._follow_leaving(port) else _STATE[replica.state]
            if port.state != state or port.identity != replica.identity:
                self._update_port(port, state, replica.identity)

        active = sorted(
            (r.identity, r.ifindex)
            for r in replicas
            if r.state == ReplicaState.ACTIVE and self._ports[r.ifindex].state == maps.PORT_ACTIVE
        )
        self._swap_table(rec, side_i, active)
        # Only once the new table is live: forget removed ports; their sessions re-hash lazily.
        for ifindex in current:
            if ifindex not in wanted:
                self._remove_port(ifindex)

    def _validate_replicas(self, rec: _Xc, side: int, replicas: list[ReplicaPort]) -> dict[int, ReplicaPort]:
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
            maps.encode_name(replica.identity, f"{field}.identity")
            ReplicaState(replica.state)
            owner = self._ports.get(replica.ifindex)
            if owner is not None and (owner.xc != rec.id or owner.side != side):
                owner_name = next((x.name for x in self._xcs.values() if x.id == owner.xc), str(owner.xc))
                raise ValueError(
                    f"{field}.ifindex {replica.ifindex}: already a port of cross-connection {owner_name!r} "
                    f"side {'AB'[owner.side]}; remove it there first"
                )
            if owner is None:
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

    def _add_port(self, xc: int, side: int, replica: ReplicaPort) -> None:
        slot = self._free_slots.take()
        if slot is None:  # validation counted the ports: only a broken invariant gets here
            raise DataplaneError(f"too many ports: at most {maps.MAX_PORTS} per node")
        try:
            self._claim_port(xc, side, replica, slot)
        except BaseException:
            if replica.ifindex in self._ports:  # registered, the attach failed: undo it all
                self._remove_port(replica.ifindex)
            else:
                self._free_slots.give(slot)
            raise

    def _claim_port(self, xc: int, side: int, replica: ReplicaPort, slot: int) -> None:
        key = maps.U32(replica.ifindex)
        libbpf.map_update(self._fd("port_identity"), key, maps.encode_name(replica.identity, "identity"))
        state = _STATE[replica.state]
        self._write_slot(slot, replica.ifindex, xc, side, state)
        info = maps.PortInfo(xc=xc, slot=slot, side=side, state=state)
        # The port entry exists before the filter: its first packet is never an unknown port.
        self._write_port_info(replica.ifindex, info)
        port = _Port(replica.ifindex, xc, side, _STATE[replica.state], slot, replica.identity)
        self._ports[replica.ifindex] = port
        self._side_ports.setdefault((xc, side), {})[replica.ifindex] = port
        self._attach(port)

    def _attach(self, port: _Port) -> None:
        tcfilter.attach_ingress(
            port.ifindex,
            self.prog_fd,
            handle=TC_HANDLE,
            priority=TC_PRIORITY,
            tag=maps.filter_tag(port.slot, self._redirect_mode),
            name=maps.PROGRAM_NAME,
            prog_id=self._prog_id,
        )

    def _update_port(self, port: _Port, state: int, identity: str) -> None:
        key = maps.U32(port.ifindex)
        libbpf.map_update(self._fd("port_identity"), key, maps.encode_name(identity, "identity"))
        self._write_port_info(
            port.ifindex, maps.PortInfo(xc=port.xc, slot=port.slot, side=port.side, state=state)
        )
        # Only the state byte of the slot (rewriting the slot would reset its counters), and never
        # over a leaving mark the CNI plugin wrote since _follow_leaving looked.
        if slot_state.set_state(self._slots, port.slot, state) and state != maps.PORT_LEAVING:
            state = maps.PORT_LEAVING
            self._write_port_info(
                port.ifindex, maps.PortInfo(xc=port.xc, slot=port.slot, side=port.side, state=state)
            )
        port.state, port.identity = state, identity

    def _follow_leaving(self, port: _Port) -> bool:
        """True when the port is leaving, also when another process (the CNI plugin) marked it so."""
        if port.state != maps.PORT_LEAVING and self._slots[0, port.slot]["state"] == maps.PORT_LEAVING:
            port.state = maps.PORT_LEAVING
        return port.state == maps.PORT_LEAVING

    def _remove_port(self, ifindex: int) -> None:
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
        libbpf.map_delete(self._fd("port_identity"), maps.U32(ifindex))

    def _write_slot(self, slot: int, ifindex: int, xc: int, side: int, state: int) -> None:
        """Every CPU's copy names the occupant; counters start at zero. The ifindex goes last: the
        program checks it first, so it never pairs the new ifindex with the old xc or side."""
        column = self._slots[:, slot]
        for counter, _ in maps.PortCounters._fields_:
            column[counter] = 0
        column["xc"], column["side"], column["state"] = xc, side, state
        column["ifindex"] = ifindex

    def _clear_slot(self, slot: int) -> None:
        """The ifindex goes first: from then on no packet matches the slot (its sessions re-hash)."""
        column = self._slots[:, slot]
        column["ifindex"] = 0
        column["xc"], column["side"], column["state"] = 0, 0, 0

    def _write_port_info(self, ifindex: int, info: maps.PortInfo | None) -> None:
        """`ports` (the record) and, for small ifindexes, `ports_by_index` (what an untagged filter reads)."""
        key = maps.U32(ifindex)
        if info is None:
            if ifindex < maps.PORT_INDEX_SIZE:
                libbpf.map_update(self._fd("ports_by_index"), key, maps.PortInfo())
            libbpf.map_delete(self._fd("ports"), key)
            return
        libbpf.map_update(self._fd("ports"), key, info)
        if ifindex < maps.PORT_INDEX_SIZE:
            libbpf.map_update(self._fd("ports_by_index"), key, info)

    def _descriptor(self, xc: int, side: int) -> ctypes.c_uint64:
        return ctypes.c_uint64.from_buffer(self._tables, (xc * 2 + side) * 8)

    def _publish(self, xc: int, side: int, offset: int, size: int) -> None:
        # One aligned 8-byte store through the shared mapping: the program's one 8-byte load sees
        # either the old or the new (offset, size) pair, never a mix.
        self._descriptor(xc, side).value = (size << 32) | offset

    def _swap_table(self, rec: _Xc, side: int, active: list[tuple[str, int]]) -> None:
        desc = self._descriptor(rec.id, side).value
        offset, size = desc & 0xFFFFFFFF, desc >> 32
        halves = (rec.pool_base + 2 * side * rec.table_size, rec.pool_base + (2 * side + 1) * rec.table_size)
        idle = halves[1] if size and offset == halves[0] else halves[0]
        key = (rec.id, side)
        if not active:
            self._published.pop(key, None)
            if size:
                self._publish(rec.id, side, idle, 0)
            return
        entries = [maps.pool_entry(ifindex, self._ports[ifindex].slot) for _, ifindex in active]
        inputs = (tuple(active), tuple(entries))
        known = self._published.get(key)
        if size and known == inputs:
            return
        # Write the idle half completely, then publish it: the live half is never written. np.take
        # gathers straight into the pool (fancy indexing with the int32 table cast it and copied,
        # ~100 µs of a replica add).
        idle_half = self._pool[idle : idle + rec.table_size]
        slots_to_replica = build_table([identity for identity, _ in active], rec.table_size)
        np.take(np.array(entries, dtype=np.uint64), slots_to_replica, out=idle_half)
        if known is None and size and np.array_equal(self._pool[offset : offset + size], idle_half):
            self._published[key] = inputs  # after a reopen: the live table is already this one
            return
        self._publish(rec.id, side, idle, rec.table_size)
        self._published[key] = inputs

    def replicas(self, xc: str, side: Side) -> list[ReplicaPort]:
        rec, side_i = self._xc(xc), _SIDE[Side(side)]
        states = {v: k for k, v in _STATE.items()}
        ports = self._ports_of_side(rec.id, side_i).values()
        for port in ports:
            self._follow_leaving(port)
        return [
            ReplicaPort(p.ifindex, p.identity, states[p.state])
            for p in sorted(ports, key=lambda p: p.identity)
        ]

    def maglev_table(self, xc: str, side: Side) -> list[int]:
        """The live lookup table of one side (host ifindexes), as the program sees it."""
        rec = self._xc(xc)
        desc = self._descriptor(rec.id, _SIDE[Side(side)]).value
        offset, size = desc & 0xFFFFFFFF, desc >> 32
        return [entry & 0xFFFFFFFF for entry in self._pool[offset : offset + size].tolist()]

    def attached(self, ifindex: int) -> bool:
        """Whether our filter sits at ingress of `ifindex` (in this thread's network namespace)."""
        return libbpf.tc_query_ingress(ifindex, TC_HANDLE, TC_PRIORITY) is not None

    # ---- neighbours ----------------------------------------------------------------------------------

    def set_neighbours(self, xc: str, side: Side, neighbours: list[Neighbour]) -> None:
        rec, side_i = self._xc(xc), _SIDE[Side(side)]
        wanted: dict[bytes, maps.NeighVal] = {}
        for i, neighbour in enumerate(neighbours):
            try:
                ip = ipaddress.ip_address(neighbour.ip.split("/")[0])
            except ValueError:
                raise ValueError(
                    f"neighbours[{i}].ip {neighbour.ip!r}: not an IPv4 or IPv6 address"
                ) from None
            key = _neigh_key(rec.id, side_i, ip)
            wanted[bytes(key)] = maps.NeighVal(
                mac=(ctypes.c_uint8 * 6)(*maps.mac_bytes(neighbour.mac, f"neighbours[{i}].mac"))
            )
        fd = self._fd("neighbours")
        programmed = self._neighbour_index.get((rec.id, side_i), {})
        added = sum(1 for raw in wanted if raw not in programmed)
        removed = sum(1 for raw in programmed if raw not in wanted)
        if self._neighbour_count - removed + added > maps.MAX_NEIGHBOURS:
            raise DataplaneError(
                f"neighbours: {added} new addresses exceed the {maps.MAX_NEIGHBOURS} programmed "
                "neighbours one node holds; remove addresses of other cross-connections first"
            )
        # The index mirrors the map after each syscall, so a failure half-way leaves it true.
        for raw in [raw for raw in programmed if raw not in wanted]:
            libbpf.map_delete(fd, maps.NeighKey.from_buffer_copy(raw))
            del programmed[raw]
            self._neighbour_count -= 1
        for raw, value in wanted.items():
            if programmed.get(raw) != bytes(value):
                libbpf.map_update(fd, maps.NeighKey.from_buffer_copy(raw), value)
                self._neighbour_count += raw not in programmed
                self._neighbour_index.setdefault((rec.id, side_i), programmed)[raw] = bytes(value)
        if not programmed:
            self._neighbour_index.pop((rec.id, side_i), None)

    def neighbours(self, xc: str, side: Side, *, learned: bool = False) -> list[Neighbour]:
        """Programmed neighbours of (xc, side) from the index, or the learned ones from their map."""
        rec, side_i = self._xc(xc), _SIDE[Side(side)]
        if learned:
            pairs = [
                (bytes(key), bytes(value))
                for key, value in self._dump_neighbours("neighbours_learned")
                if key.xc == rec.id and key.side == side_i
            ]
        else:
            pairs = list(self._neighbour_index.get((rec.id, side_i), {}).items())
        out = []
        for raw_key, raw_value in pairs:
            key, value = maps.NeighKey.from_buffer_copy(raw_key), maps.NeighVal.from_buffer_copy(raw_value)
            out.append(
                Neighbour(maps.addr_bytes(key.family, bytes(key.addr)), maps.mac_str(bytes(value.mac)))
            )
        return out

    def _dump_neighbours(self, name: str) -> list[tuple[maps.NeighKey, maps.NeighVal]]:
        fd = self._fd(name)
        return libbpf.map_dump_batch(fd, maps.NeighKey, maps.NeighVal, libbpf.map_info(fd).max_entries)

    def _delete_learned(self, xc_id: int) -> None:
        fd = self._fd("neighbours_learned")
        for key, _ in self._dump_neighbours("neighbours_learned"):
            if key.xc == xc_id:
                libbpf.map_delete(fd, key)

    # ---- statistics ----------------------------------------------------------------------------------

    def port_stats(self) -> dict[int, PortStats]:
        out = {}
        for port in self._ports.values():
            column = self._slots[:, port.slot]
            sums = [int(column[counter].sum()) for counter, _ in maps.PortCounters._fields_]
            out[port.ifindex] = PortStats(port.ifindex, *sums)
        return out

    def _per_cpu_array(self, name: str, size: int) -> list[int]:
        values = []
        for index in range(size):
            per_cpu = (ctypes.c_uint64 * self._ncpu)()
            libbpf.map_lookup(self._fd(name), maps.U32(index), per_cpu)
            values.append(sum(per_cpu))
        return values

    def drop_stats(self) -> dict[str, int]:
        counts = self._per_cpu_array("drops", len(maps.DropReason))
        return {reason.name.lower(): counts[reason] for reason in maps.DropReason}

    def event_stats(self) -> dict[str, int]:
        """Sessions created/re-hashed, ARP and ND replies, fragments followed, neighbours learned."""
        counts = self._per_cpu_array("events", len(maps.Event))
        return {event.name.lower(): counts[event] for event in maps.Event}

    def _session_items(self, limit: int) -> list[tuple[maps.FlowKey4 | maps.FlowKey, maps.Session]]:
        items = libbpf.map_dump_batch(self._fd("sessions"), maps.FlowKey4, maps.Session, limit)
        if len(items) < limit:
            items += libbpf.map_dump_batch(
                self._fd("sessions6"), maps.FlowKey, maps.Session, limit - len(items)
            )
        return items

    def _all_sessions(self) -> list[tuple[maps.FlowKey4 | maps.FlowKey, maps.Session]]:
        return self._session_items(self.session_capacity + self.session_capacity_v6)

    def session_count(self, xc: str | None = None) -> int:
        xc_id = None if xc is None else self._xc(xc).id
        return sum(1 for key, _ in self._all_sessions() if xc_id is None or key.xc == xc_id)

    def session_counts(self) -> dict[str, int]:
        """Sessions per cross-connection in one walk of the table (the metrics exporter's gauge)."""
        names = {rec.id: name for name, rec in self._xcs.items()}
        counts = dict.fromkeys(self._xcs, 0)
        for key, _ in self._all_sessions():
            name = names.get(key.xc)
            if name is not None:
                counts[name] += 1
        return counts

    def sessions(self, xc: str | None = None, limit: int = 10000) -> list[SessionEntry]:
        xc_id = None if xc is None else self._xc(xc).id
        names = {rec.id: name for name, rec in self._xcs.items()}
        items = self._session_items(limit) if xc_id is None else self._all_sessions()
        out = []
        for key, value in items:
            if xc_id is not None and key.xc != xc_id:
                continue
            out.append(
                SessionEntry(
                    xc=names.get(key.xc, str(key.xc)),
                    proto=key.proto,
                    addr_lo=_flow_addr(key.family, bytes(key.addr_lo)),
                    port_lo=socket.ntohs(key.port_lo),
                    addr_hi=_flow_addr(key.family, bytes(key.addr_hi)),
                    port_hi=socket.ntohs(key.port_hi),
                    ifindex_a=value.side[0].ifindex,
                    ifindex_b=value.side[1].ifindex,
                )
            )
            if len(out) >= limit:
                break
        return out

    # ---- lifecycle -----------------------------------------------------------------------------------

    def close(self) -> None:
        self._pool = np.empty(0, dtype=np.uint64)  # drop the view so the mapping can close
        for mm in self._mmaps:
            with contextlib.suppress(BufferError):  # a view still exists: it keeps the mapping
                mm.close()
        self._mmaps.clear()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def destroy(self) -> None:
        # Works after close() too: the filters are found by handle, not through our descriptors.
        for ifindex in list(self._ports):
            libbpf.tc_detach_ingress(ifindex, TC_HANDLE, TC_PRIORITY)
        self._ports = {}
        self._side_ports = {}
        self.close()
        for name in (maps.PROGRAM_NAME, *maps.MAP_NAMES):
            _unlink(self._pin_path(name))
        try:
            os.rmdir(self.pin_dir)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):
                raise

    def __enter__(self) -> "Dataplane":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _neigh_key(xc: int, side: int, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> maps.NeighKey:
    key = maps.NeighKey(xc=xc, side=side, family=maps.FAMILY_V4 if ip.version == 4 else maps.FAMILY_V6)
    ctypes.memmove(key.addr, ip.packed, len(ip.packed))
    return key


def _flow_addr(family: int, raw: bytes) -> str:
    return maps.addr_bytes(maps.FAMILY_V6 if family == maps.FAMILY_V6 else maps.FAMILY_V4, raw)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _ensure_bpffs(pin_dir: str) -> None:
    root = "/sys/fs/bpf"
    if pin_dir.startswith(root + "/") and not os.path.ismount(root):
        raise DataplaneError(
            f"bpffs is not mounted at {root}: run `mount -t bpf bpf {root}` (scripts/setup.sh does)"
        )
