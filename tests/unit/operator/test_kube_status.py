"""`flexsfc status --kube` against the Kubernetes API emulator (KMock-based, NOT kube-apiserver), read
through a kubeconfig as a user would. The cluster's objects are written as their owners write them:
the chain's conditions as the controller, CrossConnection entries and the heartbeat Lease by a real
NodeAgent (its status and heartbeat code; no data plane runs), pods and Nodes as the kubelet.

Layout (namespace team-a, chain demo: a -- b): node-a runs a-0 (starting) and has a healthy agent;
node-b runs b-0, its agent refused b-0's interface and has since stopped (Lease expired); node-c runs
b-1 and has no agent at all.
"""

import datetime
import json
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from click.testing import CliRunner
from kube_emulator import EmulatorThread
from xc_objects import side, xc_object

from flexsfc.agent.hostports import Refusal
from flexsfc.agent.loop import AgentLoop
from flexsfc.agent.reconciler import ReconcileReport
from flexsfc.cli import main
from flexsfc.model.constants import (
    API_GROUP,
    API_GROUP_VERSION,
    API_VERSION,
    LABEL_CHAIN,
    LABEL_NF,
    PLURAL_CHAIN,
    PLURAL_CROSS_CONNECTION,
)
from flexsfc.model.records import AttachmentRecord
from flexsfc.operator.agent import NodeAgent
from flexsfc.operator.heartbeat import lease_body

NS = "team-a"
AGENTS_NS = "flexsfc-system"


class DropCounters:
    """The data plane as far as the heartbeat reads it."""

    def drop_stats(self) -> dict[str, int]:
        return {"no_replica": 7, "malformed": 0}


def run_pod(
    core: kubernetes.client.CoreV1Api, name: str, nf: str, node: str, *, ready: bool = True
) -> dict[str, Any]:
    core.create_namespaced_pod(
        NS,
        {
            "metadata": {"name": name, "labels": {LABEL_NF: nf}},
            "spec": {"nodeName": node, "containers": [{"name": nf, "image": "nf"}]},
        },
    )
    condition = {"type": "Ready", "status": str(ready)}
    phase = "Running" if ready else "Pending"
    pod = core.patch_namespaced_pod_status(name, NS, {"status": {"phase": phase, "conditions": [condition]}})
    return dict(core.api_client.sanitize_for_serialization(pod))


@pytest.fixture
def cluster(kube: EmulatorThread, kube_api: kubernetes.client.ApiClient, tmp_path: Path) -> Path:
    """The layout above; returns the path of a kubeconfig for the emulator."""
    core = kubernetes.client.CoreV1Api(kube_api)
    custom = kubernetes.client.CustomObjectsApi(kube_api)
    apps = kubernetes.client.AppsV1Api(kube_api)
    for node in ("node-a", "node-b", "node-c"):
        ready = {"type": "Ready", "status": "True"}
        core.create_node({"metadata": {"name": node}})
        core.patch_node_status(node, {"status": {"conditions": [ready]}})
    for nf in ("a", "b"):
        apps.create_namespaced_deployment(
            NS,
            {
                "metadata": {"name": nf, "labels": {LABEL_NF: nf}},
                "spec": {
                    "replicas": 2 if nf == "b" else 1,
                    "selector": {"matchLabels": {LABEL_NF: nf}},
                    "template": {
                        "metadata": {"labels": {LABEL_NF: nf}},
                        "spec": {"containers": [{"name": nf, "image": "nf"}]},
                    },
                },
            },
        )
    custom.create_namespaced_custom_object(
        API_GROUP,
        API_VERSION,
        NS,
        PLURAL_CHAIN,
        {
            "apiVersion": API_GROUP_VERSION,
            "kind": "ServiceFunctionChain",
            "metadata": {"name": "demo"},
            "spec": {
                "networkFunctions": [
                    {"name": "a", "links": {"b": "eth1"}},
                    {"name": "b", "links": {"a": "eth1"}},
                ]
            },
        },
    )
    message = "not programmed on every node hosting it: node node-b: demo-a-b: refused"
    custom.patch_namespaced_custom_object_status(
        API_GROUP,
        API_VERSION,
        NS,
        PLURAL_CHAIN,
        "demo",
        {
            "status": {
                "links": 1,
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "NotProgrammed", "message": message},
                ],
            }
        },
    )
    xc = custom.create_namespaced_custom_object(
        API_GROUP,
        API_VERSION,
        NS,
        PLURAL_CROSS_CONNECTION,
        xc_object(
            "demo-a-b",
            {"chain": "demo", "sideA": side("a"), "sideB": side("b")},
            labels={LABEL_CHAIN: "demo"},
        ),
    )
    pods = {
        "node-a": [run_pod(core, "a-0", "a", "node-a", ready=False)],  # starting: nothing to attach yet
        "node-b": [run_pod(core, "b-0", "b", "node-b")],
    }
    run_pod(core, "b-1", "b", "node-c")

    # node-a's and node-b's agents: their own status and heartbeat code, fed as their watches would.
    for node in ("node-a", "node-b"):
        agent = NodeAgent(
            node,
            AgentLoop(DropCounters()),  # type: ignore[arg-type]
            kube_api,
            cni_state_dir=str(tmp_path / node),
            lease_namespace=AGENTS_NS,
        )
        for pod in pods[node]:
            agent.index.pods[pod["metadata"]["uid"]] = pod
        agent.on_xc_event("ADDED", xc)
        if node == "node-b":
            record = AttachmentRecord(
                container_id="c0ffee",
                ifname="eth1",
                netns="/proc/1/ns/net",
                network="b-eth1",
                host_ifname="vethb0",
                host_ifindex=42,
                mac="02:00:00:00:00:01",
                mode="L2",
                pod_namespace=NS,
                pod_name="b-0",
                pod_uid=pods[node][0]["metadata"]["uid"],
            )
            agent.refused = {("c0ffee", "eth1"): Refusal(record, "veth vethb0 lacks the owner alias")}
        agent.push = lambda: None  # type: ignore[method-assign]  # (no data plane to hand a picture to)
        agent.on_report("test", ReconcileReport())
        agent.heartbeat(force=True)
    # node-b's agent then stopped: its Lease expired long ago.
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=10)
    expired = lease_body("node-b", {"version": "0.1.0"}, period=20, now=old)
    kubernetes.client.CoordinationV1Api(kube_api).patch_namespaced_lease(
        expired["metadata"]["name"], AGENTS_NS, {"spec": expired["spec"]}
    )

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emu", "cluster": {"server": kube.url}}],
                "users": [{"name": "me", "user": {}}],
                "contexts": [{"name": "emulator", "context": {"cluster": "emu", "user": "me"}}],
                "current-context": "emulator",
            }
        )
    )
    return kubeconfig


def status(kubeconfig: Path, *args: str) -> str:
    result = CliRunner().invoke(
        main, ["status", "--kube", "--kubeconfig", str(kubeconfig), *args], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_status_shows_chains_nfs_replicas_per_node_agents_drops_and_problems(cluster: Path) -> None:
    out = status(cluster, "-n", NS)
    assert "context emulator, namespace team-a" in out
    assert "0/1 Ready" in out  # chains
    assert "team-a/demo" in out and "a -> b" in out and "NotProgrammed" in out
    assert "team-a/a" in out and "team-a/b" in out  # NFs
    assert "node-b: 1/0/0, node-c: 1/0/0" in out  # b's replicas per node
    assert "1/3 healthy" in out  # agents: node-a ok; node-b expired; node-c none
    assert "no_replica=14" in out  # drops summed over the agents that report them
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("│ node-")}
    assert "ok (" in lines["node-a"]
    assert "expired" in lines["node-b"]
    assert "no heartbeat" in lines["node-c"]
    problems = out[out.index("Problems\n") :]
    assert "chain team-a/demo: not Ready (NotProgrammed)" in problems
    assert "node node-c: hosts 1 NF pod(s) but its agent has no heartbeat" in problems
    assert "node node-b: hosts 1 NF pod(s) but its agent has no heartbeat, last heartbeat" in problems
    assert "pod team-a/b-0: interface eth1 refused on node-b: veth vethb0 lacks the owner alias" in problems
    assert "link team-a/demo-a-b: on node-b: pod b-0: interface eth1 refused" in problems


def test_status_json_shape(cluster: Path) -> None:
    doc = json.loads(status(cluster, "--json"))
    assert set(doc) == {
        "context",
        "namespace",
        "agentNamespace",
        "chains",
        "networkFunctions",
        "crossConnections",
        "nodes",
        "drops",
        "problems",
    }
    assert doc["namespace"] is None and doc["context"] == "emulator"  # all namespaces
    (chain,) = doc["chains"]
    assert (chain["namespace"], chain["name"], chain["nfs"], chain["ready"]) == (
        NS,
        "demo",
        ["a", "b"],
        "False",
    )
    b = next(nf for nf in doc["networkFunctions"] if nf["nf"] == "b")
    assert b["deployment"] == "b" and b["desired"] == 2 and b["chains"] == ["demo"]
    assert b["nodes"] == {
        "node-b": {"running": 1, "pending": 0, "terminating": 0},
        "node-c": {"running": 1, "pending": 0, "terminating": 0},
    }
    (xc,) = doc["crossConnections"]
    assert set(xc["nodes"]) == {"node-a", "node-b"}
    assert xc["nodes"]["node-a"]["ready"] is True and xc["nodes"]["node-a"]["replicas_a"] == 0
    assert xc["nodes"]["node-b"]["ready"] is False
    agents = {n["name"]: n["agent"] for n in doc["nodes"]}
    assert (agents["node-a"]["state"], agents["node-a"]["healthy"]) == ("ok", True)
    assert agents["node-a"]["drops"] == {"malformed": 0, "no_replica": 7}
    assert agents["node-a"]["links_reported"] == 1 and agents["node-a"]["last_reconcile_ok"] is True
    assert agents["node-b"]["state"] == "expired" and agents["node-c"]["state"] == "missing"
    assert doc["drops"] == {"malformed": 0, "no_replica": 14}
    assert {p["severity"] for p in doc["problems"]} <= {"error", "warning"}
    assert {"chain team-a/demo", "node node-c", "pod team-a/b-0"} <= {p["subject"] for p in doc["problems"]}


def test_status_without_a_cluster_fails_cleanly(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["status", "--kube", "--kubeconfig", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "cannot load the kubeconfig" in result.output
