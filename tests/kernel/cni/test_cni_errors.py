"""Each error class comes back as the spec's JSON error with its code and a message naming the
variable or field; nothing is left behind."""

import fcntl
import os

import pytest
from cni_harness import CniRunner, l2_config, l3_config, link_exists

from flexsfc.cni import state


def test_invalid_environment_is_code_4(cni: CniRunner) -> None:
    config = l2_config()
    missing_command = cni.run("", config)
    assert (missing_command.returncode, missing_command.code) == (1, 4)
    assert "CNI_COMMAND" in missing_command.output["msg"]
    for field, kwargs in {
        "CNI_IFNAME": {"container_id": "c1", "netns": "/run/netns/x", "ifname": "a-name-far-too-long"},
        "CNI_CONTAINERID": {"container_id": "bad/id", "netns": "/run/netns/x", "ifname": "eth1"},
        "CNI_NETNS": {"container_id": "c1", "netns": "", "ifname": "eth1"},
        "CNI_ARGS": {"container_id": "c1", "netns": "/run/netns/x", "ifname": "eth1", "cni_args": "NOEQUALS"},
    }.items():
        call = cni.run("ADD", config, **kwargs)
        assert (call.returncode, call.code) == (1, 4), (field, call.output)
        assert field in call.output["msg"]
    assert not cni.state_dir.exists()


def test_undecodable_config_is_code_6(cni: CniRunner) -> None:
    for stdin in (b"{not json", b"[1, 2]", b"\xff\xfe"):
        call = cni.run("ADD", stdin, "c1", "/run/netns/x", "eth1")
        assert (call.returncode, call.code) == (1, 6), call.output
        assert "stdin" in call.output["msg"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"macGenerationString": None}, "macGenerationString"),
        ({"macGenerationString": ""}, "macGenerationString"),
        ({"name": None}, "name"),
        ({"mtu": 20}, "mtu"),
        ({"mtu": "1500"}, "mtu"),
        ({"ipam": {"addresses": []}}, "ipam.type"),
        ({"stateDir": "/var/lib/elsewhere"}, "stateDir"),  # node-level: refused whatever its value
        ({"cniVersion": None}, "cniVersion"),
    ],
)
def test_invalid_config_is_code_7(cni: CniRunner, change: dict, field: str) -> None:
    config = {**l2_config(), **change}
    config = {k: v for k, v in config.items() if v is not None}
    call = cni.run("ADD", config, "c1", "/run/netns/x", "eth1")
    assert (call.returncode, call.code) == (1, 7), call.output
    assert repr(field) in call.output["msg"]


def test_unsupported_version_is_code_1(cni: CniRunner) -> None:
    call = cni.run("ADD", l2_config(cniVersion="9.9.9"), "c1", "/run/netns/x", "eth1")
    assert (call.returncode, call.code) == (1, 1)
    assert "9.9.9" in call.output["details"]


@pytest.mark.root
def test_locked_state_is_code_11(cni: CniRunner, netns_factory) -> None:
    ns = netns_factory("lock")
    cni.state_dir.mkdir(parents=True)
    fd = os.open(cni.state_dir / state.LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _, call = cni.add(l2_config(lockTimeoutSeconds=0.2), ns)
    finally:
        os.close(fd)
    assert (call.returncode, call.code) == (1, 11), call.output
    assert not link_exists("eth1", ns)


@pytest.mark.root
def test_missing_netns_is_code_3(cni: CniRunner) -> None:
    _, call = cni.add(l2_config(), "/run/netns/fxt-does-not-exist")
    assert (call.returncode, call.code) == (1, 3)
    assert "CNI_NETNS" in call.output["msg"]


@pytest.mark.root
def test_existing_interface_is_code_104(cni: CniRunner, netns_factory) -> None:
    ns = netns_factory("dup")
    config = l2_config()
    first_id, first = cni.add(config, ns)
    assert first.returncode == 0
    _, other = cni.add(config, ns)  # another attachment asking for the same pod interface name
    assert (other.returncode, other.code) == (1, 104)
    assert "eth1" in other.output["msg"]
    repeat = cni.run("ADD", config, first_id, f"/run/netns/{ns}", "eth1")  # ADD twice without DEL
    assert (repeat.returncode, repeat.code) == (1, 104)
    assert len(state.load_records(str(cni.state_dir))) == 1


@pytest.mark.root
def test_missing_ipam_plugin_is_code_101_and_leaves_nothing(cni: CniRunner, netns_factory) -> None:
    ns = netns_factory("noipam")
    config = l3_config()
    config["ipam"]["type"] = "no-such-ipam"
    _, call = cni.add(config, ns)
    assert (call.returncode, call.code) == (1, 101)
    assert "ipam.type" in call.output["msg"] and "CNI_PATH" in call.output["details"]
    assert not link_exists("eth1", ns)
    assert state.load_records(str(cni.state_dir)) == []


@pytest.mark.root
def test_ipam_error_keeps_the_delegate_code(cni: CniRunner, netns_factory) -> None:
    ns = netns_factory("badipam")
    config = l3_config()
    config["ipam"]["addresses"] = [{"address": "not-an-address"}]
    _, call = cni.add(config, ns)
    assert call.returncode == 1 and call.code not in (None, 0)
    assert "static" in call.output["msg"]
    assert not link_exists("eth1", ns)


@pytest.mark.root
def test_check_without_attachment_is_code_102(cni: CniRunner, netns_factory) -> None:
    ns = netns_factory("nochk")
    config = {**l2_config(), "prevResult": {"cniVersion": "1.1.0"}}
    call = cni.run("CHECK", config, "c-unknown", f"/run/netns/{ns}", "eth1")
    assert (call.returncode, call.code) == (1, 102)
    no_prev = cni.run("CHECK", l2_config(), "c-unknown", f"/run/netns/{ns}", "eth1")
    assert (no_prev.returncode, no_prev.code) == (1, 7)
    assert "prevResult" in no_prev.output["msg"]
