"""The agent's start when the pinned program's upgrade is refused: it stays up, answers its liveness
probe and retries, instead of exiting (a DaemonSet would crash-loop)."""

import socket
import threading
import urllib.request
from typing import Any

import pytest

from flexsfc.agent.startup import open_agent_dataplane
from flexsfc.dataplane.upgrade import UpgradeRefused


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_refused_upgrade_keeps_the_agent_up_and_retrying() -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    attempts: list[str] = []
    allowed = threading.Event()
    opened = object()

    def opener(pin_dir: str) -> Any:
        attempts.append(pin_dir)
        if not allowed.is_set():
            raise UpgradeRefused("map ports changed")
        return opened

    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(
            open_agent_dataplane("/pins", liveness=url, retry_seconds=0.05, open_dataplane=opener)
        ),
        daemon=True,
    )
    thread.start()
    try:
        for _ in range(100):
            if len(attempts) >= 3:
                break
            threading.Event().wait(0.05)
        assert len(attempts) >= 3  # retried, not exited
        with urllib.request.urlopen(url, timeout=2) as answer:  # the kubelet's probe succeeds
            assert answer.status == 200 and b"map ports changed" in answer.read()
    finally:
        allowed.set()
        thread.join(timeout=5)
    assert result == [opened]
    with pytest.raises(OSError):  # the probe server is gone: kopf serves that address from now on
        urllib.request.urlopen(url, timeout=1)


def test_a_refusal_is_raised_when_asked_to_stop() -> None:
    stop = threading.Event()
    stop.set()

    def opener(pin_dir: str) -> Any:
        raise UpgradeRefused("map ports changed")

    with pytest.raises(UpgradeRefused):
        open_agent_dataplane("/pins", retry_seconds=10, stop=stop, open_dataplane=opener)
