"""A client pod cross-connected to server replicas that share one IP and MAC (scale_loss)."""

import os
import uuid
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import netns

from flexsfc.bench.topologies.pods import (
    CLIENT_IP,
    SERVER_IP,
    BuiltOnEnter,
    add_host_veth,
    endpoint,
    quiet_ipv6,
    release_topology,
    role_mac,
)
from flexsfc.dataplane.api import ReplicaPort, ReplicaState
from flexsfc.model.constants import DEFAULT_PIN_DIR
from flexsfc.model.types import Side
from flexsfc.testing import netlab


@dataclass
class FanoutTopology(BuiltOnEnter):
    """A client pod cross-connected to `replicas` server pods sharing one IP and MAC (scale tests).

    Every replica pod exists from the start with its host veth; which ones the cross-connection
    uses (active, draining, absent) is set with :meth:`set_replicas`, as the agent would.
    """

    replicas: int
    peer: bool = True
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:5])
    namespaces: list[str] = field(default_factory=list)
    host_links: list[str] = field(default_factory=list)
    replica_ifindexes: list[int] = field(default_factory=list)
    dataplane: Any = None
    pin_dir: str = ""
    xc: str = ""

    @property
    def _tag(self) -> str:
        return f"fs{self.suffix}"

    @property
    def client(self) -> str:
        return f"fbench-{self._tag}-cli"

    def replica_pod(self, index: int) -> str:
        return f"fbench-{self._tag}-r{index}"

    def build(self) -> None:
        pods = [self.client] + [self.replica_pod(i) for i in range(self.replicas)]
        for pod in pods:
            netns.create(pod)
            self.namespaces.append(pod)
            quiet_ipv6(pod)
        self.pin_dir = os.path.join(DEFAULT_PIN_DIR, f"bench-{self._tag}")
        self.dataplane = netlab.open_dataplane(self.pin_dir, peer=self.peer)
        self.xc = f"bench-{self._tag}"
        self.dataplane.ensure_xc(self.xc)
        client_port = self._host_veth(f"{self._tag}c", self.client)
        self.replica_ifindexes = [
            self._host_veth(f"{self._tag}r{i}", self.replica_pod(i)) for i in range(self.replicas)
        ]
        self.dataplane.set_replicas(self.xc, Side.A, [ReplicaPort(client_port, self.client)])
        endpoint(self.client, CLIENT_IP, role_mac("client"), SERVER_IP, role_mac("server"))
        for i in range(self.replicas):
            endpoint(self.replica_pod(i), SERVER_IP, role_mac("server"), CLIENT_IP, role_mac("client"))

    def _host_veth(self, host_name: str, pod: str) -> int:
        return add_host_veth(host_name, pod, "eth0", self.host_links)

    def set_replicas(self, active: list[int], draining: tuple[int, ...] = ()) -> None:
        """Make replicas `active` (and `draining`) the server side of the cross-connection."""
        ports = [ReplicaPort(self.replica_ifindexes[i], self.replica_pod(i)) for i in active]
        ports += [
            ReplicaPort(self.replica_ifindexes[i], self.replica_pod(i), ReplicaState.DRAINING)
            for i in draining
        ]
        self.dataplane.set_replicas(self.xc, Side.B, ports)

    def close(self) -> None:
        release_topology(self)
