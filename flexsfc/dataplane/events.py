"""The flow event stream of the data plane (bpf/lib/events.h): reading the ring buffer `flow_events`
through libbpf's ring_buffer__new / ring_buffer__poll, and holding the switch that makes the program
write it.

The program emits only while `events_ctl.lease` (CLOCK_MONOTONIC_COARSE ns) lies in the future. Each
:class:`EventStream` claims one of EVENT_READERS slots, writes its own lease there and the latest of
all live leases into `lease`, and refreshes both every second (on every poll): two readers share the
stream, a reader that exits turns it off at once unless another one holds a live slot, and a reader
that crashed leaves a lease that runs out LEASE_SECONDS later. The control map is written through an
mmap with aligned 8-byte stores, never with a read-modify-write of the whole value, so two readers
never undo each other's slot.

Records are decoded with the ctypes mirrors of maps.py (FlowEvent, FlowEventDrop), which the contract
test checks against the object's BTF. Reading needs root on the node (the pins under /sys/fs/bpf).
"""

import contextlib
import ctypes
import ipaddress
import itertools
import mmap
import os
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from flexsfc.dataplane import libbpf, maps
from flexsfc.dataplane.api import DataplaneError

LEASE_SECONDS = 5.0  # how long the stream stays on after a reader's last refresh
REFRESH_SECONDS = 1.0
CLOCK_MONOTONIC_COARSE = 6
# struct events_ctl offsets (maps.EventsCtl)
_LEASE = maps.EventsCtl.lease.offset
_BUDGET = maps.EventsCtl.drop_budget.offset
_READER_LEASE = maps.EventsCtl.reader_lease.offset
_READER_PID = maps.EventsCtl.reader_pid.offset

_instances = itertools.count(1)
# int (*ring_buffer_sample_fn)(void *ctx, void *data, size_t size)
_SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)

KIND_NAMES = {kind: kind.name.lower().replace("_", "-") for kind in maps.FlowEventKind}
MOVE_NAMES = {reason: reason.name.lower() for reason in maps.MoveReason}
DROP_NAMES = {reason: reason.name.lower() for reason in maps.DropReason}
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}


def coarse_now_ns() -> int:
    """Now on the program's lease clock (bpf_ktime_get_coarse_ns)."""
    return time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)


def _ring_lib() -> ctypes.CDLL:
    handle = libbpf.lib()
    vp, ci = ctypes.c_void_p, ctypes.c_int
    # libbpf 1.1 (Debian's libbpf1 1.1.2) has the ring buffer API since 0.0.9.
    handle.ring_buffer__new.restype = vp
    handle.ring_buffer__new.argtypes = [ci, _SAMPLE_FN, vp, vp]
    handle.ring_buffer__poll.restype = ci
    handle.ring_buffer__poll.argtypes = [vp, ci]
    handle.ring_buffer__consume.restype = ci
    handle.ring_buffer__consume.argtypes = [vp]
    handle.ring_buffer__free.restype = None
    handle.ring_buffer__free.argtypes = [vp]
    return handle


@dataclass(frozen=True)
class Flow:
    """A flow as an event names it. Session events carry the normalized key (the two endpoints in
    address order: `src` is the lower one, not the sender); drops carry the packet's own direction."""

    family: int  # 4 or 6 (maps.FAMILY_*; ARP is 0)
    proto: int
    src: str
    sport: int
    dst: str
    dport: int

    @property
    def proto_name(self) -> str:
        if self.family == maps.FAMILY_ARP:
            return "arp"
        return PROTO_NAMES.get(self.proto, str(self.proto))

    def endpoints(self) -> tuple[tuple[str, int], tuple[str, int]]:
        return (self.src, self.sport), (self.dst, self.dport)

    def __str__(self) -> str:
        def ep(addr: str, port: int) -> str:
            host = f"[{addr}]" if ":" in addr and port else addr
            return f"{host}:{port}" if port else addr

        return f"{self.proto_name} {ep(self.src, self.sport)} {ep(self.dst, self.dport)}"


@dataclass(frozen=True)
class FlowEventRecord:
    time: float  # wall clock, seconds since the epoch
    kind: maps.FlowEventKind
    reason: str | None  # drops: a DropReason name; moves: "removed" / "leaving"
    xc_id: int  # 0 for drops (see `ifindex`)
    side: int  # side of the ingress port
    moved_side: int
    ifindex: int  # ingress port (host ifindex)
    old_ifindex: int  # moves: the replica the session had; collisions: the one it keeps
    ifindex_a: int  # the session's replicas after the event (0: none)
    ifindex_b: int
    flow: Flow | None
    pkt_len: int = 0
    packet: bytes = b""  # drops: the frame's first bytes

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]


def _addr(family: int, raw: bytes) -> str:
    if family == maps.FAMILY_V6:
        return str(ipaddress.IPv6Address(raw[:16]))
    return str(ipaddress.IPv4Address(raw[:4]))


def flow_of_key(key: maps.FlowKey) -> Flow:
    raw_lo, raw_hi = bytes(key.addr_lo), bytes(key.addr_hi)
    return Flow(
        key.family, key.proto, _addr(key.family, raw_lo), socket.ntohs(key.port_lo),
        _addr(key.family, raw_hi), socket.ntohs(key.port_hi),
    )  # fmt: skip


_PORTED = (6, 17, 132)
_V6_EXT = (0, 43, 60)  # hop-by-hop, routing, destination options (walked like the program does)


def flow_of_frame(frame: bytes) -> Flow | None:
    """The flow of an Ethernet frame (a dropped packet's first bytes), as far as they go."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    off = 14
    if ethertype == 0x0800 and len(frame) >= off + 20 and frame[off] >> 4 == 4 and frame[off] & 0x0F >= 5:
        ihl = (frame[off] & 0x0F) * 4
        proto = frame[off + 9]
        src, dst = _addr(4, frame[off + 12 : off + 16]), _addr(4, frame[off + 16 : off + 20])
        first = struct.unpack_from("!H", frame, off + 6)[0] & 0x1FFF == 0
        family, l4 = maps.FAMILY_V4, off + ihl
    elif ethertype == 0x86DD and len(frame) >= off + 40 and frame[off] >> 4 == 6:
        proto = frame[off + 6]
        src, dst = _addr(6, frame[off + 8 : off + 24]), _addr(6, frame[off + 24 : off + 40])
        family, l4, first = maps.FAMILY_V6, off + 40, True
        for _ in range(4):
            if proto in _V6_EXT and len(frame) >= l4 + 2:
                proto, l4 = frame[l4], l4 + (frame[l4 + 1] + 1) * 8
            elif proto == 44 and len(frame) >= l4 + 8:
                first = struct.unpack_from("!H", frame, l4 + 2)[0] & 0xFFF8 == 0
                proto, l4 = frame[l4], l4 + 8
            else:
                break
    elif ethertype == 0x0806 and len(frame) >= off + 28:
        return Flow(maps.FAMILY_ARP, 0, _addr(4, frame[off + 14 : off + 18]), 0,
                    _addr(4, frame[off + 24 : off + 28]), 0)  # fmt: skip
    else:
        return None
    sport = dport = 0
    if first and proto in _PORTED and len(frame) >= l4 + 4:
        sport, dport = struct.unpack_from("!HH", frame, l4)
    return Flow(family, proto, src, sport, dst, dport)


def decode(raw: bytes, clock_offset: float) -> FlowEventRecord:
    """One ring record; `clock_offset` turns CLOCK_MONOTONIC seconds into wall-clock seconds."""
    ev = maps.FlowEvent.from_buffer_copy(raw[: ctypes.sizeof(maps.FlowEvent)])
    kind = maps.FlowEventKind(ev.kind)
    packet = b""
    reason: str | None = None
    if kind == maps.FlowEventKind.DROP:
        start = maps.FlowEventDrop.packet.offset
        packet = raw[start : start + ev.snap_len]
        flow = flow_of_frame(packet)
        reason = DROP_NAMES.get(maps.DropReason(ev.reason), str(ev.reason))
    else:
        flow = flow_of_key(ev.key)
        if kind in (maps.FlowEventKind.REHASHED, maps.FlowEventKind.FOLLOWED):
            reason = MOVE_NAMES[maps.MoveReason(ev.reason)]
    return FlowEventRecord(
        time=ev.time_ns / 1e9 + clock_offset, kind=kind, reason=reason, xc_id=ev.key.xc, side=ev.side,
        moved_side=ev.moved_side, ifindex=ev.ifindex, old_ifindex=ev.old_ifindex, ifindex_a=ev.ifindex_a,
        ifindex_b=ev.ifindex_b, flow=flow, pkt_len=ev.pkt_len, packet=packet,
    )  # fmt: skip


@dataclass
class _Switch:
    """This reader's slot in events_ctl (see the module docstring)."""

    view: mmap.mmap
    slot: int = -1
    # Who holds a slot: the pid and an instance number (two readers may share a process).
    pid: int = field(default_factory=lambda: ((os.getpid() & 0xFFFFFF) << 8) | (next(_instances) & 0xFF) or 1)

    def _u64(self) -> "np.ndarray[tuple[int], np.dtype[np.uint64]]":
        return np.frombuffer(self.view, dtype=np.uint64, count=(_READER_LEASE // 8) + maps.EVENT_READERS)

    def _pids(self) -> "np.ndarray[tuple[int], np.dtype[np.uint32]]":
        return np.frombuffer(self.view, dtype=np.uint32, count=maps.EVENT_READERS, offset=_READER_PID)

    def refresh(self, now: int) -> None:
        u64, pids = self._u64(), self._pids()
        leases = u64[_READER_LEASE // 8 :]
        if self.slot < 0 or pids[self.slot] != self.pid or leases[self.slot] <= now:
            free = [i for i in range(maps.EVENT_READERS) if leases[i] <= now or pids[i] == self.pid]
            if not free:
                raise DataplaneError(f"the flow event stream has {maps.EVENT_READERS} readers already")
            self.slot = free[0]
            pids[self.slot] = self.pid
        mine = now + int(LEASE_SECONDS * 1e9)
        leases[self.slot] = mine
        u64[_LEASE // 8] = max(int(leases.max()), mine)

    def release(self, now: int) -> None:
        u64, pids = self._u64(), self._pids()
        leases = u64[_READER_LEASE // 8 :]
        if self.slot >= 0 and pids[self.slot] == self.pid:
            leases[self.slot] = 0
            pids[self.slot] = 0
        live = [int(v) for v in leases if v > now]
        u64[_LEASE // 8] = max(live) if live else 0  # the last reader out turns the stream off
        self.slot = -1

    def readers(self, now: int) -> int:
        return int((self._u64()[_READER_LEASE // 8 :] > now).sum())

    def set_drop_budget(self, budget: int) -> None:
        np.frombuffer(self.view, dtype=np.uint32, count=1, offset=_BUDGET)[0] = budget


class EventStream:
    """A reader of the flow event stream of the data plane pinned at `pin_dir` (switches it on).

    `poll(timeout)` returns the records that arrived (and refreshes the lease); `close()` lets go.
    `drop_budget`: drop events per CPU per second (about) while this reader is attached; None keeps
    what is set (the program's default EVENTS_DROP_BUDGET when nothing is)."""

    def __init__(self, pin_dir: str, *, drop_budget: int | None = None) -> None:
        self._fds: list[int] = []
        self._ring: int | None = None
        self._pending: list[FlowEventRecord] = []
        self._clock_offset = time.time() - time.monotonic()
        self.decode_errors = 0
        try:
            for name in ("flow_events", "events_ctl"):
                path = os.path.join(pin_dir, name)
                if not os.path.exists(path):
                    raise DataplaneError(
                        f"pin_dir {pin_dir}: no {name} pin: the data plane pinned there has no flow event "
                        "stream (an older version: the node agent's upgrade adds it)"
                    )
                self._fds.append(libbpf.obj_get(path))
            ring_fd, ctl_fd = self._fds
            self._view = mmap.mmap(ctl_fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self._switch = _Switch(self._view)
            self._callback = _SAMPLE_FN(self._on_sample)  # kept: libbpf holds the pointer
            ctypes.set_errno(0)
            ring = _ring_lib().ring_buffer__new(ring_fd, self._callback, None, None)
            if not ring:
                raise libbpf.BpfError("ring_buffer__new", ctypes.get_errno() or 22)
            self._ring = int(ring)
            if drop_budget is not None:
                self._switch.set_drop_budget(max(drop_budget, 0))
            self._last_refresh = 0.0
            self._refresh()
        except BaseException:
            self.close()
            raise

    def _on_sample(self, _ctx: int | None, data: int | None, size: int) -> int:
        try:
            self._pending.append(decode(ctypes.string_at(data or 0, size), self._clock_offset))
        except (ValueError, KeyError):
            self.decode_errors += 1  # a record of a newer program: skipped, never fatal
        return 0

    def _refresh(self) -> None:
        self._switch.refresh(coarse_now_ns())
        self._last_refresh = time.monotonic()

    @property
    def readers(self) -> int:
        """Readers holding a live lease (this one included)."""
        return self._switch.readers(coarse_now_ns())

    def poll(self, timeout: float = 0.2) -> list[FlowEventRecord]:
        """Records that arrived, waiting up to `timeout` seconds for the first one."""
        if self._ring is None:
            raise DataplaneError("event stream is closed")
        if time.monotonic() - self._last_refresh >= REFRESH_SECONDS:
            self._refresh()
        rc = _ring_lib().ring_buffer__poll(self._ring, max(int(timeout * 1000), 0))
        if rc < 0 and rc != -4:  # EINTR: a signal, e.g. Ctrl-C, is handled by the caller
            raise libbpf.BpfError("ring_buffer__poll", -rc)
        out, self._pending = self._pending, []
        return out

    def hold(self) -> None:
        """Keeps this reader's lease (the stream stays on) without consuming a record: the ring has one
        consumer position, so two readers polling it split its records between them, and a reader
        that yields to another one (the agent's flow history) must leave them all to it."""
        if self._ring is None:
            raise DataplaneError("event stream is closed")
        if time.monotonic() - self._last_refresh >= REFRESH_SECONDS:
            self._refresh()

    def drain(self) -> list[FlowEventRecord]:
        """Whatever is in the ring now, without waiting."""
        if self._ring is not None:
            _ring_lib().ring_buffer__consume(self._ring)
        out, self._pending = self._pending, []
        return out

    def follow(self, timeout: float = 0.2) -> Iterator[FlowEventRecord]:
        while True:
            yield from self.poll(timeout)

    def close(self) -> None:
        if self._ring is not None:
            _ring_lib().ring_buffer__free(self._ring)
            self._ring = None
        if getattr(self, "_switch", None) is not None:
            with contextlib.suppress(ValueError):
                self._switch.release(coarse_now_ns())
            self._switch = None  # type: ignore[assignment]
        if getattr(self, "_view", None) is not None:
            with contextlib.suppress(BufferError):
                self._view.close()
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream_lease(pin_dir: str) -> tuple[int, int]:
    """(lease in coarse ns, live reader slots) of the data plane at `pin_dir`, read-only."""
    fd = libbpf.obj_get(os.path.join(pin_dir, "events_ctl"))
    try:
        ctl = maps.EventsCtl()
        libbpf.map_lookup(fd, maps.U32(0), ctl)
        now = coarse_now_ns()
        return int(ctl.lease), sum(1 for v in ctl.reader_lease if v > now)
    finally:
        os.close(fd)
