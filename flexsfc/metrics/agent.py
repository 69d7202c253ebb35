"""The exporter in the node agent: one call from the agent's entry point (`flexsfc operator agent`)."""

from collections.abc import Callable, Iterable
from typing import Any

from flexsfc.dataplane.api import DataplaneAPI
from flexsfc.metrics.exporter import DEFAULT_METRICS_PORT, Exporter, MetricsServer
from flexsfc.metrics.labels import PicturePortLabels
from flexsfc.model.types import CrossConnectionSpec


def agent_exporter(
    dataplane: DataplaneAPI,
    loop: Any,
    cross_connections: Callable[[], Iterable[CrossConnectionSpec]] | None = None,
) -> Exporter:
    """An Exporter over the agent's data plane, labelled from the picture its AgentLoop reconciles.

    `loop` is a flexsfc.agent.loop.AgentLoop: its replicas() name the ports, its `reports` history
    feeds the reconcile histograms. `cross_connections` returns the loop's current cross-connections
    (default: `loop.cross_connections` when the loop has that accessor).
    """
    xcs = cross_connections or getattr(loop, "cross_connections", None)
    if xcs is None:
        raise TypeError("agent_exporter: pass cross_connections=<callable>; this AgentLoop has no accessor")
    exporter = Exporter.create(dataplane, PicturePortLabels(xcs, loop.replicas))
    exporter.reconcile.follow(loop.reports)
    return exporter


def serve_agent_metrics(
    dataplane: DataplaneAPI,
    loop: Any,
    cross_connections: Callable[[], Iterable[CrossConnectionSpec]] | None = None,
    *,
    port: int = DEFAULT_METRICS_PORT,
    addr: str = "0.0.0.0",
) -> tuple[Exporter, MetricsServer]:
    """Serve the agent's metrics on http://addr:port/metrics (the port deploy/autoscaling scrapes)."""
    exporter = agent_exporter(dataplane, loop, cross_connections)
    return exporter, exporter.serve(port, addr)
