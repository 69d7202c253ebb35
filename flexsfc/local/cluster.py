"""The runtime's agent when it simulates nodes: the picture pushed to every node agent.

With one node the runtime runs the agent loop in-process (flexsfc.agent.loop.AgentLoop). With
`--nodes N` every node has its own agent process (flexsfc.local.nodes); `ClusterAgent` offers the
replica sets the same calls as the loop (upsert/remove a replica, `sync`) and turns `sync` into one
push of the whole cluster picture (flexsfc.agent.picture) to each live node, returning when every
agent has reconciled it: a replica's Running step is reported once every node has programmed it.
"""

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from flexsfc.agent.desired import ChainSettingsMap
from flexsfc.agent.picture import Picture, ReplicaEntry
from flexsfc.agent.reconciler import ReconcileError, ReconcileReport
from flexsfc.agent.types import ChainKey, NfReplica
from flexsfc.local.nodes import SimNode, SimulatedNodes
from flexsfc.model.types import ChainSettings, CrossConnectionSpec

ReportListener = Callable[[str, ReconcileReport], None]


class ReplicaAgent(Protocol):
    """What the replica sets need of the agent: the in-process loop or the cluster of node agents."""

    def upsert_replica(self, replica: NfReplica) -> None: ...

    def remove_replica(self, uid: str) -> None: ...

    def replicas(self) -> list[NfReplica]: ...

    def sync(self, reason: str = "sync") -> ReconcileReport: ...


class ClusterAgent:
    def __init__(self, nodes: SimulatedNodes, *, on_report: ReportListener | None = None) -> None:
        self.nodes = nodes
        self._on_report = on_report
        self._lock = threading.RLock()  # one push round at a time: agents see pictures in order
        self._xcs: list[CrossConnectionSpec] = []
        self._settings: dict[ChainKey, ChainSettings] = {}
        self._replicas: dict[str, NfReplica] = {}
        self.reports: deque[tuple[float, str, ReconcileReport]] = deque(maxlen=200)
        self.converged = True  # each agent converges its own data plane
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(nodes.all)), thread_name_prefix="flexsfc-push")

    # -- picture (the AgentLoop calls the runtime uses) ------------------------------------------

    def set_cross_connections(
        self, xcs: Iterable[CrossConnectionSpec], settings: ChainSettingsMap | None = None
    ) -> None:
        with self._lock:
            self._xcs = list(xcs)
            # The runtime keys settings by (namespace, chain); a bare name cannot be placed on the wire.
            self._settings = {k: v for k, v in (settings or {}).items() if isinstance(k, tuple)}

    def upsert_replica(self, replica: NfReplica) -> None:
        with self._lock:
            self._replicas[replica.uid] = replica

    def remove_replica(self, uid: str) -> None:
        with self._lock:
            self._replicas.pop(uid, None)

    def replicas(self) -> list[NfReplica]:
        with self._lock:
            return list(self._replicas.values())

    def cross_connections(self) -> list[CrossConnectionSpec]:
        with self._lock:
            return list(self._xcs)

    def start_sweeper(self) -> None:
        """Each node agent sweeps its own sessions."""

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def picture(self) -> Picture:
        with self._lock:
            nodes = self.nodes.addresses()
            entries = tuple(
                ReplicaEntry(r.uid, r.namespace, r.pod_name, r.nf, r.phase, r.node)
                for r in sorted(self._replicas.values(), key=lambda r: r.uid)
                if r.node in nodes  # a failed node's replicas are gone with it
            )
            return Picture("", nodes, tuple(self._xcs), dict(self._settings), entries)

    # -- reconciling -----------------------------------------------------------------------------

    def sync(self, reason: str = "sync") -> ReconcileReport:
        """Push the picture to every live node; raises ReconcileError naming the nodes that failed."""
        started = time.perf_counter_ns()
        with self._lock:
            picture = self.picture()
            live = self.nodes.live()
            results = list(self._pool.map(lambda node: self._push(node, picture), live))
        report = ReconcileReport()
        for node, (summary, errors, changed) in zip(live, results, strict=True):
            if changed:
                report.sides_updated.append(f"{node.name}: {summary}")
            report.errors.extend(f"{node.name}: {e}" for e in errors)
        report.total_ns = time.perf_counter_ns() - started
        self.reports.append((time.time(), reason, report))
        if self._on_report is not None:
            self._on_report(reason, report)
        if report.errors:
            raise ReconcileError(report)
        return report

    def _push(self, node: SimNode, picture: Picture) -> tuple[str, list[str], bool]:
        try:
            result = self.nodes.push(node, picture.for_node(node.name).to_json())
        except Exception as exc:
            return "", [f"push failed: {exc}"], False
        return str(result.get("summary", "")), list(result.get("errors", [])), bool(result.get("changed"))
