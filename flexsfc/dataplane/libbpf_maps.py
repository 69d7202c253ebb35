"""Map bindings of libbpf: a map's info, element update / lookup / delete, key walks, and
BPF_MAP_LOOKUP_BATCH dumps for large maps."""

import ctypes
import errno
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from flexsfc.dataplane.libbpf_core import _K, _V, BPF_ANY, addr_of, check, lib

if TYPE_CHECKING:
    from flexsfc.dataplane.libbpf_core import CData


class BpfMapInfo(ctypes.Structure):
    """Leading fields of struct bpf_map_info (the kernel fills what fits)."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
    ]


class BpfMapBatchOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


def map_info(fd: int) -> BpfMapInfo:
    info = BpfMapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    check("bpf_obj_get_info_by_fd", lib().bpf_obj_get_info_by_fd(fd, ctypes.addressof(info), size))
    return info


def map_update(fd: int, key: "CData", value: "CData", flags: int = BPF_ANY) -> None:
    check("bpf_map_update_elem", lib().bpf_map_update_elem(fd, addr_of(key), addr_of(value), flags))


def map_lookup(fd: int, key: "CData", value: "CData") -> bool:
    """Fills `value`; False when the key is absent."""
    rc = lib().bpf_map_lookup_elem(fd, addr_of(key), addr_of(value))
    if rc == -errno.ENOENT:
        return False
    check("bpf_map_lookup_elem", rc)
    return True


def map_delete(fd: int, key: "CData") -> bool:
    """False when the key was absent."""
    rc = lib().bpf_map_delete_elem(fd, addr_of(key))
    if rc == -errno.ENOENT:
        return False
    check("bpf_map_delete_elem", rc)
    return True


def map_keys(fd: int, key_type: type[_K]) -> list[_K]:
    """Every key of a hash map (one syscall per key: for small control-plane maps)."""
    keys: list[_K] = []
    prev: _K | None = None
    while True:
        nxt = key_type()
        rc = lib().bpf_map_get_next_key(fd, addr_of(prev), ctypes.addressof(nxt))
        if rc == -errno.ENOENT:
            return keys
        check("bpf_map_get_next_key", rc)
        keys.append(nxt)
        prev = nxt


def _lookup_batch(
    fd: int,
    token: "ctypes.Array[Any]",
    keys: "ctypes.Array[Any]",
    values: "ctypes.Array[Any]",
    count: ctypes.c_uint32,
    opts: BpfMapBatchOpts,
    *,
    first: bool,
) -> bool:
    """One BPF_MAP_LOOKUP_BATCH from `token` (the map's start when `first`; the next position is
    written back to it); `count` in: room in keys/values, out: entries read. True once the map is
    exhausted (those last entries are still in keys/values)."""
    rc = lib().bpf_map_lookup_batch(
        fd, None if first else ctypes.addressof(token), ctypes.addressof(token),
        ctypes.addressof(keys), ctypes.addressof(values), ctypes.byref(count), ctypes.addressof(opts),
    )  # fmt: skip
    done = bool(rc == -errno.ENOENT)
    if rc < 0 and not done:
        check("bpf_map_lookup_batch", rc)
    return done


def map_dump_batch(
    fd: int, key_type: type[_K], value_type: type[_V], limit: int, chunk: int = 4096
) -> list[tuple[_K, _V]]:
    """(key, value) pairs of a hash map in batches of `chunk` (few syscalls for large maps)."""
    out: list[tuple[_K, _V]] = []
    token = (ctypes.c_uint8 * max(ctypes.sizeof(key_type), 8))()
    opts = BpfMapBatchOpts(sz=ctypes.sizeof(BpfMapBatchOpts))
    first = True
    while len(out) < limit:
        want = min(chunk, limit - len(out))
        keys = cast("ctypes.Array[_K]", (key_type * want)())
        values = cast("ctypes.Array[_V]", (value_type * want)())
        count = ctypes.c_uint32(want)
        done = _lookup_batch(fd, token, keys, values, count, opts, first=first)
        out.extend(zip(keys[: count.value], values[: count.value], strict=True))
        if done:
            break
        first = False
    return out[:limit]


def map_key_batches(
    fd: int, key_size: int, value_size: int, chunk: int = 65536
) -> Iterator[tuple[bytes, int]]:
    """Every key of a hash map as raw bytes, `chunk` entries per syscall: yields (keys, count), the
    first `count` keys of `key_size` bytes each packed in `keys`. For walks that need no Python
    object per entry (counting what an upgrade drops)."""
    token = (ctypes.c_uint8 * max(key_size, 8))()
    keys = (ctypes.c_uint8 * (key_size * chunk))()
    values = (ctypes.c_uint8 * (value_size * chunk))()
    opts = BpfMapBatchOpts(sz=ctypes.sizeof(BpfMapBatchOpts))
    first = True
    while True:
        count = ctypes.c_uint32(chunk)
        done = _lookup_batch(fd, token, keys, values, count, opts, first=first)
        if count.value:
            yield ctypes.string_at(keys, key_size * count.value), count.value
        if done:
            return
        first = False
