"""One client pod and one server pod joined by several paths at once, one per variant, and a switch
that moves the traffic from one path to another in well under a millisecond (a route replaced on
each side). The sender keeps running; only the path under it changes.

Both pods carry their address on ``lo`` and reach the other through a /32 route on the active path's
interface, so a switch is two route replacements and nothing else: the same sockets and processes
on every path. Every path's interfaces carry the same MAC on each side, and each pod holds a
permanent neighbour entry on every path interface. What a path carried is read from its server-side
interface's receive counters (a redirected packet is counted there too, kernel >= 6.8), so packets
still on their way over the previous path are never credited to the next one.

Paths (interface ``p<letter>`` in both pods, letters in PATHS):

- ``veth``: a veth pair straight from pod to pod;
- ``bridge``: each pod's veth ends in the host namespace, joined by a Linux bridge;
- ``xc-peer`` / ``xc-redirect``: the same host-side veths joined by a cross-connection of a private
  data plane forwarding with bpf_redirect_peer / bpf_redirect (one data plane per mode);
- ``bare-peer``: the same host-side veths, each with a 4-instruction `bpf_redirect_peer(other port)`
  program in a clsact filter: what any TC-ingress cross-connection pays before its own logic.
"""

import contextlib
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute, netns

from flexsfc.bench.topologies.pods import (
    CLIENT_IP,
    NUD_PERMANENT,
    SERVER_IP,
    BuiltOnEnter,
    ClientServerPods,
    Variant,
    add_host_bridge,
    add_host_veth,
    quiet_ipv6,
    release,
    role_mac,
    wait_reachable,
)
from flexsfc.dataplane import tcfilter
from flexsfc.dataplane.api import ReplicaPort
from flexsfc.dataplane.facade import TC_HANDLE, TC_PRIORITY
from flexsfc.model.constants import DEFAULT_PIN_DIR
from flexsfc.model.types import Side
from flexsfc.testing import bpfasm, netlab
from flexsfc.util.netns import in_netns

RT_SCOPE_LINK = 253
BARE_PEER = "bare-peer"
PATH_LETTERS = {  # path name -> letter of its interface names
    **{variant.value: variant.letter for variant in Variant},
    BARE_PEER: "n",
}
# A day, in centiseconds: learned entries outlive every phase (one-way UDP relearns nothing).
BRIDGE_AGEING_CS = 24 * 3600 * 100


@dataclass
class SwitchedPaths(BuiltOnEnter, ClientServerPods):
    """The two pods and one path of each name in `paths` (keys of PATH_LETTERS, "veth" among them).
    Use as a context manager: everything goes on exit."""

    paths: tuple[str, ...]
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:5])
    namespaces: list[str] = field(default_factory=list)
    host_links: list[str] = field(default_factory=list)  # host-side veths and bridges we created
    dataplanes: list[Any] = field(default_factory=list)
    pin_dirs: list[str] = field(default_factory=list)
    program_fds: list[int] = field(default_factory=list)  # the bare redirect programs
    _routers: dict[str, IPRoute] = field(default_factory=dict, init=False, repr=False)  # per pod
    _path_ifindex: dict[tuple[str, str], int] = field(default_factory=dict, init=False, repr=False)

    @property
    def _tag(self) -> str:
        return f"sp{self.suffix}"

    @staticmethod
    def ifname(path: str) -> str:
        return f"p{PATH_LETTERS[path]}"

    def build(self) -> None:
        unknown = [path for path in self.paths if path not in PATH_LETTERS]
        if unknown or len(set(self.paths)) != len(self.paths) or Variant.VETH.value not in self.paths:
            raise ValueError(
                f"paths: {list(self.paths)}: give distinct names of {list(PATH_LETTERS)}, veth among them"
            )
        for pod in (self.client, self.server):
            netns.create(pod)
            self.namespaces.append(pod)
            quiet_ipv6(pod)
            _accept_any_interface(pod)
        for pod, ip in ((self.client, CLIENT_IP), (self.server, SERVER_IP)):
            with IPRoute(netns=pod) as ipr:
                lo = ipr.link_lookup(ifname="lo")[0]
                ipr.link("set", index=lo, state="up")
                ipr.addr("add", index=lo, address=ip, prefixlen=32)
        for path in self.paths:
            self._wire(path)
        for path in self.paths:
            self._neighbours(path)
        self.switch(Variant.VETH.value)

    # -- wiring ----------------------------------------------------------------------------------

    def _wire(self, path: str) -> None:
        name = self.ifname(path)
        if path == Variant.VETH.value:
            with in_netns(self.client):
                netlab.add_veth(name, name, peer_netns=self.server)
            return
        client_port = add_host_veth(f"{self._tag}{PATH_LETTERS[path]}c", self.client, name, self.host_links)
        server_port = add_host_veth(f"{self._tag}{PATH_LETTERS[path]}s", self.server, name, self.host_links)
        if path == BARE_PEER:
            self._bare_redirects(client_port, server_port)
            return
        if path == Variant.BRIDGE.value:
            ports = (client_port, server_port)
            add_host_bridge(f"{self._tag}br", ports, self.host_links, br_ageing_time=BRIDGE_AGEING_CS)
            return
        self._cross_connect(Variant(path), client_port, server_port)

    def _cross_connect(self, variant: Variant, client_port: int, server_port: int) -> None:
        pin_dir = os.path.join(DEFAULT_PIN_DIR, f"bench-{self._tag}{variant.letter}")
        self.pin_dirs.append(pin_dir)
        dataplane = netlab.open_dataplane(pin_dir, peer=variant is Variant.XC_PEER)
        self.dataplanes.append(dataplane)
        xc = f"bench-{self._tag}-{variant.letter}"
        dataplane.ensure_xc(xc)
        dataplane.set_replicas(
            xc, Side.A, [ReplicaPort(client_port, f"{self.client}/{self.ifname(variant.value)}")]
        )
        dataplane.set_replicas(
            xc, Side.B, [ReplicaPort(server_port, f"{self.server}/{self.ifname(variant.value)}")]
        )

    def _bare_redirects(self, client_port: int, server_port: int) -> None:
        for port, other in ((client_port, server_port), (server_port, client_port)):
            fd = bpfasm.load_redirect_program(other, peer=True)
            self.program_fds.append(fd)
            tcfilter.attach_ingress(port, fd, handle=TC_HANDLE, priority=TC_PRIORITY, tag=1, name="bare_peer")

    def _neighbours(self, path: str) -> None:
        name = self.ifname(path)
        for pod, role, peer_ip, peer_role in (
            (self.client, "client", SERVER_IP, "server"),
            (self.server, "server", CLIENT_IP, "client"),
        ):
            with IPRoute(netns=pod) as ipr:
                index = ipr.link_lookup(ifname=name)[0]
                ipr.link("set", index=index, address=role_mac(role), state="up")
                ipr.neigh(
                    "replace", dst=peer_ip, lladdr=role_mac(peer_role), ifindex=index, state=NUD_PERMANENT
                )

    # -- switching and observation -----------------------------------------------------------------

    def switch(self, path: str) -> None:
        """Send both directions over `path` from now on."""
        if path not in self.paths:
            raise ValueError(f"no {path} path in this topology")
        for pod, peer_ip, own_ip in (
            (self.client, SERVER_IP, CLIENT_IP),
            (self.server, CLIENT_IP, SERVER_IP),
        ):
            index = self._path_index(pod, path)
            self._router(pod).route(
                "replace", dst=f"{peer_ip}/32", oif=index, prefsrc=own_ip, scope=RT_SCOPE_LINK
            )

    def _router(self, pod: str) -> IPRoute:
        """A netlink socket in `pod`, kept open: a switch is then two messages, no socket set-up."""
        if pod not in self._routers:
            if pod not in self.namespaces:
                raise RuntimeError(f"{pod}: not a pod of this topology (closed?)")  # IPRoute would create it
            self._routers[pod] = IPRoute(netns=pod)
        return self._routers[pod]

    def _path_index(self, pod: str, path: str) -> int:
        """The ifindex of `path`'s interface in `pod`, looked up once."""
        key = (pod, path)
        if key not in self._path_ifindex:
            self._path_ifindex[key] = self._router(pod).link_lookup(ifname=self.ifname(path))[0]
        return self._path_ifindex[key]

    def received(self, path: str) -> "Received":
        """What the server pod has received over `path` so far: its interface's receive counters."""
        index = self._path_index(self.server, path)
        stats = self._router(self.server).get_links(index)[0].get_attr("IFLA_STATS64")
        return Received(packets=stats["rx_packets"], octets=stats["rx_bytes"])

    def reachable(self, timeout: float = 3.0) -> bool:
        """Whether the client reaches the server over the active path (see pods.wait_reachable)."""
        return wait_reachable(self.client, SERVER_IP, timeout)

    def close(self) -> None:
        """Remove everything this topology created; safe to call twice and after a partial build."""
        for ipr in self._routers.values():
            with contextlib.suppress(Exception):
                ipr.close()
        self._routers.clear()
        self._path_ifindex.clear()
        for fd in self.program_fds:
            with contextlib.suppress(OSError):
                os.close(fd)  # their filters go with the host veths
        self.program_fds.clear()
        release(self.dataplanes, self.pin_dirs, self.host_links, self.namespaces)


def _accept_any_interface(pod: str) -> None:
    """No reverse-path filter: a reply may come back over another path than the one it left by,
    for the few packets in flight when the routes switch. Set before the path interfaces exist:
    they take "default", and "all" caps every interface."""
    with in_netns(pod):
        for scope in ("all", "default"):
            with open(f"/proc/sys/net/ipv4/conf/{scope}/rp_filter", "w") as f:
                f.write("0")


@dataclass(frozen=True)
class Received:
    """Receive counters of one interface."""

    packets: int
    octets: int  # bytes of whole frames

    def __sub__(self, earlier: "Received") -> "Received":
        return Received(self.packets - earlier.packets, self.octets - earlier.octets)
