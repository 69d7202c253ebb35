"""Per-packet cost of eBPF programs in the live path: run_time_ns / run_cnt while traffic flows.

Statistics are switched on with BPF_ENABLE_STATS (libbpf's bpf_enable_stats), which is reference
counted by a file descriptor: unlike writing the kernel.bpf_stats_enabled sysctl, it cannot switch
off statistics someone else on the machine turned on, and it ends when the descriptor closes.
"""

import ctypes
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

BPF_STATS_RUN_TIME = 0


@dataclass(frozen=True)
class ProgCounters:
    run_time_ns: int
    run_cnt: int

    def __sub__(self, other: "ProgCounters") -> "ProgCounters":
        return ProgCounters(self.run_time_ns - other.run_time_ns, self.run_cnt - other.run_cnt)

    @property
    def ns_per_run(self) -> float | None:
        return self.run_time_ns / self.run_cnt if self.run_cnt else None


@contextmanager
def stats_enabled() -> Iterator[None]:
    libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
    libbpf.bpf_enable_stats.argtypes = [ctypes.c_int]
    libbpf.bpf_enable_stats.restype = ctypes.c_int
    fd = libbpf.bpf_enable_stats(BPF_STATS_RUN_TIME)
    if fd < 0:
        err = ctypes.get_errno() or -fd
        raise OSError(err, f"bpf_enable_stats: {os.strerror(err)}")
    try:
        yield
    finally:
        os.close(fd)


def counters(prog_ids: list[int]) -> ProgCounters:
    """Summed run_time_ns and run_cnt of the given programs (bpftool; called outside timed windows)."""
    run_time = run_cnt = 0
    for prog_id in prog_ids:
        out = subprocess.run(
            ["bpftool", "-j", "prog", "show", "id", str(prog_id)], capture_output=True, text=True, check=True
        )
        info = json.loads(out.stdout)
        run_time += int(info.get("run_time_ns", 0))
        run_cnt += int(info.get("run_cnt", 0))
    return ProgCounters(run_time, run_cnt)
