"""Crash recovery of the local runtime: a SIGKILLed supervisor's pods and data plane are adopted.

The supervisor is killed under traffic (long TCP connections, UDP flows with sequence numbers, new
short flows); the data plane keeps forwarding without it, and `up` (or `status`, `scale`, `down`)
starts a new supervisor that takes over the same pods and the pinned data plane without disturbing
a packet. Real CLI, pods, flexsfc-cni, eBPF data plane and traffic.
"""

import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from e2e_local import LocalRuntime, copy_example, leftovers

from flexsfc.local.control import wait_pid_gone
from flexsfc.local.scenario import TrafficRun, chain_ends
from flexsfc.local.traffic import summarize
from flexsfc.model.loader import load_plan

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _kill_supervisor(rt: LocalRuntime) -> int:
    """SIGKILL the supervisor of this test's runtime (checked by its command line), only that PID."""
    state = rt.state()
    assert state is not None
    pid = state.supervisor_pid
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    assert b"flexsfc.local.supervisor" in argv and rt.config.state_dir.encode() in argv, argv
    os.kill(pid, signal.SIGKILL)
    assert wait_pid_gone(pid, 10)
    return pid


def _pods(rt: LocalRuntime) -> set[tuple[str, str, str, str]]:
    status = rt.status()
    return {(p.key, p.uid, p.netns, p.phase) for p in status.pods}


def test_up_adopts_a_killed_supervisor_without_disturbing_traffic(
    local_runtime: LocalRuntime, tmp_path: Path
) -> None:
    rt = local_runtime
    path = copy_example("transparent-firewall", tmp_path / "chain")
    plan = load_plan(path)
    rt.up(path)
    before = _pods(rt)
    traffic = TrafficRun(rt.config, chain_ends(plan), tcp=4, udp=8, udp_pps=200, new_flows=50)
    try:
        traffic.start()
        time.sleep(1)
        dead = _kill_supervisor(rt)
        time.sleep(1.5)  # the data plane forwards on its own meanwhile

        out = rt.up(path)
        assert "adopted" in out.stdout and "nothing changed" in out.stdout, out.stdout
        status = rt.status()
        assert status.supervisor_pid not in (0, dead)
        assert _pods(rt) == before  # the same pods: nothing restarted, nothing replaced
        adopted = [e.message for e in status.events if e.message.startswith("adopted")]
        assert adopted and "5 pods (5 running)" in adopted[0], adopted

        rt.cli("scale", "firewall", "2")  # the adopted runtime acts as before
        firewalls = rt.pods("firewall")
        assert len(firewalls) == 2
        assert {p.uid for p in firewalls} > {uid for key, uid, _, _ in before if "/firewall-" in key}
        time.sleep(1)
    finally:
        report = traffic.stop()
    summary = summarize(report)
    assert summary["tcpAlive"] == summary["tcpFlows"] == 4 and not summary["tcpErrors"], summary
    assert summary["udpSent"] > 3000 and summary["udpLost"] == 0, summary
    assert summary["shortAnswered"] == summary["shortOpened"], summary


def _prestop_marks(path: Path, marks: Path) -> None:
    """Make every preStop hook leave a file named after its pod in `marks` (outside the state dir)."""
    for file in path.glob("*.yaml"):
        docs = [d for d in yaml.safe_load_all(file.read_text()) if d]
        for doc in docs:
            if doc.get("kind") != "Deployment":
                continue
            for container in doc["spec"]["template"]["spec"]["containers"]:
                hook = (container.get("lifecycle") or {}).get("preStop")
                if hook:
                    hook["exec"]["command"] = ["sh", "-c", f'touch "{marks}/$POD_NAME"; sleep 0.5']
        file.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def test_status_scale_and_down_adopt_a_dead_supervisor(local_runtime: LocalRuntime, tmp_path: Path) -> None:
    rt = local_runtime
    path = copy_example("transparent-firewall", tmp_path / "chain")
    marks = tmp_path / "prestop"
    marks.mkdir()
    _prestop_marks(path, marks)
    rt.up(path)
    before = _pods(rt)

    _kill_supervisor(rt)
    shown = rt.cli("status", "--interval", "0")
    assert "had died" in shown.stderr and "adopted" in shown.stderr, shown.stderr
    assert "last saved state" not in shown.stderr
    assert _pods(rt) == before

    _kill_supervisor(rt)
    rt.cli("scale", "firewall", "2")
    assert len(rt.pods("firewall")) == 2

    # `down` after the supervisor died: the adopted pods end gracefully (their preStop hooks run),
    # and nothing is left.
    _kill_supervisor(rt)
    state = rt.state()
    assert state is not None
    rt.cli("down")
    assert leftovers(rt.config, state) == []
    assert sorted(p.name for p in marks.iterdir()) == sorted(p.name for p in state.pods)
