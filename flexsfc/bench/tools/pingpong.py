"""The UDP ping-pong of the `switched` section (pingpong.c, built with clang on first use): round
trips stamped on CLOCK_MONOTONIC, the clock of time.monotonic(), so each sample can be put into the
slot of the path it crossed."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("pingpong.c")
PORT = 5299
SAMPLE = np.dtype([("sent_ns", "<u8"), ("rtt_ns", "<u4")])  # struct sample in pingpong.c


def executable() -> Path:
    from flexsfc.dataplane.build import ensure_program

    return ensure_program(SOURCE)


def server_argv() -> list[str]:
    return [str(executable()), "server", str(PORT)]


def client_argv(ip: str, size: int, seconds: float, samples: Path) -> list[str]:
    return [str(executable()), "client", ip, str(PORT), str(size), str(seconds), str(samples)]


def one_way_medians_us(samples: Path, windows: Sequence[tuple[float, float]]) -> list[float | None]:
    """For each (start, end) window in time.monotonic() seconds: the median one-way latency (half
    the round trip) in µs of the round trips sent in it; None for a window without one."""
    data = np.fromfile(samples, dtype=SAMPLE)  # in send order: one loop appends them, monotonic clock
    sent, rtt = data["sent_ns"], data["rtt_ns"]
    out: list[float | None] = []
    for start, end in windows:
        lo, hi = np.searchsorted(sent, [int(start * 1e9), int(end * 1e9)])
        out.append(float(np.median(rtt[lo:hi])) / 2000 if hi > lo else None)
    return out
