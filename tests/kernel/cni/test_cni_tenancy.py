"""What a tenant's network configuration (a NetworkAttachmentDefinition) may do to a plugin that runs
as root on the node: choose nothing on the node's file system, and never get a link removed that
flexsfc-cni did not create for that very attachment. Real executable, real namespaces."""

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cni_harness import CniRunner, ip_json, l2_config, l3_config, link_exists

from flexsfc.cni import state
from flexsfc.cni.commands import host_name


@pytest.fixture
def foreign_links() -> Iterator[list[str]]:
    """Names of links a test creates itself (not through the plugin); removed afterwards."""
    names: list[str] = []
    try:
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)


def _foreign_veth(name: str, created: list[str]) -> int:
    """A veth pair in the node's namespace that flexsfc-cni did not create (the node's or a tool's)."""
    created.append(name)
    peer = f"fxtp{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", peer], check=True)
    (link,) = ip_json("link", "show", "dev", name)
    return link["ifindex"]


# ------------------------------------------------------------------ node-level fields, path traversal


@pytest.mark.root
@pytest.mark.parametrize("field", ["stateDir", "pinDir", "kubeconfig"])
def test_add_refuses_node_level_fields_from_the_network_configuration(
    cni: CniRunner, netns_factory, tmp_path: Path, field: str
) -> None:
    ns = netns_factory("nodelvl")
    tenant_path = tmp_path / "chosen-by-the-tenant"
    for verb in ("ADD", "CHECK"):
        config = {**l2_config(), field: str(tenant_path)}
        if verb == "CHECK":
            config["prevResult"] = {"cniVersion": "1.1.0"}
        call = cni.run(verb, config, cni.new_container_id(), ns, "eth1")
        assert (call.returncode, call.code) == (1, 7), (verb, call.output)
        assert repr(field) in call.output["msg"] and "node-level" in call.output["msg"]
        assert "/etc/flexsfc/cni.conf" in call.output["details"]  # the fix: where the node sets it
    assert not link_exists("eth1", ns)
    assert not tenant_path.exists() and not cni.state_dir.exists()


@pytest.mark.root
def test_del_ignores_node_level_fields_and_uses_the_nodes_state_dir(
    cni: CniRunner, netns_factory, tmp_path: Path
) -> None:
    """A NAD that still carries a node-level field must not leave its pods stuck Terminating."""
    ns = netns_factory("nodedel")
    container_id, add = cni.add(l2_config(), ns)
    assert add.returncode == 0, add.output
    host = add.output["interfaces"][0]["name"]
    tenant_dir = tmp_path / "tenant-state"
    config = {**l2_config(), "stateDir": str(tenant_dir), "pinDir": str(tmp_path / "pins")}
    delete = cni.run("DEL", config, container_id, ns, "eth1")
    assert delete.returncode == 0, delete.output
    assert "ignoring field 'stateDir'" in delete.stderr and "ignoring field 'pinDir'" in delete.stderr
    assert not link_exists(host) and state.load_records(str(cni.state_dir)) == []
    assert not tenant_dir.exists()


@pytest.mark.root
def test_node_file_sets_the_state_dir_and_the_environment_overrides_it(
    cni: CniRunner, netns_factory, tmp_path: Path
) -> None:
    ns = netns_factory("nodefile")
    from_file = tmp_path / "from-the-node-file"
    cni.node_config = tmp_path / "cni.conf"
    cni.node_config.write_text(json.dumps({"stateDir": str(from_file)}))
    without_variable = {"FLEXSFC_CNI_STATE_DIR": ""}  # empty: not set (the harness sets it otherwise)
    container_id, add = cni.add(l2_config(), ns, env=without_variable)
    assert (add.returncode, add.stderr) == (0, ""), add.output
    assert [r.container_id for r in state.load_records(str(from_file))] == [container_id]
    assert not cni.state_dir.exists()  # FLEXSFC_CNI_STATE_DIR would have won; it was empty here
    assert cni.run("DEL", l2_config(), container_id, ns, "eth1", env=without_variable).returncode == 0
    assert state.load_records(str(from_file)) == []

    cni.node_config.write_text(json.dumps({"stateDir": "relative"}))
    broken = cni.run("ADD", l2_config(), cni.new_container_id(), ns, "eth1", env=without_variable)
    assert (broken.returncode, broken.code) == (1, 7) and str(cni.node_config) in broken.output["msg"]


@pytest.mark.root
@pytest.mark.parametrize(
    ("environ", "config", "code", "names"),
    [
        ({"CNI_IFNAME": ".."}, {}, 4, "CNI_IFNAME"),
        ({"CNI_IFNAME": "../../x"}, {}, 4, "CNI_IFNAME"),
        ({"CNI_IFNAME": "a/b"}, {}, 4, "CNI_IFNAME"),
        ({"CNI_CONTAINERID": "../../etc"}, {}, 4, "CNI_CONTAINERID"),
        ({"CNI_CONTAINERID": ".hidden"}, {}, 4, "CNI_CONTAINERID"),
        ({"CNI_CONTAINERID": "c1\n"}, {}, 4, "CNI_CONTAINERID"),
        ({}, {"name": "../../../tmp/x"}, 7, "name"),
        ({}, {"name": ".."}, 7, "name"),
        ({}, {"ipam": {"type": "../../bin/sh"}}, 7, "ipam.type"),
        ({}, {"ipam": {"type": ".."}}, 7, "ipam.type"),
        ({}, {"ipam": {"type": "static\u0000"}}, 7, "ipam.type"),
        ({}, {"ipam": {"type": "host-local", "dataDir": "/var/lib/flexsfc/cni-del-queue"}}, 7, "ipam"),
        ({}, {"ipam": {"type": "static", "addresses": [], "daemonSocketPath": "/run/x"}}, 7, "ipam"),
        ({}, {"lockTimeoutSeconds": float("inf")}, 7, "lockTimeoutSeconds"),
    ],
)
def test_nothing_tenant_controlled_becomes_a_path_outside_the_state_dir(
    cni: CniRunner, netns_factory, tmp_path: Path, environ: dict, config: dict, code: int, names: str
) -> None:
    """Interface names and container ids form record file names; network names reach IPAM plugins
    (host-local makes a directory of it); ipam.type names an executable. None may hold a path."""
    ns = netns_factory("trav")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    stdin = json.dumps({**l3_config(), **config}).encode()  # JSON keeps Infinity and \u0000
    call = cni.run("ADD", stdin, environ.get("CNI_CONTAINERID", "c1"), ns, environ.get("CNI_IFNAME", "eth1"))
    assert (call.returncode, call.code) == (1, code), call.output
    assert names in call.output["msg"]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not link_exists("eth1", ns)


# --------------------------------------------------------------------- only our own veths are removed


@pytest.mark.root
def test_add_marks_the_host_end_with_the_attachment(cni: CniRunner, netns_factory) -> None:
    ns = netns_factory("mark")
    container_id, add = cni.add(l2_config(), ns)
    assert add.returncode == 0, add.output
    (host,) = ip_json("link", "show", "dev", add.output["interfaces"][0]["name"])
    assert host["ifalias"] == state.owner_alias(container_id, "eth1") == f"flexsfc-cni:{container_id}@eth1"
    long_id = "c" * 300  # the kernel keeps 255 bytes of alias: a digest then
    assert state.owner_alias(long_id, "eth1").startswith("flexsfc-cni:sha256:")
    assert len(state.owner_alias(long_id, "eth1")) <= 255


@pytest.mark.root
def test_del_without_record_leaves_a_foreign_veth_with_the_hash_name(
    cni: CniRunner, foreign_links: list[str]
) -> None:
    """DEL of an attachment that has no record used to delete any veth called host_name(id, ifname)."""
    container_id = cni.new_container_id()
    name = host_name(container_id, "eth1")
    _foreign_veth(name, foreign_links)
    delete = cni.run("DEL", l2_config(), container_id, "", "eth1")
    assert delete.returncode == 0, delete.output
    assert link_exists(name), "DEL removed a veth flexsfc-cni did not create"
    assert f"not deleting {name}" in delete.stderr


@pytest.mark.root
def test_del_and_gc_leave_a_foreign_veth_that_took_the_recorded_name(
    cni: CniRunner, netns_factory, foreign_links: list[str]
) -> None:
    """The recorded host end is gone (deleted by hand, or by the kernel) and someone else's veth now
    has its name: the record names it, but it is not ours."""
    config = l2_config(name="net-x")
    for verb in ("DEL", "GC"):
        ns = netns_factory(verb.lower())
        container_id, add = cni.add(config, ns)
        assert add.returncode == 0, add.output
        host = add.output["interfaces"][0]["name"]
        subprocess.run(["ip", "link", "del", host], check=True)
        _foreign_veth(host, foreign_links)
        if verb == "DEL":
            call = cni.run("DEL", config, container_id, ns, "eth1")
        else:
            call = cni.run("GC", {**config, "cni.dev/valid-attachments": []})
        assert call.returncode == 0, (verb, call.output)
        assert link_exists(host), f"{verb} removed a veth flexsfc-cni did not create"
        assert state.load_records(str(cni.state_dir)) == []  # the stale record itself is gone


@pytest.mark.root
def test_del_leaves_the_veth_of_another_attachment_alone(cni: CniRunner, netns_factory) -> None:
    """A veth made by flexsfc-cni, but for another attachment, that has the name DEL looks for."""
    ns_a, ns_b = netns_factory("own-a"), netns_factory("own-b")
    id_b, add_b = cni.add(l2_config(), ns_b)
    assert add_b.returncode == 0, add_b.output
    host_b = add_b.output["interfaces"][0]["name"]
    id_a = cni.new_container_id()
    # A record of attachment A that names B's host end (e.g. restored from a backup, or corrupted).
    record_b = state.record_for(id_b, "eth1", str(cni.state_dir))
    assert record_b is not None
    forged = json.loads(record_b.to_json()) | {"containerId": id_a, "netns": f"/run/netns/{ns_a}"}
    Path(state.record_path(str(cni.state_dir), id_a, "eth1")).write_text(json.dumps(forged))
    delete = cni.run("DEL", l2_config(), id_a, ns_a, "eth1")
    assert delete.returncode == 0, delete.output
    assert link_exists(host_b) and link_exists("eth1", ns_b)
    assert cni.run("DEL", l2_config(), id_b, ns_b, "eth1").returncode == 0
    assert not link_exists(host_b)
