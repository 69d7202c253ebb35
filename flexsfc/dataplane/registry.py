"""The cross-connection registry (`xc_registry`: name -> id, table size, pool region) and the
allocation of ids and Maglev pool regions for new cross-connections.

The agent registers cross-connections under namespaced keys (`naming.xc_key`, "namespace/name").
Entries written by an agent from before namespaced keys carry the bare name (no "/"): the reconciler
renames them (:meth:`XcRegistry.rename`), keeping id, tables, ports and sessions.
"""

from dataclasses import dataclass

from flexsfc.dataplane import codecs, libbpf, maps
from flexsfc.dataplane.alloc import FreeIds, PoolGaps
from flexsfc.dataplane.api import DataplaneError
from flexsfc.dataplane.naming import is_legacy_key, xc_key
from flexsfc.dataplane.pins import Pins

__all__ = ["XcLayout", "XcRegistry", "is_legacy_key", "xc_key"]


@dataclass(frozen=True)
class XcLayout:
    """Where a cross-connection lives in the maps: its id and its region of the Maglev pool
    (4 x table_size slots from pool_base: two halves per side)."""

    name: str
    id: int
    table_size: int
    pool_base: int

    @property
    def pool_length(self) -> int:
        return 4 * self.table_size


class XcRegistry:
    def __init__(self, pins: Pins) -> None:
        self._pins = pins
        self.refresh()

    def refresh(self) -> None:
        """Re-read the registry and rebuild the free ids and pool regions from it."""
        fd = self._pins.fd("xc_registry")
        self._xcs: dict[str, XcLayout] = {}
        self._stale: list[str] = []  # keys shadowed by another key of the same id (see below)
        by_id: dict[int, XcLayout] = {}
        for key in libbpf.map_keys(fd, maps.Name):
            rec = maps.XcRecord()
            if libbpf.map_lookup(fd, key, rec):
                xc = XcLayout(key.value.decode(), rec.id, rec.table_size, rec.pool_base)
                other = by_id.get(xc.id)
                # Two keys for one id: a rename (legacy key -> namespaced key) interrupted between
                # writing the new key and deleting the old. The new one is the truth; the old entry
                # is left out here and removed by the writer's next change to the registry.
                if other is not None and not is_legacy_key(other.name):
                    self._stale.append(xc.name)
                    continue
                if other is not None:
                    self._stale.append(other.name)
                    del self._xcs[other.name]
                by_id[xc.id] = xc
                self._xcs[xc.name] = xc
        self._free_ids = FreeIds(1, maps.MAX_XC, (xc.id for xc in self._xcs.values()))
        self._pool_gaps = PoolGaps(
            maps.POOL_SLOTS, [(xc.pool_base, xc.pool_base + xc.pool_length) for xc in self._xcs.values()]
        )

    def get(self, name: str) -> XcLayout | None:
        return self._xcs.get(name)

    def ids(self) -> dict[str, int]:
        return {name: xc.id for name, xc in self._xcs.items()}

    def names(self) -> dict[int, str]:
        return {xc.id: name for name, xc in self._xcs.items()}

    def name_of(self, xc_id: int) -> str:
        """The name of a cross-connection id (its number when unknown); a scan: for messages."""
        return next((name for name, xc in self._xcs.items() if xc.id == xc_id), str(xc_id))

    def allocate(self, name: str, table_size: int) -> XcLayout:
        """An id and a pool region for a new cross-connection; not registered until `register`."""
        xc_id = self._free_ids.take()
        if xc_id is None:
            raise DataplaneError(f"too many cross-connections: at most {maps.MAX_XC - 1} per node")
        pool_base = self._pool_gaps.take(4 * table_size)  # first fit
        if pool_base is None:
            self._free_ids.give(xc_id)
            raise DataplaneError(
                f"Maglev slot pool full ({maps.POOL_SLOTS} slots): delete cross-connections or use "
                "smaller tables"
            )
        return XcLayout(name, xc_id, table_size, pool_base)

    def _drop_stale(self) -> None:
        """Delete the keys an interrupted rename left behind (writers only: readers never write)."""
        fd = self._pins.fd("xc_registry")
        for name in self._stale:
            libbpf.map_delete(fd, codecs.encode_name(name, "cross-connection name"))
        self._stale.clear()

    def register(self, xc: XcLayout) -> None:
        self._drop_stale()
        rec = maps.XcRecord(id=xc.id, table_size=xc.table_size, pool_base=xc.pool_base)
        libbpf.map_update(
            self._pins.fd("xc_registry"), codecs.encode_name(xc.name, "cross-connection name"), rec
        )
        self._xcs[xc.name] = xc

    def rename(self, xc: XcLayout, new_name: str) -> XcLayout:
        """Register `xc` under `new_name` (same id, tables and pool region: ports and sessions stay)
        and drop its old key. The new key is written first: a crash in between leaves two keys for
        one id, which :meth:`refresh` resolves in favour of the new one."""
        if new_name in self._xcs:
            raise ValueError(f"cross-connection {new_name!r}: already registered")
        self._drop_stale()
        renamed = XcLayout(new_name, xc.id, xc.table_size, xc.pool_base)
        rec = maps.XcRecord(id=xc.id, table_size=xc.table_size, pool_base=xc.pool_base)
        fd = self._pins.fd("xc_registry")
        libbpf.map_update(fd, codecs.encode_name(new_name, "cross-connection name"), rec)
        libbpf.map_delete(fd, codecs.encode_name(xc.name, "cross-connection name"))
        self._xcs.pop(xc.name, None)
        self._xcs[new_name] = renamed
        return renamed

    def release(self, xc: XcLayout) -> None:
        """Give back the id and pool region of an allocated cross-connection, and unregister it."""
        self._drop_stale()
        if self._xcs.get(xc.name) == xc:
            libbpf.map_delete(
                self._pins.fd("xc_registry"), codecs.encode_name(xc.name, "cross-connection name")
            )
            del self._xcs[xc.name]
        self._free_ids.give(xc.id)
        self._pool_gaps.give(xc.pool_base, xc.pool_length)
