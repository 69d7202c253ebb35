"""A metrics scrape counting sessions does not hold the lock a reconcile pass needs.

The fake data plane's session walk blocks until released (a 1M-session table takes a while); while a
scrape sits in it, a reconcile step through the same LockedDataplane must complete. Before the walk
ran outside the lock, the step waited for the whole scrape.
"""

import threading
from typing import Any

from prometheus_client import generate_latest

from flexsfc.agent.locked import LockedDataplane
from flexsfc.dataplane.api import PortStats, ReplicaPort
from flexsfc.metrics.exporter import Exporter
from flexsfc.metrics.labels import PortIndex
from flexsfc.model.types import Side


class SlowWalk:
    """A data plane whose session walk waits for `release`; the rest answers at once."""

    def __init__(self) -> None:
        self.walking = threading.Event()
        self.release = threading.Event()
        self.closed = False
        self.walked_by_name = False
        self.updates: list[tuple[str, Side, list[ReplicaPort]]] = []

    def list_xcs(self) -> dict[str, int]:
        return {"xc-a": 1, "xc-b": 2}

    def session_counts_by_id(self) -> dict[int, int]:
        self.walking.set()
        assert self.release.wait(10), "never released"
        assert not self.closed, "walked a closed data plane"
        return {1: 5, 3: 7}  # 3: a cross-connection deleted meanwhile, not reported

    def session_counts(self) -> dict[str, int]:
        """The same walk by name: LockedDataplane must not call it (it would walk under the lock)."""
        self.walked_by_name = True
        by_id = self.session_counts_by_id()
        return {name: by_id.get(xc_id, 0) for name, xc_id in self.list_xcs().items()}

    def set_replicas(self, xc: str, side: Side, replicas: list[ReplicaPort]) -> None:
        self.updates.append((xc, side, replicas))

    def replicas(self, xc: str, side: Side) -> list[ReplicaPort]:
        return []

    def port_stats(self) -> dict[int, PortStats]:
        return {}

    def drop_stats(self) -> dict[str, int]:
        return {}

    def event_stats(self) -> dict[str, int]:
        return {}

    def session_capacities(self) -> dict[str, int]:
        return {"ipv4": 1024, "ipv6": 1024}

    def sessions_expired(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


def _in_thread(fn: Any) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def test_a_reconcile_completes_while_a_scrape_walks_the_sessions() -> None:
    inner = SlowWalk()
    locked = LockedDataplane(inner)  # type: ignore[arg-type]
    exporter = Exporter.create(locked, PortIndex())
    scraped: list[bytes] = []
    scrape = _in_thread(lambda: scraped.append(generate_latest(exporter.registry)))
    try:
        assert inner.walking.wait(5), "the scrape never reached the session walk"
        update = _in_thread(lambda: locked.set_replicas("xc-a", Side.A, [ReplicaPort(7, "r0")]))
        update.join(timeout=2)
        assert not update.is_alive(), "the reconcile step waited for the scrape"
        assert inner.updates == [("xc-a", Side.A, [ReplicaPort(7, "r0")])]
        assert scrape.is_alive()  # still walking: the step really ran during the scrape
        assert not inner.walked_by_name
    finally:
        inner.release.set()
        scrape.join(timeout=5)
    text = scraped[0].decode()
    assert 'flexsfc_xc_active_sessions{chain="",cross_connection="xc-a",namespace=""} 5.0' in text
    assert 'flexsfc_xc_active_sessions{chain="",cross_connection="xc-b",namespace=""} 0.0' in text


def test_close_waits_for_a_walk_in_progress() -> None:
    inner = SlowWalk()
    locked = LockedDataplane(inner)  # type: ignore[arg-type]
    counts: list[dict[str, int]] = []
    walk = _in_thread(lambda: counts.append(locked.session_counts()))
    assert inner.walking.wait(5)
    closing = _in_thread(locked.close)
    closing.join(timeout=0.2)
    assert closing.is_alive() and not inner.closed  # the descriptors stay open for the walk
    inner.release.set()
    walk.join(timeout=5)
    closing.join(timeout=5)
    assert inner.closed and counts == [{"xc-a": 5, "xc-b": 0}]
