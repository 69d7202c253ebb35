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

import os
import re
import subprocess
import uuid
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute, netns

from flexsfc.bench.topologies.pods import (
    CLIENT_IP,
    SERVER_IP,
    BuiltOnEnter,
    ClientServerPods,
    PodIf,
    Variant,
    add_host_bridge,
    add_host_veth,
    endpoint,
    quiet_ipv6,
    release_topology,
    role_mac,
    wait_reachable,
)
from flexsfc.dataplane.api import ReplicaPort
from flexsfc.model.constants import DEFAULT_PIN_DIR
from flexsfc.model.types import Side
from flexsfc.testing import netlab
from flexsfc.util.netns import in_netns

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
        endpoint(self.client, CLIENT_IP, role_mac("client"), SERVER_IP, role_mac("server"))
        endpoint(self.server, SERVER_IP, role_mac("server"), CLIENT_IP, role_mac("client"))
        if self.pods == 3:
            self._configure_firewall()

    # -- wiring ----------------------------------------------------------------------------------

    def _wire(self, index: int, a: PodIf, b: PodIf) -> None:
        if self.variant is Variant.VETH:
            with in_netns(a.pod):
                netlab.add_veth(a.ifname, b.ifname, peer_netns=b.pod)
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
        self.pin_dir = os.path.join(DEFAULT_PIN_DIR, f"bench-{self._tag}")
        self.dataplane = netlab.open_dataplane(self.pin_dir, peer=self.variant is Variant.XC_PEER)

    def _cross_connect(self, xc: str, a_port: int, *, b_port: int, a: PodIf, b: PodIf) -> None:
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
        release_topology(self)
