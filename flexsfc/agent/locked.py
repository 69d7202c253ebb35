"""Serialise every call into a data plane, so status readers and the reconciler can share one.

Session counts are the exception: counting walks the session tables (a million entries take
~0.1 s), and a metrics scrape holding the lock for it would stall a reconcile pass behind it. The
walk reads the maps through their descriptors only, so it runs outside the lock; only the name -> id
snapshot is taken under it, and `close()` waits for a walk in progress (the descriptors stay open).
"""

import threading
from collections.abc import Mapping

from flexsfc.dataplane.api import DataplaneAPI, Neighbour, PortStats, ReplicaPort, SessionEntry
from flexsfc.dataplane.sessions import SweepReport
from flexsfc.model.types import SessionTimeouts, Side


class LockedDataplane:
    """A DataplaneAPI holding one lock around each call into another (the facade is not thread-safe)."""

    def __init__(self, inner: DataplaneAPI) -> None:
        self._inner = inner
        self._lock = threading.RLock()
        # Held by a session walk outside `_lock` and by close()/destroy(): the descriptors a walk
        # reads stay open until it is done.
        self._walk = threading.Lock()

    # ---- reads ---------------------------------------------------------------------------------------

    def list_xcs(self) -> dict[str, int]:
        with self._lock:
            return self._inner.list_xcs()

    def replicas(self, xc: str, side: Side) -> list[ReplicaPort]:
        with self._lock:
            return self._inner.replicas(xc, side)

    def neighbours(self, xc: str, side: Side, *, learned: bool = False) -> list[Neighbour]:
        with self._lock:
            return self._inner.neighbours(xc, side, learned=learned)

    def port_stats(self) -> dict[int, PortStats]:
        with self._lock:
            return self._inner.port_stats()

    def drop_stats(self) -> dict[str, int]:
        with self._lock:
            return self._inner.drop_stats()

    def event_stats(self) -> dict[str, int]:
        with self._lock:
            return self._inner.event_stats()

    def session_count(self, xc: str | None = None) -> int:
        if xc is None:
            return sum(self._counts_by_id().values())
        with self._lock:
            ids = self._inner.list_xcs()
        if xc not in ids:
            raise ValueError(f"cross-connection {xc!r}: unknown, call ensure_xc first")
        return self._counts_by_id().get(ids[xc], 0)

    def session_counts(self) -> dict[str, int]:
        """Sessions per cross-connection; the table walk holds no lock a writer waits for."""
        with self._lock:
            ids = self._inner.list_xcs()
        by_id = self._counts_by_id()
        return {name: by_id.get(xc_id, 0) for name, xc_id in ids.items()}

    def session_counts_by_id(self) -> dict[int, int]:
        return self._counts_by_id()

    def _counts_by_id(self) -> dict[int, int]:
        with self._walk:
            return self._inner.session_counts_by_id()

    def sweep_sessions(self, timeouts: Mapping[str, SessionTimeouts]) -> SweepReport:
        """Free idle sessions (the agent's sweep): the lock only to resolve names, the walk outside
        it like a session count (it reads map descriptors only), so reconciles never wait for it."""
        with self._lock:
            ids = self._inner.list_xcs()
        by_id = {ids[name]: value for name, value in timeouts.items() if name in ids}
        return self.sweep_sessions_by_id(by_id, SessionTimeouts())

    def sweep_sessions_by_id(
        self, timeouts: Mapping[int, SessionTimeouts], default: SessionTimeouts
    ) -> SweepReport:
        with self._walk:
            return self._inner.sweep_sessions_by_id(timeouts, default)

    def session_capacities(self) -> dict[str, int]:
        with self._lock:
            return self._inner.session_capacities()

    def sessions_expired(self) -> int:
        with self._lock:  # one read of the reclaim counters: no walk to keep outside the lock
            return self._inner.sessions_expired()

    def sessions(self, xc: str | None = None, limit: int = 10000) -> list[SessionEntry]:
        with self._lock:
            return self._inner.sessions(xc, limit)

    # ---- writes --------------------------------------------------------------------------------------

    def ensure_xc(self, name: str, *, maglev_table_size: int | None = None) -> int:
        with self._lock:
            return self._inner.ensure_xc(name, maglev_table_size=maglev_table_size)

    def delete_xc(self, name: str) -> None:
        with self._lock:
            self._inner.delete_xc(name)

    def rename_xc(self, name: str, new_name: str) -> None:
        with self._lock:
            self._inner.rename_xc(name, new_name)

    def set_replicas(self, xc: str, side: Side, replicas: list[ReplicaPort]) -> None:
        with self._lock:
            self._inner.set_replicas(xc, side, replicas)

    def set_neighbours(self, xc: str, side: Side, neighbours: list[Neighbour]) -> None:
        with self._lock:
            self._inner.set_neighbours(xc, side, neighbours)

    def converge(self) -> list[str]:
        with self._lock:
            return self._inner.converge()

    def set_tunnel(self, device: str | None) -> None:
        with self._lock:
            self._inner.set_tunnel(device)

    def set_nodes(self, nodes: Mapping[str, str]) -> None:
        with self._lock:
            self._inner.set_nodes(nodes)

    # ---- lifecycle -----------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock, self._walk:
            self._inner.close()

    def destroy(self) -> None:
        with self._lock, self._walk:
            self._inner.destroy()
