"""Three node agents and the chain controller against ONE Kubernetes API emulator, forwarding real
packets across three simulated nodes.

Real: Kopf (controller and three agents, each in its thread), the agents' code (the DaemonSet's:
watches, picture, tunnel setup, status), the reconciler, the eBPF data plane (one pin directory per
node), the flexsfc-cni plugin making the pods' veths, the VXLAN devices, the packets.
Emulated: the API server (tests/unit/operator/kube_emulator.py: KMock-based, NOT kube-apiserver);
the kubelet and scheduler (the test writes pod objects, their status and Nodes with their InternalIP,
and invokes the CNI plugin in the pod's node as a kubelet there would); the nodes themselves: each
is a network namespace standing for a node's host namespace (the pods' host-side veths, its VXLAN
device, an underlay veth to a bridge in a "fabric" namespace), and each agent's data-plane, netlink
and tunnel calls switch the calling thread into its node's namespace (setns) instead of the agent
running in it as a process.
"""

import json
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import pytest
from kube_emulator import EmulatorThread, wait_for
from node_lab import InNetnsDataplane
from pyroute2 import IPRoute

from flexsfc.dataplane.facade import Dataplane
from flexsfc.local.cni import CniCall, cni_add, cni_del
from flexsfc.model.constants import (
    API_GROUP,
    API_VERSION,
    DEFAULT_PIN_DIR,
    LABEL_NF,
    PLURAL_CHAIN,
    PLURAL_CROSS_CONNECTION,
    TUNNEL_OVERHEAD,
)
from flexsfc.model.types import Side
from flexsfc.operator import agent_handlers, controller_handlers
from flexsfc.operator.agent import NodeAgent, TunnelOptions
from flexsfc.operator.kube import KubeTarget
from flexsfc.operator.runner import running_in_thread
from flexsfc.util.netns import in_netns, netns_path

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

NAMESPACE = "default"
NODES = {"node-1": "10.251.0.1", "node-2": "10.251.0.2", "node-3": "10.251.0.3"}
UNDERLAY_MTU = 1500
NF_MTU = UNDERLAY_MTU - TUNNEL_OVERHEAD
TUNNEL_DEVICE = "fsfc-vx"
TUNNEL_PORT = 4799  # not the default: nothing else on the machine may hold it in these namespaces
CLIENT_IP, SERVER_IP = "10.78.0.1", "10.78.0.2"
UDP_PORT = 5000
XC_RESOURCE = f"{API_GROUP}/{API_VERSION}/{PLURAL_CROSS_CONNECTION}"
# Where the scheduler put the replicas: the client on node-1, servers on every node (two on node-2).
SERVERS = ["node-1", "node-2", "node-2", "node-3"]


def nad(name: str, address: str) -> dict[str, Any]:
    config = {
        "cniVersion": "1.0.0",
        "name": name,
        "type": "flexsfc-cni",
        "macGenerationString": name,
        "mtu": NF_MTU,  # what the tunnel carries (docs/kubernetes.md, "Multi-node")
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
                "spec": {"containers": [{"name": nf, "image": "nf-tools"}]},
            },
        },
    }


@dataclass
class SimNode:
    name: str
    netns: str  # the node's host namespace
    address: str  # its underlay address, the Node's InternalIP
    state_dir: Path  # flexsfc-cni's records on this node
    dataplane: Dataplane


@dataclass
class SimPod:
    name: str
    uid: str
    node: SimNode
    netns: str
    call: CniCall


class Lab:
    """The nodes (namespaces on a shared bridge), and the kubelet's part for pods on them."""

    def __init__(self, api: kubernetes.client.ApiClient, netns_factory: Any, tmp_path: Path) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.netns_factory, self.tmp_path = netns_factory, tmp_path
        self.nodes: dict[str, SimNode] = {}
        self.pods: list[SimPod] = []
        self.fabric = netns_factory("fab")
        with in_netns(self.fabric), IPRoute() as ipr:
            ipr.link("add", ifname="fab", kind="bridge")
            ipr.link("set", index=ipr.link_lookup(ifname="fab")[0], state="up")

    def add_node(self, name: str, address: str, index: int) -> SimNode:
        netns = self.netns_factory(f"n{index}")
        with in_netns(self.fabric), IPRoute() as ipr:
            ipr.link(
                "add", ifname=f"p{index}", kind="veth", peer={"ifname": "ul", "net_ns_fd": netns_path(netns)}
            )
            ipr.link(
                "set", index=ipr.link_lookup(ifname=f"p{index}")[0], master=ipr.link_lookup(ifname="fab")[0]
            )
            ipr.link("set", index=ipr.link_lookup(ifname=f"p{index}")[0], state="up")
        with in_netns(netns):
            with IPRoute() as ipr:
                ul = ipr.link_lookup(ifname="ul")[0]
                ipr.addr("add", index=ul, address=address, prefixlen=24)
                ipr.link("set", index=ul, mtu=UNDERLAY_MTU, state="up")
            dataplane = Dataplane(f"{DEFAULT_PIN_DIR}/test-mn-{index}-{uuid.uuid4().hex[:6]}")
        node = SimNode(name, netns, address, self.tmp_path / name / "cni", dataplane)
        self.nodes[name] = node
        # The kubelet registers the Node with its addresses.
        self.core.create_node({"metadata": {"name": name}})
        addresses = [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}]
        self.core.patch_node_status(name, {"status": {"addresses": addresses}})
        return node

    def start_pod(self, nf: str, index: int, node: SimNode, nad_obj: dict[str, Any]) -> SimPod:
        name = f"{nf}-{index}"
        created = self.core.create_namespaced_pod(
            NAMESPACE,
            {
                "metadata": {"name": name, "labels": {LABEL_NF: nf}},
                "spec": {"nodeName": node.name, "containers": [{"name": nf, "image": "nf-tools"}]},
            },
        )
        netns = self.netns_factory(f"{nf[:3]}{index}")
        config = dict(json.loads(nad_obj["spec"]["config"]), stateDir=str(node.state_dir))
        call = CniCall(
            container_id=uuid.uuid4().hex,
            netns_path=netns_path(netns),
            ifname="eth1",
            pod_namespace=NAMESPACE,
            pod_name=name,
            pod_uid=created.metadata.uid,
            config=config,
        )
        with in_netns(node.netns):  # the plugin (a child process) puts the host end in the node
            cni_add(call)
        pod = SimPod(name, created.metadata.uid, node, netns, call)
        self.pods.append(pod)
        ready = {"type": "Ready", "status": "True"}
        self.core.patch_namespaced_pod_status(
            name, NAMESPACE, {"status": {"phase": "Running", "conditions": [ready]}}
        )
        return pod

    def cleanup(self) -> None:
        for pod in self.pods:
            try:
                with in_netns(pod.node.netns):
                    cni_del(pod.call)
            except Exception:
                pass  # the namespaces go with netns_factory anyway
        for node in self.nodes.values():
            try:
                with in_netns(node.netns):
                    node.dataplane.destroy()
            except Exception:
                pass


def udp_socket(netns: str, address: str, port: int = 0) -> socket.socket:
    with in_netns(netns):  # a socket stays in the namespace it was created in
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    sock.setblocking(False)
    return sock


def drain(socks: dict[str, socket.socket], timeout: float = 1.5) -> dict[int, tuple[str, int]]:
    """Source port -> (receiving replica, payload size), echoing each datagram back to its sender."""
    got: dict[int, tuple[str, int]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, sock in socks.items():
            try:
                data, peer = sock.recvfrom(65535)
            except BlockingIOError:
                continue
            got[peer[1]] = (name, len(data))
            sock.sendto(data, peer)
        time.sleep(0.005)
    return got


def replies(senders: list[socket.socket], timeout: float = 1.0) -> int:
    count, deadline = 0, time.monotonic() + timeout
    pending = set(range(len(senders)))
    while pending and time.monotonic() < deadline:
        for i in list(pending):
            try:
                senders[i].recvfrom(65535)
                pending.discard(i)
                count += 1
            except BlockingIOError:
                continue
        time.sleep(0.005)
    return count


@pytest.fixture
def lab(kube_api: kubernetes.client.ApiClient, netns_factory: Any, tmp_path: Path) -> Iterator[Lab]:
    built = Lab(kube_api, netns_factory, tmp_path)
    try:
        yield built
    finally:
        built.cleanup()


def test_three_node_agents_forward_a_chain_across_simulated_nodes(
    kube: EmulatorThread, kube_api: kubernetes.client.ApiClient, lab: Lab
) -> None:
    custom = kubernetes.client.CustomObjectsApi(kube_api)
    chain_name = f"mn-{uuid.uuid4().hex[:6]}"
    nads = {
        "client": nad(f"{chain_name}-client", f"{CLIENT_IP}/24"),
        "server": nad(f"{chain_name}-server", f"{SERVER_IP}/24"),
    }
    for obj in nads.values():
        custom.create_namespaced_custom_object(
            "k8s.cni.cncf.io", "v1", NAMESPACE, "network-attachment-definitions", obj
        )
    apps = kubernetes.client.AppsV1Api(kube_api)
    apps.create_namespaced_deployment(NAMESPACE, deployment("client", nads["client"]["metadata"]["name"], 1))
    apps.create_namespaced_deployment(
        NAMESPACE, deployment("server", nads["server"]["metadata"]["name"], len(SERVERS))
    )
    for index, (name, address) in enumerate(NODES.items(), start=1):
        lab.add_node(name, address, index)

    with ExitStack() as stack:
        registry, _ = controller_handlers.build_registry(KubeTarget(kube.url))
        settings = kopf.OperatorSettings()
        controller_handlers.configure(settings, peering=None, priority=0)
        stack.enter_context(running_in_thread(registry, settings, name="controller"))
        agents: dict[str, NodeAgent] = {}
        agent_stacks: dict[str, ExitStack] = {}
        for name, node in lab.nodes.items():
            registry, agents[name] = agent_handlers.build_registry(
                KubeTarget(kube.url),
                name,
                InNetnsDataplane(node.dataplane, node.netns),
                cni_state_dir=str(node.state_dir),
                resync_seconds=0.5,
                host_netns=node.netns,
                heartbeat_seconds=2.0,
                tunnel=TunnelOptions(device=TUNNEL_DEVICE, port=TUNNEL_PORT, netns=node.netns),
            )
            agent_settings = kopf.OperatorSettings()
            agent_handlers.configure(agent_settings, name)
            agent_stacks[name] = stack.enter_context(ExitStack())
            agent_stacks[name].enter_context(
                running_in_thread(registry, agent_settings, name=f"agent-{name}")
            )
        for name, agent in agents.items():
            assert agent.tunnel_error is None, f"{name}: {agent.tunnel_error}"
            assert agent.underlay_mtu == UNDERLAY_MTU  # found on the link holding the InternalIP
            with in_netns(lab.nodes[name].netns), IPRoute() as ipr:
                (device,) = ipr.get_links(ifname=TUNNEL_DEVICE)
                assert device.get_attr("IFLA_MTU") == NF_MTU

        client = lab.start_pod("client", 0, lab.nodes["node-1"], nads["client"])
        servers = [
            lab.start_pod("server", i, lab.nodes[node], nads["server"]) for i, node in enumerate(SERVERS)
        ]
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

        def entries() -> dict[str, Any]:
            xcs = list(kube.objects(XC_RESOURCE))
            return dict(xcs[0].get("status", {}).get("nodes", {})) if xcs else {}

        def chain_ready() -> bool:
            conditions = (
                custom.get_namespaced_custom_object(
                    API_GROUP, API_VERSION, NAMESPACE, PLURAL_CHAIN, chain_name
                )
                .get("status", {})
                .get("conditions", [])
            )
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        wait_for(chain_ready, timeout=30, what="chain Ready on the three nodes")
        reported = entries()
        assert set(reported) == set(NODES), reported
        # node-1 holds the client and one server locally, the other servers as tunnel targets.
        node1 = reported["node-1"]
        assert node1["ready"] is True and (node1["replicasA"], node1["replicasB"]) == (1, 1), node1
        assert [p["pod"] for p in node1["localB"]] == ["server-0"]
        assert {(t["node"], t["address"], t["active"]) for t in node1["remoteB"]} == {
            ("node-2", NODES["node-2"], 2),
            ("node-3", NODES["node-3"], 1),
        }
        # Every node's table of a side holds the same replicas (by identity).
        xc_name = next(iter(agents["node-1"].loop.reconciler.dataplane.list_xcs()))
        identities = {
            name: sorted(p.identity for p in node.dataplane.replicas(xc_name, Side.B))
            for name, node in lab.nodes.items()
        }
        assert all(ids == sorted(s.uid for s in servers) for ids in identities.values()), identities

        # Real packets: flows from the client (node-1) reach server replicas on all three nodes,
        # replies come back, full-size (NF MTU) datagrams too.
        receivers = {s.name: udp_socket(s.netns, SERVER_IP, UDP_PORT) for s in servers}
        senders = [udp_socket(client.netns, CLIENT_IP) for _ in range(48)]
        for sender in senders:
            sender.sendto(b"x" * 64, (SERVER_IP, UDP_PORT))
        spread = drain(receivers)
        drops = {
            n: {k: v for k, v in node.dataplane.drop_stats().items() if v} for n, node in lab.nodes.items()
        }
        assert len(spread) == len(senders), (
            f"every flow arrives: {len(spread)} of {len(senders)}; drops {drops}"
        )
        by_node = {next(s.node.name for s in servers if s.name == name) for name, _ in spread.values()}
        assert by_node == set(NODES), f"flows reach replicas on every node: {spread}"
        assert replies(senders) == len(senders), f"replies return through the tunnel; drops {drops}"

        full = NF_MTU - 28  # IPv4 + UDP headers: a datagram that fills the NF's MTU
        for sender in senders:
            sender.sendto(b"y" * full, (SERVER_IP, UDP_PORT))
        again = drain(receivers)
        assert {port: name for port, (name, _) in again.items()} == {
            port: name for port, (name, _) in spread.items()
        }, "flows stay on their replica"
        assert {size for _, size in again.values()} == {full}
        assert replies(senders) == len(senders)

        # Scale-out onto node-3: every node's tables gain the replica; established flows stay on
        # their replicas (sessions), new flows reach it across the tunnel.
        added = lab.start_pod("server", len(SERVERS), lab.nodes["node-3"], nads["server"])
        servers.append(added)
        receivers[added.name] = udp_socket(added.netns, SERVER_IP, UDP_PORT)
        wanted = sorted(s.uid for s in servers)
        wait_for(
            lambda: all(
                sorted(p.identity for p in node.dataplane.replicas(xc_name, Side.B)) == wanted
                for node in lab.nodes.values()
            ),
            what="the new replica in every node's table",
        )
        for sender in senders:
            sender.sendto(b"z" * 64, (SERVER_IP, UDP_PORT))
        after = drain(receivers)
        assert {port: name for port, (name, _) in after.items()} == {
            port: name for port, (name, _) in spread.items()
        }, "scale-out moves no established flow"
        assert replies(senders) == len(senders)
        fresh = [udp_socket(client.netns, CLIENT_IP) for _ in range(48)]
        for sender in fresh:
            sender.sendto(b"n" * 64, (SERVER_IP, UDP_PORT))
        assert added.name in {name for name, _ in drain(receivers).values()}, (
            "new flows reach node-3's new replica"
        )
        wait_for(
            lambda: (
                {(t["node"], t["active"]) for t in entries().get("node-1", {}).get("remoteB", [])}
                == {("node-2", 2), ("node-3", 2)}
            ),
            what="node-1's status lists the new remote target",
        )

        # node-3 is lost: its agent stops, and Kubernetes' node lifecycle controller marks its pods
        # not Ready. Its replicas leave the other nodes' tables; flows on the survivors' replicas do
        # not move, those on node-3's re-hash onto survivors (a stateless NF here).
        agent_stacks["node-3"].close()
        lost = [s for s in servers if s.node.name == "node-3"]
        for server in lost:
            lab.core.patch_namespaced_pod_status(
                server.name, NAMESPACE, {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
            )
        survivors = sorted(s.uid for s in servers if s not in lost)
        wait_for(
            lambda: all(
                sorted(p.identity for p in lab.nodes[n].dataplane.replicas(xc_name, Side.B)) == survivors
                for n in ("node-1", "node-2")
            ),
            what="node-3's replicas out of the surviving nodes' tables",
        )
        for sock in (receivers.pop(s.name) for s in lost):
            sock.close()
        for sender in senders:
            sender.sendto(b"after" * 8, (SERVER_IP, UDP_PORT))
        moved = drain(receivers)
        assert len(moved) == len(senders), "every flow arrives after the node loss"
        lost_names = {s.name for s in lost}
        for port, (name, _) in spread.items():
            if name not in lost_names:
                assert moved[port][0] == name, "flows on surviving replicas do not move"
        assert replies(senders) == len(senders)

        for sock in [*receivers.values(), *senders, *fresh]:
            sock.close()
    # Kopf never wrote to a pod or a Node (only the test, playing the kubelet, did).
    for resource in ("v1/pods", "v1/nodes"):
        kopf_writes = [
            r
            for r in kube.requests_to(resource, "update")
            if r.headers.get("User-Agent", "").startswith("kopf")
        ]
        assert kopf_writes == [], resource
