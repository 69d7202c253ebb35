"""What the node agent's reconciler takes in: NF replicas on this node with their interfaces.

Both front ends (the Kopf node-agent adapter and the local runtime) translate their view of pods into
these and call `flexsfc.agent.reconciler.Reconciler.reconcile(cross_connections, replicas)`.
"""

from dataclasses import dataclass
from enum import StrEnum

from flexsfc.model.records import AttachmentRecord


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

    def interface(self, ifname: str) -> AttachmentRecord | None:
        return next((rec for rec in self.interfaces if rec.ifname == ifname), None)
