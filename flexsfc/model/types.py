"""Typed model of what users declare and what the planner derives from it.

Manifest parsing and validation fill these; the agent, the operator and the local runtime consume
them. Everything here is immutable and free of Kubernetes client types.
"""

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from flexsfc.model.constants import DEFAULT_MAGLEV_TABLE_SIZE, DEFAULT_SESSION_TIMEOUTS
from flexsfc.model.errors import Issue

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class Mode(StrEnum):
    L2 = "L2"  # bump in the wire: no addresses, the NF forwards whatever arrives
    L3 = "L3"  # addressed interface (static IPAM)


class Side(StrEnum):
    A = "A"
    B = "B"

    @property
    def other(self) -> "Side":
        return Side.B if self is Side.A else Side.A


@dataclass(frozen=True)
class NetworkFunctionSpec:
    name: str
    links: dict[str, str]  # neighbour NF name -> this NF's interface name


@dataclass(frozen=True)
class SessionTimeouts:
    """Idle timeouts (seconds) after which the agent frees a confirmed session, per protocol class:
    TCP and SCTP; UDP; ICMP, ICMPv6 and ARP; every other protocol."""

    tcp: int = DEFAULT_SESSION_TIMEOUTS["tcp"]
    udp: int = DEFAULT_SESSION_TIMEOUTS["udp"]
    icmp: int = DEFAULT_SESSION_TIMEOUTS["icmp"]
    other: int = DEFAULT_SESSION_TIMEOUTS["other"]


@dataclass(frozen=True)
class ChainSettings:
    maglev_table_size: int = DEFAULT_MAGLEV_TABLE_SIZE
    session_timeouts: SessionTimeouts = SessionTimeouts()


@dataclass(frozen=True)
class ChainSpec:
    name: str
    namespace: str
    network_functions: tuple[NetworkFunctionSpec, ...]
    settings: ChainSettings = ChainSettings()

    def nf(self, name: str) -> NetworkFunctionSpec | None:
        return next((nf for nf in self.network_functions if nf.name == name), None)


@dataclass(frozen=True)
class NetworkSelection:
    """One entry of a pod's k8s.v1.cni.cncf.io/networks annotation."""

    network: str  # NetworkAttachmentDefinition name
    interface: str  # interface name inside the pod
    namespace: str | None = None


@dataclass(frozen=True)
class NetworkAttachment:
    """A NetworkAttachmentDefinition whose config uses the flexsfc CNI plugin."""

    name: str
    namespace: str
    config: dict[str, Any]  # the parsed spec.config CNI configuration
    mac_generation_string: str
    mode: Mode
    addresses: tuple[IPInterface, ...] = ()
    mtu: int = 1500


@dataclass(frozen=True)
class NfDeployment:
    """An apps/v1 Deployment whose pods carry the flexsfc.io/network-function label."""

    name: str
    namespace: str
    nf: str
    replicas: int
    networks: tuple[NetworkSelection, ...]
    pod_template: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class XcSide:
    nf: str
    interface: str  # interface name inside the NF pods
    network: str  # NetworkAttachmentDefinition name
    mode: Mode
    mac: str  # shared by every replica (derive_mac)
    addresses: tuple[IPInterface, ...] = ()  # shared by every replica (L3 only)

    def to_json(self) -> dict[str, object]:
        """The side as a CrossConnection's spec and the agents' pictures carry it. Every key always
        present (addresses too), so a JSON merge patch of a spec replaces a side whole."""
        return {
            "nf": self.nf,
            "interface": self.interface,
            "network": self.network,
            "mode": self.mode.value,
            "mac": self.mac,
            "addresses": [str(address) for address in self.addresses],
        }


@dataclass(frozen=True)
class CrossConnectionSpec:
    name: str  # valid Kubernetes name, unique per chain and link
    chain: str
    namespace: str
    side_a: XcSide  # the NF listed earlier in spec.networkFunctions
    side_b: XcSide

    def side(self, side: Side) -> XcSide:
        return self.side_a if side is Side.A else self.side_b


@dataclass
class Plan:
    chains: list[ChainSpec]
    cross_connections: list[CrossConnectionSpec]
    deployments: list[NfDeployment]
    attachments: list[NetworkAttachment]
    warnings: list[str] = field(default_factory=list)
    # Every finding (warnings; errors only when built without raising), with object, field path, fix.
    issues: list[Issue] = field(default_factory=list)
