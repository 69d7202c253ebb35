"""`flexsfc operator controller|agent`: the Kubernetes control plane, Kopf running in-process."""

import logging
import secrets
from typing import Any

import click

from flexsfc.model.constants import (
    DEFAULT_AGENT_RELIST_SECONDS,
    DEFAULT_CNI_STATE_DIR,
    DEFAULT_PIN_DIR,
    DEFAULT_TUNNEL_DEVICE,
    DEFAULT_TUNNEL_PORT,
)

SERVER_HELP = "API server URL (e.g. from `kubectl proxy`); default: in-cluster service account or kubeconfig."


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def operator(verbose: bool) -> None:
    """Run the chain controller (one per cluster) or the node agent (one per node)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@operator.command()
@click.option("--server", help=SERVER_HELP)
@click.option(
    "--peering", help="Kopf ClusterKopfPeering name: only one controller is active among those sharing it."
)
@click.option(
    "--priority",
    type=int,
    help="Peering priority; default random, so that replicas of one Deployment never tie (ties pause all).",
)
@click.option("--liveness", help="Serve Kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz.")
def controller(server: str | None, peering: str | None, priority: int | None, liveness: str | None) -> None:
    """Chain controller: ServiceFunctionChain -> CrossConnections, status and Events."""
    import kopf

    from flexsfc.operator import controller_handlers
    from flexsfc.operator.kube import KubeTarget
    from flexsfc.operator.runner import run_foreground

    registry, _ = controller_handlers.build_registry(KubeTarget(server))
    settings = kopf.OperatorSettings()
    chosen = priority if priority is not None else secrets.randbelow(2**31)
    controller_handlers.configure(settings, peering=peering, priority=chosen)
    run_foreground(registry, settings, standalone=peering is None, liveness=liveness)


@operator.command()
@click.option("--server", help=SERVER_HELP)
@click.option("--node", envvar="NODE_NAME", required=True, help="This node's name (env NODE_NAME).")
@click.option(
    "--pin-dir", default=DEFAULT_PIN_DIR, show_default=True, help="bpffs directory of the pinned maps."
)
@click.option(
    "--cni-state-dir",
    default=DEFAULT_CNI_STATE_DIR,
    show_default=True,
    help="flexsfc-cni's records on this node.",
)
@click.option("--resync-seconds", default=10.0, show_default=True, help="Periodic re-read and reconcile.")
@click.option(
    "--relist-seconds",
    default=DEFAULT_AGENT_RELIST_SECONDS,
    show_default=True,
    help="Periodic re-list of pods and CrossConnections (heals missed DELETED events; 0: at start only).",
)
@click.option("--liveness", help="Serve Kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz.")
@click.option(
    "--metrics-port",
    default=9101,
    show_default=True,
    help="Serve Prometheus metrics on --metrics-addr:PORT (0: off); see docs/metrics.md.",
)
@click.option(
    "--metrics-addr",
    default="0.0.0.0",
    show_default=True,
    help="Address the metrics endpoint binds (the DaemonSet passes the node's IP).",
)
@click.option(
    "--cni-socket",
    default="",
    help="Serve the flexsfc-cni shim's calls on this unix socket, e.g. /run/flexsfc/cni.sock (empty: off).",
)
@click.option(
    "--delete-queue",
    default=None,
    help="The shim's DEL queue, replayed at start [node config deleteQueue; /var/lib/flexsfc/cni-del-queue].",
)
@click.option(
    "--tunnel-device",
    envvar="FLEXSFC_TUNNEL_DEVICE",
    default=DEFAULT_TUNNEL_DEVICE,
    show_default=True,
    help="This node's VXLAN device for replicas on other nodes (env FLEXSFC_TUNNEL_DEVICE; empty: "
    "single-node, replicas on other nodes get no traffic from here).",
)
@click.option(
    "--tunnel-port",
    envvar="FLEXSFC_TUNNEL_PORT",
    type=click.IntRange(1, 65535),
    default=DEFAULT_TUNNEL_PORT,
    show_default=True,
    help="UDP port of the tunnel, the same on every node (env FLEXSFC_TUNNEL_PORT); the underlay must "
    "allow it between nodes only.",
)
@click.option(
    "--underlay-mtu",
    envvar="FLEXSFC_UNDERLAY_MTU",
    type=click.IntRange(0, 65535),
    default=0,
    help="MTU of the network between nodes (env FLEXSFC_UNDERLAY_MTU; 0: that of the link holding the "
    "node's InternalIP).",
)
@click.option(
    "--flow-history",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Keep the last N flow events for `flexsfc flows --agent-socket ... --last` (0: off; on, the "
    "event stream is on); docs/observability.md.",
)
@click.option(
    "--flows-socket",
    default=None,
    help="Serve the flow history on this unix socket [flows.sock next to --cni-socket, or /run/flexsfc].",
)
def agent(
    server: str | None,
    node: str,
    pin_dir: str,
    cni_state_dir: str,
    resync_seconds: float,
    relist_seconds: float,
    liveness: str | None,
    metrics_port: int,
    metrics_addr: str,
    cni_socket: str,
    delete_queue: str | None,
    tunnel_device: str,
    tunnel_port: int,
    underlay_mtu: int,
    flow_history: int,
    flows_socket: str | None,
) -> None:
    """Node agent: the NF pods + CrossConnections -> this node's eBPF data plane, and the CNI socket."""
    import kopf

    from flexsfc.agent.locked import LockedDataplane
    from flexsfc.agent.startup import open_agent_dataplane
    from flexsfc.operator import agent_handlers
    from flexsfc.operator.agent import TunnelOptions
    from flexsfc.operator.kube import KubeTarget
    from flexsfc.operator.runner import run_foreground

    try:
        tunnel = TunnelOptions(tunnel_device or None, tunnel_port, underlay_mtu or None)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    # The agent is the writer: it upgrades a pinned program of another version (docs/dataplane.md,
    # "Upgrade"); a refused upgrade keeps it up and retrying, never crash-looping.
    dataplane = open_agent_dataplane(pin_dir, liveness=liveness)
    cni_server = _start_cni_server(cni_socket, delete_queue, cni_state_dir, pin_dir) if cni_socket else None
    history: Any = None
    try:
        locked = LockedDataplane(dataplane)
        registry, node_agent = agent_handlers.build_registry(
            KubeTarget(server),
            node,
            locked,
            cni_state_dir=cni_state_dir,
            resync_seconds=resync_seconds,
            relist_seconds=relist_seconds or None,
            tunnel=tunnel,
        )
        if metrics_port:
            from flexsfc.metrics.agent import serve_agent_metrics

            serve_agent_metrics(locked, node_agent.loop, port=metrics_port, addr=metrics_addr)
        history = _start_flow_history(flow_history, flows_socket, cni_socket, pin_dir)
        settings = kopf.OperatorSettings()
        agent_handlers.configure(settings, node)
        # Agents never peer: every node needs its own active agent.
        run_foreground(registry, settings, standalone=True, liveness=liveness)
    finally:
        if cni_server is not None:
            cni_server.stop()
        if history is not None:
            history.stop()
        dataplane.close()  # pinned maps and attached programs stay: forwarding goes on


def _start_flow_history(size: int, path: str | None, cni_socket: str, pin_dir: str) -> Any:
    """The flow history's server, or None when off or when it cannot start: an optional reader must
    never keep the agent from reconciling (a data plane pinned without the event stream, until its
    upgrade, is one such case)."""
    if not size:
        return None
    import logging

    from flexsfc.agent import flow_history as fh
    from flexsfc.cni.config import DEFAULT_SOCKET

    path = path or fh.default_socket(cni_socket or DEFAULT_SOCKET)
    try:
        return fh.serve(path, pin_dir, size)
    except Exception:
        logging.getLogger("flexsfc.agent").exception("no flow history: serving it on %s failed", path)
        return None


def _start_cni_server(socket_path: str, delete_queue: str | None, state_dir: str, pin_dir: str) -> Any:
    """The shim's peer: the CNI plugin's verbs in-process with this agent's node settings (the agent
    and the plugin are sibling layers, so the entry point wires them, as `flexsfc agent --local`)."""
    import functools
    import os

    from flexsfc.agent.cni_server import CniServer
    from flexsfc.cni.config import NodeConf, read_node_config
    from flexsfc.cni.dispatch import handle

    node = NodeConf(state_dir=state_dir, pin_dir=pin_dir, kubeconfig=None)
    queue = delete_queue or read_node_config(os.environ).delete_queue
    server = CniServer(socket_path, functools.partial(handle, node=node), delete_queue=queue)
    server.start()
    return server
