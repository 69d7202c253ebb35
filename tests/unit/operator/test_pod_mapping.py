"""Pod objects -> NfReplica: lifecycle phases and where the interfaces come from (pure mapping)."""

import json
from typing import Any

from flexsfc.agent.types import ReplicaPhase
from flexsfc.model.constants import ANNOTATION_INTERFACES, ANNOTATION_NETWORK_STATUS, LABEL_NF
from flexsfc.model.records import AttachmentRecord
from flexsfc.operator.pods import RecordIndex, pod_phase, pod_to_replica


def record(ifname: str, host_ifindex: int, uid: str = "u1") -> AttachmentRecord:
    return AttachmentRecord(
        container_id="c1",
        ifname=ifname,
        netns="/run/netns/x",
        network="net",
        host_ifname=f"fx{host_ifindex}",
        host_ifindex=host_ifindex,
        mac="02:00:00:00:00:01",
        mode="L3",
        pod_namespace="default",
        pod_name="fw-0",
        pod_uid=uid,
    )


def pod(phase: str = "Running", ready: str = "True", **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "fw-0", "namespace": "default", "uid": "u1", "labels": {LABEL_NF: "fw"}, **meta},
        "spec": {"nodeName": "n1"},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]},
    }


def test_lifecycle_phases() -> None:
    assert pod_phase(pod()) is ReplicaPhase.RUNNING
    assert pod_phase(pod(ready="False")) is ReplicaPhase.PENDING
    assert pod_phase(pod(phase="Pending", ready="False")) is ReplicaPhase.PENDING
    assert pod_phase(pod(phase="Succeeded")) is ReplicaPhase.PENDING
    assert pod_phase(pod(deletionTimestamp="2026-01-01T00:00:00Z")) is ReplicaPhase.TERMINATING
    assert pod_phase(pod(), deleted=True) is ReplicaPhase.GONE


def test_only_node_local_records_are_interfaces_the_annotation_is_reported_only() -> None:
    """The annotation is tenant-writable: an interface only it names (here the node's uplink, #2)
    never becomes a port; it is listed as annotated only."""
    annotated = [record("eth1", 7).to_json_dict(), record("eth2", 2).to_json_dict()]
    obj = pod(annotations={ANNOTATION_INTERFACES: json.dumps(annotated)})
    view = pod_to_replica(obj, RecordIndex([record("eth1", 42)]))
    assert view is not None
    assert [(r.ifname, r.host_ifindex) for r in view.replica.interfaces] == [("eth1", 42)]
    assert view.annotated_only == ("eth2",)


def test_records_matched_by_name_when_the_runtime_gave_no_uid() -> None:
    view = pod_to_replica(pod(), RecordIndex([record("eth1", 5, uid="")]))
    assert view is not None and view.replica.interface("eth1") is not None


def test_multus_network_status_reports_interfaces_without_record() -> None:
    status = [
        {"name": "cluster-default", "interface": "eth0", "default": True},
        {"name": "default/fw-eth1", "interface": "eth1", "mac": "02:00:00:00:00:01"},
    ]
    view = pod_to_replica(pod(annotations={ANNOTATION_NETWORK_STATUS: json.dumps(status)}), RecordIndex([]))
    assert view is not None
    assert view.replica.interfaces == () and view.missing_interfaces == ("eth1",)


def test_pods_without_nf_label_and_broken_annotations() -> None:
    plain = pod()
    plain["metadata"]["labels"] = {}
    assert pod_to_replica(plain, RecordIndex([])) is None
    broken = pod_to_replica(pod(annotations={ANNOTATION_INTERFACES: "{not json"}), RecordIndex([]))
    assert broken is not None and broken.replica.interfaces == ()
