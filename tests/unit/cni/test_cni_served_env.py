"""Served CNI calls (the node agent runs them in-process, one thread each) carry their CNI_*
variables explicitly down to the IPAM delegation: no process-wide lock, nothing in os.environ."""

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flexsfc.cni import ipam, verb_del
from flexsfc.cni.config import NodeConf
from flexsfc.cni.dispatch import handle

_CONFIG = json.dumps(
    {
        "cniVersion": "1.1.0",
        "name": "n",
        "type": "flexsfc-cni",
        "ipam": {"type": "static"},
        "lockTimeoutSeconds": 1,
    }
).encode()


@pytest.fixture
def fake_ipam(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """DEL without netlink; the IPAM step records what it sees and blocks the container 'slow'."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "static").write_text("#!/bin/sh\nexit 1\n")  # found, never run (see _exec below)
    (plugins / "static").chmod(0o755)
    monkeypatch.delenv(ipam.ENV_IPAM_PATH, raising=False)
    monkeypatch.setattr(verb_del, "open_netlink", lambda netns: contextlib.nullcontext())
    monkeypatch.setattr(verb_del, "_retire_pod_ports", lambda *args: None)
    monkeypatch.setattr(verb_del, "_delete_host_end", lambda *args: None)
    seen: dict[str, Any] = {"plugins": str(plugins), "calls": [], "leaked": []}
    entered, release = threading.Event(), threading.Event()
    seen["entered"], seen["release"] = entered, release

    def exec_(binary: str, plugin_type: str, document: dict[str, Any], environ: dict[str, str]) -> bytes:
        seen["calls"].append(dict(environ))
        seen["leaked"].append(sorted(key for key in os.environ if key.startswith("CNI_")))
        if environ.get("CNI_CONTAINERID") == "slow":
            entered.set()
            release.wait(10)
        return b""

    monkeypatch.setattr(ipam, "_exec", exec_)
    try:
        yield seen
    finally:
        release.set()


def _del(container_id: str, plugins: str) -> dict[str, str]:
    return {
        "CNI_COMMAND": "DEL",
        "CNI_CONTAINERID": container_id,
        "CNI_IFNAME": "eth1",
        "CNI_NETNS": f"/run/netns/{container_id}",
        "CNI_ARGS": f"K8S_POD_NAME={container_id}",
        "CNI_PATH": plugins,
    }


def test_a_served_l3_call_does_not_wait_for_a_slow_one(tmp_path: Path, fake_ipam: dict[str, Any]) -> None:
    # Two state directories: the state lock (the plugin's own) is not what is tested here.
    slow_node, fast_node = NodeConf(state_dir=str(tmp_path / "a")), NodeConf(state_dir=str(tmp_path / "b"))
    results: dict[str, tuple[int, bytes]] = {}

    def first() -> None:
        results["slow"] = handle(_del("slow", fake_ipam["plugins"]), _CONFIG, slow_node)

    slow = threading.Thread(target=first)
    slow.start()
    try:
        assert fake_ipam["entered"].wait(5), "the first call never reached its IPAM step"
        # Meanwhile (the first call still inside IPAM) a second call completes, not with code 11.
        assert handle(_del("fast", fake_ipam["plugins"]), _CONFIG, fast_node) == (0, b"")
        assert slow.is_alive()
    finally:
        fake_ipam["release"].set()
        slow.join(10)
    assert results["slow"] == (0, b"")
    # Each delegation got its own call's variables, with CNI_COMMAND and CNI_PATH set for it.
    by_container = {call["CNI_CONTAINERID"]: call for call in fake_ipam["calls"]}
    for name in ("slow", "fast"):
        call = by_container[name]
        assert call["CNI_NETNS"] == f"/run/netns/{name}" and call["CNI_IFNAME"] == "eth1"
        assert call["CNI_ARGS"] == f"K8S_POD_NAME={name}"
        assert call["CNI_COMMAND"] == "DEL" and call["CNI_PATH"] == fake_ipam["plugins"]
    # ... and none of them was ever put into the process environment.
    assert fake_ipam["leaked"] == [[], []]


def test_a_served_call_ignores_cni_variables_of_the_agent_process(
    tmp_path: Path, fake_ipam: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CNI_CONTAINERID", "agent")
    monkeypatch.setenv("CNI_NETNS", "/run/netns/agent")
    monkeypatch.setenv("FLEXSFC_ENV_MARKER", "kept")
    environ = _del("mine", fake_ipam["plugins"])
    del environ["CNI_NETNS"]  # DEL may come without a netns: the delegate must not see the agent's
    assert handle(environ, _CONFIG, NodeConf(state_dir=str(tmp_path / "s"))) == (0, b"")
    [call] = fake_ipam["calls"]
    assert call["CNI_CONTAINERID"] == "mine" and "CNI_NETNS" not in call
    assert call["FLEXSFC_ENV_MARKER"] == "kept"  # the process's own environment (PATH, ...) is passed on
    assert fake_ipam["leaked"] == [["CNI_CONTAINERID", "CNI_NETNS"]]  # the agent's own, untouched
    assert os.environ["CNI_CONTAINERID"] == "agent"
