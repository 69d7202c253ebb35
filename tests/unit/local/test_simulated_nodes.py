"""Simulated nodes without root: names and addresses, scheduling, NF MTU, the pushed picture."""

import threading
from pathlib import Path

import pytest

from flexsfc.agent.picture import parse_picture
from flexsfc.agent.reconciler import ReconcileError
from flexsfc.agent.types import NfReplica, ReplicaPhase
from flexsfc.local.cluster import ClusterAgent
from flexsfc.local.config import RuntimeConfig
from flexsfc.local.nodes import NF_MTU, NodeError, SimNode, SimulatedNodes, node_list
from flexsfc.local.observe import Observer
from flexsfc.local.podspec import parse_pod_template
from flexsfc.local.replicaset import ReplicaSet
from flexsfc.local.replicasets import ReplicaSets
from flexsfc.model.types import Mode, NetworkAttachment, NetworkSelection, NfDeployment

TEMPLATE = {"spec": {"containers": [{"name": "c", "command": ["sleep", "infinity"]}]}}


def _config(tmp_path: Path, nodes: int = 3) -> RuntimeConfig:
    return RuntimeConfig(
        state_dir=str(tmp_path / "rt"), pin_dir="/sys/fs/bpf/flexsfc/x", netns_prefix="fxq", nodes=nodes
    )


def test_node_names_addresses_and_dirs(tmp_path: Path) -> None:
    nodes = node_list(_config(tmp_path))
    assert [(n.name, n.address, n.netns) for n in nodes] == [
        ("node1", "10.250.0.1", "fxq-node1"),
        ("node2", "10.250.0.2", "fxq-node2"),
        ("node3", "10.250.0.3", "fxq-node3"),
    ]
    assert nodes[1].pin_dir == "/sys/fs/bpf/flexsfc/x/node2"
    assert nodes[1].control == str(tmp_path / "rt" / "nodes" / "node2" / "control.sock")
    with pytest.raises(NodeError, match="nodes: 0"):
        node_list(_config(tmp_path, nodes=0))


class _NoAgent:
    def upsert_replica(self, replica: NfReplica) -> None: ...

    def remove_replica(self, uid: str) -> None: ...

    def replicas(self) -> list[NfReplica]:
        return []

    def sync(self, reason: str = "sync") -> object:
        raise AssertionError("not called")


def _sets(tmp_path: Path) -> tuple[ReplicaSets, SimulatedNodes]:
    config = _config(tmp_path)
    sets = ReplicaSets(config, _NoAgent(), Observer(None), lambda: None, threading.RLock())  # type: ignore[arg-type]
    cluster = SimulatedNodes(config)  # nothing is created before start()
    sets.cluster = cluster
    nad = NetworkAttachment("net", "default", {"cniVersion": "1.0.0", "name": "net"}, "net", Mode.L2)
    sets.networks = {("default", "net"): nad}
    return sets, cluster


def _rs(name: str) -> ReplicaSet:
    dep = NfDeployment(name, "default", name, 1, (NetworkSelection("net", "eth1"),), TEMPLATE)
    return ReplicaSet(dep, parse_pod_template(TEMPLATE, name), 1)


def test_pods_spread_like_the_default_scheduler(tmp_path: Path) -> None:
    sets, cluster = _sets(tmp_path)
    a, b = _rs("a"), _rs("b")
    sets.sets = {"default/a": a, "default/b": b}
    first = [sets._new_pod(a).node for _ in range(2)]
    assert first == ["node1", "node2"]
    # b: fewest of b everywhere (0), then fewest pods: node3
    assert sets._new_pod(b).node == "node3"
    # a again: node3 has no a
    assert sets._new_pod(a).node == "node3"
    # a: one a on each node; fewest pods: node1 (1) and node2 (1) before node3 (2)
    assert sets._new_pod(a).node == "node1"
    cluster.failed.add("node1")  # a failed node gets no pod; its pods do not count
    assert [sets._new_pod(b).node for _ in range(2)] == ["node2", "node2"]


def test_nf_interfaces_leave_room_for_the_tunnel(tmp_path: Path) -> None:
    sets, cluster = _sets(tmp_path)
    a = _rs("a")
    sets.sets = {"default/a": a}
    pod = sets._new_pod(a)
    (attachment,) = pod.attachments
    assert attachment.config["mtu"] == NF_MTU == 1450
    node = cluster.all[pod.node]
    assert attachment.config["stateDir"] == node.cni_state_dir
    assert pod.node_netns == node.netns
    assert sets._node_file(pod) == node.node_file


class _FakeNodes:
    def __init__(self, failing: str = "") -> None:
        self.all = {
            n: SimNode(n, i, f"10.250.0.{i}", f"x-{n}", Path("/x"), "/p") for i, n in ((1, "n1"), (2, "n2"))
        }
        self.failed: set[str] = set()
        self.pushed: dict[str, dict[str, object]] = {}
        self.failing = failing

    def live(self) -> list[SimNode]:
        return [n for n in self.all.values() if n.name not in self.failed]

    def addresses(self) -> dict[str, str]:
        return {n.name: n.address for n in self.live()}

    def push(self, node: SimNode, picture: dict[str, object]) -> dict[str, object]:
        if node.name == self.failing:
            raise OSError("connection refused")
        self.pushed[node.name] = picture
        return {"changed": True, "summary": "sides=1", "errors": []}


def test_cluster_agent_pushes_every_node_its_picture() -> None:
    nodes = _FakeNodes()
    agent = ClusterAgent(nodes)  # type: ignore[arg-type]
    agent.upsert_replica(NfReplica("u1", "default", "a-1", "a", ReplicaPhase.RUNNING, node="n1"))
    agent.upsert_replica(NfReplica("u2", "default", "a-2", "a", ReplicaPhase.RUNNING, node="n2"))
    report = agent.sync("test")
    assert report.changed and not report.errors
    for name in ("n1", "n2"):
        picture = parse_picture(nodes.pushed[name])
        assert picture.node == name
        assert {r.uid: r.node for r in picture.replicas} == {"u1": "n1", "u2": "n2"}
    nodes.failed.add("n2")  # a failed node's replicas leave the picture, it gets no push
    nodes.pushed.clear()
    agent.sync("n2 failed")
    assert set(nodes.pushed) == {"n1"}
    assert [r.uid for r in parse_picture(nodes.pushed["n1"]).replicas] == ["u1"]
    agent.stop()


def test_cluster_agent_names_the_node_that_did_not_take_the_push() -> None:
    agent = ClusterAgent(_FakeNodes(failing="n2"))  # type: ignore[arg-type]
    with pytest.raises(ReconcileError, match="n2: push failed: connection refused"):
        agent.sync("test")
    agent.stop()
