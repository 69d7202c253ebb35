"""A small typed ctypes binding of libbpf 1.1 (Debian's libbpf1): objects, maps, pins, TC, test runs.

Only the calls flexsfc needs. libbpf 1.x returns negative errno values (or NULL with errno set);
every wrapper turns that into :class:`BpfError` naming the call, so callers never check return codes.
Struct layouts follow /usr/include/bpf/{bpf,libbpf}.h of libbpf 1.1.2.
"""

import ctypes
import errno
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, cast

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

BPF_TC_INGRESS = 1
BPF_TC_EGRESS = 2
BPF_TC_F_REPLACE = 1


class BpfError(OSError):
    """A libbpf call failed; `errno` holds the positive error number."""

    def __init__(self, call: str, err: int, detail: str = "") -> None:
        suffix = f" ({detail})" if detail else ""
        super().__init__(err, f"{call}: {os.strerror(err)}{suffix}")
        self.call = call


class BpfTcHook(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ifindex", ctypes.c_int),
        ("attach_point", ctypes.c_int),
        ("parent", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class BpfTcOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_fd", ctypes.c_int),
        ("flags", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class BpfTestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


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


log = logging.getLogger("flexsfc.dataplane.libbpf")

# libbpf_print_fn_t: int (*)(enum libbpf_print_level level, const char *fmt, va_list args)
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}
# Expected outcomes we handle ourselves (clsact already there, shared with other programs), and
# libbpf 1.1's netlink parser tripping over attributes newer kernels add to tc replies (harmless).
_BENIGN = ("Exclusivity flag on", "found multiple times in message")
_libc = ctypes.CDLL(None)


def _print(level: int, fmt: bytes, args: int) -> int:
    buf = ctypes.create_string_buffer(4096)
    _libc.vsnprintf(buf, ctypes.c_size_t(len(buf)), ctypes.c_char_p(fmt), ctypes.c_void_p(args))
    text = buf.value.decode(errors="replace").rstrip()
    log.log(
        logging.DEBUG if any(b in text for b in _BENIGN) else _LEVELS.get(level, logging.DEBUG), "%s", text
    )
    return 0


_print_callback = _PRINT_FN(_print)  # module-level: libbpf keeps the pointer


@cache
def lib() -> ctypes.CDLL:
    try:
        # Debian's libbpf1 by its soname first: find_library runs `ldconfig -p` (milliseconds that the
        # CNI plugin's DEL would pay on every pod deletion).
        handle = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError:
        from ctypes.util import find_library

        handle = ctypes.CDLL(find_library("bpf") or "libbpf.so", use_errno=True)
    vp, ci, u32, cp = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_char_p
    signatures: dict[str, tuple[object, list[object]]] = {
        "bpf_object__open_file": (vp, [cp, vp]),
        "bpf_object__load": (ci, [vp]),
        "bpf_object__close": (None, [vp]),
        "bpf_object__find_map_by_name": (vp, [vp, cp]),
        "bpf_object__find_program_by_name": (vp, [vp, cp]),
        "bpf_object__next_map": (vp, [vp, vp]),
        "bpf_map__name": (cp, [vp]),
        "bpf_map__fd": (ci, [vp]),
        "bpf_map__set_max_entries": (ci, [vp, u32]),
        "bpf_map__reuse_fd": (ci, [vp, ci]),
        "bpf_map__type": (u32, [vp]),
        "bpf_map__key_size": (u32, [vp]),
        "bpf_map__value_size": (u32, [vp]),
        "bpf_map__max_entries": (u32, [vp]),
        "bpf_map__map_flags": (u32, [vp]),
        "bpf_program__fd": (ci, [vp]),
        "bpf_obj_pin": (ci, [ci, cp]),
        "bpf_obj_get": (ci, [cp]),
        "bpf_obj_get_info_by_fd": (ci, [ci, vp, ctypes.POINTER(u32)]),
        "bpf_map_update_elem": (ci, [ci, vp, vp, ctypes.c_uint64]),
        "bpf_map_lookup_elem": (ci, [ci, vp, vp]),
        "bpf_map_delete_elem": (ci, [ci, vp]),
        "bpf_map_get_next_key": (ci, [ci, vp, vp]),
        "bpf_map_lookup_batch": (ci, [ci, vp, vp, vp, vp, ctypes.POINTER(u32), vp]),
        "bpf_tc_hook_create": (ci, [vp]),
        "bpf_tc_attach": (ci, [vp, vp]),
        "bpf_tc_detach": (ci, [vp, vp]),
        "bpf_tc_query": (ci, [vp, vp]),
        "bpf_link_create": (ci, [ci, ci, ci, vp]),
        "bpf_prog_test_run_opts": (ci, [ci, vp]),
        "libbpf_num_possible_cpus": (ci, []),
        "libbpf_set_print": (vp, [_PRINT_FN]),
        "bpf_prog_load": (ci, [ci, cp, cp, vp, ctypes.c_size_t, vp]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(handle, name)
        fn.restype = restype
        fn.argtypes = argtypes
    # libbpf's messages (verifier logs, kernel extack) go to Python logging instead of stderr.
    handle.libbpf_set_print(_print_callback)
    return handle


def _check(call: str, rc: int, detail: str = "") -> int:
    if rc < 0:
        raise BpfError(call, -rc if rc != -1 else (ctypes.get_errno() or errno.EPERM), detail)
    return rc


if TYPE_CHECKING:
    # Anything ctypes lays out in memory: a key or value of a map (_SimpleCData is only generic in
    # the stubs).
    CData: TypeAlias = ctypes.Array[Any] | ctypes.Structure | ctypes._SimpleCData[Any]
_K = TypeVar("_K", bound="CData")
_V = TypeVar("_V", bound="CData")


def _ptr(buf: "CData | None") -> int | None:
    return None if buf is None else ctypes.addressof(buf)


@cache
def possible_cpus() -> int:
    return _check("libbpf_num_possible_cpus", lib().libbpf_num_possible_cpus())


@dataclass(frozen=True)
class MapSpec:
    """The attributes that make two maps interchangeable: a pinned map can serve a newly loaded
    program in place of the one it declares only when all of them are equal."""

    type: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int

    @classmethod
    def of(cls, info: BpfMapInfo) -> "MapSpec":
        return cls(info.type, info.key_size, info.value_size, info.max_entries, info.map_flags)


class BpfObject:
    """An opened (then loaded) ELF object; close it once its maps and programs are pinned."""

    def __init__(self, path: str) -> None:
        ctypes.set_errno(0)
        self._obj = lib().bpf_object__open_file(path.encode(), None)
        if not self._obj:
            raise BpfError("bpf_object__open_file", ctypes.get_errno() or errno.EINVAL, path)

    def _map(self, name: str) -> int:
        ptr = lib().bpf_object__find_map_by_name(self._obj, name.encode())
        if not ptr:
            raise BpfError("bpf_object__find_map_by_name", errno.ENOENT, name)
        return int(ptr)

    def map_names(self) -> list[str]:
        names, ptr = [], lib().bpf_object__next_map(self._obj, None)
        while ptr:
            names.append(lib().bpf_map__name(ptr).decode())
            ptr = lib().bpf_object__next_map(self._obj, ptr)
        return names

    def set_max_entries(self, map_name: str, entries: int) -> None:
        _check("bpf_map__set_max_entries", lib().bpf_map__set_max_entries(self._map(map_name), entries))

    def map_spec(self, name: str) -> MapSpec:
        """What the object declares for map `name` (after set_max_entries), before it is loaded."""
        ptr = self._map(name)
        return MapSpec(
            lib().bpf_map__type(ptr),
            lib().bpf_map__key_size(ptr),
            lib().bpf_map__value_size(ptr),
            lib().bpf_map__max_entries(ptr),
            lib().bpf_map__map_flags(ptr),
        )

    def reuse_map_fd(self, name: str, fd: int) -> None:
        """Make the loaded object use the existing map `fd` for `name` (libbpf takes a duplicate of
        it) instead of creating one: call before load()."""
        _check("bpf_map__reuse_fd", lib().bpf_map__reuse_fd(self._map(name), fd), name)

    def load(self) -> None:
        _check("bpf_object__load", lib().bpf_object__load(self._obj))

    def map_fd(self, name: str) -> int:
        return _check("bpf_map__fd", lib().bpf_map__fd(self._map(name)), name)

    def program_fd(self, name: str) -> int:
        ptr = lib().bpf_object__find_program_by_name(self._obj, name.encode())
        if not ptr:
            raise BpfError("bpf_object__find_program_by_name", errno.ENOENT, name)
        return _check("bpf_program__fd", lib().bpf_program__fd(ptr), name)

    def close(self) -> None:
        if self._obj:
            lib().bpf_object__close(self._obj)
            self._obj = None


def obj_pin(fd: int, path: str) -> None:
    _check("bpf_obj_pin", lib().bpf_obj_pin(fd, path.encode()), path)


def obj_get(path: str) -> int:
    return _check("bpf_obj_get", lib().bpf_obj_get(path.encode()), path)


def map_info(fd: int) -> BpfMapInfo:
    info = BpfMapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check("bpf_obj_get_info_by_fd", lib().bpf_obj_get_info_by_fd(fd, ctypes.addressof(info), size))
    return info


def map_update(fd: int, key: "CData", value: "CData", flags: int = BPF_ANY) -> None:
    _check("bpf_map_update_elem", lib().bpf_map_update_elem(fd, _ptr(key), _ptr(value), flags))


def map_lookup(fd: int, key: "CData", value: "CData") -> bool:
    """Fills `value`; False when the key is absent."""
    rc = lib().bpf_map_lookup_elem(fd, _ptr(key), _ptr(value))
    if rc == -errno.ENOENT:
        return False
    _check("bpf_map_lookup_elem", rc)
    return True


def map_delete(fd: int, key: "CData") -> bool:
    """False when the key was absent."""
    rc = lib().bpf_map_delete_elem(fd, _ptr(key))
    if rc == -errno.ENOENT:
        return False
    _check("bpf_map_delete_elem", rc)
    return True


def map_keys(fd: int, key_type: type[_K]) -> list[_K]:
    """Every key of a hash map (one syscall per key: for small control-plane maps)."""
    keys: list[_K] = []
    prev: _K | None = None
    while True:
        nxt = key_type()
        rc = lib().bpf_map_get_next_key(fd, _ptr(prev), ctypes.addressof(nxt))
        if rc == -errno.ENOENT:
            return keys
        _check("bpf_map_get_next_key", rc)
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
        _check("bpf_map_lookup_batch", rc)
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


def _tc_hook(ifindex: int) -> BpfTcHook:
    return BpfTcHook(sz=ctypes.sizeof(BpfTcHook), ifindex=ifindex, attach_point=BPF_TC_INGRESS)


def tc_hook_create_ingress(ifindex: int) -> None:
    """Create the clsact qdisc of `ifindex` when missing; an existing one (maybe shared) stays as is."""
    hook = _tc_hook(ifindex)
    rc = lib().bpf_tc_hook_create(ctypes.addressof(hook))
    if rc < 0 and rc != -errno.EEXIST:
        _check("bpf_tc_hook_create", rc, f"ifindex {ifindex}")


def tc_attach_ingress(ifindex: int, prog_fd: int, handle: int, priority: int) -> None:
    """Attach `prog_fd` as a direct-action cls_bpf filter at ingress with our handle and priority,
    untagged (the data plane attaches through flexsfc.dataplane.tcfilter, which sets a classid).

    Creates the clsact qdisc when missing; an existing one (maybe shared) is reused as is.
    """
    tc_hook_create_ingress(ifindex)
    hook = _tc_hook(ifindex)
    opts = BpfTcOpts(
        sz=ctypes.sizeof(BpfTcOpts), prog_fd=prog_fd, flags=BPF_TC_F_REPLACE, handle=handle, priority=priority
    )
    _check(
        "bpf_tc_attach",
        lib().bpf_tc_attach(ctypes.addressof(hook), ctypes.addressof(opts)),
        f"ifindex {ifindex}",
    )


def tc_detach_ingress(ifindex: int, handle: int, priority: int) -> bool:
    """Remove only our filter (never the clsact qdisc). False when it or the interface is gone."""
    hook = _tc_hook(ifindex)
    opts = BpfTcOpts(sz=ctypes.sizeof(BpfTcOpts), handle=handle, priority=priority)
    rc = lib().bpf_tc_detach(ctypes.addressof(hook), ctypes.addressof(opts))
    if rc in (-errno.ENOENT, -errno.ENODEV, -errno.EINVAL):
        return False
    _check("bpf_tc_detach", rc, f"ifindex {ifindex}")
    return True


def tc_query_ingress(ifindex: int, handle: int, priority: int) -> int | None:
    """Program id of our filter on `ifindex`, or None."""
    hook = _tc_hook(ifindex)
    opts = BpfTcOpts(sz=ctypes.sizeof(BpfTcOpts), handle=handle, priority=priority)
    rc = lib().bpf_tc_query(ctypes.addressof(hook), ctypes.addressof(opts))
    if rc in (-errno.ENOENT, -errno.ENODEV, -errno.EINVAL):
        return None
    _check("bpf_tc_query", rc, f"ifindex {ifindex}")
    return int(opts.prog_id)


BPF_TCX_INGRESS = 46  # enum bpf_attach_type, kernel >= 6.6


def tcx_attach_ingress(ifindex: int, prog_fd: int) -> int:
    """A TCX link running `prog_fd` at ingress of `ifindex` (this thread's network namespace), after
    the programs already there; returns the link's fd. Closing the last fd detaches it (unless it is
    pinned). libbpf 1.1 has no tcx API: its generic `bpf_link_create` passes the ifindex where the
    kernel reads it, and no options means "append"."""
    return _check(
        "bpf_link_create(BPF_TCX_INGRESS)", lib().bpf_link_create(prog_fd, ifindex, BPF_TCX_INGRESS, None)
    )


def _prog_info(fd: int) -> "ctypes.Array[ctypes.c_uint32]":
    info = (ctypes.c_uint32 * 64)()  # struct bpf_prog_info starts {u32 type; u32 id; u8 tag[8]; ...}
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check("bpf_obj_get_info_by_fd", lib().bpf_obj_get_info_by_fd(fd, ctypes.addressof(info), size))
    return info


def prog_id(fd: int) -> int:
    return int(_prog_info(fd)[1])


def prog_tag(fd: int) -> bytes:
    """The kernel's tag of a loaded program: a hash of its instructions as loaded, with the map
    references left out (the same object loaded twice on one kernel has the same tag, whatever maps
    it was given; any change to the code gives another)."""
    return bytes(_prog_info(fd))[8:16]


@dataclass(frozen=True)
class ProgRunResult:
    retval: int
    data: bytes
    duration_ns: int  # average per repetition, as measured by the kernel


SK_BUFF_SIZE = 192  # sizeof(struct __sk_buff) in the uapi header we compile against
SK_BUFF_IFINDEX_OFFSET = 40


def prog_test_run(prog_fd: int, frame: bytes, *, ifindex: int = 0, repeat: int = 1) -> ProgRunResult:
    """Run a TC program on `frame` through BPF_PROG_TEST_RUN, as if it arrived on `ifindex`."""
    data_in = ctypes.create_string_buffer(frame, len(frame))
    data_out = ctypes.create_string_buffer(max(len(frame), 128) + 256)
    ctx = (ctypes.c_uint8 * SK_BUFF_SIZE)()
    ctypes.c_uint32.from_buffer(ctx, SK_BUFF_IFINDEX_OFFSET).value = ifindex
    opts = BpfTestRunOpts(
        sz=ctypes.sizeof(BpfTestRunOpts),
        data_in=ctypes.addressof(data_in),
        data_out=ctypes.addressof(data_out),
        data_size_in=len(frame),
        data_size_out=len(data_out),
        ctx_in=ctypes.addressof(ctx),
        ctx_size_in=SK_BUFF_SIZE,
        repeat=repeat,
    )
    _check("bpf_prog_test_run_opts", lib().bpf_prog_test_run_opts(prog_fd, ctypes.addressof(opts)))
    return ProgRunResult(opts.retval, data_out.raw[: opts.data_size_out], opts.duration)
