"""`flexsfc agent --local`: the node agent on this machine, without Kubernetes.

It serves the node shim's CNI calls on the node's socket (flexsfc.agent.cni_server, with the CNI
plugin's logic in-process: flexsfc.cni.dispatch), replays the shim's DEL queue when it starts, holds
the pinned data plane open (creating it when absent) and, when asked, serves its Prometheus metrics.
Every default is the node's flexsfc-cni configuration (/etc/flexsfc/cni.conf, FLEXSFC_CNI_* variables;
docs/cni.md), so the shim and this agent agree without options. The cluster's agent is
`flexsfc operator agent`. With `--node NAME --control PATH` it also reconciles the cluster picture a
front end pushes to PATH (flexsfc.cli.agent_control; the local runtime's simulated nodes).
"""

import logging
import signal
import threading
from typing import Any

import click

from flexsfc.model.constants import DEFAULT_SESSION_CAPACITY, DEFAULT_TUNNEL_DEVICE, DEFAULT_TUNNEL_PORT


@click.command()
@click.option("--local", "local", is_flag=True, help="Run without Kubernetes (required for now).")
@click.option(
    "--socket", "socket_path", help="CNI socket to serve [node config: socket; /run/flexsfc/cni.sock]."
)
@click.option("--pin-dir", help="bpffs directory of the pinned data plane [node config: pinDir].")
@click.option("--state-dir", help="flexsfc-cni's attachment records [node config: stateDir].")
@click.option("--delete-queue", help="The shim's DEL queue [node config: deleteQueue].")
@click.option(
    "--queue-interval", default=30.0, show_default=True, help="Seconds between passes over the DEL queue."
)
@click.option(
    "--dataplane/--no-dataplane",
    default=True,
    show_default=True,
    help="Open (or create) the pinned data plane; off: serve CNI calls only.",
)
@click.option(
    "--session-capacity",
    type=int,
    default=DEFAULT_SESSION_CAPACITY,
    show_default=True,
    help="IPv4 session table size when the data plane is created here.",
)
@click.option(
    "--metrics-port", type=int, default=0, show_default=True, help="Serve /metrics on PORT (0: off)."
)
@click.option("--metrics-addr", default="127.0.0.1", show_default=True, help="Address /metrics binds.")
@click.option(
    "--flow-history",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Keep the last N flow events for `flexsfc flows --last` (0: off; on, the event stream is on).",
)
@click.option("--flows-socket", help="Serve the flow history here [flows.sock next to the CNI socket].")
@click.option("--node", "node_name", help="This node's name (with --control: the picture names nodes).")
@click.option(
    "--control",
    help="Serve a control socket here and reconcile the cluster picture pushed to it "
    "(flexsfc.agent.picture; the local runtime's simulated nodes).",
)
@click.option(
    "--tunnel-device",
    default=DEFAULT_TUNNEL_DEVICE,
    show_default=True,
    help="With --control: the node's VXLAN device.",
)
@click.option(
    "--tunnel-port",
    type=int,
    default=DEFAULT_TUNNEL_PORT,
    show_default=True,
    help="With --control: the VXLAN device's UDP port.",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging (one line per CNI call).")
def agent(
    local: bool,
    socket_path: str | None,
    pin_dir: str | None,
    state_dir: str | None,
    delete_queue: str | None,
    queue_interval: float,
    dataplane: bool,
    session_capacity: int,
    metrics_port: int,
    metrics_addr: str,
    flow_history: int,
    flows_socket: str | None,
    node_name: str | None,
    control: str | None,
    tunnel_device: str,
    tunnel_port: int,
    verbose: bool,
) -> None:
    """The node agent: CNI socket for the flexsfc-cni shim, pinned data plane, metrics."""
    if not local:
        raise click.UsageError("only --local is implemented here; on Kubernetes run `flexsfc operator agent`")
    if flow_history and not dataplane:
        raise click.UsageError("--flow-history reads the data plane's events: drop --no-dataplane")
    if control and (not node_name or not dataplane):
        raise click.UsageError("--control needs --node NAME and the data plane (drop --no-dataplane)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose:
        logging.getLogger("flexsfc.agent.cni_server").setLevel(logging.DEBUG)
    import functools
    import os

    from flexsfc.agent.cni_server import CniServer
    from flexsfc.cni.config import NodeConf, read_node_config
    from flexsfc.cni.dispatch import handle
    from flexsfc.cni.errors import CniError

    try:
        settings = read_node_config(os.environ)
    except CniError as exc:
        raise click.ClickException(str(exc)) from None
    node = NodeConf(
        state_dir=state_dir or settings.state_dir,
        pin_dir=pin_dir or settings.pin_dir,
        kubeconfig=None,  # no cluster: no pod annotation
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    opened: Any = None
    metrics: Any = None
    plane: Any = None
    history: Any = None
    server = CniServer(
        socket_path or settings.socket,
        functools.partial(handle, node=node),
        delete_queue=delete_queue or settings.delete_queue,
        queue_interval=queue_interval,
    )
    try:
        if dataplane:
            from flexsfc.dataplane.facade import Dataplane

            # The agent is the writer: a pinned program of another version is upgraded in place.
            opened = Dataplane(node.pin_dir, session_capacity=session_capacity, upgrade=True)
            if metrics_port:
                from flexsfc.metrics.exporter import Exporter
                from flexsfc.metrics.labels import PortIndex

                # No chains are known here: ports are exported unlabelled (drops, sessions, totals).
                metrics = Exporter.create(opened, PortIndex()).serve(metrics_port, metrics_addr)
            if flow_history:
                from flexsfc.agent import flow_history as fh

                history_socket = flows_socket or fh.default_socket(server.socket_path)
                history = fh.serve(history_socket, node.pin_dir, flow_history)
        if control:
            from flexsfc.cli.agent_control import ControlPlane

            plane = ControlPlane(
                opened,
                node=str(node_name),
                control=control,
                state_dir=node.state_dir,
                tunnel_device=tunnel_device,
                tunnel_port=tunnel_port,
            )
            plane.start()
        server.start()
        where = f", metrics on http://{metrics_addr}:{metrics.port}/metrics" if metrics else ""
        where += f", last {flow_history} flow events on {history.path}" if history else ""
        click.echo(
            f"flexsfc agent: serving CNI on {server.socket_path} (state {node.state_dir}, "
            f"data plane {node.pin_dir if opened else 'off'}{where})",
        )
        stop.wait()
    finally:
        server.stop()
        if plane is not None:
            plane.stop()
        if history is not None:
            history.stop()
        if metrics is not None:
            metrics.close()
        if opened is not None:
            opened.close()  # pinned maps and attached programs stay: forwarding goes on
