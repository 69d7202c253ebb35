"""The node agent's per-node status on CrossConnections, written to the Kubernetes API emulator over
HTTP (KMock-based, NOT kube-apiserver). No data plane runs: the status comes from a reconcile report,
so the agent's AgentLoop is built but never started (it would need the eBPF data plane)."""

import datetime
from pathlib import Path
from typing import Any

import kubernetes
from xc_objects import side, xc_object

from flexsfc.agent.loop import AgentLoop
from flexsfc.agent.reconciler import ReconcileReport
from flexsfc.model.constants import (
    API_GROUP,
    API_VERSION,
    LABEL_NF,
    PLURAL_CROSS_CONNECTION,
)
from flexsfc.operator.agent import NodeAgent
from flexsfc.operator.heartbeat import heartbeat_from_lease, lease_name

NODE = "node-a"


def host(agent: NodeAgent, namespace: str, *nfs: str) -> None:
    """Pods of these NFs on the agent's node, as its pod watch would have indexed them."""
    for nf in nfs:
        uid = f"{namespace}-{nf}-0"
        agent.index.pods[uid] = {
            "metadata": {"name": f"{nf}-0", "namespace": namespace, "uid": uid, "labels": {LABEL_NF: nf}},
            "spec": {"nodeName": agent.node_name},
            "status": {"phase": "Pending"},
        }


def test_a_malformed_cross_connection_gets_a_status_and_does_not_stop_the_others(
    kube_api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    custom = kubernetes.client.CustomObjectsApi(kube_api)
    good = xc_object("c-a-b", {"chain": "c", "sideA": side("a"), "sideB": side("b")})
    bad = xc_object("c-b-d", {"chain": "c", "sideA": side("b")})  # no sideB
    agent = NodeAgent(NODE, AgentLoop(None), kube_api, cni_state_dir=str(tmp_path))  # type: ignore[arg-type]
    host(agent, "default", "b")
    for obj in (bad, good):
        created = custom.create_namespaced_custom_object(
            API_GROUP, API_VERSION, "default", PLURAL_CROSS_CONNECTION, obj
        )
        agent.on_xc_event("ADDED", created)
    # Being deleted as well: left out of the data plane, but its status is still reported.
    deleting = custom.get_namespaced_custom_object(
        API_GROUP, API_VERSION, "default", PLURAL_CROSS_CONNECTION, "c-b-d"
    )
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    agent.on_xc_event("MODIFIED", deleting)

    agent.on_report("test", ReconcileReport())

    def node_status(name: str) -> dict[str, Any]:
        obj = custom.get_namespaced_custom_object(
            API_GROUP, API_VERSION, "default", PLURAL_CROSS_CONNECTION, name
        )
        return obj["status"]["nodes"][NODE]

    assert node_status("c-b-d")["ready"] is False
    assert "malformed spec" in node_status("c-b-d")["message"]
    good_status = node_status("c-a-b")
    assert good_status["ready"] is True
    assert (good_status["replicasA"], good_status["replicasB"]) == (0, 0)


def test_errors_and_conflicts_reach_the_status_of_their_own_namespace_only(
    kube_api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    """The report names cross-connections "namespace/name": a conflict of team-a's c-a-b marks that
    object not ready, never team-b's object of the same name."""
    custom = kubernetes.client.CustomObjectsApi(kube_api)
    agent = NodeAgent(NODE, AgentLoop(None), kube_api, cni_state_dir=str(tmp_path))  # type: ignore[arg-type]
    for namespace in ("team-a", "team-b"):
        host(agent, namespace, "a")
        created = custom.create_namespaced_custom_object(
            API_GROUP,
            API_VERSION,
            namespace,
            PLURAL_CROSS_CONNECTION,
            xc_object("c-a-b", {"chain": "c", "sideA": side("a"), "sideB": side("b")}),
        )
        agent.on_xc_event("ADDED", created)
    conflict = "team-a/c-a-b: port 7 (team-a/a-0 eth1) is wanted by team-a/c-a-b side A, team-a/d side A"
    agent.on_report("test", ReconcileReport(errors=[conflict], conflicts=[conflict]))

    def node_status(namespace: str) -> dict[str, Any]:
        obj = custom.get_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL_CROSS_CONNECTION, "c-a-b"
        )
        return obj["status"]["nodes"][NODE]

    assert node_status("team-a")["ready"] is False
    assert "port 7 (team-a/a-0 eth1) is wanted by" in node_status("team-a")["message"]
    assert node_status("team-b")["ready"] is True
    assert "wanted by" not in node_status("team-b")["message"]  # its pending pod is noted, nothing more


def test_only_hosting_nodes_report_and_a_pruned_entry_is_written_again(
    kube_api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    custom = kubernetes.client.CustomObjectsApi(kube_api)
    agent = NodeAgent(NODE, AgentLoop(None), kube_api, cni_state_dir=str(tmp_path))  # type: ignore[arg-type]
    created = custom.create_namespaced_custom_object(
        API_GROUP,
        API_VERSION,
        "default",
        PLURAL_CROSS_CONNECTION,
        xc_object("c-a-b", {"chain": "c", "sideA": side("a"), "sideB": side("b")}),
    )
    agent.on_xc_event("ADDED", created)

    def nodes() -> dict[str, Any]:
        obj = custom.get_namespaced_custom_object(
            API_GROUP, API_VERSION, "default", PLURAL_CROSS_CONNECTION, "c-a-b"
        )
        return dict((obj.get("status") or {}).get("nodes") or {})

    agent.on_report("test", ReconcileReport())
    assert nodes() == {}  # this node hosts nothing of a or b: no entry

    host(agent, "default", "b")
    agent.on_report("test", ReconcileReport())
    assert set(nodes()) == {NODE}

    # The controller prunes the entry (say its pod listing was older): the next report restores it.
    pruned = custom.patch_namespaced_custom_object_status(
        API_GROUP,
        API_VERSION,
        "default",
        PLURAL_CROSS_CONNECTION,
        "c-a-b",
        {"status": {"nodes": {NODE: None}}},
    )
    assert nodes() == {}
    agent.on_xc_event("MODIFIED", pruned)
    agent.on_report("test", ReconcileReport())
    assert set(nodes()) == {NODE}


def test_the_heartbeat_lease_carries_a_bounded_summary(
    kube_api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    agent = NodeAgent(
        NODE,
        AgentLoop(None),  # type: ignore[arg-type]
        kube_api,
        cni_state_dir=str(tmp_path),
        heartbeat_seconds=5,
        lease_namespace="agents",
    )
    agent.on_report("resync", ReconcileReport(errors=["x: boom"]))
    agent.heartbeat(force=True)
    agent.heartbeat(force=True)  # the second renews (patch), the first created it
    lease = kubernetes.client.CoordinationV1Api(kube_api).read_namespaced_lease(lease_name(NODE), "agents")
    heartbeat = heartbeat_from_lease(kube_api.sanitize_for_serialization(lease))
    assert heartbeat is not None and heartbeat.node == NODE
    assert heartbeat.duration_seconds == 15
    assert heartbeat.alive(datetime.datetime.now(datetime.UTC))
    summary = heartbeat.summary
    assert summary["lastReconcile"]["ok"] is False and summary["lastReconcile"]["errors"] == ["x: boom"]
    assert summary["refusedTotal"] == 0 and summary["links"] == {"reported": 0, "ready": 0}
    assert "drops" not in summary  # this data plane has no counters
