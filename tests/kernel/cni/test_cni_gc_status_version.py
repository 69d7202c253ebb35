"""GC, STATUS and VERSION through the installed executable."""

import pytest
from cni_harness import CniRunner, l2_config, l3_config, link_exists

from flexsfc.cni import state
from flexsfc.cni.config import ENV_STATE_DIR


@pytest.mark.root
def test_gc_removes_stale_attachments_and_only_those(cni: CniRunner, netns_factory) -> None:
    net_a = l3_config(name="net-a")
    net_b = l2_config(name="net-b")
    pods = [netns_factory(f"gc{i}") for i in range(4)]
    keep_new, _ = cni.add(net_a, pods[0])  # listed under cni.dev/valid-attachments
    keep_old, _ = cni.add(net_a, pods[1])  # listed under the draft name cni.dev/attachments
    _stale, stale_add = cni.add(net_a, pods[2])
    other_network, _ = cni.add(net_b, pods[3])  # stale too, but GC of net-a must not touch it
    assert len(state.load_records(str(cni.state_dir))) == 4
    stale_host = stale_add.output["interfaces"][0]["name"]

    gc_config = {
        **net_a,
        "cni.dev/valid-attachments": [{"containerID": keep_new, "ifname": "eth1"}],
        "cni.dev/attachments": [{"containerID": keep_old, "ifname": "eth1"}],
    }
    gc = cni.run("GC", gc_config)
    assert (gc.returncode, gc.output) == (0, None), gc.output

    left = {(r.container_id, r.network) for r in state.load_records(str(cni.state_dir))}
    assert left == {(keep_new, "net-a"), (keep_old, "net-a"), (other_network, "net-b")}
    assert not link_exists(stale_host) and not link_exists("eth1", pods[2])
    assert all(link_exists("eth1", ns) for ns in (pods[0], pods[1], pods[3]))

    again = cni.run("GC", gc_config)
    assert again.returncode == 0, again.output
    assert len(state.load_records(str(cni.state_dir))) == 3


def test_gc_requires_the_valid_attachments_list(cni: CniRunner) -> None:
    gc = cni.run("GC", l2_config())
    assert (gc.returncode, gc.code) == (1, 7)
    assert "cni.dev/valid-attachments" in gc.output["msg"]


def test_status_ready_and_not_ready(cni: CniRunner, tmp_path) -> None:
    ready = cni.run("STATUS", l3_config())
    assert (ready.returncode, ready.output) == (0, None), ready.output

    no_ipam = l3_config()
    no_ipam["ipam"]["type"] = "no-such-ipam"
    missing = cni.run("STATUS", no_ipam)
    assert (missing.returncode, missing.code) == (1, 50)
    assert "no-such-ipam" in missing.output["msg"]

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    node = {ENV_STATE_DIR: str(blocker / "state")}  # the node's state directory cannot be created
    unwritable = cni.run("STATUS", l2_config(), env=node)
    assert (unwritable.returncode, unwritable.code) == (1, 50)
    assert "stateDir" in unwritable.output["msg"]


def test_version(cni: CniRunner) -> None:
    for requested in ("0.4.0", "1.0.0", "1.1.0"):
        call = cni.run("VERSION", {"cniVersion": requested})
        assert call.returncode == 0
        assert call.output["cniVersion"] == requested
        assert {"0.4.0", "1.0.0", "1.1.0"} <= set(call.output["supportedVersions"])
    empty = cni.run("VERSION", b"")
    assert empty.returncode == 0 and empty.output["cniVersion"] == "1.1.0"
