"""Prometheus exporter of the node agent: traffic per NF replica, sessions, drops, reconcile latency.

The collector reads the data plane when Prometheus scrapes (no polling loop, nothing cached), so a
scrape always shows the kernel's counters as they are. Directions are seen from the NF replica:
rx = delivered to the replica by a cross-connection (PortStats.to_port_*), tx = emitted by the
replica into the cross-connection (PortStats.from_port_*).
"""

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flexsfc.dataplane.api import DataplaneReader, PortStats, ReplicaState
from flexsfc.dataplane.tunnels import is_remote_key
from flexsfc.metrics.labels import PortLabel, PortLabels
from flexsfc.model.types import Side

log = logging.getLogger(__name__)

DEFAULT_METRICS_PORT = 9101  # the agent's /metrics (deploy/autoscaling/metrics-service.yaml)

PORT_LABELS = ("namespace", "pod", "chain", "nf", "interface", "cross_connection", "side")
XC_LABELS = ("namespace", "chain", "cross_connection")

# Reconcile passes take tens of microseconds to tens of milliseconds (map updates, tc attach).
RECONCILE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


# Both kinds take add_metric(label values, value).
_Family = CounterMetricFamily | GaugeMetricFamily


def _port_values(label: PortLabel) -> list[str]:
    return [getattr(label, name) for name in PORT_LABELS]


class DataplaneCollector(Collector):
    """Custom collector: every scrape reads port, drop, session and replica state from the data plane.

    Ports the index cannot name (a replica appearing between the reconcile and the index update) are
    not exported per replica; `flexsfc_exporter_unlabelled_ports` counts them so the gap is visible.
    """

    def __init__(self, dataplane: DataplaneReader, labels: PortLabels, *, with_sessions: bool = True) -> None:
        self.dataplane = dataplane
        self.labels = labels
        self.with_sessions = with_sessions
        self._lock = threading.Lock()  # scrapes may overlap; the data plane handle is shared

    def describe(self) -> Iterator[Metric]:
        # Describing without reading the kernel keeps registration cheap and side-effect free.
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            try:
                families = self._read()
            except Exception:
                log.exception("reading the data plane for a scrape failed")
                up = GaugeMetricFamily("flexsfc_dataplane_up", "1 when the data plane could be read.")
                up.add_metric([], 0)
                return iter([up])
        return iter(families)

    def _families(self) -> list[_Family]:
        per_port = {
            "rx_packets": "Packets delivered to the NF replica's interface by the cross-connection.",
            "rx_bytes": "Bytes delivered to the NF replica's interface by the cross-connection.",
            "tx_packets": "Packets the NF replica's interface emitted into the cross-connection.",
            "tx_bytes": "Bytes the NF replica's interface emitted into the cross-connection.",
            "sessions_created": "Sessions whose first packet was balanced to this replica interface.",
        }
        families: list[_Family] = [
            CounterMetricFamily(f"flexsfc_nf_{name}", doc, labels=PORT_LABELS)
            for name, doc in per_port.items()
        ]
        families += [
            GaugeMetricFamily(
                "flexsfc_xc_active_sessions", "Sessions in the cross-connection's table.", labels=XC_LABELS
            ),
            GaugeMetricFamily(
                "flexsfc_xc_replicas",
                "Replica ports per cross-connection side and state (active takes new sessions).",
                labels=(*XC_LABELS, "side", "nf", "state"),
            ),
            CounterMetricFamily(
                "flexsfc_dataplane_drops", "Packets the data plane dropped, by reason.", labels=("reason",)
            ),
            CounterMetricFamily(
                "flexsfc_dataplane_events",
                "Data-plane events: sessions created/re-hashed, ARP/ND answered, fragments and ICMP errors "
                "followed, session collisions (a second live replica sending an established flow).",
                labels=("event",),
            ),
            GaugeMetricFamily(
                "flexsfc_dataplane_session_capacity",
                "Capacity of the confirmed session table, by family (ipv4 also holds ARP).",
                labels=("family",),
            ),
            CounterMetricFamily(
                "flexsfc_dataplane_sessions_expired",
                "Confirmed sessions the agent's sweep freed after their idle timeout.",
            ),
            GaugeMetricFamily(
                "flexsfc_exporter_unlabelled_ports", "Data-plane ports no known pod interface maps to."
            ),
            GaugeMetricFamily("flexsfc_dataplane_up", "1 when the data plane could be read."),
        ]
        return families

    def _read(self) -> list[_Family]:
        families = self._families()
        (
            rx_packets,
            rx_bytes,
            tx_packets,
            tx_bytes,
            created,
            sessions,
            replicas,
            drops,
            events,
            capacity,
            expired,
            unlabelled,
            up,
        ) = families
        unknown = 0
        stats: dict[int, PortStats] = self.dataplane.port_stats()
        for ifindex, port in sorted(stats.items()):
            if is_remote_key(ifindex):
                continue  # a replica on another node: its own node exports its counters
            label = self.labels.port(ifindex)
            if label is None:
                unknown += 1
                continue
            values = _port_values(label)
            rx_packets.add_metric(values, port.to_port_packets)
            rx_bytes.add_metric(values, port.to_port_bytes)
            tx_packets.add_metric(values, port.from_port_packets)
            tx_bytes.add_metric(values, port.from_port_bytes)
            created.add_metric(values, port.sessions_created)

        xcs = sorted(self.dataplane.list_xcs())
        counts = self._session_counts(xcs) if self.with_sessions else {}
        for xc in xcs:
            xc_label = self.labels.cross_connection(xc)
            namespace, chain = (xc_label.namespace, xc_label.chain) if xc_label else ("", "")
            # The object's own name beside its namespace label, as in the per-port series.
            name = xc_label.name if xc_label and xc_label.name else xc
            if xc in counts:
                sessions.add_metric([namespace, chain, name], counts[xc])
            for side in Side:
                nf = xc_label.nf(side) if xc_label else ""
                ports = self.dataplane.replicas(xc, side)
                for state in ReplicaState:
                    count = sum(1 for p in ports if p.state is state)
                    replicas.add_metric([namespace, chain, name, side.value, nf, state.value], count)

        for reason, count in sorted(self.dataplane.drop_stats().items()):
            drops.add_metric([reason], count)
        for event, count in sorted(self.dataplane.event_stats().items()):
            events.add_metric([event], count)
        # Cheap reads (map attributes, the reclaim counters), never a walk of a table.
        for family, entries in sorted(self.dataplane.session_capacities().items()):
            capacity.add_metric([family], entries)
        expired.add_metric([], self.dataplane.sessions_expired())
        unlabelled.add_metric([], unknown)
        up.add_metric([], 1)
        return families

    def _session_counts(self, xcs: list[str]) -> dict[str, int]:
        # session_count(xc) walks the whole session table: all counts in one walk (session_counts())
        # save a walk per cross-connection on large tables.
        counts = self.dataplane.session_counts()
        return {xc: int(counts.get(xc, 0)) for xc in xcs}


class ReconcileMetrics(Collector):
    """Reconcile latency histograms of the agent loop, fed either way:

    - push: pass :meth:`observe` as `AgentLoop(on_report=...)` (it takes (reason, ReconcileReport));
    - pull: :meth:`follow` the loop's `reports` history (a deque of (time, reason, report)); each
      scrape first records the reports added since the previous one, so a front end needs no hook.
      Reports that fell out of the history between two scrapes are missed (the loop keeps 200).
    """

    def __init__(self) -> None:
        self.duration = Histogram(
            "flexsfc_agent_reconcile_duration_seconds",
            "Wall time of one reconcile pass (desired picture -> data plane maps).",
            labelnames=("result", "changed"),
            buckets=RECONCILE_BUCKETS,
            registry=None,
        )
        self.step_duration = Histogram(
            "flexsfc_agent_reconcile_step_duration_seconds",
            "Wall time of one reconcile step (ensure_xc, set_replicas, set_neighbours, delete_xc, read).",
            labelnames=("step",),
            buckets=RECONCILE_BUCKETS,
            registry=None,
        )
        self.errors = Counter(
            "flexsfc_agent_reconcile_errors",
            "Reconcile errors (one per failed cross-connection operation).",
            registry=None,
        )
        self._followed: list[tuple[Sequence[Any], list[Any]]] = []  # (history, [last entry seen])
        self._lock = threading.Lock()

    def observe(self, reason: str, report: Any) -> None:
        """Record a flexsfc.agent.reconciler.ReconcileReport (typed loosely: no import cycle)."""
        result = "error" if report.errors else "ok"
        changed = "true" if report.changed else "false"
        self.duration.labels(result=result, changed=changed).observe(report.total_ns / 1e9)
        for step in report.steps:
            self.step_duration.labels(step=step.step).observe(step.ns / 1e9)
        if report.errors:
            self.errors.inc(len(report.errors))

    def follow(self, history: Sequence[Any]) -> None:
        """Record, at each scrape, the (time, reason, report) entries appended to `history` since."""
        with self._lock:
            self._followed.append((history, [None]))

    def _catch_up(self) -> None:
        with self._lock:
            for history, last in self._followed:
                entries = list(history)  # one C-level copy: safe against concurrent appends
                start = 0
                for index in range(len(entries) - 1, -1, -1):
                    if entries[index] is last[0]:
                        start = index + 1
                        break
                for _, reason, report in entries[start:]:
                    self.observe(reason, report)
                if entries:
                    last[0] = entries[-1]

    def describe(self) -> Iterator[Metric]:
        for metric in (self.duration, self.step_duration, self.errors):
            yield from metric.describe()

    def collect(self) -> Iterator[Metric]:
        self._catch_up()
        for metric in (self.duration, self.step_duration, self.errors):
            yield from metric.collect()


@dataclass
class Exporter:
    """A registry with the data-plane collector and the reconcile histograms."""

    registry: CollectorRegistry
    collector: DataplaneCollector
    reconcile: ReconcileMetrics

    @classmethod
    def create(
        cls, dataplane: DataplaneReader, labels: PortLabels, *, with_sessions: bool = True
    ) -> "Exporter":
        registry = CollectorRegistry()
        collector = DataplaneCollector(dataplane, labels, with_sessions=with_sessions)
        reconcile = ReconcileMetrics()
        registry.register(collector)
        registry.register(reconcile)
        return cls(registry, collector, reconcile)

    def serve(self, port: int, addr: str = "0.0.0.0") -> "MetricsServer":
        return serve(self.registry, port, addr)


@dataclass
class MetricsServer:
    server: Any  # wsgiref WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(registry: CollectorRegistry, port: int, addr: str = "0.0.0.0") -> MetricsServer:
    """Serve /metrics on addr:port from a daemon thread (port 0 picks a free one)."""
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return MetricsServer(server, thread)
