"""Every example chain on the local runtime, through the CLI: real pods (netns), real flexsfc-cni,
the real eBPF data plane, real TCP and UDP traffic from the client pod to the server pod.
`up` twice changes nothing; `down` leaves nothing behind.
"""

import subprocess
import time
from pathlib import Path

import pytest
from e2e_local import FLEXSFC, LocalRuntime, copy_example, leftovers

from flexsfc.local.scenario import TrafficRun, chain_ends
from flexsfc.local.traffic import summarize
from flexsfc.model.loader import load_plan

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _snapshot(rt: LocalRuntime) -> dict:
    status = rt.status()
    pods = sorted((p.name, p.uid, p.phase, tuple(r.host_ifindex for r in p.records)) for p in status.pods)
    xcs = sorted(
        (x.name, x.active_a, x.active_b, x.draining_a, x.draining_b) for x in status.cross_connections
    )
    return {"pods": pods, "xcs": xcs}


@pytest.mark.parametrize("example", ["transparent-firewall", "l3-chain", "ipv6-chain"])
def test_example_chain_end_to_end(example: str, local_runtime: LocalRuntime, tmp_path: Path) -> None:
    rt = local_runtime
    path = copy_example(example, tmp_path / example)
    plan = load_plan(path)
    rt.up(path)
    before = _snapshot(rt)
    assert all(p[2] == "running" for p in before["pods"])
    assert len(before["pods"]) == sum(d.replicas for d in plan.deployments)

    traffic = TrafficRun(rt.config, chain_ends(plan), tcp=8, udp=8, udp_pps=50, new_flows=50, duration=2)
    summary = summarize(traffic.start().stop())
    assert summary["tcpAlive"] == summary["tcpFlows"] == 8, summary
    assert summary["udpSent"] > 0 and summary["udpLost"] == 0, summary
    assert summary["shortAnswered"] == summary["shortOpened"], summary
    status = rt.status()
    assert all(x.sessions > 0 for x in status.cross_connections), status.cross_connections

    shown = rt.cli("status").stdout
    assert "Cross-connections" in shown and all(p[0] in shown for p in before["pods"])
    client = rt.pods(plan.chains[0].network_functions[0].name)[0]
    assert "eth1" in rt.cli("exec", client.name, "--", "ip", "-o", "link").stdout
    assert "starting container" in rt.cli("logs", client.name).stdout

    again = rt.up(path)
    assert "nothing changed" in again.stdout
    assert _snapshot(rt) == before

    # A process a user left inside a pod ends with the pod, as in Kubernetes.
    straggler = subprocess.Popen(
        [FLEXSFC, "exec", "--state-dir", rt.config.state_dir, client.name, "--", "sleep", "300"]
    )
    time.sleep(0.3)
    state = rt.state()
    rt.cli("down")
    assert leftovers(rt.config, state) == []
    assert straggler.wait(timeout=5) != 0
