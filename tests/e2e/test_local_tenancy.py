"""Tenancy on the local runtime: the same example chain in two namespaces of one runtime, side by side.

Pods, their network namespaces and the commands that name them are namespaced; traffic through each
namespace's chain reaches only that namespace's pods (per-pod counters of the data plane). Real
CLI, pods, flexsfc-cni, eBPF data plane and traffic.
"""

from pathlib import Path

import pytest
from e2e_local import LocalRuntime, copy_example, counters, leftovers

from flexsfc.local.manifests import load_in_namespace, plan_of
from flexsfc.local.scenario import TrafficRun, chain_ends
from flexsfc.local.traffic import summarize

pytestmark = [pytest.mark.root, pytest.mark.slow]

NAMESPACES = ("team-a", "team-b")
# Packets a pod may receive that are not the test's traffic: its neighbours' own IPv6 router and
# neighbour solicitations (docs/local-runtime.md). The chain under traffic delivers hundreds.
BACKGROUND_PACKETS = 20


def _delivered(rt: LocalRuntime) -> dict[str, int]:
    return {p.key: counters(p).to_packets for p in rt.status().pods}


def test_same_chain_runs_in_two_namespaces_side_by_side(local_runtime: LocalRuntime, tmp_path: Path) -> None:
    rt = local_runtime
    path = copy_example("transparent-firewall", tmp_path / "chain")
    for namespace in NAMESPACES:
        rt.cli("up", str(path), "--namespace", namespace)

    state = rt.state()
    assert state is not None
    pods = {p.key: p for p in state.pods}
    assert sorted({p.namespace for p in state.pods}) == list(NAMESPACES)
    assert len(pods) == 10 and all(p.phase == "running" for p in state.pods)
    assert len({p.name for p in state.pods}) == 10  # pod names stay unique in the runtime
    for pod in state.pods:  # network namespace names carry the pod's namespace
        assert pod.netns == f"{rt.config.netns_prefix}-{pod.namespace}.{pod.name}"
    shown = rt.cli("status", "--interval", "0").stdout
    assert all(key in shown for key in pods), shown

    # A name in both namespaces must be qualified; then it acts in that namespace only.
    ambiguous = rt.cli("scale", "firewall", "2", check=False)
    assert ambiguous.returncode == 1 and "several namespaces (team-a, team-b)" in ambiguous.stderr
    rt.cli("scale", "--namespace", "team-b", "firewall", "2")
    firewalls = rt.pods("firewall")
    assert sorted(p.namespace for p in firewalls) == ["team-a", "team-b", "team-b"], firewalls
    assert rt.cli("exec", "client", "--", "true", check=False).returncode == 1
    links = rt.cli("exec", "-n", "team-a", "client", "--", "ip", "-o", "link").stdout
    assert "eth1" in links
    assert "starting container" in rt.cli("logs", "team-b/client").stdout

    # Traffic through one namespace's chain reaches that namespace's pods, none of the other's.
    for active in NAMESPACES:
        plan = plan_of(*load_in_namespace(path, active))
        before = _delivered(rt)
        traffic = TrafficRun(rt.config, chain_ends(plan), tcp=4, udp=4, udp_pps=100, new_flows=20, duration=2)
        summary = summarize(traffic.start().stop())
        assert summary["tcpAlive"] == 4 and summary["udpLost"] == 0, summary
        assert summary["shortAnswered"] == summary["shortOpened"], summary
        delta = {key: n - before.get(key, 0) for key, n in _delivered(rt).items()}
        for nf in ("client", "nat", "gw", "server"):
            [pod] = [key for key in delta if key.startswith(f"{active}/{nf}-")]
            assert delta[pod] > 100, (active, delta)
        assert sum(n for key, n in delta.items() if key.startswith(f"{active}/firewall-")) > 100, delta
        idle = {key: n for key, n in delta.items() if not key.startswith(f"{active}/")}
        assert all(n <= BACKGROUND_PACKETS for n in idle.values()), (active, idle)

    state = rt.state()
    rt.cli("down")
    assert leftovers(rt.config, state) == []
