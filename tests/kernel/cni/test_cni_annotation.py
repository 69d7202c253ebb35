"""With a kubeconfig in the configuration (as Multus hands its delegates), ADD and DEL publish the
pod's attachments in the flexsfc.io/interfaces annotation.

No Kubernetes API server can run here, so a minimal HTTP server on loopback stands in for it: it
records the PATCH requests the real kubernetes client sends and answers like the API server.
"""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cni_harness import CniRunner, l2_config, l3_config

from flexsfc.model.constants import ANNOTATION_INTERFACES

pytestmark = pytest.mark.root

POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=sfc;K8S_POD_NAME=gw-0;K8S_POD_UID=uid-gw-0"


class FakeApiServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.patches: list[dict[str, Any]] = []


class _Handler(BaseHTTPRequestHandler):
    server: FakeApiServer

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.patches.append(
            {"path": self.path, "content_type": self.headers["Content-Type"], "body": body}
        )
        _, _, _, namespace, _, name = self.path.strip("/").split("/")[:6]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}}
        payload = json.dumps(pod).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api_server() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server}}],
        "users": [{"name": "multus", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "multus"}}],
        "current-context": "test",
    }
    path.write_text(json.dumps(config))
    return path


def test_add_and_del_annotate_the_pod(cni: CniRunner, netns_factory, api_server, tmp_path: Path) -> None:
    ns = netns_factory("anno")
    port = api_server.server_address[1]
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}")
    # The kubeconfig is node-level: the node file names it (as a node's install writes it).
    cni.node_config = tmp_path / "cni.conf"
    cni.node_config.write_text(json.dumps({"kubeconfig": str(kubeconfig)}))
    cni.kubeconfig = None
    config = l3_config()
    container_id, eth1 = cni.add(config, ns, "eth1", cni_args=POD_ARGS)
    assert eth1.returncode == 0, (eth1.output, eth1.stderr)
    l2 = l2_config()
    _, eth2 = cni.add(l2, ns, "eth2", cni_args=POD_ARGS, container_id=container_id)
    assert eth2.returncode == 0, (eth2.output, eth2.stderr)

    assert [p["path"] for p in api_server.patches] == ["/api/v1/namespaces/sfc/pods/gw-0"] * 2
    published = json.loads(api_server.patches[-1]["body"]["metadata"]["annotations"][ANNOTATION_INTERFACES])
    assert [(a["ifname"], a["hostIfname"]) for a in published] == [
        ("eth1", eth1.output["interfaces"][0]["name"]),
        ("eth2", eth2.output["interfaces"][0]["name"]),
    ]
    assert all(a["podUid"] == "uid-gw-0" for a in published)
    assert [a["ips"] for a in published] == [["10.240.0.2/24", "fd00:240::2/64"], []]

    assert cni.run("DEL", config, container_id, ns, "eth1", cni_args=POD_ARGS).returncode == 0
    remaining = json.loads(api_server.patches[-1]["body"]["metadata"]["annotations"][ANNOTATION_INTERFACES])
    assert [a["ifname"] for a in remaining] == ["eth2"]


def test_unreachable_api_server_does_not_fail_add(cni: CniRunner, netns_factory, tmp_path: Path) -> None:
    ns = netns_factory("noapi")
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")  # discard port: refused
    cni.kubeconfig = str(kubeconfig)  # node-level, from the plugin's environment this time
    _, add = cni.add(l3_config(), ns, cni_args=POD_ARGS)
    assert add.returncode == 0, add.output
    assert "cannot annotate pod sfc/gw-0" in add.stderr
