"""Chains of network-namespace "pods" for the traffic benchmark (Figure 5).

A chain is client -> server (2 pods) or client -> transparent firewall -> server (3 pods). Each
link between adjacent pods is one of four variants:

- ``veth``: a veth pair straight from one pod to the next (the paper's optimum);
- ``bridge``: each pod's veth ends in the host namespace, joined by a Linux bridge per link;
- ``xc-redirect`` / ``xc-peer``: the same host-side veths joined by a flexsfc cross-connection
  (flexsfc.dataplane.facade.Dataplane) forwarding with bpf_redirect or bpf_redirect_peer.

The firewall is L2 (bump in the wire): a Linux bridge inside its netns between eth1 and eth2 plus an
nftables bridge ruleset, identical in every variant, so only the interconnection differs. The client
and server carry static neighbour entries, so no variant depends on ARP handling.
"""

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

from pyroute2 import IPRoute, netns

from flexsfc.model.constants import DEFAULT_PIN_DIR
from flexsfc.model.mac import derive_mac
from flexsfc.util.netns import in_netns, netns_path

CLIENT_IP = "10.77.0.1"
SERVER_IP = "10.77.0.2"
PREFIXLEN = 24
NUD_PERMANENT = 0x80
CLOSED_PORT = 9  # discard: nothing listens there in our pods, so a SYN gets a RST back
_BPF_NAME_ID = re.compile(r":\[(\d+)\]$")

# The firewall's ruleset: stateless accept of the traffic the benchmark sends, counted, rest dropped.
FIREWALL_RULESET = """
table bridge flexsfc_bench_fw {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ether type arp accept
    ip protocol { tcp, udp, icmp } counter accept
  }
}
"""


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


@dataclass
class ChainTopology(BuiltOnEnter, ClientServerPods):
    """One chain wired with one variant. Use as a context manager: everything goes on exit."""

    pods: int  # 2 or 3
    variant: Variant
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:5])
    namespaces: list[str] = field(default_factory=list)
    host_links: list[str] = field(default_factory=list)  # host-side veths and bridges we created
    host_ifindexes: list[int] = field(default_factory=list)
    dataplane: Any = None
    xc_names: list[str] = field(default_factory=list)
    pin_dir: str = ""

    @property
    def name(self) -> str:
        return f"{self.pods}pod-{self.variant.value}"

    @property
    def _tag(self) -> str:
        return f"fb{self.suffix}{self.variant.letter}{self.pods}"

    @property
    def firewall(self) -> str:
        return f"fbench-{self._tag}-fw"

    def build(self) -> None:
        if self.pods not in (2, 3):
            raise ValueError(f"pods must be 2 or 3, got {self.pods}")
        pods = [self.client, self.firewall, self.server] if self.pods == 3 else [self.client, self.server]
        for pod in pods:
            netns.create(pod)
            self.namespaces.append(pod)
            quiet_ipv6(pod)
        if self.pods == 3:
            links = [
                (PodIf(self.client, "eth0"), PodIf(self.firewall, "eth1")),
                (PodIf(self.firewall, "eth2"), PodIf(self.server, "eth0")),
            ]
        else:
            links = [(PodIf(self.client, "eth0"), PodIf(self.server, "eth0"))]
        if self.variant.is_xc:
            self._open_dataplane()
        for index, (a, b) in enumerate(links):
            self._wire(index, a, b)
        _endpoint(self.client, CLIENT_IP, role_mac("client"), SERVER_IP, role_mac("server"))
        _endpoint(self.server, SERVER_IP, role_mac("server"), CLIENT_IP, role_mac("client"))
        if self.pods == 3:
            self._configure_firewall()

    # -- wiring ----------------------------------------------------------------------------------

    def _wire(self, index: int, a: PodIf, b: PodIf) -> None:
        if self.variant is Variant.VETH:
            with IPRoute(netns=a.pod) as ipr:
                ipr.link(
                    "add",
                    ifname=a.ifname,
                    kind="veth",
                    peer={"ifname": b.ifname, "net_ns_fd": netns_path(b.pod)},
                )
            return
        host_a = self._host_veth(f"{self._tag}{index}a", a)
        host_b = self._host_veth(f"{self._tag}{index}b", b)
        if self.variant is Variant.BRIDGE:
            add_host_bridge(f"{self._tag}{index}br", (host_a, host_b), self.host_links)
        else:
            self._cross_connect(f"bench-{self._tag}-{index}", host_a, b_port=host_b, a=a, b=b)

    def _host_veth(self, host_name: str, pod_if: PodIf) -> int:
        index = add_host_veth(host_name, pod_if.pod, pod_if.ifname, self.host_links)
        self.host_ifindexes.append(index)
        return index

    def _open_dataplane(self) -> None:
        from flexsfc.bench.dataplane_access import open_dataplane

        self.pin_dir = os.path.join(DEFAULT_PIN_DIR, f"bench-{self._tag}")
        self.dataplane = open_dataplane(self.pin_dir, peer=self.variant is Variant.XC_PEER)

    def _cross_connect(self, xc: str, a_port: int, *, b_port: int, a: PodIf, b: PodIf) -> None:
        from flexsfc.dataplane.api import ReplicaPort
        from flexsfc.model.types import Side

        self.dataplane.ensure_xc(xc)
        self.xc_names.append(xc)
        self.dataplane.set_replicas(xc, Side.A, [ReplicaPort(a_port, f"{a.pod}/{a.ifname}")])
        self.dataplane.set_replicas(xc, Side.B, [ReplicaPort(b_port, f"{b.pod}/{b.ifname}")])

    # -- pods --------------------------------------------------------------------------------------

    def _configure_firewall(self) -> None:
        with IPRoute(netns=self.firewall) as ipr:
            ipr.link("add", ifname="br0", kind="bridge", br_stp_state=0, br_forward_delay=0)
            br_index = ipr.link_lookup(ifname="br0")[0]
            for ifname in ("eth1", "eth2"):
                index = ipr.link_lookup(ifname=ifname)[0]
                ipr.link("set", index=index, master=br_index, state="up")
            ipr.link("set", index=br_index, state="up")
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        subprocess.run(
            ["ip", "netns", "exec", self.firewall, "nft", "-f", "-"],
            input=FIREWALL_RULESET,
            text=True,
            check=True,
            capture_output=True,
        )

    # -- observation -------------------------------------------------------------------------------

    def reachable(self, timeout: float = 3.0) -> bool:
        """Whether the client reaches the server (see wait_reachable)."""
        return wait_reachable(self.client, SERVER_IP, timeout)

    def prog_ids(self) -> list[int]:
        """Ids of the eBPF programs attached at TC ingress of this topology's host-side veths."""
        ids: set[int] = set()
        with IPRoute() as ipr:
            for ifindex in self.host_ifindexes:
                for flt in ipr.get_filters(index=ifindex, parent=0xFFFFFFF2):
                    options = flt.get_attr("TCA_OPTIONS")
                    # pyroute2 does not decode TCA_BPF_ID; the kernel names fd-attached
                    # programs "<prog name>:[<prog id>]" in TCA_BPF_NAME.
                    name = options.get_attr("TCA_BPF_NAME") if options is not None else None
                    match = _BPF_NAME_ID.search(name or "")
                    if match:
                        ids.add(int(match.group(1)))
        return sorted(ids)

    # -- teardown ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Remove everything this topology created; safe to call twice and after a partial build."""
        _release(self)


def _release(topo: "ChainTopology | FanoutTopology") -> None:
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
        if pin_dir and Path(pin_dir).exists():
            shutil.rmtree(pin_dir, ignore_errors=True)
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
    with IPRoute() as ipr:
        ipr.link(
            "add", ifname=host_name, kind="veth", peer={"ifname": pod_ifname, "net_ns_fd": netns_path(pod)}
        )
        host_links.append(host_name)
        index = ipr.link_lookup(ifname=host_name)[0]
        disable_host_ipv6(host_name)
        ipr.link("set", index=index, state="up")
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
        from flexsfc.bench.dataplane_access import open_dataplane
        from flexsfc.dataplane.api import ReplicaPort
        from flexsfc.model.types import Side

        pods = [self.client] + [self.replica_pod(i) for i in range(self.replicas)]
        for pod in pods:
            netns.create(pod)
            self.namespaces.append(pod)
            quiet_ipv6(pod)
        self.pin_dir = os.path.join(DEFAULT_PIN_DIR, f"bench-{self._tag}")
        self.dataplane = open_dataplane(self.pin_dir, peer=self.peer)
        self.xc = f"bench-{self._tag}"
        self.dataplane.ensure_xc(self.xc)
        client_port = self._host_veth(f"{self._tag}c", self.client)
        self.replica_ifindexes = [
            self._host_veth(f"{self._tag}r{i}", self.replica_pod(i)) for i in range(self.replicas)
        ]
        self.dataplane.set_replicas(self.xc, Side.A, [ReplicaPort(client_port, self.client)])
        _endpoint(self.client, CLIENT_IP, role_mac("client"), SERVER_IP, role_mac("server"))
        for i in range(self.replicas):
            _endpoint(self.replica_pod(i), SERVER_IP, role_mac("server"), CLIENT_IP, role_mac("client"))

    def _host_veth(self, host_name: str, pod: str) -> int:
        return add_host_veth(host_name, pod, "eth0", self.host_links)

    def set_replicas(self, active: list[int], draining: tuple[int, ...] = ()) -> None:
        """Make replicas `active` (and `draining`) the server side of the cross-connection."""
        from flexsfc.dataplane.api import ReplicaPort, ReplicaState
        from flexsfc.model.types import Side

        ports = [ReplicaPort(self.replica_ifindexes[i], self.replica_pod(i)) for i in active]
        ports += [
            ReplicaPort(self.replica_ifindexes[i], self.replica_pod(i), ReplicaState.DRAINING)
            for i in draining
        ]
        self.dataplane.set_replicas(self.xc, Side.B, ports)

    def close(self) -> None:
        _release(self)


def _endpoint(pod: str, ip: str, mac: str, peer_ip: str, peer_mac: str) -> None:
    with IPRoute(netns=pod) as ipr:
        index = ipr.link_lookup(ifname="eth0")[0]
        ipr.link("set", index=index, address=mac, state="up")
        ipr.addr("add", index=index, address=ip, prefixlen=PREFIXLEN)
        ipr.neigh("replace", dst=peer_ip, lladdr=peer_mac, ifindex=index, state=NUD_PERMANENT)
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
