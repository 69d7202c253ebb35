"""Nodes as the node agent needs them for multi-node chains: each node's underlay address (the tunnel
destination of the replicas it hosts) and what keeps a node from being one.

A node's underlay address is its IPv4 `InternalIP` (status.addresses): the address the kubelet and the
other nodes use to reach it, so the one a firewall between nodes already knows. A node is left out of
the agents' picture, with a problem naming why, when
- it has no IPv4 InternalIP (an IPv6-only node: the tunnel underlay is IPv4), or
- its address is also another node's: a tunnel packet sent there could land on either node, and the
  receiving data plane could not tell which node sent it; neither node is used rather than one at
  random (the error is in the cluster's configuration and must be fixed there).
Replicas on a node left out get no traffic from other nodes (the reconciler skips them and the agents
report it in the CrossConnection's status.nodes and as an Event): never a silent black hole.

The underlay MTU is the MTU of the link holding this node's address (what a tunnel packet leaves by).
"""

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeMap:
    """Every node's underlay address, and why the other nodes have none."""

    addresses: dict[str, str] = field(default_factory=dict)  # node name -> IPv4 address
    problems: dict[str, str] = field(default_factory=dict)  # node name -> why it is left out

    def reachable(self, node: str) -> bool:
        return node in self.addresses


def internal_ipv4(node: Mapping[str, Any]) -> str | None:
    """The node's first IPv4 InternalIP (dual-stack nodes list one per family)."""
    for entry in (node.get("status") or {}).get("addresses") or []:
        if not isinstance(entry, dict) or entry.get("type") != "InternalIP":
            continue
        try:
            address = ipaddress.ip_address(str(entry.get("address", "")))
        except ValueError:
            continue
        if address.version == 4:
            return str(address)
    return None


def node_map(nodes: Iterable[Mapping[str, Any]]) -> NodeMap:
    result = NodeMap()
    by_address: dict[str, list[str]] = {}
    for node in nodes:
        name = str((node.get("metadata") or {}).get("name", ""))
        if not name:
            continue
        address = internal_ipv4(node)
        if address is None:
            result.problems[name] = "has no IPv4 InternalIP in status.addresses (the tunnel underlay is IPv4)"
            continue
        by_address.setdefault(address, []).append(name)
    for address, names in sorted(by_address.items()):
        if len(names) == 1:
            result.addresses[names[0]] = address
            continue
        for name in names:
            others = ", ".join(sorted(n for n in names if n != name))
            result.problems[name] = f"shares its InternalIP {address} with node(s) {others}"
    return result


def underlay_mtu(address: str) -> int | None:
    """The MTU of the link in this thread's network namespace that holds `address`; None when no link
    holds it (the node's address is NATed or not configured here: the caller says what to set)."""
    with IPRoute() as ipr:
        for entry in ipr.get_addr(family=2):  # AF_INET
            if entry.get_attr("IFA_ADDRESS") == address or entry.get_attr("IFA_LOCAL") == address:
                links = ipr.get_links(entry["index"])
                return int(links[0].get_attr("IFLA_MTU")) if links else None
    return None
