"""What the runtime tells about itself: events, reaction times, the status with counters, sessions.

Everything here reads; only the replica sets (flexsfc.local.replicasets) and the agent change things.
"""

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from flexsfc.agent.reconciler import ReconcileReport
from flexsfc.agent.types import ReplicaPhase, dataplane_name
from flexsfc.dataplane.api import DataplaneReader, PortStats, ReplicaState, SessionEntry
from flexsfc.local.pod import Pod
from flexsfc.local.status import (
    ChainStatus,
    CrossConnectionStatus,
    DeploymentStatus,
    PodCounters,
    PodStatus,
    Reaction,
    RuntimeEvent,
    RuntimeStatus,
    SessionRecord,
)
from flexsfc.model.types import CrossConnectionSpec, Plan, Side

log = logging.getLogger(__name__)

FIRST_PACKET_WATCH_SECONDS = 10.0
FIRST_PACKET_POLL_SECONDS = 0.001  # for the first FIRST_PACKET_FAST_SECONDS, then 10x slower
FIRST_PACKET_FAST_SECONDS = 0.5
STATUS_SESSION_LIMIT = 200_000
EVENTS_KEPT = 500
STATUS_EVENTS = 30
STATUS_REACTIONS = 50
# Data-plane events that say something is wrong or at a limit; `flexsfc status` shows them when not 0.
ANOMALY_EVENTS = ("session_collision", "session_table_full", "events_lost")


def steps_ms(report: ReconcileReport | None) -> dict[str, float]:
    return report.step_ms() if report is not None else {}


class Observer:
    """The runtime's event log and reaction times, and its status read from the data plane."""

    def __init__(self, dataplane: DataplaneReader) -> None:
        self.dataplane = dataplane
        self.reactions: list[Reaction] = []
        self.events: list[RuntimeEvent] = []
        self._error_sink: list[str] | None = None  # errors during shutdown, reported by `down`
        self._lock = threading.Lock()
        # Simulated nodes (`up --nodes N`): a pod's ports are in its node's data plane, which this
        # process reads after a refresh (node -> that node's reader; set by the runtime).
        self.node_reader: Callable[[str], DataplaneReader | None] | None = None

    def collect_errors(self) -> None:
        """From now on, keep every error event for `errors()` (what `down` reports)."""
        with self._lock:
            self._error_sink = []

    def errors(self) -> list[str]:
        with self._lock:
            return list(self._error_sink or [])

    def event(self, message: str, report: ReconcileReport | None = None, *, error: bool = False) -> None:
        entry = RuntimeEvent(
            time.time(),
            message,
            error,
            None if report is None else report.total_ns / 1e6,
            None if report is None else steps_ms(report),
        )
        with self._lock:
            self.events.append(entry)
            del self.events[:-EVENTS_KEPT]
            if error and self._error_sink is not None:
                self._error_sink.append(message)
        (log.error if error else log.info)("%s", message)

    def reaction(
        self, pod: Pod, kind: str, since: float, until: float, report: ReconcileReport | None
    ) -> None:
        reaction = Reaction(pod.name, pod.nf, kind, (until - since) * 1e3, steps_ms(report))
        with self._lock:
            self.reactions.append(reaction)

    def watch_first_packet(self, pod: Pod, report: ReconcileReport | None) -> bool:
        """Poll the per-port counters until the new replica receives its first packet (False: none came)."""
        ports = {r.host_ifindex for r in pod.records}
        reader = self.node_reader(pod.node) if self.node_reader is not None and pod.node else None
        dataplane = reader if reader is not None else self.dataplane
        start = time.monotonic()
        while time.monotonic() - start < FIRST_PACKET_WATCH_SECONDS and pod.phase is ReplicaPhase.RUNNING:
            stats = dataplane.port_stats()
            if any(stats[i].to_port_packets > 0 for i in ports if i in stats):
                pod.times.first_packet = time.time()
                self.reaction(pod, "running->first packet", pod.times.running, pod.times.first_packet, report)
                return True
            fast = time.monotonic() - start < FIRST_PACKET_FAST_SECONDS
            time.sleep(FIRST_PACKET_POLL_SECONDS if fast else 10 * FIRST_PACKET_POLL_SECONDS)
        return False

    # -- status ----------------------------------------------------------------------------------

    def read_dataplane(self) -> "DataplaneReading":
        try:
            stats = self.dataplane.port_stats()
            counters_time = time.monotonic()  # rates (status, autoscale) use exact intervals
            sessions = self.dataplane.sessions(limit=STATUS_SESSION_LIMIT)
            drops = self.dataplane.drop_stats()
        except Exception as exc:  # a status read must not take the supervisor down
            log.warning("data plane read failed: %s", exc)
            return DataplaneReading({}, None, Counter(), Counter(), {})
        port_sessions: Counter[int] = Counter()
        sampled: Counter[str] = Counter()
        for entry in sessions:
            port_sessions[entry.ifindex_a] += 1
            port_sessions[entry.ifindex_b] += 1
            sampled[entry.xc] += 1
        # Per cross-connection: the data plane's exact count of confirmed sessions (counters, no walk),
        # not the sample above, which stops at STATUS_SESSION_LIMIT entries (it stands in only when
        # the counters cannot be read).
        xc_sessions: Mapping[str, int] = sampled
        anomalies: dict[str, int] = {}
        try:
            xc_sessions = self.dataplane.session_counts()
            events = self.dataplane.event_stats()
            anomalies = {name: events[name] for name in ANOMALY_EVENTS if events.get(name)}
        except Exception as exc:
            log.warning("session count or event read failed: %s", exc)
        return DataplaneReading(stats, counters_time, port_sessions, xc_sessions, drops, anomalies)

    def status(
        self,
        reading: "DataplaneReading",
        plan: Plan | None,
        source: str,
        pods: Iterable[PodStatus],
        deployments: Iterable[DeploymentStatus],
    ) -> RuntimeStatus:
        """Chains, cross-connections, deployments and pods with per-replica counters and sessions."""
        with self._lock:
            reactions, events = tuple(self.reactions[-STATUS_REACTIONS:]), tuple(self.events[-STATUS_EVENTS:])
        return RuntimeStatus(
            supervisor_pid=os.getpid(),
            counters_time=reading.counters_time,
            source=source,
            chains=tuple(
                ChainStatus(c.name, c.namespace, tuple(nf.name for nf in c.network_functions))
                for c in (plan.chains if plan else [])
            ),
            cross_connections=tuple(
                self._xc_status(xc, reading.xc_sessions.get(dataplane_name(xc), 0))
                for xc in (plan.cross_connections if plan else [])
            ),
            deployments=tuple(deployments),
            pods=tuple(pods),
            drops=reading.drops,
            anomalies=reading.anomalies,
            reactions=reactions,
            events=events,
        )

    def _xc_status(self, xc: CrossConnectionSpec, sessions: int) -> CrossConnectionStatus:
        counts: dict[tuple[Side, ReplicaState], int] = Counter()
        for side in Side:
            try:
                ports = self.dataplane.replicas(dataplane_name(xc), side)
            except Exception:
                ports = []
            for port in ports:
                counts[(side, port.state)] += 1
        return CrossConnectionStatus(
            name=xc.name,
            namespace=xc.namespace,
            chain=xc.chain,
            side_a=f"{xc.side_a.nf}:{xc.side_a.interface}",
            side_b=f"{xc.side_b.nf}:{xc.side_b.interface}",
            mode=f"{xc.side_a.mode}/{xc.side_b.mode}",
            sessions=sessions,
            active_a=counts[(Side.A, ReplicaState.ACTIVE)],
            draining_a=counts[(Side.A, ReplicaState.DRAINING)],
            active_b=counts[(Side.B, ReplicaState.ACTIVE)],
            draining_b=counts[(Side.B, ReplicaState.DRAINING)],
        )

    def sessions(
        self, pods: Iterable[Pod], xc: str | None = None, limit: int = STATUS_SESSION_LIMIT
    ) -> list[SessionRecord]:
        """Session table entries with the pods on both ends (what the demo's flow mapping reads).

        `xc` is a cross-connection's data-plane name ("namespace/name", `dataplane_name`).
        """
        owners = {r.host_ifindex: p.name for p in pods for r in p.records}
        return [_session_record(e, owners) for e in self.dataplane.sessions(xc, limit=limit)]


@dataclass(frozen=True)
class DataplaneReading:
    """One read of the data plane's counters and session table, for one status."""

    stats: Mapping[int, PortStats]
    counters_time: float | None  # None: the read failed
    port_sessions: Mapping[int, int]
    xc_sessions: Mapping[str, int]
    drops: dict[str, int]
    anomalies: dict[str, int] = field(default_factory=dict)

    def pod_status(self, pod: Pod) -> PodStatus:
        """The pod with its counters: summed over its ports, sessions at either end."""
        ports = [self.stats[r.host_ifindex] for r in pod.records if r.host_ifindex in self.stats]
        counters = PodCounters(
            to_packets=sum(p.to_port_packets for p in ports),
            to_bytes=sum(p.to_port_bytes for p in ports),
            from_packets=sum(p.from_port_packets for p in ports),
            from_bytes=sum(p.from_port_bytes for p in ports),
            sessions=sum(self.port_sessions.get(r.host_ifindex, 0) for r in pod.records),
            sessions_created=sum(p.sessions_created for p in ports),
        )
        return pod.status(counters)


def _session_record(entry: SessionEntry, owners: Mapping[int, str]) -> SessionRecord:
    return SessionRecord(
        xc=entry.xc,
        proto=entry.proto,
        addr_lo=entry.addr_lo,
        port_lo=entry.port_lo,
        addr_hi=entry.addr_hi,
        port_hi=entry.port_hi,
        pod_a=owners.get(entry.ifindex_a, ""),
        pod_b=owners.get(entry.ifindex_b, ""),
    )
