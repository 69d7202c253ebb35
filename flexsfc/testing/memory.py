"""An in-memory data plane for tests that run the reconciler, the node agent or the local runtime
without root: it keeps what they program and answers their reads from that; no counters, no sessions
(a test that needs some overrides the reads)."""

from collections.abc import Mapping

from flexsfc.dataplane.api import Neighbour, PortStats, ReplicaPort, SessionEntry
from flexsfc.dataplane.sessions import SweepReport
from flexsfc.model.types import SessionTimeouts, Side


class MemoryDataplane:
    """The Dataplane calls the reconciler, the agents and the runtime make, kept in memory."""

    def __init__(self, pin_dir: str = "") -> None:  # the runtime opens one at a pin dir: nothing pinned
        self.xcs: dict[str, int] = {}
        self.sides: dict[tuple[str, Side], list[ReplicaPort]] = {}
        self.neigh: dict[tuple[str, Side], list[Neighbour]] = {}
        self.destroyed = False
        self.tunnel: str | None = None
        self.nodes: dict[str, str] = {}

    def ensure_xc(self, name: str, *, maglev_table_size: int | None = None) -> int:
        return self.xcs.setdefault(name, len(self.xcs) + 1)

    def delete_xc(self, name: str) -> None:
        self.xcs.pop(name, None)

    def rename_xc(self, name: str, new_name: str) -> None:
        self.xcs[new_name] = self.xcs.pop(name)

    def list_xcs(self) -> dict[str, int]:
        return dict(self.xcs)

    def set_replicas(self, xc: str, side: Side, replicas: list[ReplicaPort]) -> None:
        self.sides[(xc, side)] = list(replicas)

    def replicas(self, xc: str, side: Side) -> list[ReplicaPort]:
        return list(self.sides.get((xc, side), []))

    def set_tunnel(self, device: str | None) -> None:
        self.tunnel = device

    def set_nodes(self, nodes: Mapping[str, str]) -> None:
        self.nodes = dict(nodes)

    def set_neighbours(self, xc: str, side: Side, neighbours: list[Neighbour]) -> None:
        self.neigh[(xc, side)] = list(neighbours)

    def neighbours(self, xc: str, side: Side, *, learned: bool = False) -> list[Neighbour]:
        return [] if learned else list(self.neigh.get((xc, side), []))

    def port_stats(self) -> dict[int, PortStats]:
        return {}

    def drop_stats(self) -> dict[str, int]:
        return {}

    def sessions(self, xc: str | None = None, limit: int = 10000) -> list[SessionEntry]:
        return []

    def session_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.sessions():
            counts[entry.xc] = counts.get(entry.xc, 0) + 1
        return counts

    def event_stats(self) -> dict[str, int]:
        return {}

    def session_counts_by_id(self) -> dict[int, int]:
        ids = self.list_xcs()
        return {ids[name]: count for name, count in self.session_counts().items() if name in ids}

    def converge(self) -> list[str]:
        return []  # nothing pinned: nothing a dead writer could have left half done

    def sweep_sessions(self, timeouts: Mapping[str, SessionTimeouts]) -> SweepReport:
        return SweepReport()  # no session tables: nothing idle

    def sweep_sessions_by_id(
        self, timeouts: Mapping[int, SessionTimeouts], default: SessionTimeouts
    ) -> SweepReport:
        return SweepReport()

    def session_capacities(self) -> dict[str, int]:
        return {}  # no session tables: no capacity series (a zero would read as "full")

    def sessions_expired(self) -> int:
        return 0

    def close(self) -> None:
        pass

    def destroy(self) -> None:
        self.destroyed = True
