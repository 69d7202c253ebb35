"""A small typed ctypes binding of libbpf 1.1 (Debian's libbpf1): objects, maps, pins, TC, test runs.

Only the calls flexsfc needs. libbpf 1.x returns negative errno values (or NULL with errno set);
every wrapper turns that into :class:`BpfError` naming the call, so callers never check return codes.
Struct layouts follow /usr/include/bpf/{bpf,libbpf}.h of libbpf 1.1.2.
"""

import ctypes
import errno
from dataclasses import dataclass

from flexsfc.dataplane.libbpf_core import BPF_ANY as BPF_ANY
from flexsfc.dataplane.libbpf_core import BPF_EXIST as BPF_EXIST
from flexsfc.dataplane.libbpf_core import BPF_NOEXIST as BPF_NOEXIST
from flexsfc.dataplane.libbpf_core import BpfError as BpfError
from flexsfc.dataplane.libbpf_core import check
from flexsfc.dataplane.libbpf_core import lib as lib
from flexsfc.dataplane.libbpf_core import possible_cpus as possible_cpus
from flexsfc.dataplane.libbpf_maps import BpfMapBatchOpts as BpfMapBatchOpts
from flexsfc.dataplane.libbpf_maps import BpfMapInfo as BpfMapInfo
from flexsfc.dataplane.libbpf_maps import map_delete as map_delete
from flexsfc.dataplane.libbpf_maps import map_dump_batch as map_dump_batch
from flexsfc.dataplane.libbpf_maps import map_info as map_info
from flexsfc.dataplane.libbpf_maps import map_key_batches as map_key_batches
from flexsfc.dataplane.libbpf_maps import map_keys as map_keys
from flexsfc.dataplane.libbpf_maps import map_lookup as map_lookup
from flexsfc.dataplane.libbpf_maps import map_update as map_update
from flexsfc.dataplane.libbpf_tc import BPF_TC_EGRESS as BPF_TC_EGRESS
from flexsfc.dataplane.libbpf_tc import BPF_TC_F_REPLACE as BPF_TC_F_REPLACE
from flexsfc.dataplane.libbpf_tc import BPF_TC_INGRESS as BPF_TC_INGRESS
from flexsfc.dataplane.libbpf_tc import BPF_TCX_INGRESS as BPF_TCX_INGRESS
from flexsfc.dataplane.libbpf_tc import BpfTcHook as BpfTcHook
from flexsfc.dataplane.libbpf_tc import BpfTcOpts as BpfTcOpts
from flexsfc.dataplane.libbpf_tc import tc_attach_ingress as tc_attach_ingress
from flexsfc.dataplane.libbpf_tc import tc_detach_ingress as tc_detach_ingress
from flexsfc.dataplane.libbpf_tc import tc_hook_create_ingress as tc_hook_create_ingress
from flexsfc.dataplane.libbpf_tc import tc_query_ingress as tc_query_ingress
from flexsfc.dataplane.libbpf_tc import tcx_attach_ingress as tcx_attach_ingress


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
        check("bpf_map__set_max_entries", lib().bpf_map__set_max_entries(self._map(map_name), entries))

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
        check("bpf_map__reuse_fd", lib().bpf_map__reuse_fd(self._map(name), fd), name)

    def load(self) -> None:
        check("bpf_object__load", lib().bpf_object__load(self._obj))

    def map_fd(self, name: str) -> int:
        return check("bpf_map__fd", lib().bpf_map__fd(self._map(name)), name)

    def program_fd(self, name: str) -> int:
        ptr = lib().bpf_object__find_program_by_name(self._obj, name.encode())
        if not ptr:
            raise BpfError("bpf_object__find_program_by_name", errno.ENOENT, name)
        return check("bpf_program__fd", lib().bpf_program__fd(ptr), name)

    def close(self) -> None:
        if self._obj:
            lib().bpf_object__close(self._obj)
            self._obj = None


def obj_pin(fd: int, path: str) -> None:
    check("bpf_obj_pin", lib().bpf_obj_pin(fd, path.encode()), path)


def obj_get(path: str) -> int:
    return check("bpf_obj_get", lib().bpf_obj_get(path.encode()), path)


def _prog_info(fd: int) -> "ctypes.Array[ctypes.c_uint32]":
    info = (ctypes.c_uint32 * 64)()  # struct bpf_prog_info starts {u32 type; u32 id; u8 tag[8]; ...}
    size = ctypes.c_uint32(ctypes.sizeof(info))
    check("bpf_obj_get_info_by_fd", lib().bpf_obj_get_info_by_fd(fd, ctypes.addressof(info), size))
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
    check("bpf_prog_test_run_opts", lib().bpf_prog_test_run_opts(prog_fd, ctypes.addressof(opts)))
    return ProgRunResult(opts.retval, data_out.raw[: opts.data_size_out], opts.duration)
