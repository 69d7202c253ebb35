"""Simulated nodes (`flexsfc up --nodes N`): N network namespaces on one shared fabric, one agent each.

Each node is a network namespace (`<prefix>-node<i>`) holding its pods' host-side veths, its VXLAN
device and an underlay veth (`ul0`, 10.250.0.<i>/24, MTU 1500) into the fabric namespace
(`<prefix>-fabric`), where a bridge joins every node's underlay. Each node runs its own agent
process, the DaemonSet's code in local mode (`flexsfc agent --local --node NAME --control PATH`),
entered into the node's namespace with `nsenter --net` (never `ip netns exec`: it remounts /sys and
would hide bpffs), with its own pin directory (`<pin dir>/<node>`), CNI socket, records and DEL queue
under `<state dir>/nodes/<node>/`. The supervisor is the front end: it pushes the cluster picture to
every agent (flexsfc.local.cluster) and runs the pods' CNI calls through the shim inside the pod's
node namespace, as the kubelet on that node would.

The agents' PIDs are written to `<state dir>/nodes/nodes.json`, so `down` removes them (by PID) even
when the supervisor is gone.
"""

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import netns

from flexsfc.local.config import RuntimeConfig
from flexsfc.local.pod import kill_processes_in_netns, process_alive, process_start_ticks
from flexsfc.local.status import ProcessInfo
from flexsfc.model.constants import DEFAULT_TUNNEL_DEVICE, DEFAULT_TUNNEL_PORT, TUNNEL_OVERHEAD
from flexsfc.util import jsonline
from flexsfc.util.netns import netns_path

log = logging.getLogger(__name__)

UNDERLAY_PREFIX = "10.250.0"  # /24 inside the fabric namespace: never seen by the host's routing
UNDERLAY_MTU = 1500
NF_MTU = UNDERLAY_MTU - TUNNEL_OVERHEAD  # what NF interfaces get when the chain may span nodes
UNDERLAY_IF = "ul0"
FABRIC_BRIDGE = "fabric0"
MAX_NODES = 200
AGENT_START_SECONDS = 30.0
PUSH_TIMEOUT_SECONDS = 60.0


class NodeError(RuntimeError):
    pass


@dataclass(frozen=True)
class SimNode:
    name: str
    index: int  # 1-based
    address: str  # underlay IPv4
    netns: str
    dir: Path  # <state dir>/nodes/<name>
    pin_dir: str

    @property
    def control(self) -> str:
        return str(self.dir / "control.sock")

    @property
    def cni_socket(self) -> str:
        return str(self.dir / "cni.sock")

    @property
    def node_file(self) -> str:
        """The node-level flexsfc-cni configuration the shim reads on this node (FLEXSFC_CNI_CONF)."""
        return str(self.dir / "cni.conf")

    @property
    def cni_state_dir(self) -> str:
        return str(self.dir / "cni")

    @property
    def delete_queue(self) -> str:
        return str(self.dir / "cni-del-queue")

    @property
    def log(self) -> Path:
        return self.dir / "agent.log"


def nodes_dir(config: RuntimeConfig) -> Path:
    return config.root / "nodes"


def fabric_netns(config: RuntimeConfig) -> str:
    return f"{config.netns_prefix}-fabric"


def node_list(config: RuntimeConfig) -> list[SimNode]:
    if not 1 <= config.nodes <= MAX_NODES:
        raise NodeError(f"nodes: {config.nodes} is out of range 1..{MAX_NODES}")
    return [
        SimNode(
            name=f"node{i}",
            index=i,
            address=f"{UNDERLAY_PREFIX}.{i}",
            netns=f"{config.netns_prefix}-node{i}",
            dir=nodes_dir(config) / f"node{i}",
            pin_dir=os.path.join(config.pin_dir, f"node{i}"),
        )
        for i in range(1, config.nodes + 1)
    ]


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NodeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def _write_node_file(node: SimNode) -> None:
    # `socket` first: the shim takes the first "socket" key (flexsfc.local.node.write_node_file).
    document = {
        "socket": node.cni_socket,
        "deleteQueue": node.delete_queue,
        "stateDir": node.cni_state_dir,
        "pinDir": node.pin_dir,
    }
    Path(node.node_file).write_text(json.dumps(document, indent=2) + "\n")


def request(path: str, op: str, timeout: float = PUSH_TIMEOUT_SECONDS, **fields: Any) -> Any:
    """One request to a node agent's control socket (flexsfc.agent.picture_server)."""
    reply = jsonline.call(path, {"op": op, **fields}, timeout)
    if reply is None:
        raise NodeError(f"agent at {path} closed the connection during {op!r}")
    if not reply.get("ok"):
        raise NodeError(str(reply.get("error", "unknown error")))
    return reply.get("result")


class SimulatedNodes:
    """The nodes of one runtime: created, their agents started, failed one by one, removed."""

    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self.all = {n.name: n for n in node_list(config)}
        self.failed: set[str] = set()
        self.agents: dict[str, ProcessInfo] = {}  # node -> its agent process
        self._popen: dict[str, subprocess.Popen[bytes]] = {}

    def live(self) -> list[SimNode]:
        return [n for n in self.all.values() if n.name not in self.failed]

    def addresses(self) -> dict[str, str]:
        return {n.name: n.address for n in self.live()}

    # -- creation --------------------------------------------------------------------------------

    def start(self) -> None:
        """Fabric, node namespaces with their underlay, one agent per node (answering) — or nothing:
        what was created is removed again on a failure."""
        try:
            self._create_fabric()
            for node in self.all.values():
                self._create_node(node)
            for node in self.all.values():
                self._start_agent(node)
            self._save()
            for node in self.all.values():
                self._wait_agent(node)
        except BaseException:
            self.remove()
            raise

    def _create_fabric(self) -> None:
        fabric = fabric_netns(self.config)
        if os.path.exists(netns_path(fabric)):
            raise NodeError(f"network namespace {fabric} exists already: a leftover? `ip netns del {fabric}`")
        netns.create(fabric)
        _ip("-n", fabric, "link", "set", "lo", "up")
        _ip("-n", fabric, "link", "add", FABRIC_BRIDGE, "type", "bridge")
        _ip("-n", fabric, "link", "set", FABRIC_BRIDGE, "up")

    def _create_node(self, node: SimNode) -> None:
        if os.path.exists(netns_path(node.netns)):
            raise NodeError(
                f"network namespace {node.netns} exists already: a leftover? `ip netns del {node.netns}`"
            )
        netns.create(node.netns)
        fabric = fabric_netns(self.config)
        _ip("-n", node.netns, "link", "set", "lo", "up")
        # Both ends created where they live: no move between namespaces.
        _ip("-n", node.netns, "link", "add", UNDERLAY_IF, "mtu", str(UNDERLAY_MTU), "type", "veth",
            "peer", "name", node.name, "netns", fabric)  # fmt: skip
        _ip("-n", node.netns, "addr", "add", f"{node.address}/24", "dev", UNDERLAY_IF)
        _ip("-n", node.netns, "link", "set", UNDERLAY_IF, "up")
        _ip("-n", fabric, "link", "set", node.name, "mtu", str(UNDERLAY_MTU), "master", FABRIC_BRIDGE, "up")
        node.dir.mkdir(parents=True, exist_ok=True)
        Path(node.cni_state_dir).mkdir(parents=True, exist_ok=True)
        os.makedirs(node.pin_dir, exist_ok=True)
        _write_node_file(node)

    def _start_agent(self, node: SimNode) -> None:
        argv = [
            "nsenter",
            f"--net={netns_path(node.netns)}",
            "--",
            sys.executable,
            "-c",
            "import sys; from flexsfc.cli import main; sys.exit(main())",
            "agent",
            "--local",
            "--node",
            node.name,
            "--control",
            node.control,
            "--socket",
            node.cni_socket,
            "--pin-dir",
            node.pin_dir,
            "--state-dir",
            node.cni_state_dir,
            "--delete-queue",
            node.delete_queue,
            "--tunnel-device",
            DEFAULT_TUNNEL_DEVICE,
            "--tunnel-port",
            str(DEFAULT_TUNNEL_PORT),
        ]
        env = {**os.environ, "FLEXSFC_CNI_CONF": node.node_file}
        with open(node.log, "ab") as logf:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                cwd="/",  # `python -c` puts its working directory first on sys.path: none of it
                start_new_session=True,  # a node outlives a supervisor crash, as a real one would
            )
        self._popen[node.name] = proc
        self.agents[node.name] = ProcessInfo("agent", proc.pid, process_start_ticks(proc.pid))

    def _wait_agent(self, node: SimNode) -> None:
        deadline = time.monotonic() + AGENT_START_SECONDS
        proc = self._popen[node.name]
        while True:
            code = proc.poll()
            if code is not None:
                raise NodeError(f"the agent of {node.name} exited with status {code}: {_tail(node.log)}")
            with contextlib.suppress(OSError, NodeError):
                request(node.control, "ping", timeout=2)
                return
            if time.monotonic() > deadline:
                raise NodeError(f"the agent of {node.name} did not answer in {AGENT_START_SECONDS:.0f}s")
            time.sleep(0.05)

    def _save(self) -> None:
        document = {
            "agents": {name: {"pid": p.pid, "startTicks": p.start_ticks} for name, p in self.agents.items()},
            "failed": sorted(self.failed),
        }
        path = nodes_dir(self.config) / "nodes.json"
        if path.parent.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(document))
            os.replace(tmp, path)

    # -- talking to the agents -------------------------------------------------------------------

    def push(self, node: SimNode, picture: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = request(node.control, "push", picture=picture)
        return result

    def agent_status(self, node: SimNode) -> tuple[str, dict[str, Any]]:
        if node.name in self.failed:
            return "failed", {}
        try:
            return "ok", dict(request(node.control, "status", timeout=5))
        except (OSError, NodeError) as exc:
            return f"not answering: {exc}", {}

    # -- failure and removal ---------------------------------------------------------------------

    def fail(self, name: str) -> SimNode:
        """The node goes away abruptly: its agent SIGKILLed, its namespace deleted (pods' host veths
        with it), its pins removed. The caller removes its pods and tells the others."""
        node = self.all.get(name)
        if node is None:
            raise NodeError(f"no node {name!r} (nodes: {', '.join(self.all)})")
        if name in self.failed:
            raise NodeError(f"node {name} has failed already")
        if len(self.live()) == 1:
            raise NodeError(f"node {name} is the last node left; `flexsfc down` removes everything")
        self.failed.add(name)
        info = self.agents.get(name)
        if info is not None and process_alive(info):
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGKILL)
        self._reap(name)
        _remove_netns(node.netns)
        _remove_pins(node.pin_dir)
        self._save()
        return node

    def _reap(self, name: str) -> None:
        proc = self._popen.pop(name, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def remove(self) -> list[str]:
        """Stop every agent (SIGTERM, then SIGKILL), delete the node and fabric namespaces and the
        nodes' pins. Returns what failed."""
        errors: list[str] = []
        for info in self.agents.values():
            if process_alive(info):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for name, info in self.agents.items():
            while process_alive(info) and time.monotonic() < deadline:
                if name in self._popen:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._popen[name].wait(timeout=0.1)
                else:
                    time.sleep(0.05)
            if process_alive(info):
                errors.append(f"the agent of {name} (pid {info.pid}) ignored SIGTERM; killed")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(info.pid, signal.SIGKILL)
            self._reap(name)
        for node in self.all.values():
            try:
                _remove_netns(node.netns)
                _remove_pins(node.pin_dir)
            except Exception as exc:
                errors.append(f"node {node.name}: {exc}")
        try:
            _remove_netns(fabric_netns(self.config))
        except Exception as exc:
            errors.append(f"fabric: {exc}")
        shutil.rmtree(nodes_dir(self.config), ignore_errors=True)
        return errors


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _remove_netns(name: str) -> None:
    path = netns_path(name)
    kill_processes_in_netns(path)
    if os.path.exists(path):
        with contextlib.suppress(FileNotFoundError):
            netns.remove(name)


def _remove_pins(pin_dir: str) -> None:
    # The node's namespace is gone and its filters with it: only the pinned objects remain.
    from flexsfc.dataplane.pins import destroy_pinned

    if os.path.isdir(pin_dir):
        with contextlib.suppress(Exception):
            destroy_pinned(pin_dir, ports=())
        shutil.rmtree(pin_dir, ignore_errors=True)


def cleanup_nodes(config: RuntimeConfig) -> list[str]:
    """`down` without a supervisor: the agents recorded in nodes.json killed (by PID, checked by its
    start time), every node namespace and the fabric deleted, the nodes' pins removed."""
    path = nodes_dir(config) / "nodes.json"
    agents: dict[str, ProcessInfo] = {}
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        raw = json.loads(path.read_text())
        agents = {
            name: ProcessInfo("agent", int(a["pid"]), int(a["startTicks"]))
            for name, a in raw["agents"].items()
        }
    nodes = SimulatedNodes(config)
    nodes.agents = agents
    return nodes.remove()
