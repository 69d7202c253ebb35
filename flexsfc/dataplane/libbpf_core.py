"""The libbpf shared library as flexsfc loads it: the call signatures it uses, libbpf's messages
routed to logging, BpfError and the return-code check every wrapper goes through, the map update
flags and the number of possible CPUs. The wrappers: libbpf (objects, programs, test runs),
libbpf_maps (map elements and batches), libbpf_tc (TC and TCX attach).
"""

import ctypes
import errno
import logging
import os
from functools import cache
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2


class BpfError(OSError):
    """A libbpf call failed; `errno` holds the positive error number."""

    def __init__(self, call: str, err: int, detail: str = "") -> None:
        suffix = f" ({detail})" if detail else ""
        super().__init__(err, f"{call}: {os.strerror(err)}{suffix}")
        self.call = call


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


def check(call: str, rc: int, detail: str = "") -> int:
    if rc < 0:
        raise BpfError(call, -rc if rc != -1 else (ctypes.get_errno() or errno.EPERM), detail)
    return rc


if TYPE_CHECKING:
    # Anything ctypes lays out in memory: a key or value of a map (_SimpleCData is only generic in
    # the stubs).
    CData: TypeAlias = ctypes.Array[Any] | ctypes.Structure | ctypes._SimpleCData[Any]
_K = TypeVar("_K", bound="CData")
_V = TypeVar("_V", bound="CData")


def addr_of(buf: "CData | None") -> int | None:
    return None if buf is None else ctypes.addressof(buf)


@cache
def possible_cpus() -> int:
    return check("libbpf_num_possible_cpus", lib().libbpf_num_possible_cpus())
