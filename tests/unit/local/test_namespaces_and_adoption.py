"""Namespaces and adoption in the runtime, over an in-memory data plane (no root, no pod started).

Manifests moved to a namespace; two namespaces' applies side by side; names that need a namespace;
a Runtime adopting the state a dead supervisor left: the same pods, the same picture for the agent,
a container process watched through /proc.
"""

import dataclasses
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flexsfc.agent.types import ReplicaPhase
from flexsfc.local import manifests
from flexsfc.local.config import RuntimeConfig
from flexsfc.local.pod import Pod, process_start_ticks
from flexsfc.local.podspec import PodSpec
from flexsfc.local.runtime import Runtime, RuntimeRequestError
from flexsfc.local.state import DesiredReplicas, RuntimeState, read_state, write_state
from flexsfc.local.status import PodStatus, PodTimes, ProcessInfo
from flexsfc.model.errors import ManifestError
from flexsfc.model.manifests import Document
from flexsfc.model.types import Plan
from flexsfc.testing.memory import MemoryDataplane

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _at_zero(plan: Plan) -> Plan:
    """No replica anywhere: applying it starts no pod."""
    return dataclasses.replace(
        plan, deployments=[dataclasses.replace(d, replicas=0) for d in plan.deployments]
    )


def _plan_in(namespace: str | None, example: str = "transparent-firewall") -> tuple[Plan, list[Document]]:
    documents, issues = manifests.load_in_namespace(EXAMPLES / example, namespace)
    return _at_zero(manifests.plan_of(documents, issues)), documents


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    config = RuntimeConfig(state_dir=str(tmp_path / "rt"), pin_dir=str(tmp_path / "pins"), netns_prefix="fxu")
    rt = Runtime(config, dataplane_factory=MemoryDataplane)
    try:
        yield rt
    finally:
        _forget_pods(rt)
        assert rt.shutdown() == []


def _forget_pods(rt: Runtime) -> None:
    """Pods put in place by a test were never started: nothing of them to stop or replace."""
    with rt._lock:
        for rs in rt.sets.values():
            rs.desired = 0
            rs.pods.clear()


# -- manifests in a namespace -------------------------------------------------------------------


def test_every_object_moves_to_the_namespace_with_its_network_references() -> None:
    plan, documents = _plan_in("team-a", "l3-chain")  # its manifests name namespace l3-chain
    assert {c.namespace for c in plan.chains} == {"team-a"}
    assert {d.namespace for d in plan.deployments} == {"team-a"}
    assert {a.namespace for a in plan.attachments} == {"team-a"}
    assert {x.namespace for x in plan.cross_connections} == {"team-a"}
    assert [d.obj["metadata"]["name"] for d in documents if d.kind == "Namespace"] == ["l3-chain"]
    assert set(manifests.by_namespace(documents)) == {"team-a"}  # the Namespace object is not kept


def test_namespaced_network_references_in_both_annotation_forms_move_along() -> None:
    text = manifests._moved_networks("old/n1@eth1, n2@eth2, elsewhere/n3@eth3", "new", {"old"})
    assert text == "new/n1@eth1, n2@eth2, elsewhere/n3@eth3"
    entries = [{"name": "n1", "namespace": "old", "interface": "eth1"}, {"name": "n2", "interface": "eth2"}]
    moved = json.loads(manifests._moved_networks(json.dumps(entries), "new", {"old"}))
    assert [e.get("namespace") for e in moved] == ["new", None]


def test_a_namespace_that_is_no_kubernetes_name_is_refused() -> None:
    with pytest.raises(ManifestError, match="Team_A"):
        manifests.plan_of(*manifests.load_in_namespace(EXAMPLES / "transparent-firewall", "Team_A"))


# -- two namespaces in one runtime --------------------------------------------------------------


def test_an_apply_replaces_its_namespaces_and_leaves_the_others(runtime: Runtime) -> None:
    plan_a, docs_a = _plan_in("team-a")
    plan_b, docs_b = _plan_in("team-b")
    created_a = runtime.apply(plan_a, "/m", documents=manifests.by_namespace(docs_a))
    created_b = runtime.apply(plan_b, "/m", documents=manifests.by_namespace(docs_b))
    assert "team-a/firewall" in created_a.created and "team-b/firewall" in created_b.created
    assert sorted(runtime.sets) == sorted(
        f"{ns}/{d.name}" for ns in ("team-a", "team-b") for d in plan_a.deployments
    )
    assert runtime.plan is not None and len(runtime.plan.cross_connections) == 8
    assert runtime.source == "team-a: /m; team-b: /m"
    assert sorted(p.name for p in runtime.config.manifests_dir.iterdir()) == ["team-a.json", "team-b.json"]

    # team-a applied again without gw: team-a's gw goes, team-b's stays.
    without_gw = dataclasses.replace(plan_a, deployments=[d for d in plan_a.deployments if d.name != "gw"])
    runtime.apply(without_gw, "/m2")
    deadline = time.monotonic() + 5
    while "team-a/gw" in runtime.sets and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "team-a/gw" not in runtime.sets and "team-b/gw" in runtime.sets
    assert runtime.source == "team-a: /m2; team-b: /m"


def test_names_in_several_namespaces_must_be_qualified(runtime: Runtime) -> None:
    for namespace in ("team-a", "team-b"):
        runtime.apply(_plan_in(namespace)[0], "/m")
    with pytest.raises(RuntimeRequestError, match=r"several namespaces \(team-a, team-b\)"):
        runtime.scale("firewall", 0)
    assert runtime.scale("firewall", 0, "team-b").namespace == "team-b"
    assert runtime.scale("team-a/firewall", 0).namespace == "team-a"
    with pytest.raises(RuntimeRequestError, match="in namespace 'team-c'"):
        runtime.scale("firewall", 0, "team-c")


# -- adoption -----------------------------------------------------------------------------------


def _running_pod(config: RuntimeConfig, process: subprocess.Popen[bytes]) -> PodStatus:
    return PodStatus(
        name="firewall-0a1b2c",
        uid="11111111-2222-3333-4444-555555555555",
        namespace="default",
        deployment="firewall",
        nf="firewall",
        netns=config.netns_name("default", "firewall-0a1b2c"),
        phase=ReplicaPhase.RUNNING,
        reason="",
        log_path=str(config.log_path("default", "firewall-0a1b2c")),
        workdir=str(config.workdir("default", "firewall-0a1b2c")),
        attachments=(),
        records=(),
        processes=(ProcessInfo("firewall", process.pid, process_start_ticks(process.pid)),),
        times=PodTimes(created=1.0, running=2.0),
    )


def test_a_runtime_adopts_what_a_dead_supervisor_left(tmp_path: Path) -> None:
    config = RuntimeConfig(state_dir=str(tmp_path / "rt"), pin_dir=str(tmp_path / "pins"), netns_prefix="fxu")
    plan, documents = _plan_in(None)
    for namespace, objects in manifests.by_namespace(documents).items():
        manifests.save(config, namespace, "/m", objects)
    container = subprocess.Popen(["sleep", "60"])
    try:
        pod = _running_pod(config, container)
        desired = {
            f"default/{d.name}": DesiredReplicas(d.nf, 1 if d.nf == "firewall" else 0, "")
            for d in plan.deployments
        }
        write_state(config, RuntimeState(4242, "/m", config, desired, pods=(pod,)))
        runtime = Runtime(config, dataplane_factory=MemoryDataplane, adopt=read_state(config))
        try:
            [adopted] = runtime.pods()
            assert adopted.status() == pod and adopted.adopted
            assert runtime.sets["default/firewall"].desired == 1
            assert [r.uid for r in runtime.agent.replicas()] == [pod.uid]
            assert any(
                e.message.startswith("adopted 1 pods (1 running) from supervisor 4242")
                for e in runtime.events
            )
            state = read_state(config)
            assert state is not None and state.pods == (pod,) and state.supervisor_pid != 4242
            time.sleep(0.2)  # a few monitor passes: a live container keeps its pod running
            assert adopted.phase is ReplicaPhase.RUNNING and adopted.exited_container() is None
            # No more monitor passes: it would replace the pod, and this test starts no pod.
            runtime.replica_sets._stopping.set()
            runtime.replica_sets._monitor.join()
            container.kill()
            container.wait()
            assert adopted.exited_container() == (
                "container firewall exited (started by an earlier supervisor: status unknown)"
            )
        finally:
            _forget_pods(runtime)
            runtime.shutdown()
    finally:
        container.kill()
        container.wait()


def test_an_adopted_pods_containers_are_stopped_through_proc() -> None:
    leader = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        status = _running_pod(RuntimeConfig("/nonexistent"), leader)
        pod = Pod.adopt(status, PodSpec(containers=(), grace_seconds=1))
        assert pod.exited_container() is None
        started = time.monotonic()
        pod.stop_containers(time.monotonic() + 5)
        assert time.monotonic() - started < 2  # SIGTERM ended it: no wait for the deadline
        assert leader.wait(timeout=1) == -15
        assert pod.processes == []
    finally:
        leader.kill()
        leader.wait()


def test_state_without_saved_manifests_is_not_adopted(tmp_path: Path) -> None:
    config = RuntimeConfig(state_dir=str(tmp_path / "rt"), pin_dir=str(tmp_path / "pins"), netns_prefix="fxu")
    container = subprocess.Popen(["sleep", "60"])
    try:
        config.root.mkdir(parents=True)
        write_state(config, RuntimeState(4242, "/m", config, pods=(_running_pod(config, container),)))
        before = config.state_file.read_text()
        with pytest.raises(RuntimeRequestError, match="no saved manifests"):
            Runtime(config, dataplane_factory=MemoryDataplane, adopt=read_state(config))
        assert config.state_file.read_text() == before  # left for `flexsfc down`
    finally:
        container.kill()
        container.wait()
