"""How long one scrape takes as the session table grows (root; throw-away data plane).

    python -m flexsfc.metrics.scrape_cost --sessions 200000 --xcs 4

Fills the session map of a fresh data plane (its own pin directory, destroyed at the end) with
synthetic entries spread over the cross-connections, then times `generate_latest` with and without
the active-sessions gauge. Only the session walk grows with the table; the counters do not.
"""

import argparse
import time
import uuid
from typing import Any

from prometheus_client import generate_latest

from flexsfc.metrics.exporter import Exporter
from flexsfc.metrics.labels import PortIndex


def fill_sessions(dataplane, xc_ids: list[int], count: int) -> None:  # type: ignore[no-untyped-def]
    from flexsfc.dataplane import libbpf, maps

    fd = dataplane.map_fd("sessions")  # IPv4 sessions: FlowKey4 keys
    for i in range(count):
        key = maps.FlowKey4(xc=xc_ids[i % len(xc_ids)], proto=17, family=4)
        key.port_lo, key.port_hi = i & 0xFFFF, (i >> 16) + 1
        libbpf.map_update(fd, key, maps.Session())


class PerXcCounts:
    """The data plane without session_counts(): the exporter falls back to a walk per xc."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "session_counts":
            raise AttributeError(name)
        return getattr(self._inner, name)


def timed_scrape(exporter: Exporter, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        generate_latest(exporter.registry)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200_000)
    parser.add_argument("--xcs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    from flexsfc.dataplane.facade import Dataplane

    dataplane = Dataplane(f"/sys/fs/bpf/flexsfc-scrape-cost-{uuid.uuid4().hex[:6]}")
    try:
        ids = [dataplane.ensure_xc(f"scrape-cost-{i}") for i in range(args.xcs)]
        fill_sessions(dataplane, ids, args.sessions)
        one_walk = timed_scrape(Exporter.create(dataplane, PortIndex()), args.rounds)
        per_xc = timed_scrape(Exporter.create(PerXcCounts(dataplane), PortIndex()), args.rounds)
        without = timed_scrape(Exporter.create(dataplane, PortIndex(), with_sessions=False), args.rounds)
        print(
            f"{args.sessions} sessions, {args.xcs} cross-connections, best of {args.rounds}: scrape "
            f"{one_walk:.3f} s with active sessions (one walk), {per_xc:.3f} s (a walk per "
            f"cross-connection), {without * 1e3:.2f} ms without"
        )
    finally:
        dataplane.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
