"""The node agent's per-node status on CrossConnections, written to the Kubernetes API emulator over
HTTP (KMock-based, NOT kube-apiserver). No data plane runs: the status comes from a reconcile report,
so the agent's AgentLoop is built but never started (it would need the eBPF data plane)."""

from pathlib import Path
from typing import Any

import kubernetes

from flexsfc.agent.loop import AgentLoop
from flexsfc.agent.reconciler import ReconcileReport
from flexsfc.model.constants import API_GROUP, API_GROUP_VERSION, API_VERSION, PLURAL_CROSS_CONNECTION
from flexsfc.operator.agent import NodeAgent

NODE = "node-a"


def side(nf: str) -> dict[str, Any]:
    return {"nf": nf, "interface": "eth1", "network": f"{nf}-eth1", "mode": "L2", "mac": "02:00:00:00:00:01"}


def xc_object(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_GROUP_VERSION,
        "kind": "CrossConnection",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_a_malformed_cross_connection_gets_a_status_and_does_not_stop_the_others(
    kube_api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    custom = kubernetes.client.CustomObjectsApi(kube_api)
    good = xc_object("c-a-b", {"chain": "c", "sideA": side("a"), "sideB": side("b")})
    bad = xc_object("c-b-d", {"chain": "c", "sideA": side("b")})  # no sideB
    agent = NodeAgent(NODE, AgentLoop(None), kube_api, cni_state_dir=str(tmp_path))  # type: ignore[arg-type]
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
