"""Simulated nodes for the multi-node tests and benchmarks: one network namespace per node, joined by a
bridge in a fabric namespace (the underlay), each with its VXLAN device and its own data plane.

A node namespace holds what a node's host namespace holds: the pods' host-side veths, the VXLAN
device (flexsfc.dataplane.vxlan) and an underlay veth. Every data-plane call of a node is made from
inside its namespace (attach and interface names resolve there). Everything is removed with the lab.
"""

import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute

from flexsfc.dataplane.api import Neighbour, RedirectMode, RemoteEndpoint, ReplicaPort, ReplicaState
from flexsfc.dataplane.facade import Dataplane
from flexsfc.dataplane.vxlan import ensure_tunnel_device
from flexsfc.model.constants import DEFAULT_TUNNEL_DEVICE, TUNNEL_OVERHEAD
from flexsfc.model.types import Side
from flexsfc.testing.netlab import add_veth, private_netns, remove_pin_dir, set_up, unique_pin_dir
from flexsfc.util.netns import in_netns

UNDERLAY_MTU = 1500
NF_MTU = UNDERLAY_MTU - TUNNEL_OVERHEAD
UNDERLAY_PREFIX = "10.250.0."


@dataclass
class SimNode:
    name: str
    netns: str
    address: str
    dp: Dataplane
    pin_dir: str

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A data-plane call made from inside the node's namespace."""
        with in_netns(self.netns):
            return getattr(self.dp, method)(*args, **kwargs)


@dataclass
class Replica:
    identity: str
    node: str
    ifindex: int  # host-side veth in its node's namespace
    netns: str  # the pod
    state: ReplicaState = ReplicaState.ACTIVE


@dataclass
class NodeLab:
    fabric: str
    nodes: dict[str, SimNode] = field(default_factory=dict)

    @property
    def addresses(self) -> dict[str, str]:
        return {name: node.address for name, node in self.nodes.items()}

    def pod(
        self, node: str, label: str, mac: str, ifname: str = "eth1", *, stack: contextlib.ExitStack
    ) -> Replica:
        """A pod namespace with an interface whose host end is in `node`'s namespace (MTU NF_MTU)."""
        netns = stack.enter_context(private_netns(label, prefix="fxmnpod"))
        host = f"h{uuid.uuid4().hex[:8]}"
        with in_netns(self.nodes[node].netns):
            ifindex = add_veth(host, ifname, peer_netns=netns, peer_mac=mac)
            with IPRoute() as ipr:
                ipr.link("set", index=ifindex, mtu=NF_MTU)
            set_up(ifindex)
        with in_netns(netns), IPRoute() as ipr:
            index = ipr.link_lookup(ifname=ifname)[0]
            ipr.link("set", index=index, mtu=NF_MTU)
        return Replica(label, node, ifindex, netns)

    def program(self, xc: str, side: Side, replicas: Sequence[Replica], *, only: Sequence[str] = ()) -> None:
        """Every node (or those in `only`) lists `replicas` as the side's: its own by veth, the
        others' as remote replicas at their node's address."""
        for name, node in self.nodes.items():
            if only and name not in only:
                continue
            ports = [
                ReplicaPort(r.ifindex, r.identity, r.state)
                if r.node == name
                else ReplicaPort(0, r.identity, r.state, RemoteEndpoint(r.node, self.nodes[r.node].address))
                for r in replicas
            ]
            node("ensure_xc", xc)
            node("set_replicas", xc, side, ports)

    def neighbours(self, xc: str, side: Side, neighbours: list[Neighbour]) -> None:
        for node in self.nodes.values():
            node("set_neighbours", xc, side, neighbours)

    def drops(self) -> dict[str, dict[str, int]]:
        return {
            name: {k: v for k, v in node.dp.drop_stats().items() if v} for name, node in self.nodes.items()
        }

    def events(self, name: str) -> dict[str, int]:
        return {k: v for k, v in self.nodes[name].dp.event_stats().items() if v}


def node_lab(count: int, *, stack: contextlib.ExitStack, **dataplane_kwargs: Any) -> NodeLab:
    """`count` nodes (node1..nodeN, underlay 10.250.0.1..N/24 on a shared bridge), each with its VXLAN
    device and data plane, every node knowing every other; `stack` removes them all, also after a
    failure half-way."""
    fabric = stack.enter_context(private_netns("fabric", prefix="fxmn"))
    with in_netns(fabric), IPRoute() as ipr:
        ipr.link("add", ifname="fab", kind="bridge")
        ipr.link("set", index=ipr.link_lookup(ifname="fab")[0], state="up")
    lab = NodeLab(fabric)
    for i in range(1, count + 1):
        name = f"node{i}"
        netns = stack.enter_context(private_netns(name, prefix="fxmn"))
        address = f"{UNDERLAY_PREFIX}{i}"
        with in_netns(fabric):
            port = add_veth(f"n{i}", "ul", peer_netns=netns)
            with IPRoute() as ipr:
                ipr.link("set", index=port, master=ipr.link_lookup(ifname="fab")[0], state="up")
        with in_netns(netns), IPRoute() as ipr:
            ul = ipr.link_lookup(ifname="ul")[0]
            ipr.addr("add", index=ul, address=address, prefixlen=24)
            ipr.link("set", index=ul, mtu=UNDERLAY_MTU, state="up")
            ensure_tunnel_device(DEFAULT_TUNNEL_DEVICE)
            pin_dir = unique_pin_dir(f"mn{i}")
            stack.callback(remove_pin_dir, pin_dir)
            dataplane_kwargs.setdefault("redirect_mode", RedirectMode.PEER)
            dp = Dataplane(pin_dir, **dataplane_kwargs)
            stack.callback(_destroy_in, netns, dp)
            dp.set_tunnel(DEFAULT_TUNNEL_DEVICE)
        lab.nodes[name] = SimNode(name, netns, address, dp, pin_dir)
    for node in lab.nodes.values():
        node("set_nodes", lab.addresses)
    return lab


def _destroy_in(netns: str, dp: Dataplane) -> None:
    with contextlib.suppress(Exception), in_netns(netns):
        dp.destroy()
