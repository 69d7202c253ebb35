"""The exporter on the local runtime: the same metrics a cluster's node agent serves, for one machine."""

from typing import Any

from flexsfc.metrics.exporter import Exporter, MetricsServer
from flexsfc.metrics.labels import PicturePortLabels


def runtime_exporter(runtime: Any) -> Exporter:
    """An Exporter over an in-process `flexsfc.local.runtime.Runtime`: its data plane, its picture
    (plan and agent replicas) for the labels, its agent's report history for the reconcile histograms.
    """
    labels = PicturePortLabels(
        lambda: runtime.plan.cross_connections if runtime.plan is not None else [],
        runtime.agent.replicas,
    )
    exporter = Exporter.create(runtime.dataplane, labels)
    exporter.reconcile.follow(runtime.agent.reports)
    return exporter


def serve_runtime_metrics(runtime: Any, port: int, addr: str = "127.0.0.1") -> tuple[Exporter, MetricsServer]:
    """Serve the runtime's metrics on http://addr:port/metrics (loopback by default)."""
    exporter = runtime_exporter(runtime)
    return exporter, exporter.serve(port, addr)
