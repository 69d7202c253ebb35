"""Bad input on the local runtime: refused before anything exists, or rolled back with the reason.

Real CLI, real CNI plugin (the static IPAM plugin fails a route whose gateway is unreachable), real
namespaces; after each failure nothing may remain. A pod that fails to start keeps its log for the
`see flexsfc logs POD` hint.
"""

import json
import re
import time
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
    assert leftovers(local_runtime.config) == []


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
    assert leftovers(local_runtime.config) == []


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
    assert leftovers(local_runtime.config) == []


def _failing_gw(doc: dict[str, Any]) -> None:
    """gw's container says why it fails, then exits before its readiness probe passes."""
    if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "gw":
        container = doc["spec"]["template"]["spec"]["containers"][0]
        container["command"] = ["sh", "-c"]
        container["args"] = ["echo 'gw: cannot parse /etc/gw.conf (marker-7f3a)'; exit 3"]


def test_failed_pod_log_is_shown_before_the_rollback_removes_it(
    local_runtime: LocalRuntime, tmp_path: Path
) -> None:
    path = copy_example("transparent-firewall", tmp_path / "badcmd")
    _edit(path / "network-functions.yaml", _failing_gw)
    proc = local_runtime.cli("up", str(path), check=False)
    assert proc.returncode == 1, proc.stdout
    message = " ".join(proc.stderr.split())  # rich wraps long lines
    assert "container gw exited with status 3 before it became ready; see flexsfc logs gw-" in message
    # The hint's log is gone with the rollback: its end is printed first.
    assert "end of the log of pod default/gw-" in message and "marker-7f3a" in message, message
    assert message.index("marker-7f3a") < message.index("rolling back")
    assert leftovers(local_runtime.config) == []


def test_failed_pod_log_stays_readable_while_the_runtime_runs(
    local_runtime: LocalRuntime, tmp_path: Path
) -> None:
    rt = local_runtime
    rt.up(copy_example("transparent-firewall", tmp_path / "good"))
    path = copy_example("transparent-firewall", tmp_path / "badcmd")
    _edit(path / "network-functions.yaml", _failing_gw)
    proc = rt.cli("up", str(path), "--namespace", "other", check=False)
    assert proc.returncode == 1, proc.stdout
    hint = re.search(r"see flexsfc logs (gw-[0-9a-f]{6})", " ".join(proc.stderr.split()))
    assert hint, proc.stderr
    # The runtime keeps running (no rollback: it ran before); the pod that failed is removed (and
    # retried), and the log the hint names is still there.
    deadline = time.monotonic() + 20
    while hint.group(1) in {p.name for p in rt.status().pods} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert hint.group(1) not in {p.name for p in rt.status().pods}
    assert "marker-7f3a" in rt.cli("logs", hint.group(1)).stdout
    assert "marker-7f3a" in rt.cli("logs", f"other/{hint.group(1)}").stdout
    assert len([p for p in rt.status().pods if p.namespace == "default" and p.phase == "running"]) == 5
