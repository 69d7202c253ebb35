"""Bad input on the local runtime: refused before anything exists, or rolled back with the reason.

Real CLI, real CNI plugin (the static IPAM plugin fails a route whose gateway is unreachable), real
namespaces; after each failure nothing may remain.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_local import LocalRuntime, copy_example, leftovers

pytestmark = [pytest.mark.root]


def _edit(path: Path, fix: Callable[[dict[str, Any]], None]) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        fix(doc)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def test_invalid_manifests_are_refused_before_anything_is_created(
    local_runtime: LocalRuntime, tmp_path: Path
) -> None:
    path = copy_example("transparent-firewall", tmp_path / "bad")

    def typo(doc: dict[str, Any]) -> None:
        if doc["kind"] == "ServiceFunctionChain":
            doc["spec"]["networkFunctions"][2]["links"] = {"nat": "eth1", "fw-typo": "eth2"}

    _edit(path / "chain.yaml", typo)
    proc = local_runtime.cli("up", str(path), check=False)
    assert proc.returncode == 1
    assert "fw-typo" in proc.stderr and "nothing was created" in proc.stderr, proc.stderr
    assert leftovers(local_runtime.config, {}) == []


def test_container_without_command_is_refused_before_anything_is_created(
    local_runtime: LocalRuntime, tmp_path: Path
) -> None:
    path = copy_example("transparent-firewall", tmp_path / "nocmd")

    def drop_command(doc: dict[str, Any]) -> None:
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "gw":
            container = doc["spec"]["template"]["spec"]["containers"][0]
            container.pop("command", None)
            container.pop("args", None)

    _edit(path / "network-functions.yaml", drop_command)
    proc = local_runtime.cli("up", str(path), check=False)
    assert proc.returncode == 1
    assert "Deployment default/gw" in proc.stderr and "command is missing" in proc.stderr, proc.stderr
    assert leftovers(local_runtime.config, {}) == []


def test_cni_failure_midway_rolls_back_and_names_the_failure(
    local_runtime: LocalRuntime, tmp_path: Path
) -> None:
    path = copy_example("transparent-firewall", tmp_path / "cnifail")

    def unreachable_route(doc: dict[str, Any]) -> None:
        if doc["metadata"]["name"] == "tfw-gw-eth2":
            config = json.loads(doc["spec"]["config"])
            config["ipam"]["routes"] = [{"dst": "192.168.77.0/24", "gw": "172.31.99.1"}]
            doc["spec"]["config"] = json.dumps(config)

    _edit(path / "networks.yaml", unreachable_route)
    proc = local_runtime.cli("up", str(path), check=False)
    assert proc.returncode == 1, proc.stdout
    assert "CNI ADD for eth2 (network tfw-gw-eth2) failed" in proc.stderr, proc.stderr
    assert "rolling back" in proc.stderr
    assert leftovers(local_runtime.config, {}) == []
