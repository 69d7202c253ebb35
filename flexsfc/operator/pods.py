"""NF pod objects -> the reconciler's NfReplica: lifecycle phase and data-plane interfaces.

Phase: running and Ready -> RUNNING; deletionTimestamp set -> TERMINATING (drained: no new sessions,
established ones stay until the interfaces disappear, which the preStop delay postpones); deleted ->
GONE; anything else (scheduled, starting, not ready, finished) -> PENDING.

Interfaces come from one source only: the CNI plugin's records in its state directory on this node
(root-owned, written by the same ADD that made the veth), which the agent checks against the host's
links before use (flexsfc.agent.hostports). The pod's annotations are informational, never a source:
- flexsfc.io/interfaces (written by the plugin when it has a kubeconfig) is writable by whoever can
  edit the pod, so trusting it would let a tenant point the agent at any host interface (the node's
  uplink, another tenant's veth); an interface it lists without a node-local record is reported;
- Multus' k8s.v1.cni.cncf.io/network-status lists the pod's interfaces but not their host-side veth
  (all replicas share MAC and addresses, so nothing there tells replicas apart): it only serves to
  report flexsfc interfaces that have no record.
"""

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flexsfc.agent.types import NfReplica, ReplicaPhase
from flexsfc.model.constants import ANNOTATION_INTERFACES, ANNOTATION_NETWORK_STATUS, LABEL_NF
from flexsfc.model.records import AttachmentRecord

log = logging.getLogger(__name__)


def pod_is_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    conditions = status.get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pod_phase(pod: dict[str, Any], *, deleted: bool = False) -> ReplicaPhase:
    if deleted:
        return ReplicaPhase.GONE
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return ReplicaPhase.TERMINATING
    if pod_is_ready(pod):
        return ReplicaPhase.RUNNING
    return ReplicaPhase.PENDING


def annotation_records(pod: dict[str, Any]) -> list[AttachmentRecord]:
    """What the pod's flexsfc.io/interfaces annotation claims: for reports only, never attached."""
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_INTERFACES)
    if not raw:
        return []
    try:
        return [AttachmentRecord.from_json_dict(entry) for entry in json.loads(raw)]
    except (ValueError, TypeError, AttributeError) as exc:
        meta = pod.get("metadata") or {}
        log.warning(
            "pod %s/%s: unreadable %s annotation: %s",
            meta.get("namespace"),
            meta.get("name"),
            ANNOTATION_INTERFACES,
            exc,
        )
        return []


def network_status_interfaces(pod: dict[str, Any]) -> dict[str, str]:
    """Interface name -> network ("namespace/nad") from Multus' network-status annotation."""
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_NETWORK_STATUS)
    try:
        entries = json.loads(raw) if raw else []
        return {
            e["interface"]: e.get("name", "") for e in entries if isinstance(e, dict) and e.get("interface")
        }
    except (ValueError, TypeError):
        return {}


class RecordIndex:
    """The CNI state directory's records, by pod UID and by namespace/name (for runtimes without UID)."""

    def __init__(self, records: Iterable[AttachmentRecord]) -> None:
        self.by_uid: dict[str, list[AttachmentRecord]] = {}
        self.by_name: dict[tuple[str, str], list[AttachmentRecord]] = {}
        for record in records:
            if record.pod_uid:
                self.by_uid.setdefault(record.pod_uid, []).append(record)
            elif record.pod_name:
                self.by_name.setdefault((record.pod_namespace, record.pod_name), []).append(record)

    def for_pod(self, uid: str, namespace: str, name: str) -> list[AttachmentRecord]:
        return self.by_uid.get(uid) or self.by_name.get((namespace, name)) or []


@dataclass(frozen=True)
class PodView:
    replica: NfReplica
    missing_interfaces: tuple[str, ...] = ()  # flexsfc interfaces Multus reports but no record has
    # Interfaces the pod's flexsfc.io/interfaces annotation lists without a node-local record: ignored.
    annotated_only: tuple[str, ...] = ()


def pod_to_replica(pod: dict[str, Any], records: RecordIndex, *, deleted: bool = False) -> PodView | None:
    """None when the pod is no NF pod (no label)."""
    meta = pod.get("metadata") or {}
    nf = (meta.get("labels") or {}).get(LABEL_NF)
    if not nf:
        return None
    uid, namespace, name = meta.get("uid", ""), meta.get("namespace") or "default", meta.get("name", "")
    by_ifname = {record.ifname: record for record in records.for_pod(uid, namespace, name)}
    interfaces = tuple(by_ifname[i] for i in sorted(by_ifname))
    reported = network_status_interfaces(pod)
    missing = tuple(sorted(i for i in reported if i not in by_ifname and i != "eth0" and reported[i]))
    annotated_only = tuple(sorted({r.ifname for r in annotation_records(pod)} - set(by_ifname)))
    replica = NfReplica(
        uid=uid,
        namespace=namespace,
        pod_name=name,
        nf=nf,
        phase=pod_phase(pod, deleted=deleted),
        interfaces=interfaces,
    )
    return PodView(replica, missing, annotated_only)


def remote_replica(pod: dict[str, Any], *, deleted: bool = False) -> NfReplica | None:
    """A replica on another node: no interfaces (its node attaches them), identity = its UID, the
    identity its own node gives its ports. None when the pod is no NF pod or is not bound to a node."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    nf = (meta.get("labels") or {}).get(LABEL_NF)
    if not nf or not spec.get("nodeName") or not meta.get("uid"):
        return None
    return NfReplica(
        uid=meta["uid"],
        namespace=meta.get("namespace") or "default",
        pod_name=meta.get("name", ""),
        nf=nf,
        phase=pod_phase(pod, deleted=deleted),
        node=str(spec["nodeName"]),
    )
