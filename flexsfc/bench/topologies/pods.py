"""What the benchmark topologies share: addresses, the interconnection variants, pod and host-link
plumbing, reachability, and the release of everything a topology created.

Veths come from flexsfc.testing.netlab (the tests build theirs the same way); what is added here is
the benchmarks' own set-up: no IPv6 anywhere (router solicitations and MLD reports would add noise
to every variant), static neighbours, host links recorded by name so that release() finds them.
"""

import contextlib
import socket
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self

from pyroute2 import IPRoute, netns

from flexsfc.model.mac import derive_mac
from flexsfc.testing import netlab
from flexsfc.util.netns import in_netns

CLIENT_IP = "10.77.0.1"
SERVER_IP = "10.77.0.2"
PREFIXLEN = 24
NUD_PERMANENT = 0x80
CLOSED_PORT = 9  # discard: nothing listens there in our pods, so a SYN gets a RST back


class Variant(StrEnum):
    VETH = "veth"
    BRIDGE = "bridge"
    XC_REDIRECT = "xc-redirect"
    XC_PEER = "xc-peer"

    @property
    def letter(self) -> str:
        return {"veth": "v", "bridge": "b", "xc-redirect": "r", "xc-peer": "p"}[self.value]

    @property
    def is_xc(self) -> bool:
        return self in (Variant.XC_REDIRECT, Variant.XC_PEER)


@dataclass(frozen=True)
class PodIf:
    pod: str  # netns name
    ifname: str


class BuiltOnEnter:
    """How the benchmark topologies are used: built on entering the block (whatever a failed build
    created is removed before the error goes on), removed on leaving it."""

    def build(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ClientServerPods:
    """The pod names of a topology with one client and one server pod, from its unique tag."""

    @property
    def _tag(self) -> str:
        raise NotImplementedError

    @property
    def client(self) -> str:
        return f"fbench-{self._tag}-cli"

    @property
    def server(self) -> str:
        return f"fbench-{self._tag}-srv"


def release_topology(topo: Any) -> None:
    """release() of a topology with one data plane (`dataplane`, `pin_dir`, `host_links`, `namespaces`)."""
    release(
        [topo.dataplane] if topo.dataplane is not None else [],
        [topo.pin_dir],
        topo.host_links,
        topo.namespaces,
    )
    topo.dataplane = None


def release(dataplanes: list[Any], pin_dirs: list[str], host_links: list[str], namespaces: list[str]) -> None:
    """Destroy the data planes and their pins, then host links, then the pods (their veths go along);
    empties the lists. Safe after a partial build and when called twice."""
    for dataplane in dataplanes:
        with contextlib.suppress(Exception):
            dataplane.destroy()
        with contextlib.suppress(Exception):
            dataplane.close()
    dataplanes.clear()
    for pin_dir in pin_dirs:
        if pin_dir:
            netlab.remove_pin_dir(pin_dir)
    with IPRoute() as ipr:
        for name in reversed(host_links):
            for index in ipr.link_lookup(ifname=name):
                with contextlib.suppress(Exception):
                    ipr.link("del", index=index)
    host_links.clear()
    for pod in reversed(namespaces):
        with contextlib.suppress(Exception):
            netns.remove(pod)
    namespaces.clear()


def add_host_veth(host_name: str, pod: str, pod_ifname: str, host_links: list[str]) -> int:
    """A veth from the host namespace (`host_name`, up, no IPv6) to `pod_ifname` in `pod`; its name
    goes into `host_links` for release(). Returns the host end's ifindex."""
    index = netlab.add_veth(host_name, pod_ifname, peer_netns=pod)
    host_links.append(host_name)
    disable_host_ipv6(host_name)
    netlab.set_up(index)
    return index


def add_host_bridge(name: str, ports: tuple[int, ...], host_links: list[str], **options: Any) -> None:
    """A Linux bridge (STP off, no forward delay, no IPv6; more IFLA_BR_* options as `options`) over
    `ports`, up; its name goes into `host_links` for release()."""
    with IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="bridge", br_stp_state=0, br_forward_delay=0, **options)
        host_links.append(name)
        br_index = ipr.link_lookup(ifname=name)[0]
        disable_host_ipv6(name)
        for port in ports:
            ipr.link("set", index=port, master=br_index)
        ipr.link("set", index=br_index, state="up")


def wait_reachable(pod: str, ip: str, timeout: float) -> bool:
    """Whether `pod` reaches `ip` within `timeout` seconds: a TCP SYN to a closed port must come back
    refused. Retried with short timeouts: links that just came up may eat the first SYN, and TCP
    would retransmit it only after a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tcp_reachable(pod, ip, 0.25):
            return True
    return False


def tcp_reachable(pod: str, ip: str, timeout: float) -> bool:
    """One try of wait_reachable."""
    with in_netns(pod):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # lives in the pod's netns
    sock.settimeout(timeout)
    try:
        sock.connect((ip, CLOSED_PORT))
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        sock.close()
    return True


def role_mac(role: str) -> str:
    """The MAC of the client's or the server's interfaces ("client", "server")."""
    return derive_mac(f"flexsfc-bench-{role}", "eth0")


def quiet_ipv6(pod: str) -> None:
    """No IPv6 in the pods: router solicitations and MLD reports would add noise to every variant."""
    with in_netns(pod):
        for scope in ("all", "default"):
            with (
                contextlib.suppress(OSError),
                open(f"/proc/sys/net/ipv6/conf/{scope}/disable_ipv6", "w") as f,
            ):
                f.write("1")


def disable_host_ipv6(ifname: str) -> None:
    with contextlib.suppress(OSError), open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w") as f:
        f.write("1")


def endpoint(pod: str, ip: str, mac: str, peer_ip: str, peer_mac: str) -> None:
    with IPRoute(netns=pod) as ipr:
        index = ipr.link_lookup(ifname="eth0")[0]
        ipr.link("set", index=index, address=mac, state="up")
        ipr.addr("add", index=index, address=ip, prefixlen=PREFIXLEN)
        ipr.neigh("replace", dst=peer_ip, lladdr=peer_mac, ifindex=index, state=NUD_PERMANENT)
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
