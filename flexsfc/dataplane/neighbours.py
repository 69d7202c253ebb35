"""Neighbours: the addresses of each side's NF interface (`neighbours`, programmed by the agent and
answered in place for ARP/ND) and those the program learned from traffic (`neighbours_learned`).

The programmed ones are indexed in memory per (xc, side), raw key -> raw value, mirroring the map
after each syscall; the learned ones are read from their map when asked.
"""

import ctypes
import ipaddress

from flexsfc.dataplane import codecs, libbpf, maps
from flexsfc.dataplane.api import DataplaneError, Neighbour
from flexsfc.dataplane.pins import Pins


class NeighbourTable:
    def __init__(self, pins: Pins) -> None:
        self._pins = pins
        self.refresh()

    def refresh(self) -> None:
        """Programmed neighbours per (xc, side) from one batched dump."""
        self._index: dict[tuple[int, int], dict[bytes, bytes]] = {}
        for key, value in self._dump("neighbours", maps.MAX_NEIGHBOURS):
            self._index.setdefault((key.xc, key.side), {})[bytes(key)] = bytes(value)
        self._count = sum(len(entries) for entries in self._index.values())

    def set(self, xc: int, side: int, neighbours: list[Neighbour]) -> None:
        wanted: dict[bytes, maps.NeighVal] = {}
        for i, neighbour in enumerate(neighbours):
            try:
                ip = ipaddress.ip_address(neighbour.ip.split("/")[0])
            except ValueError:
                raise ValueError(
                    f"neighbours[{i}].ip {neighbour.ip!r}: not an IPv4 or IPv6 address"
                ) from None
            key = _neigh_key(xc, side, ip)
            wanted[bytes(key)] = maps.NeighVal(
                mac=(ctypes.c_uint8 * 6)(*codecs.mac_bytes(neighbour.mac, f"neighbours[{i}].mac"))
            )
        fd = self._pins.fd("neighbours")
        programmed = self._index.get((xc, side), {})
        added = sum(1 for raw in wanted if raw not in programmed)
        removed = sum(1 for raw in programmed if raw not in wanted)
        if self._count - removed + added > maps.MAX_NEIGHBOURS:
            raise DataplaneError(
                f"neighbours: {added} new addresses exceed the {maps.MAX_NEIGHBOURS} programmed "
                "neighbours one node holds; remove addresses of other cross-connections first"
            )
        # The index mirrors the map after each syscall, so a failure half-way leaves it true.
        for raw in [raw for raw in programmed if raw not in wanted]:
            libbpf.map_delete(fd, maps.NeighKey.from_buffer_copy(raw))
            del programmed[raw]
            self._count -= 1
        for raw, value in wanted.items():
            if programmed.get(raw) != bytes(value):
                libbpf.map_update(fd, maps.NeighKey.from_buffer_copy(raw), value)
                self._count += raw not in programmed
                self._index.setdefault((xc, side), programmed)[raw] = bytes(value)
        if not programmed:
            self._index.pop((xc, side), None)

    def get(self, xc: int, side: int, *, learned: bool = False) -> list[Neighbour]:
        """Programmed neighbours of (xc, side) from the index, or the learned ones from their map."""
        if learned:
            name = "neighbours_learned"
            dumped = self._dump(name, libbpf.map_info(self._pins.fd(name)).max_entries)
            pairs = [(bytes(k), bytes(v)) for k, v in dumped if k.xc == xc and k.side == side]
        else:
            pairs = list(self._index.get((xc, side), {}).items())
        out = []
        for raw_key, raw_value in pairs:
            key, value = maps.NeighKey.from_buffer_copy(raw_key), maps.NeighVal.from_buffer_copy(raw_value)
            out.append(
                Neighbour(codecs.addr_bytes(key.family, bytes(key.addr)), codecs.mac_str(bytes(value.mac)))
            )
        return out

    def delete_learned(self, xc: int) -> None:
        fd = self._pins.fd("neighbours_learned")
        for key, _ in self._dump("neighbours_learned", libbpf.map_info(fd).max_entries):
            if key.xc == xc:
                libbpf.map_delete(fd, key)

    def _dump(self, name: str, limit: int) -> list[tuple[maps.NeighKey, maps.NeighVal]]:
        return libbpf.map_dump_batch(self._pins.fd(name), maps.NeighKey, maps.NeighVal, limit)


def _neigh_key(xc: int, side: int, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> maps.NeighKey:
    key = maps.NeighKey(xc=xc, side=side, family=maps.FAMILY_V4 if ip.version == 4 else maps.FAMILY_V6)
    ctypes.memmove(key.addr, ip.packed, len(ip.packed))
    return key
