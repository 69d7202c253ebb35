"""Confirmed sessions: their counts from counters, and the agent's sweep that frees idle ones.

The program inserts a flow into the confirmed tables (`sessions`, `sessions6`: plain hashes that
nothing evicts) once it has seen it from both sides, and counts each insert per cross-connection in
`session_counts` (per CPU). Nothing in the program deletes a confirmed session: the agent does, here,
when one has been idle for longer than its protocol's timeout, and adds what it deleted to
`session_reclaims` (this module is that map's only writer). So the confirmed sessions of an xc are
`sum(session_counts[xc]) - session_reclaims[xc]`, read in three syscalls whatever the table's size.

The sweep reads the tables in batches of raw bytes (numpy, no Python object per entry) and deletes
the expired keys of each batch right away, so the window between reading a session's last-seen stamp
and deleting it is one batch (milliseconds). Only map descriptors are used: it needs no writer lock.
"""

import ctypes
import errno
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from flexsfc.dataplane import libbpf, maps
from flexsfc.dataplane.pins import Pins
from flexsfc.model.types import SessionTimeouts

TICK_NS = 1 << maps.SESSION_CLOCK_SHIFT
CLOCK_MONOTONIC_COARSE = 6  # linux/time.h; Python's time module does not name it
CLASSES = ("tcp", "udp", "icmp", "other")
_TCP, _UDP, _ICMP, _OTHER = range(4)
_CHUNK = 16384
# The program refreshes a stamp at most once a tick and a cached flow reaches the table up to
# FLOW_CACHE_REFRESH_JIFFIES after its last packet: one more tick of slack, so that no session is ever
# freed before it has been idle for its whole timeout.
_SLACK_TICKS = 1


def session_clock() -> int:
    """Now on the program's session clock (bpf_ktime_get_coarse_ns() >> SESSION_CLOCK_SHIFT)."""
    return (time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE) >> maps.SESSION_CLOCK_SHIFT) & 0xFFFFFFFF


def timeout_ticks(timeouts: SessionTimeouts) -> list[int]:
    """Per class (CLASSES order): idle ticks after which a session is expired (rounded up)."""
    return [-(-getattr(timeouts, cls) * 1_000_000_000 // TICK_NS) + _SLACK_TICKS for cls in CLASSES]


@dataclass
class SweepReport:
    scanned: int = 0
    expired: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    expired_by_id: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total_expired(self) -> int:
        return sum(self.expired.values())


class SessionCounters:
    """Confirmed-session counts per cross-connection id, from the counters (see the module doc)."""

    def __init__(self, pins: Pins) -> None:
        self._pins = pins

    def counts_by_id(self) -> dict[int, int]:
        """Confirmed sessions per xc id (those with any). Reads the reclaims first: a sweep counts
        after it deletes, so a concurrent sweep can only make this a few too high, never too low."""
        reclaimed = self.reclaimed()
        inserted = self.inserted()
        return {xc_id: int(n) for xc_id, n in enumerate(np.maximum(inserted - reclaimed, 0)) if n > 0}

    def inserted(self) -> npt.NDArray[np.int64]:
        sums: npt.NDArray[np.int64] = self._values("session_counts", libbpf.possible_cpus()).sum(axis=1)
        return sums

    def reclaimed(self) -> npt.NDArray[np.int64]:
        return self._values("session_reclaims", 1)[:, 0]

    def add_reclaimed(self, by_id: Mapping[int, int]) -> None:
        fd = self._pins.fd("session_reclaims")
        for xc_id, count in by_id.items():
            value = maps.U64()
            libbpf.map_lookup(fd, maps.U32(xc_id), value)
            libbpf.map_update(fd, maps.U32(xc_id), maps.U64(value.value + count))

    def recount(self, walked: Mapping[int, int]) -> None:
        """Make the counters say `walked` (sessions per xc id from a walk of the tables), after an
        upgrade interrupted between re-pinning the counters and the tables (upgrade.py). Only the
        reclaims are rewritten, unless an xc has fewer inserts than sessions: then CPU 0's insert
        count is raised. Sessions the program confirms during the walk may be off by as many."""
        ncpu = libbpf.possible_cpus()
        inserted, reclaimed = self.inserted(), self.reclaimed()
        counts_fd, reclaims_fd = self._pins.fd("session_counts"), self._pins.fd("session_reclaims")
        for xc_id in range(maps.MAX_XC):
            want, have = walked.get(xc_id, 0), int(inserted[xc_id])
            if have < want:
                per_cpu = (ctypes.c_uint64 * ncpu)()
                libbpf.map_lookup(counts_fd, maps.U32(xc_id), per_cpu)
                per_cpu[0] += want - have
                libbpf.map_update(counts_fd, maps.U32(xc_id), per_cpu)
                have = want
            if have - want != int(reclaimed[xc_id]):
                libbpf.map_update(reclaims_fd, maps.U32(xc_id), maps.U64(have - want))

    def _values(self, name: str, ncpu: int) -> npt.NDArray[np.int64]:
        """Every value of an array of MAX_XC u64 (per CPU: ncpu each) in one batch syscall."""
        keys = np.zeros(maps.MAX_XC, dtype=np.uint32)
        values = np.zeros((maps.MAX_XC, ncpu), dtype=np.uint64)
        token = ctypes.c_uint32(0)
        count = ctypes.c_uint32(maps.MAX_XC)
        opts = libbpf.BpfMapBatchOpts(sz=ctypes.sizeof(libbpf.BpfMapBatchOpts))
        rc = libbpf.lib().bpf_map_lookup_batch(
            self._pins.fd(name), None, ctypes.addressof(token), keys.ctypes.data, values.ctypes.data,
            ctypes.byref(count), ctypes.addressof(opts),
        )  # fmt: skip
        if rc < 0 and rc != -errno.ENOENT:
            raise libbpf.BpfError("bpf_map_lookup_batch", -rc, name)
        return values.astype(np.int64)


def _classes(proto: npt.NDArray[np.uint8], family: npt.NDArray[np.uint8]) -> npt.NDArray[np.intp]:
    out = np.full(proto.shape, _OTHER, dtype=np.intp)
    out[(proto == 6) | (proto == 132)] = _TCP
    out[proto == 17] = _UDP
    out[(proto == 1) | (proto == 58) | (family == maps.FAMILY_ARP)] = _ICMP
    return out


def sweep(
    pins: Pins,
    timeouts_by_id: Mapping[int, SessionTimeouts],
    default: SessionTimeouts,
    *,
    now: int | None = None,
) -> SweepReport:
    """Delete the confirmed sessions idle for longer than their timeout (their xc's, else `default`)
    and count them in `session_reclaims`. `now`: the session clock (tests)."""
    started = time.perf_counter()
    report = SweepReport()
    ticks = np.array([timeout_ticks(default)] * maps.MAX_XC, dtype=np.int64)
    for xc_id, timeouts in timeouts_by_id.items():
        if 0 < xc_id < maps.MAX_XC:
            ticks[xc_id] = timeout_ticks(timeouts)
    clock = session_clock() if now is None else now
    for name, key_type in (("sessions", maps.FlowKey4), ("sessions6", maps.FlowKey)):
        _sweep_table(pins.fd(name), ctypes.sizeof(key_type), ticks, clock, report)
    SessionCounters(pins).add_reclaimed(report.expired_by_id)
    report.seconds = time.perf_counter() - started
    return report


def _sweep_table(fd: int, key_size: int, ticks: npt.NDArray[np.int64], now: int, report: SweepReport) -> None:
    value_size = ctypes.sizeof(maps.SessionValue)
    last_seen_at = maps.SessionValue.last_seen.offset
    keys = np.zeros((_CHUNK, key_size), dtype=np.uint8)
    values = np.zeros((_CHUNK, value_size), dtype=np.uint8)
    token = np.zeros(max(key_size, 8), dtype=np.uint8)
    opts = libbpf.BpfMapBatchOpts(sz=ctypes.sizeof(libbpf.BpfMapBatchOpts))
    first = True
    while True:
        count = ctypes.c_uint32(_CHUNK)
        rc = libbpf.lib().bpf_map_lookup_batch(
            fd, None if first else token.ctypes.data, token.ctypes.data, keys.ctypes.data,
            values.ctypes.data, ctypes.byref(count), ctypes.addressof(opts),
        )  # fmt: skip
        done = rc == -errno.ENOENT
        if rc < 0 and not done:
            raise libbpf.BpfError("bpf_map_lookup_batch", -rc, "session sweep")
        n = count.value
        if n:
            batch_keys = keys[:n]
            xc = batch_keys[:, 0:4].copy().view(np.uint32)[:, 0]
            cls = _classes(batch_keys[:, 4], batch_keys[:, 5])
            seen = values[:n, last_seen_at : last_seen_at + 4].copy().view(np.uint32)[:, 0]
            idle = (np.uint32(now) - seen).astype(np.int64)  # modulo 2^32: the clock may wrap
            limit = ticks[np.minimum(xc, maps.MAX_XC - 1), cls]
            expired = idle > limit
            report.scanned += n
            if expired.any():
                _delete(
                    fd, np.ascontiguousarray(batch_keys[expired]), key_size, report, xc[expired], cls[expired]
                )
        if done:
            return
        first = False


def _delete(
    fd: int,
    keys: npt.NDArray[np.uint8],
    key_size: int,
    report: SweepReport,
    xc: npt.NDArray[np.uint32],
    cls: npt.NDArray[np.intp],
) -> None:
    """Delete `keys` one by one (a batch delete stops at the first missing key: only this module
    deletes confirmed sessions, but a test or an operator may too) and count what was deleted."""
    buf = (ctypes.c_uint8 * key_size)()
    for i in range(len(keys)):
        ctypes.memmove(buf, keys[i].ctypes.data, key_size)
        if not libbpf.map_delete(fd, buf):
            continue
        xc_id = int(xc[i])
        report.expired_by_id[xc_id] = report.expired_by_id.get(xc_id, 0) + 1
        report.expired[CLASSES[int(cls[i])]] += 1
