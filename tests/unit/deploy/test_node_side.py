"""The node agent's side of the install: its own IPAM plugins (nothing from the node's CNI directory),
and `flexsfc agent-health`, the exec probe of the DaemonSet."""

import json
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from flexsfc.agent.cni_server import CniServer
from flexsfc.cli import main
from flexsfc.cni import ipam
from flexsfc.cni.config import Environment, NetConf
from flexsfc.cni.dispatch import version_report


def _plugin(directory: Path, name: str, output: dict[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\ncat >/dev/null\necho '{json.dumps(output)}'\necho \"$CNI_PATH\" >&2\n")
    path.chmod(0o755)
    return path


def _netconf() -> NetConf:
    raw = {"cniVersion": "1.0.0", "name": "n", "type": "flexsfc-cni", "ipam": {"type": "static"}}
    return NetConf(
        raw=raw,
        cni_version="1.0.0",
        name="n",
        mac_generation_string="x",
        mtu=None,
        ipam=raw["ipam"],
        state_dir="/nonexistent",
        pin_dir="/nonexistent",
        kubeconfig=None,
        lock_timeout_seconds=1.0,
        prev_result=None,
    )


def test_the_agents_own_ipam_path_replaces_the_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node_bin = tmp_path / "node-cni-bin"
    _plugin(node_bin, "static", {"ips": [{"address": "10.9.9.9/24"}]})  # the node's: must not run
    own = tmp_path / "image-usr-lib-cni"
    _plugin(own, "static", {"ips": [{"address": "10.1.1.1/24"}]})
    env = Environment(command="ADD", container_id="c", netns="/x", ifname="eth1", cni_path=(str(node_bin),))

    monkeypatch.delenv(ipam.ENV_IPAM_PATH, raising=False)
    assert ipam.plugin_path(env.cni_path) == (str(node_bin),)  # a plugin executable: the spec's CNI_PATH
    result = ipam.run("ADD", _netconf(), env)
    assert result is not None and result.ips[0]["address"] == "10.9.9.9/24"

    monkeypatch.setenv(ipam.ENV_IPAM_PATH, str(own))  # the agent image: FLEXSFC_IPAM_PATH=/usr/lib/cni
    assert ipam.plugin_path(env.cni_path) == (str(own),)
    result = ipam.run("ADD", _netconf(), env)
    assert result is not None and result.ips[0]["address"] == "10.1.1.1/24"

    (own / "static").unlink()  # not found there: an error naming where it looked, no fallback to the node
    with pytest.raises(ipam.CniError) as raised:
        ipam.run("ADD", _netconf(), env)
    assert str(own) in raised.value.details and str(node_bin) not in raised.value.details


@pytest.fixture
def agent_socket(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "cni.sock")
    server = CniServer(path, lambda environ, stdin: (0, json.dumps(version_report(stdin)).encode()))
    server.start()
    try:
        yield path
    finally:
        server.stop()


@pytest.fixture
def liveness() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 500)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_agent_health_passes_on_a_live_agent(agent_socket: str, liveness: str) -> None:
    result = CliRunner().invoke(
        main, ["agent-health", "--socket", agent_socket, "--url", f"{liveness}/healthz"]
    )
    assert result.exit_code == 0, result.output


def test_agent_health_fails_on_what_is_down(tmp_path: Path, liveness: str) -> None:
    gone = str(tmp_path / "gone.sock")
    result = CliRunner().invoke(main, ["agent-health", "--socket", gone, "--url", f"{liveness}/broken"])
    assert result.exit_code == 1
    assert gone in result.output and "HTTP 500" in result.output
    # A socket nobody serves (a stale file of a dead agent).
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(stale))
    result = CliRunner().invoke(main, ["agent-health", "--socket", str(stale), "--timeout", "2"])
    assert result.exit_code == 1 and str(stale) in result.output
    assert os.path.exists(stale)
