"""The pinned state under one directory: loading and pinning the object, reopening and checking it,
and removing it.

Opening a pin directory that holds a complete set of pins reuses it (seed, cross-connection ids,
sessions, attached filters: forwarding never stops); otherwise the object is compiled if stale,
loaded with the requested session capacities, and pinned. A writer opening with `upgrade=True`
first moves a pinned program of another version to this one (upgrade.py). Teardown
(`destroy_pinned`) needs neither a complete set nor a layout this version can read: it only detaches
our filters and unlinks pins.
"""

import contextlib
import ctypes
import errno
import mmap
import os
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flexsfc.dataplane import libbpf, maps
from flexsfc.dataplane.api import DataplaneError
from flexsfc.dataplane.build import ensure_built

if TYPE_CHECKING:
    from flexsfc.dataplane.upgrade import UpgradeReport

# Our cls_bpf filter at TC ingress: removed by exactly this handle/priority, never the whole qdisc.
TC_HANDLE = 0xF5C0
TC_PRIORITY = 0x5C

_PIN_NAMES = (*maps.MAP_NAMES, maps.TUNNEL_PROGRAM_NAME, maps.PROGRAM_NAME)
# Session tables whose capacity is chosen at load: confirmed IPv4/ARP and IPv6, unconfirmed ditto.
SESSION_TABLES = ("sessions", "sessions6", "unconfirmed", "unconfirmed6")
# Pinned while an upgrade re-pins the session counters and tables (upgrade.py): present, the counters
# may not count the pinned tables, and the next writer recounts them from a walk (Dataplane).
RECOUNT_MARK = "session_recount"


class Pins:
    """Descriptors of every pinned map and of the program, and the shared mappings made of them."""

    def __init__(
        self,
        pin_dir: str,
        session_capacity: tuple[int, int, int, int],
        seed: int | None,
        *,
        upgrade: bool = False,
    ) -> None:
        """`session_capacity`: max_entries of `sessions`, `sessions6`, `unconfirmed`, `unconfirmed6`
        (used only when loading)."""
        self.pin_dir = pin_dir
        self._fds: dict[str, int] = {}
        self._mmaps: list[mmap.mmap] = []
        # What an upgrade of the pinned program did (None: not asked for, or nothing was pinned).
        self.upgrade: UpgradeReport | None = None
        # With `upgrade`, a program pin with maps missing is an older version's complete set: the
        # upgrade creates the maps this version added.
        self.reopened = _complete(pin_dir, older_ok=upgrade)
        # Whether the session counters must be recounted from the tables (a writer only).
        self.recount = False
        if self.reopened:
            if upgrade:
                from flexsfc.dataplane.upgrade import upgrade_pinned  # it needs TC_HANDLE from here

                self.upgrade = upgrade_pinned(pin_dir, _load_capacities())
                self.recount = os.path.exists(_pin_path(pin_dir, RECOUNT_MARK))
            self._open()
            try:
                self._check_layouts()
            except BaseException:
                self.close()
                raise
        else:
            self._load_and_pin(session_capacity, seed if seed is not None else secrets.randbits(32))

    def fd(self, name: str) -> int:
        try:
            return self._fds[name]
        except KeyError:
            raise DataplaneError("dataplane is closed") from None

    def mmap(self, name: str, length: int) -> mmap.mmap:
        """A shared read-write mapping of an mmapable array map, rounded up to whole pages."""
        length = -(-length // mmap.PAGESIZE) * mmap.PAGESIZE
        mm = mmap.mmap(self.fd(name), length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._mmaps.append(mm)
        return mm

    def recounted(self) -> None:
        """The counters were recounted: remove the marker (RECOUNT_MARK)."""
        unlink_pin(_pin_path(self.pin_dir, RECOUNT_MARK))
        self.recount = False

    def close(self) -> None:
        for mm in self._mmaps:
            with contextlib.suppress(BufferError):  # a view still exists: it keeps the mapping
                mm.close()
        self._mmaps.clear()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _open(self) -> None:
        for name in _PIN_NAMES:
            self._fds[name] = libbpf.obj_get(_pin_path(self.pin_dir, name))

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

    def _load_and_pin(self, session_capacity: tuple[int, int, int, int], seed: int) -> None:
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
        self._open()

    def _load_into_pin_dir(self, session_capacity: tuple[int, int, int, int], seed: int) -> None:
        obj = libbpf.BpfObject(str(ensure_built()))
        pinned: list[str] = []
        try:
            for name, entries in zip(SESSION_TABLES, session_capacity, strict=True):
                obj.set_max_entries(name, entries)
            for name, entries in _load_capacities().items():
                obj.set_max_entries(name, entries)
            obj.load()
            for name in maps.MAP_NAMES:
                libbpf.obj_pin(obj.map_fd(name), _pin_path(self.pin_dir, name))
                pinned.append(name)
            cfg = maps.Config(seed=seed, redirect_mode=maps.MODE_PEER)
            libbpf.map_update(obj.map_fd("config"), maps.U32(0), cfg)
            tunnel = _pin_path(self.pin_dir, maps.TUNNEL_PROGRAM_NAME)
            libbpf.obj_pin(obj.program_fd(maps.TUNNEL_PROGRAM_NAME), tunnel)
            pinned.append(maps.TUNNEL_PROGRAM_NAME)
            # The program pin goes last: its presence marks the state complete.
            libbpf.obj_pin(obj.program_fd(maps.PROGRAM_NAME), _pin_path(self.pin_dir, maps.PROGRAM_NAME))
        except BaseException:
            for name in pinned:
                unlink_pin(_pin_path(self.pin_dir, name))
            raise
        finally:
            obj.close()


def _load_capacities() -> dict[str, int]:
    """max_entries set at load time besides the session tables': the arrays laid out [cpu][entry]."""
    ncpu = libbpf.possible_cpus()
    return {
        "port_slots": maps.MAX_PORTS * ncpu,
        "flow_cache": maps.FLOW_CACHE_SIZE * ncpu,
        "session_clocks": ncpu,  # a cached session clock per CPU (session.h)
    }


def pinned_ports(pin_dir: str) -> list[int]:
    """Host ifindexes of the ports recorded under `pin_dir`; none when there is no readable record."""
    path = _pin_path(pin_dir, "ports")
    if not os.path.exists(path):
        return []
    fd = libbpf.obj_get(path)
    try:
        if libbpf.map_info(fd).key_size != ctypes.sizeof(maps.U32):
            return []  # pinned by another version: its filters go with its veths
        # Remote ports (replicas on other nodes) have no interface here.
        return [key.value for key in libbpf.map_keys(fd, maps.U32) if not key.value & maps.REMOTE_PORT_BIT]
    finally:
        os.close(fd)


def _pinned_tunnel_device(pin_dir: str) -> list[int]:
    """The VXLAN device whose ingress runs the program (multi-node), if one is recorded."""
    path = _pin_path(pin_dir, "tunnel_device")
    if not os.path.exists(path):
        return []
    fd = libbpf.obj_get(path)
    try:
        device = maps.U32()
        libbpf.map_lookup(fd, maps.U32(0), device)
        return [device.value] if device.value else []
    finally:
        os.close(fd)


def detach_all(ifindexes: Iterable[int]) -> None:
    """Remove our filter from these interfaces (in this thread's network namespace), if there."""
    for ifindex in ifindexes:
        if not ifindex & maps.REMOTE_PORT_BIT:
            libbpf.tc_detach_ingress(ifindex, TC_HANDLE, TC_PRIORITY)


def destroy_pinned(pin_dir: str, ports: Iterable[int] | None = None) -> None:
    """Detach every port (those recorded in the pins unless `ports` is given) and remove all pinned
    state, without opening a data plane: what teardown paths need, also for an incomplete set."""
    detach_all(pinned_ports(pin_dir) if ports is None else ports)
    detach_all(_pinned_tunnel_device(pin_dir))
    for name in (maps.PROGRAM_NAME, maps.TUNNEL_PROGRAM_NAME, *maps.MAP_NAMES, RECOUNT_MARK):
        unlink_pin(_pin_path(pin_dir, name))
    try:
        os.rmdir(pin_dir)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):
            raise


def _complete(pin_dir: str, *, older_ok: bool = False) -> bool:
    present = [os.path.exists(_pin_path(pin_dir, n)) for n in _PIN_NAMES]
    if all(present) or (older_ok and present[-1]):  # the program's pin goes last (_PIN_NAMES too)
        return True
    if any(present):
        missing = [n for n, p in zip(_PIN_NAMES, present, strict=True) if not p]
        raise DataplaneError(
            f"pin_dir {pin_dir}: incomplete pinned state (missing {', '.join(missing)}); "
            f"remove it with Dataplane.destroy() or `rm -r {pin_dir}` and start again"
        )
    return False


def _pin_path(pin_dir: str, name: str) -> str:
    return os.path.join(pin_dir, name)


def unlink_pin(path: str) -> None:
    """Remove a pin; one already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _ensure_bpffs(pin_dir: str) -> None:
    root = "/sys/fs/bpf"
    if pin_dir.startswith(root + "/") and not os.path.ismount(root):
        raise DataplaneError(
            f"bpffs is not mounted at {root}: run `mount -t bpf bpf {root}` (scripts/setup.sh does)"
        )
