"""One supervisor per state directory, one runtime per data plane (real CLI, pods and eBPF).

Two `up`s racing start one supervisor; a second supervisor started by hand leaves the live one's
socket, pods and data plane alone; another state directory cannot take a running runtime's pin
directory or namespace prefix.
"""

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from e2e_local import FLEXSFC, LocalRuntime, copy_example

from flexsfc.local import control
from flexsfc.local.locks import EXIT_LOCKED

pytestmark = [pytest.mark.root, pytest.mark.slow]

RACERS = 4


def _supervisors(state_dir: str) -> list[int]:
    """PIDs of supervisor processes serving `state_dir`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"flexsfc.local.supervisor" in argv and state_dir.encode() in argv:
            found.append(int(entry))
    return found


def _netns(prefix: str) -> list[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in listing.splitlines() if line.startswith(prefix + "-")]


def test_racing_ups_start_one_supervisor(local_runtime: LocalRuntime, tmp_path: Path) -> None:
    rt = local_runtime
    path = copy_example("transparent-firewall", tmp_path / "chain")
    argv = [FLEXSFC, "up", str(path), *rt.up_options()]
    # Started together, they all find no supervisor within the second the first one takes to answer.
    ups = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(RACERS)
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in ups]
    assert [code for code, _, _ in results] == [0] * RACERS, results
    # One supervisor was started at all (not several, all but one failing on the socket or lock).
    started = [line for line in rt.config.supervisor_log.read_text().splitlines() if " starting for " in line]
    assert len(started) == 1, rt.config.supervisor_log.read_text()
    assert _supervisors(rt.config.state_dir) == [control.request(rt.config, "ping")["pid"]]
    state = rt.state()
    assert state is not None and len(state.pods) == 5
    assert sorted(_netns(rt.config.netns_prefix)) == sorted(p.netns for p in state.pods)


def test_second_supervisor_leaves_the_live_one_alone(local_runtime: LocalRuntime, tmp_path: Path) -> None:
    rt = local_runtime
    rt.up(copy_example("transparent-firewall", tmp_path / "chain"))
    pid = control.request(rt.config, "ping")["pid"]
    socket_inode = os.stat(rt.config.socket_path).st_ino
    second = subprocess.run(
        [sys.executable, "-m", "flexsfc.local.supervisor", *rt.up_options()],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == EXIT_LOCKED, second.stderr
    assert f"another supervisor (pid {pid})" in second.stderr
    assert os.stat(rt.config.socket_path).st_ino == socket_inode
    assert control.request(rt.config, "ping")["pid"] == pid
    assert all(p.phase == "running" for p in rt.status().pods)


def test_another_state_dir_cannot_take_a_running_runtimes_pins_or_prefix(
    local_runtime: LocalRuntime, tmp_path: Path
) -> None:
    rt = local_runtime
    path = copy_example("transparent-firewall", tmp_path / "chain")
    rt.up(path)
    pods = {p.uid for p in rt.status().pods}
    mine = os.path.realpath(rt.config.state_dir)
    for what, other in (
        (
            f"pin directory {rt.config.pin_dir}",
            replace(rt.config, state_dir=str(tmp_path / "b"), netns_prefix="fxb"),
        ),
        (
            f"namespace prefix '{rt.config.netns_prefix}'",
            replace(rt.config, state_dir=str(tmp_path / "c"), pin_dir=f"{rt.config.pin_dir}-c"),
        ),
    ):
        refused = LocalRuntime(other).cli("up", str(path), check=False)
        message = " ".join(refused.stderr.split())  # rich wraps long lines
        assert refused.returncode == 1, refused.stdout
        assert f"the {what} is in use by the runtime in {mine}" in message, message
        # The refused runtime created nothing, and removed its state directory again.
        assert not os.path.exists(other.state_dir)
        assert other.pin_dir == rt.config.pin_dir or not os.path.exists(other.pin_dir)
        shutil.rmtree(other.state_dir, ignore_errors=True)
    assert {p.uid for p in rt.status().pods} == pods  # the running one was not touched
