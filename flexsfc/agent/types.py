"""What the node agent's reconciler takes in: NF replicas on this node with their interfaces.

Both front ends (the Kopf node-agent adapter and the local runtime) translate their view of pods into
these and call `flexsfc.agent.reconciler.Reconciler.reconcile(cross_connections, replicas)`.
"""

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from flexsfc.dataplane.naming import xc_key
from flexsfc.model.records import AttachmentRecord
from flexsfc.model.types import CrossConnectionSpec, Side

ChainKey = tuple[str, str]  # (namespace, chain name): chains, like CrossConnections, are namespaced


def dataplane_name(xc: CrossConnectionSpec) -> str:
    """The name of `xc` in the data plane: "namespace/name" (flexsfc.dataplane.naming.xc_key), so
    two tenants' cross-connections of the same name are two entries, never one."""
    return xc_key(xc.namespace, xc.name)


class ReplicaPhase(StrEnum):
    PENDING = "pending"  # interfaces may exist but the NF is not ready: not in any table yet
    RUNNING = "running"  # ready: takes new sessions
    TERMINATING = "terminating"  # deletion started: drained (keeps its sessions, gets no new ones)
    GONE = "gone"  # deleted: its ports leave the data plane


@dataclass(frozen=True)
class NfReplica:
    uid: str  # stable identity (pod UID); orders the Maglev tables
    namespace: str
    pod_name: str
    nf: str  # value of the flexsfc.io/network-function label
    phase: ReplicaPhase
    interfaces: tuple[AttachmentRecord, ...] = ()  # from flexsfc-cni, one per data-plane interface
    node: str = ""  # the node it runs on; "" = this node (a single-node picture)

    def interface(self, ifname: str) -> AttachmentRecord | None:
        return next((rec for rec in self.interfaces if rec.ifname == ifname), None)


@dataclass(frozen=True)
class Topology:
    """Where this agent sits among the nodes: replicas on other nodes are reached through the tunnel."""

    node: str  # this node's name
    nodes: Mapping[str, str] = field(default_factory=dict)  # every node's name -> underlay IPv4 address
    tunnel_device: str | None = None  # this node's VXLAN device (external, gbp); None: no tunnel

    def is_local(self, replica: NfReplica) -> bool:
        return replica.node in ("", self.node)


def side_ports(
    xc: CrossConnectionSpec, side: Side, replicas: Iterable[NfReplica]
) -> Iterator[tuple[NfReplica, AttachmentRecord]]:
    """(replica, record) for every replica of the side's NF, in the xc's namespace, whose side
    interface has a host port; whatever its phase (callers decide which phases count)."""
    spec = xc.side(side)
    for replica in replicas:
        if replica.nf != spec.nf or replica.namespace != xc.namespace:
            continue
        record = replica.interface(spec.interface)
        if record is not None and record.host_ifindex > 0:
            yield replica, record


def replicas_by_nf(replicas: Iterable[NfReplica]) -> dict[tuple[str, str], list[NfReplica]]:
    """Replicas grouped by (namespace, nf), in their given order: built once per reconcile so each
    side looks at its own NF's replicas instead of scanning all of them (O(xcs x replicas))."""
    groups: dict[tuple[str, str], list[NfReplica]] = {}
    for replica in replicas:
        groups.setdefault((replica.namespace, replica.nf), []).append(replica)
    return groups
