"""The runtime as its node agent (flexsfc.local.node): node file, CNI socket, counters, DEL queue."""

import json
import os
import uuid
from pathlib import Path

from flexsfc.agent.cni_server import call, encode_request
from flexsfc.cni.config import read_node_config
from flexsfc.local.config import RuntimeConfig
from flexsfc.local.node import LocalCniAgent, node_conf, serving_cni


def _config(tmp_path: Path) -> RuntimeConfig:
    # Short paths: a unix socket path has at most 107 bytes.
    return RuntimeConfig(state_dir=str(tmp_path / "rt"), pin_dir=str(tmp_path / "pins"), netns_prefix="fxn")


def test_the_node_file_names_the_socket_first_and_reads_back_as_the_agent_settings(tmp_path: Path) -> None:
    config = _config(tmp_path)
    agent = LocalCniAgent(config)  # writes the node file; not started
    text = config.cni_node_file.read_text()
    assert text.index('"socket"') < min(text.index(k) for k in ('"deleteQueue"', '"stateDir"', '"pinDir"'))
    assert json.loads(text)["socket"] == str(config.cni_socket)
    read = read_node_config({"FLEXSFC_CNI_CONF": str(config.cni_node_file)})
    assert read == node_conf(config)  # kubeconfig None: no annotation
    assert agent.status().socket == str(config.cni_socket)


def test_calls_are_counted_per_verb_and_a_queued_del_is_replayed_on_start(tmp_path: Path) -> None:
    config = _config(tmp_path)
    # A DEL the shim queued while nothing served the socket (an attachment that no longer exists:
    # DEL succeeds, as it must for the kubelet).
    queue = config.cni_delete_queue
    queue.mkdir(parents=True)
    environ = {
        "CNI_COMMAND": "DEL",
        "CNI_CONTAINERID": f"fxunit{uuid.uuid4().hex[:12]}",
        "CNI_IFNAME": "eth1",
        "CNI_NETNS": "",
        "CNI_PATH": "/usr/lib/cni",
    }
    network = {"cniVersion": "1.1.0", "name": "n", "type": "flexsfc-cni"}
    (queue / "del-1.000000001-1").write_bytes(encode_request(environ, json.dumps(network).encode()))
    agent = LocalCniAgent(config, queue_interval=0)
    agent.start()
    try:
        assert os.listdir(queue) == []
        status, out = call(str(config.cni_socket), {"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.0.0"}')
        assert status == 0 and json.loads(out)["cniVersion"] == "1.0.0"
        status, out = call(str(config.cni_socket), {"CNI_COMMAND": "ADD"}, b"{}")  # no container id
        assert status == 1 and json.loads(out)["code"] == 4
        counted = agent.status()
        assert counted.served == {"DEL": 1, "VERSION": 1} and counted.failed == {"ADD": 1}
        assert counted.replayed == 1
    finally:
        agent.stop()
    assert not config.cni_socket.exists()


def test_serving_for_a_clean_up_reports_a_socket_it_cannot_serve(tmp_path: Path) -> None:
    config = _config(tmp_path)
    agent = LocalCniAgent(config, queue_interval=0)
    agent.start()  # another process's agent, say: the socket answers
    try:
        errors: list[str] = []
        with serving_cni(config, errors):
            pass
        assert len(errors) == 1 and "cannot serve the CNI socket" in errors[0]
    finally:
        agent.stop()
