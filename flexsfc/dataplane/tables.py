"""Maglev tables: built in Python, written into the idle half of a double buffer in the mmapped pool,
published with one aligned 8-byte descriptor store per (cross-connection, side).

Each cross-connection owns a region of 4 x its table size in `maglev_pool`: two halves per side.
`maglev_tables` holds one descriptor per (xc, side): (size << 32) | offset of the live half.
"""

import ctypes
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from flexsfc.dataplane import maps
from flexsfc.dataplane.maglev import build_table
from flexsfc.dataplane.pins import Pins
from flexsfc.dataplane.registry import XcLayout

# What a live table was built from: the (identity, ifindex) of its active ports and their pool entries.
_Inputs = tuple[tuple[tuple[str, int], ...], tuple[int, ...]]


class MaglevTables:
    def __init__(self, pins: Pins) -> None:
        self._pool: npt.NDArray[np.uint64] = np.frombuffer(
            pins.mmap("maglev_pool", maps.POOL_SLOTS * 8), dtype=np.uint64
        )
        self._descriptors = pins.mmap("maglev_tables", maps.MAX_XC * 2 * 8)
        # (xc id, side) -> what the live Maglev table was built from, so an unchanged set is not
        # rebuilt; unknown after a (re)open, then the live table itself is compared.
        self._published: dict[tuple[int, int], _Inputs] = {}

    def forget(self) -> None:
        """Forget what was published (another process may have written since)."""
        self._published = {}

    def release(self) -> None:
        """Drop the pool view, so the mapping can close."""
        self._pool = np.empty(0, dtype=np.uint64)

    def live(self, xc: int, side: int) -> tuple[int, int]:
        """(offset, size) of the live table of (xc, side) in the pool; size 0 when it is empty."""
        desc = self._descriptor(xc, side).value
        return desc & 0xFFFFFFFF, desc >> 32

    def entries(self, xc: int, side: int) -> list[int]:
        """The live table of (xc, side) as the program reads it: one pool entry per slot."""
        offset, size = self.live(xc, side)
        return [int(entry) for entry in self._pool[offset : offset + size].tolist()]

    def publish_empty(self, rec: XcLayout) -> None:
        """Point both sides of a new cross-connection at their first half, empty."""
        for side in (0, 1):
            self._publish(rec.id, side, rec.pool_base + 2 * side * rec.table_size, 0)

    def swap(self, rec: XcLayout, side: int, active: Sequence[tuple[str, int]], entries: list[int]) -> None:
        """Make the table of (rec, side) the Maglev table of `active` ((identity, ifindex), sorted),
        whose pool entries are `entries`; empty when no port is active."""
        offset, size = self.live(rec.id, side)
        halves = (rec.pool_base + 2 * side * rec.table_size, rec.pool_base + (2 * side + 1) * rec.table_size)
        idle = halves[1] if size and offset == halves[0] else halves[0]
        key = (rec.id, side)
        if not active:
            self._published.pop(key, None)
            if size:
                self._publish(rec.id, side, idle, 0)
            return
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

    def _descriptor(self, xc: int, side: int) -> ctypes.c_uint64:
        return ctypes.c_uint64.from_buffer(self._descriptors, (xc * 2 + side) * 8)

    def _publish(self, xc: int, side: int, offset: int, size: int) -> None:
        # One aligned 8-byte store through the shared mapping: the program's one 8-byte load sees
        # either the old or the new (offset, size) pair, never a mix.
        self._descriptor(xc, side).value = (size << 32) | offset
