"""An unusable record (empty after a crash, or garbage) never wedges DEL: the kubelet would retry it
forever and the pod would stay Terminating. Real executable, real namespaces."""

from pathlib import Path

import pytest
from cni_harness import CniRunner, l2_config, l3_config, link_exists

from flexsfc.cni import state

pytestmark = pytest.mark.root


@pytest.mark.parametrize("content", ["", '{"containerId": "trunc', "\x00\x01garbage"])
def test_del_with_an_unusable_record_succeeds_and_cleans_up(
    cni: CniRunner, netns_factory, content: str
) -> None:
    ns = netns_factory("badrec")
    config = l3_config()
    container_id, add = cni.add(config, ns)
    assert add.returncode == 0, add.output
    host = add.output["interfaces"][0]["name"]
    path = Path(state.record_path(str(cni.state_dir), container_id, "eth1"))
    path.write_text(content)

    delete = cni.run("DEL", config, container_id, ns, "eth1")
    assert delete.returncode == 0, (delete.output, delete.stderr)
    assert "unusable attachment record" in delete.stderr and str(path) in delete.stderr
    assert not path.exists()
    assert not link_exists(host) and not link_exists("eth1", ns)  # found by its name and its mark
    again = cni.run("DEL", config, container_id, ns, "eth1")
    assert (again.returncode, again.stderr) == (0, "")


def test_add_and_gc_get_past_an_unusable_record(cni: CniRunner, netns_factory) -> None:
    config = l2_config(name="net-g")
    ns_keep, ns_new = netns_factory("keep"), netns_factory("new")
    keep, add = cni.add(config, ns_keep)
    assert add.returncode == 0, add.output
    stale = cni.new_container_id()
    Path(state.record_path(str(cni.state_dir), stale, "eth1")).write_text("")
    fresh = cni.new_container_id()
    Path(state.record_path(str(cni.state_dir), fresh, "eth1")).write_text("not json")
    # An ADD for the very attachment whose record is garbage: the garbage does not block it.
    _, new = cni.add(config, ns_new, container_id=fresh)
    assert new.returncode == 0, new.output
    gc = cni.run("GC", {**config, "cni.dev/valid-attachments": [{"containerID": keep, "ifname": "eth1"}]})
    assert gc.returncode == 0, gc.output
    assert [r.container_id for r in state.load_records(str(cni.state_dir))] == [keep]
    assert sorted(p.name for p in cni.state_dir.iterdir()) == [".lock", f"{keep}@eth1.json"]
    assert link_exists("eth1", ns_keep) and not link_exists("eth1", ns_new)
