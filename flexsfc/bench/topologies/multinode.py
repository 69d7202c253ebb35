"""Two simulated nodes joined by an underlay, and one client/server pod pair per measured path.

Each node is a network namespace holding its pods' host-side veths, its VXLAN device(s) and its own
data plane (pinned under /sys/fs/bpf/flexsfc/bench-<tag>-<node>), created and attached from inside
the node's namespace as the node agent does. The nodes are joined by one veth pair, the underlay
(IPv4, MTU 1500); pods' interfaces have MTU 1450 (underlay minus the VXLAN overhead) on every path,
so every path carries the same packets.

Paths (one client pod and one server pod each, all with the same addresses and MACs, in pods of
their own so that the paths never share a socket or a queue):

- ``xc-cross-node``: client pod on node 1 (side A), server pod on node 2 (side B), one
  cross-connection of the same name on both nodes; node 1 lists the server as a remote replica of
  node 2 and node 2 the client as a remote replica of node 1. Packets cross in the nodes' VXLAN
  devices in external mode (flexsfc.dataplane.vxlan.ensure_tunnel_device), the data plane setting the
  tunnel key.
- ``vxlan``: the floor, plain kernel VXLAN between the same nodes over the same underlay: in each
  node a Linux bridge joins the pod's host veth and a regular VXLAN device (fixed VNI, fixed remote:
  the other node, learning off), no eBPF anywhere. This is the path an operator builds without
  flexsfc to put two pods of different nodes on one L2 segment, and the encapsulation, the UDP
  socket, the underlay and the veths are the same as on the cross-connection's path; what differs
  is only who picks the next hop (a bridge's forwarding table here, the cross-connection's program
  there). Its own UDP port (FLOOR_PORT): a VXLAN device without `gbp` cannot share the external
  device's socket.
- ``xc-same-node``: both pods on node 1, one cross-connection of node 1's data plane (today's path).
- ``xc-same-node-baseline`` (optional): the same as ``xc-same-node`` with the data plane of an
  older revision of flexsfc (its own pin directory), configured by that revision's code in a
  subprocess (BaselineTree): the before/after comparison of the same-node path.

A further cross-connection (FIRST_XC, pods of their own) serves the "remote replica -> first packet"
measurement: node 2 already serves it, node 1 gets its remote replica when the measurement says so.
"""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, netns

from flexsfc.bench.topologies.pods import (
    CLIENT_IP,
    NUD_PERMANENT,
    SERVER_IP,
    BuiltOnEnter,
    disable_host_ipv6,
    endpoint,
    quiet_ipv6,
    role_mac,
    wait_reachable,
)
from flexsfc.dataplane.api import RemoteEndpoint, ReplicaPort
from flexsfc.dataplane.facade import Dataplane
from flexsfc.dataplane.vxlan import ensure_tunnel_device
from flexsfc.model.constants import DEFAULT_PIN_DIR, DEFAULT_TUNNEL_DEVICE, TUNNEL_OVERHEAD
from flexsfc.model.mac import derive_mac
from flexsfc.model.types import Side
from flexsfc.testing import netlab
from flexsfc.util.netns import in_netns

NODES = ("node1", "node2")
UNDERLAY_IP = {"node1": "10.251.0.1", "node2": "10.251.0.2"}
UNDERLAY_PREFIXLEN = 24
UNDERLAY_IFNAME = "ul0"
UNDERLAY_MTU = 1500
POD_MTU = UNDERLAY_MTU - TUNNEL_OVERHEAD  # what the CNI gives NF interfaces when a chain spans nodes
FLOOR_VNI = 4242
FLOOR_PORT = 4790  # the external device holds 4789 with other socket flags (gbp)
FLOOR_VXLAN = "vxfloor"
FLOOR_BRIDGE = "brfloor"
BRIDGE_AGEING_CS = 24 * 3600 * 100  # a day: the bridges never forget the pods during a run

# Identities are what both nodes hash into the VNI and the sender id: equal on both nodes.
CLIENT_ID, SERVER_ID = "client", "server"
CROSS_XC = "bench-mn-cross"
SAME_XC = "bench-mn-same"
FIRST_XC = "bench-mn-first"


class MultiNodePath(StrEnum):
    CROSS_NODE = "xc-cross-node"
    VXLAN = "vxlan"
    SAME_NODE = "xc-same-node"
    BASELINE = "xc-same-node-baseline"

    @property
    def letter(self) -> str:
        return {"xc-cross-node": "x", "vxlan": "v", "xc-same-node": "s", "xc-same-node-baseline": "b"}[
            self.value
        ]


@dataclass(frozen=True)
class PodPair:
    """One path's client and server pods (what flexsfc.bench.tools.loadgen needs: `client`, `server`)
    and where their host-side veths are."""

    name: str
    client: str  # netns names
    server: str
    client_node: str
    server_node: str
    client_port: int  # ifindex of the host-side veth, in client_node's namespace
    server_port: int  # in server_node's

    def reachable(self, timeout: float = 3.0) -> bool:
        return wait_reachable(self.client, SERVER_IP, timeout)


@dataclass
class MultiNodeTopology(BuiltOnEnter):
    """The two nodes and the pod pairs of `paths` (plus the first-packet pair when `first_packet`).
    `baseline`: the older tree the baseline path's data plane comes from (required with that path).
    Use as a context manager: everything goes on exit, also after a failed build."""

    paths: tuple[MultiNodePath, ...] = tuple(MultiNodePath)
    first_packet: bool = True
    baseline: "BaselineTree | None" = None
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:5])
    namespaces: list[str] = field(default_factory=list)
    pin_dirs: list[str] = field(default_factory=list)
    dataplanes: dict[str, Dataplane] = field(default_factory=dict)  # node -> its data plane
    pairs: dict[str, PodPair] = field(default_factory=dict)  # path (or "first") -> pods
    baseline_pin_dir: str = ""

    @property
    def _tag(self) -> str:
        return f"mn{self.suffix}"

    def node_ns(self, node: str) -> str:
        return f"fbench-{self._tag}-{node}"

    def pod_ns(self, letter: str, role: str) -> str:
        return f"fbench-{self._tag}-{letter}{role[0]}"

    # -- build -------------------------------------------------------------------------------------

    def build(self) -> None:
        if MultiNodePath.BASELINE in self.paths and self.baseline is None:
            raise ValueError("the baseline path needs a baseline tree")
        for node in NODES:
            self._netns(self.node_ns(node))
        self._underlay()
        for node in NODES:
            self._node_dataplane(node)
        for path in self.paths:
            self._path(path)
        if self.first_packet:
            self._first_packet_pair()

    def _netns(self, name: str) -> None:
        netns.create(name)
        self.namespaces.append(name)
        quiet_ipv6(name)
        with IPRoute(netns=name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")

    def _underlay(self) -> None:
        """One veth pair between the nodes, addressed, with permanent neighbours: no ARP on the path
        (and none delaying a first packet)."""
        n1, n2 = (self.node_ns(n) for n in NODES)
        with in_netns(n1):
            netlab.add_veth(UNDERLAY_IFNAME, UNDERLAY_IFNAME, peer_netns=n2)
        for node, peer in (("node1", "node2"), ("node2", "node1")):
            with IPRoute(netns=self.node_ns(node)) as ipr:
                index = ipr.link_lookup(ifname=UNDERLAY_IFNAME)[0]
                ipr.link("set", index=index, address=_underlay_mac(node), mtu=UNDERLAY_MTU, state="up")
                ipr.addr("add", index=index, address=UNDERLAY_IP[node], prefixlen=UNDERLAY_PREFIXLEN)
                ipr.neigh(
                    "replace",
                    dst=UNDERLAY_IP[peer],
                    lladdr=_underlay_mac(peer),
                    ifindex=index,
                    state=NUD_PERMANENT,
                )

    def _node_dataplane(self, node: str) -> None:
        """The node's external VXLAN device and its data plane, created from inside the node (the
        facade attaches in the calling thread's namespace)."""
        pin_dir = os.path.join(DEFAULT_PIN_DIR, f"bench-{self._tag}-{node}")
        self.pin_dirs.append(pin_dir)
        with in_netns(self.node_ns(node)):
            ensure_tunnel_device(DEFAULT_TUNNEL_DEVICE, mtu=POD_MTU)  # as an agent on a 1500 B underlay
            dp = netlab.open_dataplane(pin_dir, peer=True)
            self.dataplanes[node] = dp
            dp.set_nodes(dict(UNDERLAY_IP))
            dp.set_tunnel(DEFAULT_TUNNEL_DEVICE)

    def _pods(self, name: str, letter: str, client_node: str, server_node: str) -> PodPair:
        ports = {}
        for role, node in (("client", client_node), ("server", server_node)):
            pod = self.pod_ns(letter, role)
            self._netns(pod)
            with in_netns(self.node_ns(node)):
                host_ifname = f"{letter}{role[0]}"  # the node's own namespace: short names suffice
                index = netlab.add_veth(host_ifname, "eth0", peer_netns=pod)
                disable_host_ipv6(host_ifname)
                with IPRoute() as ipr:
                    ipr.link("set", index=index, mtu=POD_MTU, state="up")
            ports[role] = index
            with IPRoute(netns=pod) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="eth0")[0], mtu=POD_MTU)
        client, server = self.pod_ns(letter, "client"), self.pod_ns(letter, "server")
        endpoint(client, CLIENT_IP, role_mac("client"), SERVER_IP, role_mac("server"))
        endpoint(server, SERVER_IP, role_mac("server"), CLIENT_IP, role_mac("client"))
        pair = PodPair(name, client, server, client_node, server_node, ports["client"], ports["server"])
        self.pairs[name] = pair
        return pair

    def _path(self, path: MultiNodePath) -> None:
        if path is MultiNodePath.CROSS_NODE:
            pair = self._pods(path.value, path.letter, "node1", "node2")
            self._cross_node(CROSS_XC, pair, remote_server=True)
        elif path is MultiNodePath.VXLAN:
            pair = self._pods(path.value, path.letter, "node1", "node2")
            for node, peer, port in (
                ("node1", "node2", pair.client_port),
                ("node2", "node1", pair.server_port),
            ):
                self._floor(node, peer, port)
        elif path is MultiNodePath.SAME_NODE:
            pair = self._pods(path.value, path.letter, "node1", "node1")
            with in_netns(self.node_ns("node1")):
                dp = self.dataplanes["node1"]
                dp.ensure_xc(SAME_XC)
                dp.set_replicas(SAME_XC, Side.A, [ReplicaPort(pair.client_port, CLIENT_ID)])
                dp.set_replicas(SAME_XC, Side.B, [ReplicaPort(pair.server_port, SERVER_ID)])
        else:
            assert self.baseline is not None
            pair = self._pods(path.value, path.letter, "node1", "node1")
            self.baseline_pin_dir = os.path.join(DEFAULT_PIN_DIR, f"bench-{self._tag}-base")
            self.pin_dirs.append(self.baseline_pin_dir)
            self.baseline.cross_connect(
                self.node_ns("node1"), self.baseline_pin_dir, SAME_XC, pair.client_port, pair.server_port
            )

    def _cross_node(self, xc: str, pair: PodPair, *, remote_server: bool) -> None:
        """`xc` on both nodes: each lists its own pod as a local replica and the other node's as a
        remote one (on node 1 the server only when `remote_server`)."""
        client = ReplicaPort(pair.client_port, CLIENT_ID)
        server = ReplicaPort(pair.server_port, SERVER_ID)
        remote_client = ReplicaPort(0, CLIENT_ID, remote=RemoteEndpoint("node1", UNDERLAY_IP["node1"]))
        with in_netns(self.node_ns("node1")):
            dp = self.dataplanes["node1"]
            dp.ensure_xc(xc)
            dp.set_replicas(xc, Side.A, [client])
            dp.set_replicas(xc, Side.B, [self.remote_server()] if remote_server else [])
        with in_netns(self.node_ns("node2")):
            dp = self.dataplanes["node2"]
            dp.ensure_xc(xc)
            dp.set_replicas(xc, Side.A, [remote_client])
            dp.set_replicas(xc, Side.B, [server])

    @staticmethod
    def remote_server() -> ReplicaPort:
        """The server pod as node 1 sees it: a replica of node 2."""
        return ReplicaPort(0, SERVER_ID, remote=RemoteEndpoint("node2", UNDERLAY_IP["node2"]))

    def _floor(self, node: str, peer: str, host_port: int) -> None:
        with IPRoute(netns=self.node_ns(node)) as ipr:
            underlay = ipr.link_lookup(ifname=UNDERLAY_IFNAME)[0]
            ipr.link(
                "add",
                ifname=FLOOR_VXLAN,
                kind="vxlan",
                vxlan_id=FLOOR_VNI,
                vxlan_group=UNDERLAY_IP[peer],  # a unicast "group" is the fixed remote
                vxlan_local=UNDERLAY_IP[node],
                vxlan_link=underlay,
                vxlan_port=FLOOR_PORT,
                vxlan_learning=0,
            )
            vxlan = ipr.link_lookup(ifname=FLOOR_VXLAN)[0]
            ipr.link("set", index=vxlan, mtu=POD_MTU)
            ipr.link(
                "add",
                ifname=FLOOR_BRIDGE,
                kind="bridge",
                br_stp_state=0,
                br_forward_delay=0,
                br_ageing_time=BRIDGE_AGEING_CS,
            )
            bridge = ipr.link_lookup(ifname=FLOOR_BRIDGE)[0]
            for port in (host_port, vxlan):
                ipr.link("set", index=port, master=bridge, state="up")
            ipr.link("set", index=bridge, state="up")
        with in_netns(self.node_ns(node)):
            disable_host_ipv6(FLOOR_VXLAN)
            disable_host_ipv6(FLOOR_BRIDGE)

    def _first_packet_pair(self) -> None:
        pair = self._pods("first", "f", "node1", "node2")
        self._cross_node(FIRST_XC, pair, remote_server=False)

    # -- use -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def on_node(self, node: str) -> Iterator[Dataplane]:
        """The node's data plane, with this thread in the node's namespace (where it attaches)."""
        with in_netns(self.node_ns(node)):
            yield self.dataplanes[node]

    def drops(self) -> dict[str, dict[str, int]]:
        """Each node's data-plane drop counters by reason."""
        out = {}
        for node in NODES:
            with self.on_node(node) as dp:
                out[node] = dp.drop_stats()
        return out

    # -- teardown ------------------------------------------------------------------------------

    def close(self) -> None:
        """Destroy the data planes (from inside their node), the pins, then the namespaces (the veths,
        bridges and VXLAN devices go with them). Safe after a partial build and when called twice."""
        for node, dp in list(self.dataplanes.items()):
            with contextlib.suppress(Exception), in_netns(self.node_ns(node)):
                dp.destroy()
            with contextlib.suppress(Exception):
                dp.close()
        self.dataplanes.clear()
        if self.baseline is not None and self.baseline_pin_dir:
            with contextlib.suppress(Exception):
                self.baseline.destroy(self.node_ns("node1"), self.baseline_pin_dir)
        for pin_dir in self.pin_dirs:
            netlab.remove_pin_dir(pin_dir)
        self.pin_dirs.clear()
        for name in reversed(self.namespaces):
            with contextlib.suppress(Exception):
                netns.remove(name)
        self.namespaces.clear()
        self.pairs.clear()


def _underlay_mac(node: str) -> str:
    return derive_mac(f"flexsfc-bench-{node}", UNDERLAY_IFNAME)


# -- the baseline: another revision's data plane --------------------------------------------------

# Run by the baseline tree's own Python code (its flexsfc package first on sys.path): configures or
# destroys a same-node cross-connection with that revision's data plane, inside the node namespace.
_BASELINE_SCRIPT = """
import sys
import flexsfc
from flexsfc.dataplane.api import ReplicaPort
from flexsfc.dataplane.facade import Dataplane
from flexsfc.model.types import Side
from flexsfc.testing import netlab
from flexsfc.util.netns import in_netns

action, node, pin_dir = sys.argv[1:4]
assert flexsfc.__file__.startswith(sys.argv[-1]), flexsfc.__file__
with in_netns(node):
    if action == "up":
        xc, a, b = sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
        dp = netlab.open_dataplane(pin_dir, peer=True)
        dp.ensure_xc(xc)
        dp.set_replicas(xc, Side.A, [ReplicaPort(a, "client")])
        dp.set_replicas(xc, Side.B, [ReplicaPort(b, "server")])
        dp.close()  # the pins and the filters stay: the program keeps forwarding
    else:
        Dataplane(pin_dir).destroy()
"""


@dataclass
class BaselineTree:
    """The flexsfc package of git revision `revision` of this checkout, exported to a scratch
    directory (git archive: the checkout itself is never touched); its code runs in subprocesses."""

    revision: str
    repo: Path = Path(__file__).resolve().parents[3]  # this checkout
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="flexsfc-baseline-")))
    commit: str = ""

    def __enter__(self) -> "BaselineTree":
        try:
            repo = self.repo
            self.commit = subprocess.run(
                ["git", "-C", str(repo), "rev-parse", "--verify", f"{self.revision}^{{commit}}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            archive = subprocess.run(
                ["git", "-C", str(repo), "archive", "--format=tar", self.commit, "flexsfc"],
                capture_output=True,
                check=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(self.root)], input=archive, check=True)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(self.root)}
        proc = subprocess.run(
            [sys.executable, "-c", _BASELINE_SCRIPT, *args, str(self.root)],
            capture_output=True,
            text=True,
            env=env,
            cwd=str(self.root),
            timeout=300,  # the first load compiles that revision's eBPF object
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"baseline {self.revision} ({self.commit[:10]}) {args[0]}: {proc.stderr[-800:]}"
            )

    def cross_connect(self, node_ns: str, pin_dir: str, xc: str, client_port: int, server_port: int) -> None:
        self._run("up", node_ns, pin_dir, xc, str(client_port), str(server_port))

    def destroy(self, node_ns: str, pin_dir: str) -> None:
        self._run("down", node_ns, pin_dir)


def describe(topo: MultiNodeTopology) -> dict[str, Any]:
    """What the JSON records about the set-up."""
    return {
        "nodes": {node: {"underlay_ip": UNDERLAY_IP[node], "netns": topo.node_ns(node)} for node in NODES},
        "underlay_mtu": UNDERLAY_MTU,
        "pod_mtu": POD_MTU,
        "tunnel_device": DEFAULT_TUNNEL_DEVICE,
        "floor": f"per node a Linux bridge and a VXLAN device (VNI {FLOOR_VNI}, UDP {FLOOR_PORT}, "
        "fixed remote, "
        "no learning), no eBPF",
        "baseline": {"revision": topo.baseline.revision, "commit": topo.baseline.commit}
        if topo.baseline
        else None,
        "pairs": {
            name: {"client_node": p.client_node, "server_node": p.server_node}
            for name, p in topo.pairs.items()
        },
    }
