"""DEL tells the node's data plane first: all of the pod's ports stop being targets before its first
veth goes (real executable, real veths, a real pinned data plane under a private pin directory)."""

import os
import uuid
from pathlib import Path

import pytest
from cni_harness import CniRunner, l2_config, link_exists

from flexsfc.cni import state
from flexsfc.dataplane import maps
from flexsfc.dataplane.api import ReplicaPort, ReplicaState
from flexsfc.dataplane.facade import Dataplane
from flexsfc.model.constants import DEFAULT_PIN_DIR
from flexsfc.model.types import Side

pytestmark = pytest.mark.root


def _states(dp: Dataplane, xc: str, side: Side) -> dict[int, ReplicaState]:
    return {r.ifindex: r.state for r in dp.replicas(xc, side)}


def test_del_marks_all_the_pods_ports_leaving_before_removing_its_veth(cni: CniRunner, netns_factory) -> None:
    ns = netns_factory("del")
    pin_dir = os.path.join(DEFAULT_PIN_DIR, f"test-{uuid.uuid4().hex[:10]}")
    cni.pin_dir = pin_dir  # node-level
    config = l2_config()
    container_id, eth1 = cni.add(config, ns, "eth1")
    assert eth1.returncode == 0, eth1.output
    _, eth2 = cni.add(config, ns, "eth2", container_id=container_id)
    assert eth2.returncode == 0, eth2.output
    records = {r.ifname: r for r in state.load_records(str(cni.state_dir), container_id=container_id)}
    dp = Dataplane(pin_dir, session_capacity=1024)
    try:
        # The pod is a bump in the wire between two cross-connections, as the firewall of the paper.
        for name, side, ifname in (("up", Side.B, "eth1"), ("down", Side.A, "eth2")):
            dp.ensure_xc(name, maglev_table_size=1021)
            dp.set_replicas(name, side, [ReplicaPort(records[ifname].host_ifindex, "pod-1")])

        delete = cni.run("DEL", config, container_id, ns, "eth1")
        assert delete.returncode == 0, delete.output
        assert not link_exists(records["eth1"].host_ifname)
        assert link_exists(records["eth2"].host_ifname)  # not deleted yet, but no target any more
        assert _states(dp, "up", Side.B) == {records["eth1"].host_ifindex: ReplicaState.LEAVING}
        assert _states(dp, "down", Side.A) == {records["eth2"].host_ifindex: ReplicaState.LEAVING}
        # An agent that has not heard of the deletion yet cannot make them targets again.
        dp.set_replicas("down", Side.A, [ReplicaPort(records["eth2"].host_ifindex, "pod-1")])
        assert _states(dp, "down", Side.A) == {records["eth2"].host_ifindex: ReplicaState.LEAVING}
        assert dp.maglev_table("down", Side.A) == []
    finally:
        dp.destroy()
    delete = cni.run("DEL", config, container_id, ns, "eth2")
    assert delete.returncode == 0, delete.output


def test_del_without_a_data_plane_or_with_a_broken_one_still_succeeds(
    cni: CniRunner, netns_factory, tmp_path: Path
) -> None:
    ns = netns_factory("del")
    broken = tmp_path / "not-bpffs"
    broken.mkdir()
    for name in (maps.PROGRAM_NAME, "ports", "port_slots"):
        (broken / name).write_text("")
    for pin_dir, complaint in (
        (f"{DEFAULT_PIN_DIR}/test-absent-{uuid.uuid4().hex[:8]}", False),
        (broken, True),
    ):
        cni.pin_dir = str(pin_dir)
        config = l2_config()
        container_id, add = cni.add(config, ns, "eth1")
        assert add.returncode == 0, add.output
        delete = cni.run("DEL", config, container_id, ns, "eth1")
        assert delete.returncode == 0, delete.output
        assert ("not marked leaving" in delete.stderr) is complaint, delete.stderr
        assert state.load_records(str(cni.state_dir), container_id=container_id) == []
