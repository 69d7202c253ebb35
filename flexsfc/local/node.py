"""The runtime as its machine's node agent: the CNI socket the shim talks to, served in-process.

On a cluster node the kubelet's Multus runs `/opt/cni/bin/flexsfc-cni` (the static shim), which
passes the call to the node agent over a unix socket; the agent runs the plugin's logic and is the
only process that writes the BPF maps (the leaving mark of a DEL included). The local runtime is
the node here, so its supervisor is that agent: it serves `<state dir>/cni.sock` with
`flexsfc.cni.dispatch.handle` and this runtime's node-level settings (records in `<state dir>/cni`,
the runtime's pin directory, no kubeconfig), and the pods' CNI calls go through the shim
(flexsfc.local.cni) exactly as Multus makes them. The shim finds the socket through the node file
`<state dir>/cni.conf` (FLEXSFC_CNI_CONF), as it finds `/etc/flexsfc/cni.conf` on a node.

When the supervisor is down (crashed, between a crash and its adoption), the shim queues a DEL in
`<state dir>/cni-del-queue`; the next supervisor replays the queue when it starts serving, before
it adopts the pods (flexsfc.agent.cni_server).
"""

import contextlib
import functools
import json
import os
import threading
from collections import Counter
from collections.abc import Iterator, Mapping

from flexsfc.agent.cni_server import CniServer
from flexsfc.cni.config import NodeConf
from flexsfc.cni.dispatch import handle
from flexsfc.local.config import RuntimeConfig
from flexsfc.local.status import CniStatus

# A DEL queued while the supervisor was down is also picked up by this periodic pass (the start-up
# pass handles the usual case: the queue filled during a crash and is replayed on adoption).
QUEUE_INTERVAL_SECONDS = 5.0


def node_conf(config: RuntimeConfig) -> NodeConf:
    return NodeConf(
        state_dir=str(config.cni_state_dir),
        pin_dir=config.pin_dir,
        kubeconfig=None,  # no API server: no pod annotation
        socket=str(config.cni_socket),
        delete_queue=str(config.cni_delete_queue),
    )


def write_node_file(config: RuntimeConfig) -> None:
    """The node file the shim reads (`socket` first: the shim takes the first `"socket"` key)."""
    node = node_conf(config)
    document = {
        "socket": node.socket,
        "deleteQueue": node.delete_queue,
        "stateDir": node.state_dir,
        "pinDir": node.pin_dir,
    }
    path = config.cni_node_file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, path)


class LocalCniAgent:
    """The CNI socket of one runtime, with a count of the calls it served (shown by `status`)."""

    def __init__(self, config: RuntimeConfig, queue_interval: float = QUEUE_INTERVAL_SECONDS) -> None:
        self.config = config
        self._handler = functools.partial(handle, node=node_conf(config))
        self._lock = threading.Lock()
        self._ok: Counter[str] = Counter()
        self._failed: Counter[str] = Counter()
        config.cni_state_dir.mkdir(parents=True, exist_ok=True)
        write_node_file(config)
        self.server = CniServer(
            str(config.cni_socket),
            self._count,
            delete_queue=str(config.cni_delete_queue),
            queue_interval=queue_interval,
        )

    def _count(self, environ: Mapping[str, str], stdin: bytes) -> tuple[int, bytes]:
        status, stdout = self._handler(environ, stdin)
        verb = environ.get("CNI_COMMAND", "?")
        with self._lock:
            (self._ok if status == 0 else self._failed)[verb] += 1
        return status, stdout

    def start(self) -> None:
        """Replay the DEL queue, then listen (CniServer.start)."""
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def status(self) -> CniStatus:
        with self._lock:
            return CniStatus(
                socket=str(self.config.cni_socket),
                served=dict(self._ok),
                failed=dict(self._failed),
                replayed=self.server.replayed,
            )


@contextlib.contextmanager
def serving_cni(config: RuntimeConfig, errors: list[str]) -> Iterator[None]:
    """The runtime's CNI socket served by this process for the block: `down`'s clean-up when no
    supervisor is left (it replays the queue, then the pods' DELs go through the shim as always).
    A failure to serve is added to `errors`; the DELs are then queued by the shim and the pods'
    veths go with their network namespaces."""
    agent: LocalCniAgent | None = None
    try:
        agent = LocalCniAgent(config, queue_interval=0)
        agent.start()
    except Exception as exc:
        errors.append(f"cannot serve the CNI socket {config.cni_socket} for the clean-up: {exc}")
        agent = None
    try:
        yield
    finally:
        if agent is not None:
            agent.stop()
