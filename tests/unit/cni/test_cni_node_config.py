"""Node-level settings (state and pin directories, kubeconfig) come from the node only: its file and
the plugin's environment, never from the network configuration a tenant writes."""

import json
from pathlib import Path

import pytest

from flexsfc.cni import config
from flexsfc.cni.config import NodeConf, node_environment, parse_netconf, read_node_config
from flexsfc.cni.errors import CniError
from flexsfc.model.constants import DEFAULT_CNI_STATE_DIR, DEFAULT_PIN_DIR
from flexsfc.model.workloads import NODE_LEVEL_CNI_FIELDS

NETCONF = {"cniVersion": "1.1.0", "name": "n", "type": "flexsfc-cni", "macGenerationString": "m"}


@pytest.fixture(autouse=True)
def _no_node_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Whatever /etc/flexsfc/cni.conf this machine has, these tests see none by default."""
    monkeypatch.setattr(config, "DEFAULT_NODE_CONFIG", str(tmp_path / "absent.conf"))


def test_defaults_without_file_or_environment() -> None:
    assert read_node_config({}) == NodeConf(DEFAULT_CNI_STATE_DIR, DEFAULT_PIN_DIR, None)


def test_file_then_environment(tmp_path: Path) -> None:
    node_file = tmp_path / "cni.conf"
    node_file.write_text(json.dumps({"stateDir": "/var/x/", "pinDir": "/sys/fs/bpf/x", "kubeconfig": "/k"}))
    environ = {"FLEXSFC_CNI_CONF": str(node_file)}
    assert read_node_config(environ) == NodeConf("/var/x", "/sys/fs/bpf/x", "/k")
    overridden = environ | node_environment(state_dir="/run/s", pin_dir=None)  # kubeconfig="": none
    assert read_node_config(overridden) == NodeConf("/run/s", "/sys/fs/bpf/x", None)
    empty = environ | {"FLEXSFC_CNI_STATE_DIR": "", "FLEXSFC_CNI_PIN_DIR": ""}  # empty: unset
    assert read_node_config(empty) == NodeConf("/var/x", "/sys/fs/bpf/x", "/k")


@pytest.mark.parametrize(
    ("content", "environ", "complaint"),
    [
        ("{not json", {}, "cannot be read as JSON"),
        ('["stateDir"]', {}, "must be a JSON object"),
        ('{"statedir": "/x"}', {}, "unknown keys ['statedir']"),
        ('{"stateDir": "relative"}', {}, "'stateDir' in"),
        ('{"pinDir": 3}', {}, "'pinDir' in"),
        ("{}", {"FLEXSFC_CNI_STATE_DIR": "rel/ative"}, "FLEXSFC_CNI_STATE_DIR (environment)"),
        ("{}", {"FLEXSFC_CNI_KUBECONFIG": "kubeconfig"}, "FLEXSFC_CNI_KUBECONFIG (environment)"),
    ],
)
def test_a_broken_node_configuration_is_code_7_naming_where(
    tmp_path: Path, content: str, environ: dict[str, str], complaint: str
) -> None:
    node_file = tmp_path / "cni.conf"
    node_file.write_text(content)
    with pytest.raises(CniError) as caught:
        read_node_config({"FLEXSFC_CNI_CONF": str(node_file), **environ})
    assert caught.value.code == 7
    assert caught.value.msg.startswith("invalid node configuration") and complaint in caught.value.msg


def test_a_named_node_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(CniError) as caught:
        read_node_config({"FLEXSFC_CNI_CONF": str(tmp_path / "missing.conf")})
    assert caught.value.code == 7 and "FLEXSFC_CNI_CONF" in caught.value.msg


@pytest.mark.parametrize("field", ["stateDir", "pinDir", "kubeconfig"])
def test_network_configuration_may_not_set_node_level_fields(
    field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    document = {**NETCONF, field: "/etc"}
    with pytest.raises(CniError) as caught:
        parse_netconf(document, need_plugin_fields=True)  # ADD, CHECK
    assert caught.value.code == 7 and repr(field) in caught.value.msg
    assert "remove" in caught.value.details and config.DEFAULT_NODE_CONFIG in caught.value.details
    # DEL, GC and STATUS use the node's value (a pod must never stick in Terminating) and say so.
    node = NodeConf("/node/state", "/node/pins", None)
    conf = parse_netconf(document, need_plugin_fields=False, node=node)
    assert (conf.state_dir, conf.pin_dir, conf.kubeconfig) == ("/node/state", "/node/pins", None)
    assert f"ignoring field {field!r}" in capsys.readouterr().err


def test_model_and_plugin_agree_on_the_node_level_fields() -> None:
    assert set(NODE_LEVEL_CNI_FIELDS) == set(config.NODE_LEVEL_FIELDS)
