"""Maglev lookup tables (Eisenbud et al., NSDI 2016), built from replicas ordered by identity.

Each replica's preference list is a permutation of the M slots given by (offset, skip), both derived
from hashes of its stable identity, so every process and both cross-connections next to an NF build
the same table for the same replica set. Replicas take turns claiming their next free preferred slot.
M must be prime so every skip generates a full permutation. The fill loop runs in a small native
helper (native/maglev_fill.c, built by build.py): the same loop in CPython costs ~2-3 ms for M = 4093.
"""

import ctypes
import hashlib
from collections.abc import Sequence
from functools import cache, lru_cache

import numpy as np

from flexsfc.dataplane.build import BuildError, ensure_maglev_lib


@lru_cache(maxsize=64)
def is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))


@lru_cache(maxsize=65536)
def offset_skip(identity: str, size: int) -> tuple[int, int]:
    digest = hashlib.blake2b(identity.encode(), digest_size=16, person=b"flexsfc-maglev").digest()
    offset = int.from_bytes(digest[:8], "little") % size
    skip = int.from_bytes(digest[8:], "little") % (size - 1) + 1
    return offset, skip


@cache
def _native() -> ctypes.CDLL | None:
    try:
        helper = ctypes.CDLL(str(ensure_maglev_lib()))
    except (BuildError, OSError):
        return None
    fn = helper.maglev_fill
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32]
    fn.argtypes += [ctypes.c_void_p, ctypes.c_void_p]
    return helper


def _fill_python(offsets: list[int], skips: list[int], size: int) -> np.ndarray:
    count = len(offsets)
    table = [-1] * size
    nexts = [0] * count
    filled = 0
    while True:
        for i in range(count):
            off, skip, j = offsets[i], skips[i], nexts[i]
            slot = (off + j * skip) % size
            while table[slot] >= 0:
                j += 1
                slot = (off + j * skip) % size
            nexts[i] = j + 1
            table[slot] = i
            filled += 1
            if filled == size:
                return np.asarray(table, dtype=np.int32)


def validate(identities: Sequence[str], size: int) -> None:
    if not is_prime(size):
        raise ValueError(f"maglev table size {size}: must be a prime (e.g. 4093 or 16381)")
    if len(set(identities)) != len(identities):
        raise ValueError("replica identities: must be unique within a side")
    if len(identities) * 10 > size:
        raise ValueError(
            f"maglev table size {size}: too small for {len(identities)} replicas (need >= 10 x replicas)"
        )


def build_table(identities: Sequence[str], size: int, *, native: bool = True) -> np.ndarray:
    """Slot -> index into sorted(identities) as int32 (read-only). No identities -> empty table.

    Memoized: the two cross-connections next to an NF ask for the same table on every scale event.
    """
    ordered = tuple(sorted(identities))
    validate(ordered, size)
    return _build(ordered, size, native)


@lru_cache(maxsize=256)
def _build(ordered: tuple[str, ...], size: int, native: bool) -> np.ndarray:
    table = _fill(ordered, size, native)
    table.setflags(write=False)
    return table


def _fill(ordered: tuple[str, ...], size: int, native: bool) -> np.ndarray:
    if not ordered:
        return np.empty(0, dtype=np.int32)
    pairs = [offset_skip(identity, size) for identity in ordered]
    offsets = np.array([p[0] for p in pairs], dtype=np.uint64)
    skips = np.array([p[1] for p in pairs], dtype=np.uint64)
    helper = _native() if native else None
    if helper is None:
        return _fill_python(offsets.tolist(), skips.tolist(), size)
    table = np.empty(size, dtype=np.int32)
    scratch = np.empty(len(ordered), dtype=np.uint64)
    rc = helper.maglev_fill(
        offsets.ctypes.data, skips.ctypes.data, len(ordered), size, scratch.ctypes.data, table.ctypes.data
    )
    if rc != 0:
        raise ValueError(f"maglev fill rejected {len(ordered)} replicas for size {size}")
    return table
