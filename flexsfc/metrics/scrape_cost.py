"""How long one scrape takes as the session table grows, and what a scrape does to reconcile latency
(root; throw-away data plane and network namespace).

    python -m flexsfc.metrics.scrape_cost --sessions 200000 --xcs 4
    python -m flexsfc.metrics.scrape_cost --sessions 1000000 --reconcile

Fills the session map of a fresh data plane (its own pin directory, destroyed at the end) with
synthetic entries spread over the cross-connections, then times `generate_latest` with and without
the active-sessions gauge, and the walk the exporter did before (a Python object per session). The
synthetic entries bypass the program, so a gauge read from the program's counters shows none of them.

`--reconcile` measures what an agent sees: replica updates (one replica toggled between active and
draining: a record write and a Maglev table swap) through the agent's LockedDataplane, alone and
while a thread scrapes every 0.1 s (back to back when a scrape takes longer), interleaved in rounds
(idle, scraping, scraping, idle, ...). Twice: with the exporter as it is (session counts read
outside the lock) and with a walk of the table under the lock, as before. Latencies are reported as
percentiles and as ratios scraping / idle.
"""

import argparse
import contextlib
import socket
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import generate_latest

from flexsfc.agent.locked import LockedDataplane
from flexsfc.metrics.exporter import Exporter
from flexsfc.metrics.labels import PortIndex
from flexsfc.model.types import Side

if TYPE_CHECKING:
    from flexsfc.dataplane.api import ReplicaPort
    from flexsfc.dataplane.facade import Dataplane

RECONCILE_TARGET_MS = 1.0  # a set_replicas pass (docs/evaluation.md, "control_plane")


def fill_sessions(dataplane: "Dataplane", xc_ids: list[int], count: int) -> None:
    from flexsfc.dataplane import libbpf, maps

    fd = dataplane.map_fd("sessions")  # IPv4 sessions: FlowKey4 keys
    key, value = maps.FlowKey4(proto=17, family=4), maps.MAP_LAYOUTS["sessions"][1]()
    for i in range(count):
        key.xc = xc_ids[i % len(xc_ids)]
        key.port_lo, key.port_hi = i & 0xFFFF, (i >> 16) + 1
        libbpf.map_update(fd, key, value)


def python_walk_counts(dataplane: "Dataplane") -> dict[str, int]:
    """Sessions per cross-connection the way they were counted before: every (key, value) pair as
    ctypes objects, counted in a Python loop (seconds at 1M sessions)."""
    from flexsfc.dataplane import libbpf, maps

    names = {xc_id: name for name, xc_id in dataplane.list_xcs().items()}
    counts = dict.fromkeys(names.values(), 0)
    for map_name, key_type in (("sessions", maps.FlowKey4), ("sessions6", maps.FlowKey)):
        fd = dataplane.map_fd(map_name)
        capacity = libbpf.map_info(fd).max_entries
        value_type = maps.MAP_LAYOUTS[map_name][1]
        for key, _ in libbpf.map_dump_batch(fd, key_type, value_type, capacity):
            name = names.get(key.xc)
            if name is not None:
                counts[name] += 1
    return counts


class PerXcCounts(LockedDataplane):
    """The agent's view of the data plane, with session_counts() as a walk of the session table per
    xc (what the exporter did before the one-walk count)."""

    def session_counts(self) -> dict[str, int]:
        return {xc: self.session_count(xc) for xc in self.list_xcs()}


class WalkUnderLock(LockedDataplane):
    """The agent's view of the data plane as it was before: the session walk (a Python object per
    session) inside the lock every reconcile step takes."""

    def __init__(self, inner: "Dataplane") -> None:
        super().__init__(inner)
        self._dataplane = inner

    def session_counts(self) -> dict[str, int]:
        with self._lock:
            return python_walk_counts(self._dataplane)


def timed_scrape(exporter: Exporter, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        generate_latest(exporter.registry)
        best = min(best, time.perf_counter() - start)
    return best


def timed(fn: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


# ---- reconcile latency during scrapes -----------------------------------------------------------------


SCRAPE_EVERY = 0.1  # seconds from one scrape's start to the next, at most (Prometheus: 10-60 s)


@contextlib.contextmanager
def scraping(exporter: Exporter | None) -> Iterator[list[float]]:
    """Scrape in a thread for the duration of the block, a scrape every SCRAPE_EVERY seconds or back
    to back when one takes longer (a cheap scrape in a tight loop would only measure the GIL);
    yields the scrape durations."""
    durations: list[float] = []
    if exporter is None:
        yield durations
        return
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            generate_latest(exporter.registry)
            durations.append(time.perf_counter() - start)
            stop.wait(max(0.0, SCRAPE_EVERY - durations[-1]))

    thread = threading.Thread(target=run, name="scraper", daemon=True)
    thread.start()
    time.sleep(0.02)  # the first scrape is under way
    try:
        yield durations
    finally:
        stop.set()
        thread.join()


def replica_updates(locked: LockedDataplane, xc: str, count: int, gap: float, seconds: float) -> list[float]:
    """Up to `count` reconcile steps (read the side, toggle its first replica active <-> draining)
    in at most `seconds`, each timed in ms, `gap` seconds apart (a scrape spans several)."""
    from dataclasses import replace

    from flexsfc.dataplane.api import ReplicaState

    out: list[float] = []
    deadline = time.monotonic() + seconds
    while len(out) < count and time.monotonic() < deadline:
        start = time.perf_counter()
        ports: list[ReplicaPort] = locked.replicas(xc, Side.B)
        first = ports[0]
        toggled = ReplicaState.DRAINING if first.state == ReplicaState.ACTIVE else ReplicaState.ACTIVE
        locked.set_replicas(xc, Side.B, [replace(first, state=toggled), *ports[1:]])
        out.append((time.perf_counter() - start) * 1e3)
        time.sleep(gap)
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def reconcile_during_scrapes(
    dataplane: "Dataplane", xc: str, rounds: int, per_round: int, phase_seconds: float = 5.0
) -> None:
    variants = {
        "counts outside the lock (now)": LockedDataplane(dataplane),
        "a walk under the lock (before)": WalkUnderLock(dataplane),
    }
    for label, locked in variants.items():
        exporter = Exporter.create(locked, PortIndex())
        idle: list[float] = []
        busy: list[float] = []
        scrapes: list[float] = []
        ratios = []
        for r in range(rounds):
            order = (False, True) if r % 2 == 0 else (True, False)  # ABBA: drift hits both alike
            medians = {}
            for with_scrape in order:
                with scraping(exporter if with_scrape else None) as durations:
                    samples = replica_updates(locked, xc, per_round, gap=0.005, seconds=phase_seconds)
                (busy if with_scrape else idle).extend(samples)
                scrapes.extend(durations)
                medians[with_scrape] = statistics.median(samples)
            ratios.append(medians[True] / medians[False])
        print(
            f"{label}: reconcile step idle p50 {_pct(idle, 0.5):.3f} ms p99 {_pct(idle, 0.99):.3f} ms "
            f"max {max(idle):.3f} ms | during scrapes p50 {_pct(busy, 0.5):.3f} ms p99 "
            f"{_pct(busy, 0.99):.3f} ms max {max(busy):.1f} ms | p50 ratio per round "
            f"{statistics.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}] | p99 ratio "
            f"{_pct(busy, 0.99) / _pct(idle, 0.99):.2f} | within {RECONCILE_TARGET_MS} ms during scrapes: "
            f"{sum(1 for v in busy if v <= RECONCILE_TARGET_MS)}/{len(busy)} | scrape "
            f"{statistics.median(scrapes) if scrapes else float('nan'):.3f} s median ({len(scrapes)} scrapes)"
        )


@contextlib.contextmanager
def _private_netns() -> Iterator[str]:
    """A throw-away network namespace for the replica ports (the test support is not ours to use)."""
    name = f"fxscrape-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def _veth(netns: str, index: int) -> int:
    """A veth pair in `netns`, up; returns the ifindex of its first end (a replica's host port)."""
    host, peer = f"fxs{index}", f"fxsp{index}"
    subprocess.run(["ip", "-n", netns, "link", "add", host, "type", "veth", "peer", "name", peer], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", host, "up"], check=True)
    return socket.if_nametoindex(host)  # the caller's thread is in `netns`


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200_000)
    parser.add_argument("--xcs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--reconcile", action="store_true", help="reconcile latency with and without concurrent scrapes"
    )
    parser.add_argument("--updates", type=int, default=100, help="reconcile steps per round (--reconcile)")
    args = parser.parse_args(argv)

    from flexsfc.dataplane.api import ReplicaPort
    from flexsfc.dataplane.facade import Dataplane
    from flexsfc.util.netns import in_netns

    with _private_netns() as netns, in_netns(netns):
        dataplane = Dataplane(
            f"/sys/fs/bpf/flexsfc-scrape-cost-{uuid.uuid4().hex[:6]}",
            session_capacity=max(args.sessions, 1024),
        )
        try:
            ids = [dataplane.ensure_xc(f"scrape-cost-{i}") for i in range(args.xcs)]
            started = time.perf_counter()
            fill_sessions(dataplane, ids, args.sessions)
            print(f"filled {args.sessions} sessions in {time.perf_counter() - started:.1f} s")
            if args.reconcile:
                ports = [ReplicaPort(_veth(netns, i), f"replica-{i}") for i in range(8)]
                dataplane.set_replicas("scrape-cost-0", Side.B, ports)
                reconcile_during_scrapes(dataplane, "scrape-cost-0", args.rounds, args.updates)
                return 0
            one_walk = timed_scrape(Exporter.create(LockedDataplane(dataplane), PortIndex()), args.rounds)
            python_walk = timed(lambda: python_walk_counts(dataplane), args.rounds)
            per_xc = timed_scrape(Exporter.create(PerXcCounts(dataplane), PortIndex()), args.rounds)
            without = timed_scrape(Exporter.create(dataplane, PortIndex(), with_sessions=False), args.rounds)
            print(
                f"{args.sessions} sessions, {args.xcs} cross-connections, best of {args.rounds}: scrape "
                f"{one_walk:.3f} s with active sessions (one native walk), {per_xc:.3f} s (a "
                f"walk per cross-connection), {without * 1e3:.2f} ms without; the walk as it was (a "
                f"Python object per session) {python_walk:.3f} s"
            )
        finally:
            dataplane.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
