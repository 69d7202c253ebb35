"""What a data plane tells about its traffic: port and drop counters, events and the session tables.

A part of flexsfc.dataplane.facade.Dataplane (its base class): reads only, from the maps the
facade opened (the counters, the session tables and their counters, the flow cache).
"""

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from flexsfc.dataplane import maps
from flexsfc.dataplane.api import PortStats, SessionEntry
from flexsfc.dataplane.pins import Pins
from flexsfc.dataplane.ports.table import PortTable
from flexsfc.dataplane.registry import XcLayout, XcRegistry
from flexsfc.dataplane.sessions import SessionCounters, SweepReport, sweep
from flexsfc.dataplane.stats import Counters, SessionReader
from flexsfc.model.types import SessionTimeouts


class TrafficReads:
    """The statistics reads of the data plane (DataplaneReader's counters and sessions)."""

    _pins: Pins
    _ports: PortTable
    _xcs: XcRegistry
    _counters: Counters
    _sessions: SessionReader
    _session_counters: SessionCounters
    _flow_cache: npt.NDArray[np.uint32]

    def _xc(self, name: str) -> XcLayout:
        raise NotImplementedError

    def port_stats(self) -> dict[int, PortStats]:
        return self._ports.stats()

    def drop_stats(self) -> dict[str, int]:
        return self._counters.drops()

    def event_stats(self) -> dict[str, int]:
        """Sessions created/re-hashed, ARP and ND replies, fragments followed, neighbours learned."""
        return self._counters.events()

    def session_count(self, xc: str | None = None) -> int:
        """Confirmed sessions (seen from both sides) of one cross-connection or of all: exact, from
        counters, without walking the tables (`session_table_stats()` has the unconfirmed flows)."""
        by_id = self.session_counts_by_id()
        return sum(by_id.values()) if xc is None else by_id.get(self._xc(xc).id, 0)

    def session_counts(self) -> dict[str, int]:
        """Confirmed sessions per cross-connection, from counters (the metrics exporter's gauge)."""
        by_id = self.session_counts_by_id()
        return {name: by_id.get(xc_id, 0) for xc_id, name in self._xcs.names().items()}

    def session_counts_by_id(self) -> dict[int, int]:
        """Sessions per cross-connection id (those with any). Reads the session maps only, never the
        in-memory indexes a writer changes: safe from another thread without the writer's lock, as
        long as the data plane is not closed meanwhile (flexsfc.agent.locked counts this way).
        Confirmed sessions, from the counters (flexsfc.dataplane.sessions): three syscalls, exact."""
        return self._session_counters.counts_by_id()

    def session_capacities(self) -> dict[str, int]:
        """Capacity of each confirmed table by family: "ipv4" (`sessions`: IPv4 and ARP), "ipv6"."""
        return {"ipv4": self._sessions.capacity, "ipv6": self._sessions.capacity_v6}

    def sessions_expired(self) -> int:
        """Confirmed sessions the agent's sweep freed (the reclaim counters: one syscall, no walk;
        they start again from zero when an upgrade replaces them)."""
        return int(self._session_counters.reclaimed().sum())

    def session_table_stats(self) -> dict[str, int]:
        """The session tables at a glance: confirmed sessions (exact) and capacities, unconfirmed
        flows (a walk of their LRU: at most its capacity), and the cumulative counts of flows
        created (first packets), confirmed, refused a confirmation for a full table, expired by the
        agent, and dropped unconfirmed (created - confirmed - still unconfirmed: evicted by the LRU or
        never answered). Reads map descriptors only, like `session_counts_by_id`."""
        events = self._counters.events()
        inserted, reclaimed = self._session_counters.inserted(), self._session_counters.reclaimed()
        unconfirmed = sum(self._sessions.walk_unconfirmed_by_id().values())
        created, confirmed = events["session_created"], events["session_confirmed"]
        return {
            "confirmed": int(max(inserted.sum() - reclaimed.sum(), 0)),
            "confirmed_capacity": self._sessions.capacity + self._sessions.capacity_v6,
            "unconfirmed": unconfirmed,
            "unconfirmed_capacity": sum(self._sessions.capacity_unconfirmed),
            "created": created,
            "confirmed_total": confirmed,
            "table_full": events["session_table_full"],
            "expired": int(reclaimed.sum()),
            "unconfirmed_dropped": max(created - confirmed - unconfirmed, 0),
        }

    def sweep_sessions(
        self, timeouts: Mapping[str, SessionTimeouts], default: SessionTimeouts | None = None
    ) -> SweepReport:
        """Free the confirmed sessions idle for longer than their timeout: `timeouts` by
        cross-connection name, `default` for the others (the agent's sweep, flexsfc.dataplane.sessions)."""
        ids = self._xcs.ids()
        by_id = {ids[name]: value for name, value in timeouts.items() if name in ids}
        return self.sweep_sessions_by_id(by_id, default or SessionTimeouts())

    def sweep_sessions_by_id(
        self, timeouts: Mapping[int, SessionTimeouts], default: SessionTimeouts, *, now: int | None = None
    ) -> SweepReport:
        """`sweep_sessions` by xc id: map descriptors only, safe without the writer's lock (like
        `session_counts_by_id`). `now`: the session clock to judge by (tests)."""
        return sweep(self._pins, timeouts, default, now=now)

    def sessions(self, xc: str | None = None, limit: int = 10000) -> list[SessionEntry]:
        xc_id = None if xc is None else self._xc(xc).id
        return self._sessions.entries(self._xcs.names(), xc_id, limit)

    def cached_flows(self, xc_id: int) -> list[maps.FlowCacheEntry]:
        """Every CPU's flow-cache entries holding a session of cross-connection id `xc_id`."""
        rows = self._flow_cache[self._flow_cache[:, 0] == xc_id]
        return [maps.FlowCacheEntry.from_buffer_copy(row.tobytes()) for row in rows]
