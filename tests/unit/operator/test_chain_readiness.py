"""Chain readiness from the node agents' reports: the real Kopf controller against the Kubernetes API
emulator (KMock-based, NOT kube-apiserver). The agents' reports are written as the node agent writes
them (status.nodes[<node>] merge patches on /status); pods and Nodes are written as the kubelet and
the node lifecycle would.

Layout: node-a runs one replica of every NF; node-b one more firewall, node-c one more gw.
"""

import contextlib
import datetime
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import pytest
from kube_emulator import EmulatorThread, wait_for
from test_chain_controller import XC_RESOURCE, chain_status, condition, create, example_objects

from flexsfc.model.constants import API_GROUP, API_VERSION, LABEL_NF, PLURAL_CROSS_CONNECTION
from flexsfc.operator import agent_handlers, controller_handlers
from flexsfc.operator.conditions import now_rfc3339
from flexsfc.operator.heartbeat import agent_namespace, lease_body, lease_name
from flexsfc.operator.kube import KubeTarget
from flexsfc.operator.runner import running_in_thread
from flexsfc.testing.memory import MemoryDataplane

NAMESPACE = "default"
LAYOUT = {
    "node-a": ["client", "nat", "firewall", "gw", "server"],
    "node-b": ["firewall"],
    "node-c": ["gw"],
}


class Cluster:
    def __init__(self, kube: EmulatorThread, api: kubernetes.client.ApiClient) -> None:
        self.kube = kube
        self.core = kubernetes.client.CoreV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)

    def add_node(self, name: str) -> None:
        self.core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})

    def start_pod(self, nf: str, node: str, index: int = 0) -> str:
        """An NF pod the scheduler bound to the node, not started yet."""
        name = f"{nf}-{node}-{index}"
        self.core.create_namespaced_pod(
            NAMESPACE,
            {
                "metadata": {"name": name, "labels": {LABEL_NF: nf}},
                "spec": {"nodeName": node, "containers": [{"name": nf, "image": "nf"}]},
            },
        )
        return name

    def run_pod(self, nf: str, node: str, index: int = 0) -> str:
        """A Running and Ready NF pod on the node (what the scheduler and the kubelet would make)."""
        name = self.start_pod(nf, node, index)
        ready = {"type": "Ready", "status": "True"}
        self.core.patch_namespaced_pod_status(
            name, NAMESPACE, {"status": {"phase": "Running", "conditions": [ready]}}
        )
        return name

    def xcs(self) -> dict[str, dict[str, Any]]:
        return {o["metadata"]["name"]: o for o in self.kube.objects(XC_RESOURCE)}

    def running(self, nf: str, node: str) -> int:
        return sum(
            1
            for pod in self.kube.objects("v1/pods")
            if pod["metadata"]["labels"].get(LABEL_NF) == nf
            and pod["spec"].get("nodeName") == node
            and not pod["metadata"].get("deletionTimestamp")
        )

    def renew_lease(self, node: str, *, period: float = 60.0) -> None:
        """The node agent's heartbeat (its Lease): a node without one keeps its chains from Ready."""
        body = lease_body(node, {}, period=period, now=datetime.datetime.now(datetime.UTC))
        coordination = kubernetes.client.CoordinationV1Api(self.core.api_client)
        try:
            coordination.patch_namespaced_lease(lease_name(node), agent_namespace(), body)
        except kubernetes.client.exceptions.ApiException as exc:
            if exc.status != 404:
                raise
            coordination.create_namespaced_lease(agent_namespace(), body)

    def report(self, node: str, *, ready: bool = True, message: str = "programmed") -> list[str]:
        """The node agent's report: its Lease, and an entry on every link whose NFs have a pod on the
        node."""
        self.renew_lease(node)
        reported = []
        for name, xc in self.xcs().items():
            a, b = xc["spec"]["sideA"]["nf"], xc["spec"]["sideB"]["nf"]
            if not (self.running(a, node) or self.running(b, node)):
                continue
            entry = {
                "ready": ready,
                "replicasA": self.running(a, node),
                "replicasB": self.running(b, node),
                "drainingA": 0,
                "drainingB": 0,
                "message": message,
                "observedGeneration": xc["metadata"]["generation"],
                "lastSyncTime": now_rfc3339(),
            }
            self.custom.patch_namespaced_custom_object_status(
                API_GROUP,
                API_VERSION,
                NAMESPACE,
                PLURAL_CROSS_CONNECTION,
                name,
                {"status": {"nodes": {node: entry}}},
            )
            reported.append(name)
        return reported

    def reporting_nodes(self) -> dict[str, set[str]]:
        return {name: set((xc.get("status") or {}).get("nodes") or {}) for name, xc in self.xcs().items()}

    def events(self, reason: str) -> list[dict[str, Any]]:
        return [e for e in self.kube.objects("v1/events") if e.get("reason") == reason]


def deploy_example(
    kube: EmulatorThread, kube_api: kubernetes.client.ApiClient, nodes: Iterable[str]
) -> tuple[Cluster, str]:
    """The nodes, then the example chain and its NFs' objects; the cluster and the chain's name."""
    cluster = Cluster(kube, kube_api)
    for node in nodes:
        cluster.add_node(node)
    chain, nf_objects = example_objects()
    for obj in nf_objects:
        create(kube_api, obj)
    create(kube_api, chain)
    return cluster, chain["metadata"]["name"]


def ready_condition(api: kubernetes.client.ApiClient, name: str) -> dict[str, Any]:
    return condition(chain_status(api, name), "Ready")


@pytest.mark.timeout(90)
def test_a_chain_is_ready_only_when_every_hosting_node_reports_and_stale_nodes_are_pruned(
    kube: EmulatorThread, kube_api: kubernetes.client.ApiClient, controller: None
) -> None:
    cluster, name = deploy_example(kube, kube_api, LAYOUT)

    # No replica anywhere yet: nothing to program, the links are applied.
    wait_for(lambda: len(cluster.xcs()) == 4, what="cross-connections")
    ready = wait_for(
        lambda: ready_condition(kube_api, name).get("status") == "True" and ready_condition(kube_api, name)
    )
    assert "no node hosts a replica yet" in ready["message"]

    # Replicas land on three nodes: not Ready until every one of those nodes reports.
    for node, nfs in LAYOUT.items():
        for nf in nfs:
            cluster.run_pod(nf, node)
    waiting = wait_for(
        lambda: (
            ready_condition(kube_api, name).get("reason") == "NotProgrammed"
            and all(f"node {node}" in ready_condition(kube_api, name)["message"] for node in LAYOUT)
            and ready_condition(kube_api, name)
        ),
        what="NotProgrammed naming every node",
    )
    assert waiting["status"] == "False"
    wait_for(lambda: cluster.events("NotProgrammed"), what="NotProgrammed event")

    cluster.report("node-a")
    cluster.report("node-b")
    message = wait_for(
        lambda: (
            "node node-a" not in (m := ready_condition(kube_api, name)["message"])
            and "node node-b" not in m
            and m
        ),
        what="node-a and node-b accepted",
    )
    assert ready_condition(kube_api, name)["status"] == "False"
    assert "node node-c: transparent-firewall-firewall-gw: no report" in message, message
    assert "node-c" in message and "gw-server: no report" in message

    # A node that reports a failure is named with the agent's message.
    cluster.report("node-c", ready=False, message="port 7 is wanted by two sides")
    wait_for(
        lambda: (
            "node node-c: transparent-firewall-firewall-gw: port 7 is wanted by two sides"
            in ready_condition(kube_api, name)["message"]
        ),
        what="the failing node's message",
    )

    cluster.report("node-c")
    ready = wait_for(
        lambda: ready_condition(kube_api, name).get("status") == "True" and ready_condition(kube_api, name),
        what="Ready",
    )
    assert ready["reason"] == "Programmed"
    assert "node-a, node-b, node-c" in ready["message"]
    wait_for(lambda: cluster.events("Ready"), what="Ready event")

    # One more firewall replica on node-a that its agent has not programmed yet: not Ready.
    cluster.run_pod("firewall", "node-a", index=1)
    behind = wait_for(
        lambda: ready_condition(kube_api, name).get("status") == "False" and ready_condition(kube_api, name),
        what="not Ready while node-a lags",
    )
    assert "node node-a: " in behind["message"] and "1 of 2 running firewall replica(s)" in behind["message"]
    cluster.report("node-a")
    wait_for(lambda: ready_condition(kube_api, name).get("status") == "True", what="Ready again")

    # node-b stops hosting (its only replica goes): its entries are pruned, the chain stays Ready.
    assert "node-b" in cluster.reporting_nodes()["transparent-firewall-nat-firewall"]
    kubernetes.client.CoreV1Api(kube_api).delete_namespaced_pod(
        "firewall-node-b-0", NAMESPACE, grace_period_seconds=0
    )
    wait_for(
        lambda: not any("node-b" in nodes for nodes in cluster.reporting_nodes().values()),
        what="node-b pruned",
    )
    assert cluster.reporting_nodes()["transparent-firewall-nat-firewall"] == {"node-a"}

    # node-c's Node object is deleted (its pods linger until the pod GC): its entries are pruned and
    # it no longer has to report.
    assert "node-c" in cluster.reporting_nodes()["transparent-firewall-gw-server"]
    kubernetes.client.CoreV1Api(kube_api).delete_node("node-c")
    wait_for(
        lambda: not any("node-c" in nodes for nodes in cluster.reporting_nodes().values()),
        what="node-c pruned",
    )
    ready = wait_for(
        lambda: ready_condition(kube_api, name).get("status") == "True" and ready_condition(kube_api, name),
        what="Ready on node-a only",
    )
    assert "on 1 node(s): node-a" in ready["message"], ready["message"]
    assert cluster.reporting_nodes() == {name: {"node-a"} for name in cluster.xcs()}


@pytest.mark.timeout(120)
def test_two_real_node_agents_drive_readiness_and_pruning(
    kube: EmulatorThread, kube_api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    """The real controller and two real node agents (Kopf, their handlers and loops, an in-memory
    data plane). The replicas are scheduled but not started (nothing for the agents to attach without
    a kubelet), so a node's report is ready as soon as its agent has seen the links and pods."""
    cluster, name = deploy_example(kube, kube_api, ("node-a", "node-b"))
    for nf in LAYOUT["node-a"]:
        cluster.start_pod(nf, "node-a")
    cluster.start_pod("firewall", "node-b")

    with contextlib.ExitStack() as stack:
        registry, _ = controller_handlers.build_registry(KubeTarget(kube.url))
        settings = controller_handlers.kopf.OperatorSettings()
        controller_handlers.configure(settings, peering=None, priority=0)
        stack.enter_context(running_in_thread(registry, settings, name="controller"))
        agents = {}
        for node in ("node-a", "node-b"):
            registry, agents[node] = agent_handlers.build_registry(
                KubeTarget(kube.url),
                node,
                MemoryDataplane(),  # type: ignore[arg-type]
                cni_state_dir=str(tmp_path / node),
                resync_seconds=0.2,
                heartbeat_seconds=0.5,
            )
            agent_settings = kopf.OperatorSettings()
            agent_handlers.configure(agent_settings, node)
            stack.enter_context(running_in_thread(registry, agent_settings, name=f"agent-{node}"))

        ready = wait_for(
            lambda: (
                ready_condition(kube_api, name).get("status") == "True"
                and "node-a, node-b" in ready_condition(kube_api, name)["message"]
                and ready_condition(kube_api, name)
            ),
            what="Ready on both nodes",
        )
        assert ready["reason"] == "Programmed"
        reporting = cluster.reporting_nodes()
        assert reporting["transparent-firewall-nat-firewall"] == {"node-a", "node-b"}
        assert reporting["transparent-firewall-client-nat"] == {"node-a"}  # node-b hosts neither NF
        leases = {lease["spec"]["holderIdentity"] for lease in kube.objects("coordination.k8s.io/v1/leases")}
        assert leases == {"node-a", "node-b"}

        # node-b stops hosting: pruned, and its agent does not write the entries back.
        kubernetes.client.CoreV1Api(kube_api).delete_namespaced_pod(
            "firewall-node-b-0", NAMESPACE, grace_period_seconds=0
        )
        wait_for(
            lambda: not any("node-b" in nodes for nodes in cluster.reporting_nodes().values()),
            what="node-b pruned",
        )
        time.sleep(1.0)  # several agent resync periods
        assert not any("node-b" in nodes for nodes in cluster.reporting_nodes().values())
        wait_for(
            lambda: "on 1 node(s): node-a" in ready_condition(kube_api, name)["message"],
            what="Ready on node-a",
        )

        # node-b hosts again: its agent reports again.
        cluster.start_pod("firewall", "node-b", index=1)
        wait_for(
            lambda: "node-b" in cluster.reporting_nodes()["transparent-firewall-firewall-gw"],
            what="node-b reports again",
        )
        wait_for(
            lambda: "node-a, node-b" in ready_condition(kube_api, name)["message"], what="Ready on both again"
        )


@pytest.mark.timeout(60)
def test_a_node_hosting_replicas_without_a_live_agent_keeps_the_chain_from_ready(
    kube: EmulatorThread, kube_api: kubernetes.client.ApiClient
) -> None:
    """A node whose agent's Lease is missing or expired is named in Ready and a NodeWithoutAgent
    Event, even when it left a report saying ready (an agent that stopped): the Leases are not
    watched, so the controller re-judges (here every 0.5 s)."""
    registry, _ = controller_handlers.build_registry(KubeTarget(kube.url), agent_check_seconds=0.5)
    settings = kopf.OperatorSettings()
    controller_handlers.configure(settings, peering=None, priority=0)
    with running_in_thread(registry, settings, name="controller"):
        cluster, name = deploy_example(kube, kube_api, ("node-a", "node-b"))
        wait_for(lambda: len(cluster.xcs()) == 4, what="cross-connections")
        for nf in LAYOUT["node-a"]:
            cluster.run_pod(nf, "node-a")
        cluster.run_pod("firewall", "node-b")
        cluster.report("node-a")
        cluster.report("node-b")
        wait_for(lambda: ready_condition(kube_api, name).get("status") == "True", what="Ready")
        before = len(cluster.events("NodeWithoutAgent"))  # the pods ran before the agents reported

        # node-b's agent stops: its Lease expires, its entries stay.
        expired = lease_body(
            "node-b", {}, period=1, now=datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
        )
        kubernetes.client.CoordinationV1Api(kube_api).patch_namespaced_lease(
            lease_name("node-b"), agent_namespace(), expired
        )
        message = wait_for(
            lambda: (
                ready_condition(kube_api, name).get("status") == "False"
                and ready_condition(kube_api, name)["message"]
            ),
            what="not Ready",
        )
        assert "node node-b: transparent-firewall-firewall-gw: no live agent on the node" in message
        assert "node node-a" not in message
        (event,) = wait_for(
            lambda: cluster.events("NodeWithoutAgent")[before:], what="NodeWithoutAgent event"
        )
        assert "node node-b hosts replicas of the chain but has no live flexsfc agent" in event["message"]

        # It comes back: Ready again without any other change.
        cluster.renew_lease("node-b")
        wait_for(lambda: ready_condition(kube_api, name).get("status") == "True", what="Ready again")
        time.sleep(1.5)  # several re-checks
        assert len(cluster.events("NodeWithoutAgent")) == before + 1
