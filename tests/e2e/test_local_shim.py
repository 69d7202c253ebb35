"""The local runtime's CNI path is the cluster's: the static shim asks the supervisor (the node agent).

The pods' interfaces are made by the shim (`/opt/cni/bin/flexsfc-cni`, or the package's build of it)
passing each call to the supervisor's CNI socket, which runs the plugin in-process: the supervisor is
the only writer of the data plane. While no supervisor serves the socket (it was SIGKILLed), the shim
queues a DEL on disk and answers success; the supervisor that adopts the runtime replays it.
"""

import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from e2e_local import LocalRuntime, copy_example

from flexsfc.cni.state import record_for
from flexsfc.local.cni import CniCall, cni_add, cni_del, shim_path
from flexsfc.local.control import wait_pid_gone
from flexsfc.util.netns import netns_path

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True).returncode == 0


def test_pods_are_wired_through_the_shim_and_a_del_queued_while_down_is_applied_on_adoption(
    local_runtime: LocalRuntime, tmp_path: Path
) -> None:
    rt = local_runtime
    config = rt.config
    with open(shim_path(), "rb") as shim:
        assert shim.read(4) == b"\x7fELF"  # the static executable, not the Python plugin
    rt.up(copy_example("transparent-firewall", tmp_path / "chain"))

    status = rt.status()
    assert status.cni is not None
    assert status.cni.socket == str(config.cni_socket)
    attachments = sum(len(p.attachments) for p in status.pods)
    assert attachments > 0
    # Every interface of every pod came through the supervisor's socket, none failed.
    assert status.cni.served.get("ADD") == attachments, status.cni
    assert not status.cni.failed, status.cni
    records = {r.host_ifname for p in status.pods for r in p.records}
    assert len(records) == attachments and all(_link_exists(name) for name in records)

    # One more attachment, made the way Multus makes one, in a namespace of the test's own (its
    # name has the runtime's prefix: the fixture's clean-up removes it whatever happens).
    netns = f"{config.netns_prefix}-shimtest.extra"
    network = {"cniVersion": "1.1.0", "name": "shimtest", "type": "flexsfc-cni", "macGenerationString": "xt"}
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        call = CniCall(
            container_id=uuid.uuid4().hex,
            netns_path=netns_path(netns),
            ifname="eth1",
            pod_namespace="default",
            pod_name="extra",
            pod_uid=str(uuid.uuid4()),
            config=network,
        )
        node_file = str(config.cni_node_file)
        cni_add(call, node_file)
        record = record_for(call.container_id, "eth1", state_dir=str(config.cni_state_dir))
        assert record is not None and _link_exists(record.host_ifname)
        assert rt.status().cni.served.get("ADD") == attachments + 1  # type: ignore[union-attr]

        # The supervisor dies: its socket stays on disk, nobody answers on it.
        state = rt.state()
        assert state is not None
        with open(f"/proc/{state.supervisor_pid}/cmdline", "rb") as f:
            assert config.state_dir.encode() in f.read().split(b"\0")
        os.kill(state.supervisor_pid, signal.SIGKILL)  # only this test's supervisor, by PID
        assert wait_pid_gone(state.supervisor_pid, 10)
        assert config.cni_socket.exists()

        cni_del(call, node_file)  # the kubelet's teardown never fails: queued, exit 0
        queued = sorted(os.listdir(config.cni_delete_queue))
        assert len(queued) == 1 and queued[0].startswith("del-"), queued
        assert _link_exists(record.host_ifname)  # nothing applied yet

        # `status` starts a supervisor that adopts the runtime; it replays the queue first.
        shown = rt.cli("status", "--interval", "0")
        assert "adopted" in shown.stderr, shown.stderr
        after = rt.status()
        assert after.cni is not None and after.cni.replayed == 1, after.cni
        assert os.listdir(config.cni_delete_queue) == []
        assert not _link_exists(record.host_ifname)
        assert record_for(call.container_id, "eth1", state_dir=str(config.cni_state_dir)) is None
        # The pods were adopted as they were, their interfaces untouched.
        assert {(p.uid, p.phase) for p in after.pods} == {(p.uid, p.phase) for p in status.pods}
        assert all(_link_exists(name) for name in records)
    finally:
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
