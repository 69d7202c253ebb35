"""The node agent's multi-node side against the Kubernetes API emulator over HTTP (KMock-based, NOT
kube-apiserver): it learns the NF replicas of every node and the nodes' InternalIP, hands replicas on
other nodes and a Topology (every node's address, its tunnel device) to its loop, and reports per
node what it programmed and what keeps replicas elsewhere from traffic (status.nodes and Events).

Emulated: the API server (the emulator), the kubelet and scheduler (pods and Nodes are written as
they would write them). No kernel: the loop is a recorder of what the agent hands it, and the data
plane an in-memory one that records its tunnel and peers; creating the VXLAN device and finding the
underlay MTU are kernel work (tests/kernel/operator/test_multinode_agents.py), replaced here.
"""

from collections.abc import Iterable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import kopf
import kubernetes
import pytest
from kube_emulator import EmulatorThread, wait_for
from xc_objects import side, xc_object

from flexsfc.agent.reconciler import ReconcileReport
from flexsfc.agent.types import NfReplica, ReplicaPhase, Topology
from flexsfc.dataplane.api import RemoteEndpoint, ReplicaPort, ReplicaState
from flexsfc.model.constants import API_GROUP, API_VERSION, LABEL_NF, PLURAL_CROSS_CONNECTION
from flexsfc.model.records import AttachmentRecord
from flexsfc.model.types import CrossConnectionSpec, Side
from flexsfc.operator import agent as agent_module
from flexsfc.operator import agent_handlers
from flexsfc.operator.agent import NodeAgent, TunnelOptions
from flexsfc.operator.agent_reports import REASON_MTU, REASON_UNREACHABLE
from flexsfc.operator.cluster_problems import find_problems
from flexsfc.operator.cluster_records import AgentRecord, ClusterStatus, NodeRecord
from flexsfc.operator.kube import KubeTarget
from flexsfc.operator.nodes import node_map
from flexsfc.operator.pods import PodView
from flexsfc.operator.runner import running_in_thread
from flexsfc.testing.memory import MemoryDataplane

NAMESPACE = "team-a"
XC = "c-fw-gw"
ADDRESSES = {"node-a": "192.0.2.1", "node-b": "192.0.2.2", "node-c": "192.0.2.3"}


class TunnelDataplane(MemoryDataplane):
    """The in-memory data plane plus the tunnel calls (Dataplane.set_tunnel / set_nodes)."""

    def __init__(self) -> None:
        super().__init__()
        self.tunnel: str | None = None
        self.peers: dict[str, str] = {}

    def set_tunnel(self, device: str | None) -> None:
        self.tunnel = device

    def set_nodes(self, nodes: Mapping[str, str]) -> None:
        self.peers = dict(nodes)


class RecordingLoop:
    """What the agent hands its loop (the reconciler and the loop are tested on their own)."""

    def __init__(self, dataplane: TunnelDataplane) -> None:
        self.reconciler = SimpleNamespace(dataplane=dataplane)
        self.topology: Topology | None = None
        self.pictured: list[NfReplica] = []
        self.xcs: list[CrossConnectionSpec] = []

    def set_topology(self, topology: Topology) -> None:
        self.topology = topology

    def set_replicas(self, replicas: Iterable[NfReplica]) -> None:
        self.pictured = list(replicas)

    def set_cross_connections(self, xcs: Iterable[CrossConnectionSpec], settings: Any = None) -> None:
        self.xcs = list(xcs)


def node(name: str, *addresses: tuple[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {"addresses": [{"type": kind, "address": address} for kind, address in addresses]},
    }


def internal(name: str) -> dict[str, Any]:
    return node(name, ("Hostname", name), ("InternalIP", ADDRESSES[name]))


def pod(nf: str, node_name: str, index: int = 0, *, ready: bool = True) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {
        "metadata": {"name": f"{nf}-{node_name}-{index}", "labels": {LABEL_NF: nf}},
        "spec": {"nodeName": node_name, "containers": [{"name": nf, "image": "nf"}]},
        "status": {"phase": "Running", "conditions": conditions},
    }


class Api:
    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.serialize = api.sanitize_for_serialization

    def add_node(self, obj: dict[str, Any]) -> dict[str, Any]:
        created = self.serialize(self.core.create_node(obj))
        # The kubelet writes the addresses through the status subresource.
        patched = self.core.patch_node_status(obj["metadata"]["name"], {"status": obj["status"]})
        result: dict[str, Any] = created | self.serialize(patched)
        return result

    def add_pod(self, obj: dict[str, Any]) -> dict[str, Any]:
        created = self.core.create_namespaced_pod(NAMESPACE, obj)
        patched = self.core.patch_namespaced_pod_status(
            created.metadata.name, NAMESPACE, {"status": obj["status"]}
        )
        result: dict[str, Any] = self.serialize(patched)
        return result

    def add_xc(self) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            API_GROUP,
            API_VERSION,
            NAMESPACE,
            PLURAL_CROSS_CONNECTION,
            xc_object(XC, {"chain": "c", "sideA": side("fw"), "sideB": side("gw")}),
        )
        return result

    def xc_entry(self, node_name: str) -> dict[str, Any]:
        obj = self.custom.get_namespaced_custom_object(
            API_GROUP, API_VERSION, NAMESPACE, PLURAL_CROSS_CONNECTION, XC
        )
        entry: dict[str, Any] = ((obj.get("status") or {}).get("nodes") or {}).get(node_name, {})
        return entry

    def events(self, reason: str) -> list[dict[str, Any]]:
        return [
            self.serialize(e)
            for e in self.core.list_namespaced_event(NAMESPACE).items
            if e.reason == reason and e.involved_object.name == XC
        ]


def tunnel_agent(api: kubernetes.client.ApiClient, tmp_path: Path, node_name: str = "node-a") -> NodeAgent:
    """A node agent whose tunnel is up, as `setup_tunnel` leaves it (underlay MTU 1500)."""
    loop = RecordingLoop(TunnelDataplane())
    agent = NodeAgent(
        node_name,
        loop,  # type: ignore[arg-type]
        api,
        cni_state_dir=str(tmp_path),
        heartbeat_seconds=None,
        tunnel=TunnelOptions(),
    )
    agent.tunnel_error, agent.underlay_mtu = None, 1500
    return agent


def attach(agent: NodeAgent, obj: dict[str, Any], *, mtu: int = 1450) -> None:
    """The pod's eth1 as this node's CNI record describes it (records are only trusted with a real
    host veth behind them, which a unit test has not: the agent's view is set as its push makes it)."""
    meta = obj["metadata"]
    record = AttachmentRecord(
        container_id="c1", ifname="eth1", netns="/proc/1/ns/net", network=f"{meta['labels'][LABEL_NF]}-eth1",
        host_ifname="veth1", host_ifindex=7, mac="02:00:00:00:00:01", mode="L2", mtu=mtu,
        pod_namespace=NAMESPACE, pod_name=meta["name"], pod_uid=meta["uid"],
    )  # fmt: skip
    nf = meta["labels"][LABEL_NF]
    replica = NfReplica(meta["uid"], NAMESPACE, meta["name"], nf, ReplicaPhase.RUNNING, (record,))
    agent._views = {meta["uid"]: PodView(replica)}


def test_node_map_uses_ipv4_internal_ips_and_leaves_out_duplicates_and_nodes_without_one() -> None:
    found = node_map(
        [
            node("a", ("InternalIP", "fd00::1"), ("InternalIP", "10.0.0.1")),  # dual stack: the IPv4 one
            node("b", ("ExternalIP", "203.0.113.2"), ("InternalIP", "fd00::2")),  # IPv6 only
            node("c", ("InternalIP", "10.0.0.3")),
            node("d", ("InternalIP", "10.0.0.3")),
            node("e", ("InternalIP", "not-an-address")),
        ]
    )
    assert found.addresses == {"a": "10.0.0.1"}
    assert "no IPv4 InternalIP" in found.problems["b"] and "no IPv4 InternalIP" in found.problems["e"]
    assert found.problems["c"] == "shares its InternalIP 10.0.0.3 with node(s) d"
    assert found.problems["d"] == "shares its InternalIP 10.0.0.3 with node(s) c"


def test_tunnel_options_name_the_bad_field() -> None:
    with pytest.raises(ValueError, match="tunnel port"):
        TunnelOptions(port=0)
    with pytest.raises(ValueError, match="tunnel device"):
        TunnelOptions(device="a-name-longer-than-15")
    with pytest.raises(ValueError, match="underlay MTU"):
        TunnelOptions(underlay_mtu=100)


def test_the_agent_pictures_every_nodes_replicas_and_attaches_only_its_own(
    kube_api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    api = Api(kube_api)
    for name in ADDRESSES:
        api.add_node(internal(name))
    api.add_xc()
    pods = {
        "local": api.add_pod(pod("fw", "node-a")),
        "remote-ready": api.add_pod(pod("gw", "node-b")),
        "remote-starting": api.add_pod(pod("gw", "node-c", ready=False)),
    }
    api.core.create_namespaced_pod(  # unscheduled: nobody's replica yet
        NAMESPACE, {"metadata": {"name": "gw-x", "labels": {LABEL_NF: "gw"}}, "spec": {"containers": []}}
    )
    agent = tunnel_agent(kube_api, tmp_path)
    loop: RecordingLoop = agent.loop  # type: ignore[assignment]
    agent.resync()

    by_uid = {r.uid: r for r in loop.pictured}
    assert set(by_uid) == {p["metadata"]["uid"] for p in pods.values()}
    local = by_uid[pods["local"]["metadata"]["uid"]]
    assert local.node == "" and local.phase is ReplicaPhase.RUNNING  # this node's: ports from records
    remote = by_uid[pods["remote-ready"]["metadata"]["uid"]]
    assert (remote.node, remote.phase, remote.interfaces) == ("node-b", ReplicaPhase.RUNNING, ())
    assert by_uid[pods["remote-starting"]["metadata"]["uid"]].phase is ReplicaPhase.PENDING
    assert loop.topology == Topology("node-a", ADDRESSES, "flexsfc-vx")
    assert agent.summary()["pods"] == 1  # the Lease counts this node's pods only

    # A node's address changes (watch event): the topology follows; a deleted node leaves it.
    moved = internal("node-c")
    moved["status"]["addresses"][1]["address"] = "192.0.2.33"
    agent.on_node_event("MODIFIED", moved)
    assert loop.topology is not None and loop.topology.nodes["node-c"] == "192.0.2.33"
    agent.on_node_event("DELETED", moved)
    assert loop.topology is not None and set(loop.topology.nodes) == {"node-a", "node-b"}


def test_without_a_tunnel_the_agent_keeps_to_its_own_node(
    kube_api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    """No tunnel options (a single-node agent): today's picture, no topology."""
    api = Api(kube_api)
    for name in ("node-a", "node-b"):
        api.add_node(internal(name))
    api.add_pod(pod("fw", "node-a"))
    api.add_pod(pod("gw", "node-b"))
    loop = RecordingLoop(TunnelDataplane())
    agent = NodeAgent("node-a", loop, kube_api, cni_state_dir=str(tmp_path), heartbeat_seconds=None)  # type: ignore[arg-type]
    agent.resync()
    assert [r.pod_name for r in loop.pictured] == ["fw-node-a-0"]
    assert loop.topology is None


def test_status_shows_local_ports_and_remote_targets_per_side(
    kube_api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    api = Api(kube_api)
    for name in ADDRESSES:
        api.add_node(internal(name))
    api.add_xc()
    fw = api.add_pod(pod("fw", "node-a"))
    gw_b = [api.add_pod(pod("gw", "node-b", i)) for i in range(2)]
    gw_c = api.add_pod(pod("gw", "node-c"))
    agent = tunnel_agent(kube_api, tmp_path)
    agent.resync()
    attach(agent, fw)
    uid = {p["metadata"]["name"]: p["metadata"]["uid"] for p in [fw, *gw_b, gw_c]}
    # What the data plane holds after the loop's reconcile (the reconciler is tested on its own).
    dataplane = cast(TunnelDataplane, agent.loop.reconciler.dataplane)
    name = f"{NAMESPACE}/{XC}"
    dataplane.sides[(name, Side.A)] = [ReplicaPort(7, uid["fw-node-a-0"])]
    b, c = RemoteEndpoint("node-b", ADDRESSES["node-b"]), RemoteEndpoint("node-c", ADDRESSES["node-c"])
    dataplane.sides[(name, Side.B)] = [
        ReplicaPort(0x80000001, uid["gw-node-b-0"], remote=b),
        ReplicaPort(0x80000002, uid["gw-node-b-1"], ReplicaState.DRAINING, remote=b),
        ReplicaPort(0x80000003, uid["gw-node-c-0"], remote=c),
    ]
    agent.on_report("test", ReconcileReport())

    entry = api.xc_entry("node-a")
    assert entry["ready"] is True, entry
    assert entry["localA"] == [{"pod": "fw-node-a-0", "interface": "eth1", "state": "active"}]
    assert entry["localB"] == [] and entry["remoteA"] == []
    assert entry["remoteB"] == [
        {"node": "node-b", "address": ADDRESSES["node-b"], "active": 1, "draining": 1},
        {"node": "node-c", "address": ADDRESSES["node-c"], "active": 1, "draining": 0},
    ]
    assert api.xc_entry("node-b") == {}  # other nodes' agents write their own entries


def test_replicas_on_a_node_without_a_usable_address_are_reported_not_dropped_silently(
    kube_api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    api = Api(kube_api)
    api.add_node(internal("node-a"))
    api.add_node(node("node-b", ("InternalIP", "192.0.2.9")))
    api.add_node(node("node-c", ("InternalIP", "192.0.2.9")))  # the same address as node-b
    api.add_node(node("node-d", ("InternalIP", "fd00::4")))  # IPv6 only
    api.add_xc()
    api.add_pod(pod("fw", "node-a"))
    for name in ("node-b", "node-c", "node-d"):
        api.add_pod(pod("gw", name))
    agent = tunnel_agent(kube_api, tmp_path)
    loop: RecordingLoop = agent.loop  # type: ignore[assignment]
    agent.resync()
    assert loop.topology is not None and loop.topology.nodes == {"node-a": ADDRESSES["node-a"]}

    agent.on_report("test", ReconcileReport())
    entry = api.xc_entry("node-a")
    assert entry["ready"] is False
    message = entry["message"]
    assert (
        "1 replica(s) on node node-b get no traffic from this node: node node-b shares its InternalIP "
        in message
    )
    assert "node node-c shares its InternalIP 192.0.2.9 with node(s) node-b" in message
    assert "node node-d has no IPv4 InternalIP" in message
    events = api.events(REASON_UNREACHABLE)
    assert len(events) == 3 and all(e["type"] == "Warning" for e in events)
    assert all(e["message"].startswith("node node-a: ") for e in events)

    agent.on_report("test", ReconcileReport())  # the same problems: no new Events
    assert len(api.events(REASON_UNREACHABLE)) == 3

    # The duplicate is fixed: node-b and node-c are peers again, their replicas reachable.
    fixed = node("node-c", ("InternalIP", ADDRESSES["node-c"]))
    api.core.patch_node_status("node-c", {"status": fixed["status"]})
    agent.on_node_event("MODIFIED", fixed)
    assert loop.topology is not None and set(loop.topology.nodes) == {"node-a", "node-b", "node-c"}
    agent.on_report("test", ReconcileReport())
    message = api.xc_entry("node-a")["message"]
    assert "node-b" not in message and "node-c" not in message and "node-d" in message


def test_a_tunnel_that_is_not_up_is_reported_on_links_with_replicas_elsewhere(
    kube_api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    api = Api(kube_api)
    for name in ("node-a", "node-b"):
        api.add_node(internal(name))
    api.add_xc()
    api.add_pod(pod("fw", "node-a"))
    api.add_pod(pod("gw", "node-b"))
    agent = tunnel_agent(kube_api, tmp_path)
    agent.tunnel_error = "cannot create VXLAN device 'flexsfc-vx': boom"
    loop: RecordingLoop = agent.loop  # type: ignore[assignment]
    agent.resync()
    assert [r.pod_name for r in loop.pictured] == ["fw-node-a-0"] and loop.topology is None
    agent.on_report("test", ReconcileReport())
    entry = api.xc_entry("node-a")
    assert entry["ready"] is False
    assert (
        "1 replica(s) on node node-b get no traffic from this node: this node's tunnel is not up"
        in (entry["message"])
    )
    # The Lease's summary carries it, and `flexsfc status --kube` lists it as a problem.
    tunnel = agent.summary()["tunnel"]
    assert tunnel == {
        "device": "flexsfc-vx",
        "port": 4789,
        "underlayMtu": 1500,
        "problem": agent.tunnel_error,
    }
    status = ClusterStatus(context=None, namespace=None, agent_namespace="flexsfc-system")
    status.nodes.append(NodeRecord("node-a", True, "True", 1, AgentRecord(state="ok", tunnel=tunnel)))
    find_problems(status, [])
    assert [str(p) for p in status.problems] == [
        "node node-a: sends nothing to other nodes: cannot create VXLAN device 'flexsfc-vx': boom"
    ]


def test_an_nf_mtu_the_tunnel_cannot_carry_names_the_setting(
    kube_api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    api = Api(kube_api)
    for name in ("node-a", "node-b"):
        api.add_node(internal(name))
    api.add_xc()
    fw = api.add_pod(pod("fw", "node-a"))
    gw = api.add_pod(pod("gw", "node-b"))
    agent = tunnel_agent(kube_api, tmp_path)
    agent.resync()
    uid = fw["metadata"]["uid"]

    name = f"{NAMESPACE}/{XC}"
    dataplane = cast(TunnelDataplane, agent.loop.reconciler.dataplane)
    dataplane.sides[(name, Side.A)] = [ReplicaPort(7, uid)]
    remote = RemoteEndpoint("node-b", ADDRESSES["node-b"])
    dataplane.sides[(name, Side.B)] = [ReplicaPort(0x80000001, gw["metadata"]["uid"], remote=remote)]

    attach(agent, fw, mtu=1500)  # the underlay's 1500 leaves 1450 inside the tunnel
    agent.on_report("test", ReconcileReport())
    entry = api.xc_entry("node-a")
    assert entry["ready"] is False
    assert (
        "pod fw-node-a-0: interface eth1 has MTU 1500, more than the tunnel to other nodes carries (1450: "
        "underlay MTU 1500 - 50 VXLAN overhead); set `mtu` to 1450 or less in the CNI config of "
        "NetworkAttachmentDefinition network 'fw-eth1'"
    ) in entry["message"]
    assert len(api.events(REASON_MTU)) == 1

    attach(agent, fw, mtu=1450)
    agent.on_report("test", ReconcileReport())
    assert api.xc_entry("node-a")["ready"] is True

    # gw's replicas all on this node: nothing crosses the tunnel, any MTU is fine.
    dataplane.sides[(name, Side.B)] = []
    attach(agent, fw, mtu=9000)
    agent.on_report("test", ReconcileReport())
    assert api.xc_entry("node-a")["ready"] is True


@pytest.mark.timeout(60)
def test_the_kopf_agent_watches_every_nodes_pods_and_the_nodes(
    kube: EmulatorThread,
    kube_api: kubernetes.client.ApiClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real Kopf wiring, agent loop and reconciler (an in-memory data plane): the agent sets its
    tunnel up at start, learns pods and Nodes from its watches (the reconciler programs the tunnel's
    peers and the remote replicas), and patches neither."""
    created: list[tuple[str, int, int | None]] = []

    def ensure_tunnel_device(name: str, *, port: int, mtu: int | None) -> int:
        created.append((name, port, mtu))
        return 42

    monkeypatch.setattr(agent_module, "ensure_tunnel_device", ensure_tunnel_device)
    monkeypatch.setattr(
        agent_module, "underlay_mtu", lambda address: 9000 if address == "192.0.2.1" else None
    )
    api = Api(kube_api)
    api.add_node(internal("node-a"))
    api.add_node(internal("node-b"))
    api.add_xc()
    dataplane = TunnelDataplane()
    registry, agent = agent_handlers.build_registry(
        KubeTarget(kube.url),
        "node-a",
        dataplane,  # type: ignore[arg-type]
        cni_state_dir=str(tmp_path),
        resync_seconds=0.2,
        heartbeat_seconds=None,
        tunnel=TunnelOptions(device="fsfc-test", port=8472),
    )
    settings = kopf.OperatorSettings()
    agent_handlers.configure(settings, "node-a")
    with running_in_thread(registry, settings, name="agent"):
        assert created == [("fsfc-test", 8472, 8950)]  # the underlay's MTU less the VXLAN overhead
        assert agent.underlay_mtu == 9000
        wait_for(lambda: dataplane.tunnel == "fsfc-test", what="the tunnel device programmed")
        assert set(dataplane.peers) == {"node-a", "node-b"}

        gw = api.add_pod(pod("gw", "node-b"))
        wait_for(
            lambda: any(r.uid == gw["metadata"]["uid"] and r.node == "node-b" for r in agent.loop.replicas()),
            what="the replica on node-b pictured",
        )
        remote = RemoteEndpoint("node-b", ADDRESSES["node-b"])
        wait_for(
            lambda: [p.remote for p in dataplane.replicas(f"{NAMESPACE}/{XC}", Side.B)] == [remote],
            what="the replica on node-b a remote port",
        )
        api.add_node(internal("node-c"))
        wait_for(lambda: "node-c" in dataplane.peers, what="node-c a peer")
        api.core.delete_node("node-c")
        wait_for(lambda: "node-c" not in dataplane.peers, what="node-c gone")
    for resource in ("v1/pods", "v1/nodes"):  # the test's own status patches play the kubelet
        assert not [r for r in kube.requests_to(resource, "update") if r.subresource != "status"], resource


def test_a_node_without_a_usable_address_of_its_own_targets_no_other_node(
    kube_api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    """The others drop tunnel packets from an address that is not a known node's: this node must
    not send its flows to their replicas (they would be lost), and says why."""
    api = Api(kube_api)
    api.add_node(node("node-a", ("InternalIP", "192.0.2.9")))
    api.add_node(node("node-b", ("InternalIP", "192.0.2.9")))  # the same address as node-a
    api.add_node(internal("node-c"))
    api.add_xc()
    api.add_pod(pod("fw", "node-a"))
    api.add_pod(pod("gw", "node-c"))
    agent = tunnel_agent(kube_api, tmp_path)
    loop: RecordingLoop = agent.loop  # type: ignore[assignment]
    agent.resync()
    assert [r.pod_name for r in loop.pictured] == ["fw-node-a-0"] and loop.topology is None
    agent.on_report("test", ReconcileReport())
    message = api.xc_entry("node-a")["message"]
    assert (
        "1 replica(s) on node node-c get no traffic from this node: this node's tunnel is not up (node "
        "node-a shares its InternalIP 192.0.2.9 with node(s) node-b: the other nodes take no tunnel "
        "packets from it)"
    ) in message, message
