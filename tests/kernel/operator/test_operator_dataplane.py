"""Controller + node agent (real Kopf, real flexsfc-cni, real eBPF data plane, real packets) against a
Kubernetes API *emulator* over HTTP (KMock-based, tests/unit/operator/kube_emulator.py; NOT
kube-apiserver: there is no kubelet, so the test plays it by writing pod objects and their status).

The "node" is a network namespace the test creates (its host side); NF pods are network namespaces
wired by flexsfc-cni invoked as Multus would. The agent's data-plane calls run in the node namespace
through a thin proxy that switches the calling thread into it (the real facade underneath).
"""

import json
import socket
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import pytest
from kube_emulator import EmulatorThread, wait_for
from node_lab import InNetnsDataplane

from flexsfc.dataplane.facade import Dataplane
from flexsfc.local.cni import CniCall, cni_add, cni_del
from flexsfc.model.constants import (
    API_GROUP,
    API_VERSION,
    LABEL_NF,
    PLURAL_CHAIN,
    PLURAL_CROSS_CONNECTION,
)
from flexsfc.model.types import Side
from flexsfc.operator import agent_handlers, controller_handlers
from flexsfc.operator.agent import NodeAgent
from flexsfc.operator.kube import KubeTarget
from flexsfc.operator.runner import running_in_thread
from flexsfc.util.netns import in_netns, netns_path

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

NAMESPACE = "default"
NODE = "node-a"
CLIENT_IP, SERVER_IP = "10.77.0.1", "10.77.0.2"
UDP_PORT = 5000
XC_RESOURCE = f"{API_GROUP}/{API_VERSION}/{PLURAL_CROSS_CONNECTION}"


def nad(name: str, address: str) -> dict[str, Any]:
    config = {
        "cniVersion": "1.0.0",
        "name": name,
        "type": "flexsfc-cni",
        "macGenerationString": name,
        "ipam": {"type": "static", "addresses": [{"address": address}]},
    }
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"config": json.dumps(config)},
    }


def deployment(nf: str, network: str, replicas: int) -> dict[str, Any]:
    labels = {LABEL_NF: nf}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": nf, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"k8s.v1.cni.cncf.io/networks": f"{network}@eth1"},
                },
                "spec": {"containers": [{"name": nf, "image": "nf-tools", "command": ["sleep", "infinity"]}]},
            },
        },
    }


@dataclass
class FakePod:
    """A pod as the emulator stores it plus the netns and attachment the test made for it."""

    name: str
    uid: str
    netns: str
    container_id: str
    call: CniCall


class Cluster:
    """The test's kubelet: pod objects in the emulator, network namespaces + CNI ADD/DEL on the node."""

    def __init__(
        self, api: kubernetes.client.ApiClient, node_ns: str, netns_factory: Any, state_dir: Path
    ) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.node_ns, self.netns_factory, self.state_dir = node_ns, netns_factory, state_dir
        self.pods: list[FakePod] = []

    def start_pod(self, nf: str, index: int, nad_obj: dict[str, Any]) -> FakePod:
        name = f"{nf}-{index}"
        created = self.core.create_namespaced_pod(
            NAMESPACE,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": {LABEL_NF: nf}},
                "spec": {"nodeName": NODE, "containers": [{"name": nf, "image": "nf-tools"}]},
            },
        )
        netns = self.netns_factory(nf[:3])
        config = dict(json.loads(nad_obj["spec"]["config"]), stateDir=str(self.state_dir))
        call = CniCall(
            container_id=uuid.uuid4().hex,
            netns_path=netns_path(netns),
            ifname="eth1",
            pod_namespace=NAMESPACE,
            pod_name=name,
            pod_uid=created.metadata.uid,
            config=config,
        )
        with in_netns(self.node_ns):  # the plugin (a child process) puts the host end here
            cni_add(call)
        pod = FakePod(name, created.metadata.uid, netns, call.container_id, call)
        self.pods.append(pod)
        ready = {"type": "Ready", "status": "True"}
        self.core.patch_namespaced_pod_status(
            name, NAMESPACE, {"status": {"phase": "Running", "conditions": [ready]}}
        )
        return pod

    def start_terminating(self, pod: FakePod) -> None:
        """A graceful DELETE (as kubectl or a ReplicaSet scaling in): deletionTimestamp set, pod stays."""
        self.core.delete_namespaced_pod(pod.name, NAMESPACE)

    def remove(self, pod: FakePod) -> None:
        with in_netns(self.node_ns):
            cni_del(pod.call)
        self.core.delete_namespaced_pod(
            pod.name, NAMESPACE, grace_period_seconds=0
        )  # the kubelet's last word
        self.pods.remove(pod)

    def cleanup(self) -> None:
        for pod in list(self.pods):
            try:
                with in_netns(self.node_ns):
                    cni_del(pod.call)
            except Exception:
                pass  # the namespaces go with netns_factory anyway


def udp_socket(netns: str, address: str, port: int = 0) -> socket.socket:
    with in_netns(netns):  # a socket stays in the namespace it was created in
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    return sock


def deliveries(servers: dict[str, socket.socket], timeout: float = 1.0) -> dict[int, str]:
    """Source port -> name of the server replica that received the datagram."""
    got: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, sock in servers.items():
            try:
                _, (_, port) = sock.recvfrom(2048)
                got[port] = name
            except BlockingIOError:
                continue
        time.sleep(0.01)
    return got


def test_chain_on_emulated_cluster_programs_drains_and_removes_the_real_data_plane(
    kube: EmulatorThread,
    kube_api: kubernetes.client.ApiClient,
    node_ns: str,
    dataplane: Dataplane,
    netns_factory: Any,
    tmp_path: Path,
) -> None:
    api = kube_api
    custom = kubernetes.client.CustomObjectsApi(api)
    chain_name = f"kt-{uuid.uuid4().hex[:6]}"
    nads = {
        "client": nad(f"{chain_name}-client", f"{CLIENT_IP}/24"),
        "server": nad(f"{chain_name}-server", f"{SERVER_IP}/24"),
    }
    for obj in nads.values():
        custom.create_namespaced_custom_object(
            "k8s.cni.cncf.io", "v1", NAMESPACE, "network-attachment-definitions", obj
        )
    apps = kubernetes.client.AppsV1Api(api)
    apps.create_namespaced_deployment(NAMESPACE, deployment("client", nads["client"]["metadata"]["name"], 1))
    apps.create_namespaced_deployment(NAMESPACE, deployment("server", nads["server"]["metadata"]["name"], 2))

    cluster = Cluster(api, node_ns, netns_factory, tmp_path / "cni")
    controller_registry, _ = controller_handlers.build_registry(KubeTarget(kube.url))
    controller_settings = kopf.OperatorSettings()
    controller_handlers.configure(controller_settings, peering=None, priority=0)

    def start_agent(stack: ExitStack, dp: Any) -> NodeAgent:
        registry, agent = agent_handlers.build_registry(
            KubeTarget(kube.url),
            NODE,
            InNetnsDataplane(dp, node_ns),
            cni_state_dir=str(tmp_path / "cni"),
            resync_seconds=1.0,
            host_netns=node_ns,  # where the pods' host ends are (and their ownership is checked)
        )
        settings = kopf.OperatorSettings()
        agent_handlers.configure(settings, NODE)
        stack.enter_context(running_in_thread(registry, settings, name=f"agent-{len(agents)}"))
        agents.append(agent)
        return agent

    agents: list[NodeAgent] = []
    reopened: list[Dataplane] = []
    try:
        with running_in_thread(controller_registry, controller_settings), ExitStack() as agent_stack:
            first_agent_stack = agent_stack.enter_context(ExitStack())
            start_agent(first_agent_stack, dataplane)
            kubernetes.client.CoreV1Api(api).create_node({"metadata": {"name": NODE}})  # the kubelet's
            client = cluster.start_pod("client", 0, nads["client"])
            servers = [cluster.start_pod("server", i, nads["server"]) for i in range(2)]
            # a pod of another node must not reach this agent's data plane
            kubernetes.client.CoreV1Api(api).create_namespaced_pod(
                NAMESPACE,
                {
                    "metadata": {"name": "server-elsewhere", "labels": {LABEL_NF: "server"}},
                    "spec": {"nodeName": "node-b", "containers": [{"name": "s", "image": "nf-tools"}]},
                },
            )
            chain = {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": "ServiceFunctionChain",
                "metadata": {"name": chain_name, "namespace": NAMESPACE},
                "spec": {
                    "networkFunctions": [
                        {"name": "client", "links": {"server": "eth1"}},
                        {"name": "server", "links": {"client": "eth1"}},
                    ]
                },
            }
            custom.create_namespaced_custom_object(API_GROUP, API_VERSION, NAMESPACE, PLURAL_CHAIN, chain)

            # the controller makes the CrossConnection; the agent programs it and reports per node
            def node_status() -> dict[str, Any]:
                xcs = list(kube.objects(XC_RESOURCE))
                return xcs[0].get("status", {}).get("nodes", {}).get(NODE, {}) if xcs else {}

            wait_for(
                lambda: (
                    node_status().get("ready")
                    and node_status().get("replicasB") == 2
                    and node_status().get("replicasA") == 1
                ),
                what="programmed",
            )
            # the chain is Ready once this node (the only one hosting replicas) reports it programmed
            wait_for(
                lambda: any(
                    c["type"] == "Ready" and c["status"] == "True" and NODE in c["message"]
                    for c in custom.get_namespaced_custom_object(
                        API_GROUP, API_VERSION, NAMESPACE, PLURAL_CHAIN, chain_name
                    )
                    .get("status", {})
                    .get("conditions", [])
                ),
                what="chain Ready",
            )
            (xc_name,) = dataplane.list_xcs()
            assert {p.identity for p in dataplane.replicas(xc_name, Side.B)} == {s.uid for s in servers}

            # traffic: many UDP flows from the client spread over both server replicas
            receivers = {s.name: udp_socket(s.netns, SERVER_IP, UDP_PORT) for s in servers}
            for sock in receivers.values():
                sock.setblocking(False)
            senders = [udp_socket(client.netns, CLIENT_IP) for _ in range(24)]
            for sender in senders:
                sender.sendto(b"hello", (SERVER_IP, UDP_PORT))
            spread = deliveries(receivers)
            assert len(spread) == len(senders), (
                f"every flow must arrive: {node_status()} drops={dataplane.drop_stats()}"
            )
            assert set(spread.values()) == set(receivers), f"flows must use both replicas: {spread}"

            # agent restart: forwarding goes on without it; the new one resyncs first and changes nothing
            first_agent_stack.close()
            for sender in senders:
                sender.sendto(b"no agent", (SERVER_IP, UDP_PORT))
            assert deliveries(receivers) == spread
            reopened.append(Dataplane(dataplane.pin_dir))
            restarted = start_agent(agent_stack, reopened[0])
            wait_for(lambda: restarted.loop.reports, what="first reconcile after restart")
            _, _, first = restarted.loop.reports[0]
            assert not (
                first.xcs_deleted or first.xcs_created or first.ports_detached or first.ports_attached
            )

            # drain: server-0 starts terminating -> out of the Maglev table, keeps its sessions
            draining = servers[0]
            cluster.start_terminating(draining)
            wait_for(
                lambda: node_status().get("drainingB") == 1 and node_status().get("replicasB") == 1,
                what="drain",
            )
            for sender in senders:
                sender.sendto(b"again", (SERVER_IP, UDP_PORT))
            assert deliveries(receivers) == spread, "established flows stay on their replica while draining"
            fresh = [udp_socket(client.netns, CLIENT_IP) for _ in range(12)]
            for sender in fresh:
                sender.sendto(b"new", (SERVER_IP, UDP_PORT))
            new_spread = deliveries(receivers)
            assert set(new_spread.values()) == {servers[1].name}, "new flows avoid the draining replica"

            # deleted -> gone: its port leaves the data plane
            cluster.remove(draining)
            wait_for(lambda: node_status().get("drainingB") == 0, what="gone")
            # (read through the agent's own facade: each facade caches what it programmed)
            assert [p.identity for p in reopened[0].replicas(xc_name, Side.B)] == [servers[1].uid]

            # deleting the chain removes the CrossConnection (GC) and with it the data-plane state
            custom.delete_namespaced_custom_object(
                API_GROUP, API_VERSION, NAMESPACE, PLURAL_CHAIN, chain_name
            )
            wait_for(lambda: not reopened[0].list_xcs(), what="data plane cleared")

            for sock in [*receivers.values(), *senders, *fresh]:
                sock.close()
        # Kopf never wrote to any pod (no finalizers, no annotations): only the test did
        kopf_writes = [
            r
            for r in kube.requests_to("v1/pods", "update")
            if r.headers.get("User-Agent", "").startswith("kopf")
        ]
        assert kopf_writes == []
        # and watched only NF pods, filtered by the API server, of every node: the agent's tables
        # hold a chain's replicas cluster-wide, the controller's readiness needs where they run
        kopf_watches = [
            r
            for r in kube.requests_to("v1/pods", "watch")
            if r.headers.get("User-Agent", "").startswith("kopf")
        ]
        assert kopf_watches
        for request in kopf_watches:
            assert request.params.get("labelSelector") == LABEL_NF
        assert {r.params.get("fieldSelector") for r in kopf_watches} == {None}
    finally:
        cluster.cleanup()
        for dp in reopened:
            dp.close()
        api.close()
