"""Reading what the program counted and remembered: drop and event counters (per-CPU arrays) and the
session tables (confirmed: `sessions` for IPv4 and ARP, `sessions6` for IPv6; unconfirmed flows:
`unconfirmed`, `unconfirmed6`). Read-only: nothing here writes."""

import ctypes
import socket
from functools import cache
from typing import cast

from flexsfc.dataplane import codecs, libbpf, maps
from flexsfc.dataplane.api import SessionEntry
from flexsfc.dataplane.build import ensure_session_count_lib
from flexsfc.dataplane.pins import Pins

SessionKey = maps.FlowKey4 | maps.FlowKey
SessionItem = tuple[SessionKey, maps.SessionValue]
# (table, key type, confirmed): the confirmed tables first.
SESSION_TABLES = (
    ("sessions", maps.FlowKey4, True),
    ("sessions6", maps.FlowKey, True),
    ("unconfirmed", maps.FlowKey4, False),
    ("unconfirmed6", maps.FlowKey, False),
)


@cache
def _native() -> ctypes.CDLL:
    helper = ctypes.CDLL(str(ensure_session_count_lib()))
    fn = helper.count_by_xc
    fn.restype = ctypes.c_long
    fn.argtypes = [
        ctypes.c_int, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32,
        ctypes.POINTER(ctypes.c_uint64), ctypes.c_uint32,
    ]  # fmt: skip
    return helper


class Counters:
    def __init__(self, pins: Pins, ncpu: int) -> None:
        self._pins, self._ncpu = pins, ncpu

    def drops(self) -> dict[str, int]:
        counts = self._per_cpu_array("drops", len(maps.DropReason))
        return {reason.name.lower(): counts[reason] for reason in maps.DropReason}

    def events(self) -> dict[str, int]:
        counts = self._per_cpu_array("events", len(maps.Event))
        return {event.name.lower(): counts[event] for event in maps.Event}

    def _per_cpu_array(self, name: str, size: int) -> list[int]:
        values = []
        for index in range(size):
            per_cpu = (ctypes.c_uint64 * self._ncpu)()
            libbpf.map_lookup(self._pins.fd(name), maps.U32(index), per_cpu)
            values.append(sum(per_cpu))
        return values


class SessionReader:
    def __init__(self, pins: Pins) -> None:
        self._pins = pins

    @property
    def capacity(self) -> int:
        """Capacity of the IPv4 (and ARP) session table."""
        return int(libbpf.map_info(self._pins.fd("sessions")).max_entries)

    @property
    def capacity_v6(self) -> int:
        return int(libbpf.map_info(self._pins.fd("sessions6")).max_entries)

    @property
    def capacity_unconfirmed(self) -> tuple[int, int]:
        """Capacities of the unconfirmed tables (IPv4/ARP, IPv6)."""
        v4, v6 = (int(libbpf.map_info(self._pins.fd(n)).max_entries) for n in ("unconfirmed", "unconfirmed6"))
        return v4, v6

    def items(self, limit: int) -> list[tuple[SessionItem, bool]]:
        """Up to `limit` (session, confirmed), the confirmed tables first, IPv4 before IPv6."""
        items: list[tuple[SessionItem, bool]] = []
        for name, key_type, confirmed in SESSION_TABLES:
            if len(items) >= limit:
                break
            batch = libbpf.map_dump_batch(
                self._pins.fd(name), key_type, maps.SessionValue, limit - len(items)
            )
            items += [((cast(SessionKey, key), value), confirmed) for key, value in batch]
        return items

    def all(self) -> list[tuple[SessionItem, bool]]:
        return self.items(self.capacity + self.capacity_v6 + sum(self.capacity_unconfirmed))

    def count(self, xc_id: int | None) -> int:
        by_id = self.counts_by_id()
        return sum(by_id.values()) if xc_id is None else by_id.get(xc_id, 0)

    def counts(self, names: dict[int, str]) -> dict[str, int]:
        """Sessions per cross-connection (`names`: id -> name) in one walk of the tables."""
        by_id = self.counts_by_id()
        return {name: by_id.get(xc_id, 0) for xc_id, name in names.items()}

    def counts_by_id(self) -> dict[int, int]:
        """Sessions per cross-connection id (those with any), in one walk of both tables.

        Reads only the maps through their descriptors (no index a writer changes), so it may run
        without the writer's lock; the walk is one native call (native/session_count.c) during which
        ctypes releases the GIL, so the agent's other threads run on (1M sessions: ~0.3 s)."""
        counts = (ctypes.c_uint64 * maps.MAX_XC)()
        for name in ("sessions", "sessions6"):
            fd = self._pins.fd(name)
            info = libbpf.map_info(fd)  # the sizes as loaded: every key starts with its xc id (u32)
            rc = _native().count_by_xc(fd, info.key_size, info.value_size, 4096, counts, maps.MAX_XC)
            if rc < 0:
                raise libbpf.BpfError("bpf_map_lookup_batch", -rc, name)
        return {xc_id: int(count) for xc_id, count in enumerate(counts) if count}

    def walk_unconfirmed_by_id(self) -> dict[int, int]:
        """Unconfirmed flows per xc id, in one walk of the unconfirmed LRUs (at most their capacity)."""
        counts = (ctypes.c_uint64 * maps.MAX_XC)()
        for name in ("unconfirmed", "unconfirmed6"):
            fd = self._pins.fd(name)
            info = libbpf.map_info(fd)
            rc = _native().count_by_xc(fd, info.key_size, info.value_size, 4096, counts, maps.MAX_XC)
            if rc < 0:
                raise libbpf.BpfError("bpf_map_lookup_batch", -rc, name)
        return {xc_id: int(count) for xc_id, count in enumerate(counts) if count}

    def entries(self, names: dict[int, str], xc_id: int | None, limit: int) -> list[SessionEntry]:
        """Sessions of one cross-connection (or of all), up to `limit`, named by `names` (id -> name)."""
        items = self.items(limit) if xc_id is None else self.all()
        out = []
        for (key, value), confirmed in items:
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
                    ifindex_a=value.pair.side[0].ifindex,
                    ifindex_b=value.pair.side[1].ifindex,
                    confirmed=confirmed,
                    last_seen=value.last_seen,
                )
            )
            if len(out) >= limit:
                break
        return out


def _flow_addr(family: int, raw: bytes) -> str:
    return codecs.addr_bytes(maps.FAMILY_V6 if family == maps.FAMILY_V6 else maps.FAMILY_V4, raw)
