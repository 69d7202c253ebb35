"""The exporter in the node agent: one call from the agent's entry point (`flexsfc operator agent`)."""

from collections.abc import Callable, Iterable

from flexsfc.agent.loop import AgentLoop
from flexsfc.dataplane.api import DataplaneReader
from flexsfc.metrics.exporter import DEFAULT_METRICS_PORT, Exporter, MetricsServer
from flexsfc.metrics.labels import PicturePortLabels
from flexsfc.model.types import CrossConnectionSpec


def agent_exporter(
    dataplane: DataplaneReader,
    loop: AgentLoop,
    cross_connections: Callable[[], Iterable[CrossConnectionSpec]] | None = None,
) -> Exporter:
    """An Exporter over the agent's data plane, labelled from the picture its AgentLoop reconciles.

    The loop's replicas() name the ports, its `reports` history feeds the reconcile histograms.
    `cross_connections` returns the current cross-connections (default: the loop's).
    """
    exporter = Exporter.create(
        dataplane, PicturePortLabels(cross_connections or loop.cross_connections, loop.replicas)
    )
    exporter.reconcile.follow(loop.reports)
    return exporter


def serve_agent_metrics(
    dataplane: DataplaneReader,
    loop: AgentLoop,
    cross_connections: Callable[[], Iterable[CrossConnectionSpec]] | None = None,
    *,
    port: int = DEFAULT_METRICS_PORT,
    addr: str = "0.0.0.0",
) -> tuple[Exporter, MetricsServer]:
    """Serve the agent's metrics on http://addr:port/metrics (the port deploy/autoscaling scrapes)."""
    exporter = agent_exporter(dataplane, loop, cross_connections)
    return exporter, exporter.serve(port, addr)
