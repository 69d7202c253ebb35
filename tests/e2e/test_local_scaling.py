"""Scaling on the local runtime under real traffic (the paper's chain: client, nat, firewall, gw,
server). Everything is real: netns pods, flexsfc-cni, the eBPF data plane, TCP and UDP flows whose
echoes the client counts. Which replica serves a flow is read from the data plane's session table.
"""

import os
import signal
import time
from pathlib import Path

import pytest
from e2e_local import LocalRuntime, copy_example, counters

from flexsfc.local.scenario import (
    TrafficRun,
    chain_ends,
    flow_owners,
    long_lived_flows,
    lost_between,
    wait_ready,
    wait_settled,
    xc_between,
)
from flexsfc.local.traffic import summarize
from flexsfc.model.loader import load_plan

pytestmark = [pytest.mark.root, pytest.mark.slow]

PORT = 9000
CHAIN = ["client", "nat", "firewall", "gw", "server"]


def _up(rt: LocalRuntime, tmp_path: Path, pre_stop: float):
    path = copy_example("transparent-firewall", tmp_path / "chain", pre_stop_seconds=pre_stop)
    plan = load_plan(path)
    rt.up(path)
    return plan


def _owners(rt: LocalRuntime, plan, nf: str) -> dict[tuple[int, int], str]:
    upstream = CHAIN[CHAIN.index(nf) - 1]
    return flow_owners(rt.config, xc_between(plan, upstream, nf), nf, PORT)


def _wait_flows(rt: LocalRuntime, plan, nf: str, count: int) -> dict[tuple[int, int], str]:
    """Owners once at least `count` flows have sessions (the client may start slowly on a busy machine)."""
    deadline = time.monotonic() + 15
    while True:
        owners = _owners(rt, plan, nf)
        if len(owners) >= count or time.monotonic() > deadline:
            return owners
        time.sleep(0.1)


def _to_packets(rt: LocalRuntime) -> dict[str, int]:
    return {p.name: counters(p).to_packets for p in rt.status().pods}


def test_scale_each_nf_out_and_in_under_traffic(local_runtime: LocalRuntime, tmp_path: Path) -> None:
    """1 -> 3 -> 1 for nat, firewall and gw in turn: the TCP connections stay up, no UDP datagram is
    lost during scale-out, no established flow moves, and the new replicas take new sessions."""
    rt = local_runtime
    plan = _up(rt, tmp_path, pre_stop=1)
    traffic = TrafficRun(rt.config, chain_ends(plan), port=PORT, tcp=8, udp=8, udp_pps=100, new_flows=100)
    traffic.start()
    checks = []
    try:
        _wait_flows(rt, plan, "nat", 16)
        time.sleep(0.5)
        for nf in ("nat", "firewall", "gw"):
            before = _owners(rt, plan, nf)
            old_pods = {p.name for p in rt.pods(nf)}
            t_out = time.time_ns()
            rt.request("scale", name=nf, replicas=3)
            wait_ready(rt.config)
            time.sleep(1.0)
            t_settled = time.time_ns()
            after = _owners(rt, plan, nf)
            new_pods = {p.name: p for p in rt.status().pods if p.nf == nf and p.name not in old_pods}
            assert len(new_pods) == 2
            assert all(counters(p).sessions_created > 0 for p in new_pods.values()), (
                f"{nf}: new replicas got no flow"
            )
            rt.request("scale", name=nf, replicas=1)
            wait_settled(rt.config, nf, 1)
            checks.append((nf, before, after, t_out, t_settled))
        report = traffic.stop()
    finally:
        traffic.close()

    flows = long_lived_flows(report)
    summary = summarize(report)
    assert summary["tcpAlive"] == summary["tcpFlows"] == 8, summary
    for nf, before, after, t_out, t_settled in checks:
        tracked = [f for f in flows if f in before and f in after]
        assert len(tracked) == len(flows), f"{nf}: flows missing from the session table"
        moved = [f for f in tracked if before[f] != after[f]]
        assert moved == [], f"{nf}: scale-out moved established flows {moved}"
        assert lost_between(report, t_out, t_settled) == 0, f"{nf}: UDP lost during scale-out"


def test_draining_replica_keeps_its_flows_until_it_terminates(
    local_runtime: LocalRuntime, tmp_path: Path
) -> None:
    """Scale-in drains: a terminating firewall replica gets no new session but keeps serving its
    established flows during preStop; once it is gone they re-hash to the remaining replica."""
    rt = local_runtime
    plan = _up(rt, tmp_path, pre_stop=2)
    rt.request("scale", name="firewall", replicas=3)
    wait_ready(rt.config)
    traffic = TrafficRun(rt.config, chain_ends(plan), port=PORT, tcp=12, udp=12, udp_pps=100, new_flows=50)
    traffic.start()
    try:
        _wait_flows(rt, plan, "firewall", 24)
        time.sleep(0.5)
        owners = _owners(rt, plan, "firewall")
        keep = min((p for p in rt.pods("firewall")), key=lambda p: p.times.running).name
        t_in = time.time_ns()
        rt.request("scale", name="firewall", replicas=1)
        time.sleep(0.5)
        draining = _owners(rt, plan, "firewall")
        xc = next(x for x in rt.status().cross_connections if x.side_b == "firewall:eth1")
        packets_early = _to_packets(rt)
        time.sleep(1.0)
        packets_late = _to_packets(rt)
        drained = {p.name for p in rt.pods("firewall", phase="terminating")}
        wait_settled(rt.config, "firewall", 1)
        t_gone = time.time_ns()
        time.sleep(1.0)
        after = _owners(rt, plan, "firewall")
        report = traffic.stop()
    finally:
        traffic.close()

    flows = long_lived_flows(report)
    on_drained = [f for f in flows if owners.get(f) in drained]
    assert drained and len(drained) == 2
    assert (xc.active_b, xc.draining_b) == (1, 2)
    assert on_drained, "no long-lived flow landed on the replicas that were drained"
    assert all(draining[f] == owners[f] for f in on_drained), "a draining replica lost flows early"
    assert all(packets_late[p] > packets_early[p] for p in drained), "draining replicas stopped receiving"
    assert all(after[f] == keep for f in on_drained), "flows of terminated replicas did not re-hash"
    assert lost_between(report, t_in, t_gone) == 0
    summary = summarize(report)
    assert summary["tcpAlive"] == summary["tcpFlows"], summary


def test_killed_replica_flows_rehash_and_chain_recovers(local_runtime: LocalRuntime, tmp_path: Path) -> None:
    """SIGKILL to a firewall replica's process (no drain): the runtime removes the pod at once, its
    flows re-hash to the other replicas, a replacement starts, and traffic flows again."""
    rt = local_runtime
    plan = _up(rt, tmp_path, pre_stop=1)
    rt.request("scale", name="firewall", replicas=3)
    wait_ready(rt.config)
    traffic = TrafficRun(rt.config, chain_ends(plan), port=PORT, tcp=12, udp=12, udp_pps=100, new_flows=50)
    traffic.start()
    try:
        _wait_flows(rt, plan, "firewall", 24)
        time.sleep(0.5)
        owners = _owners(rt, plan, "firewall")
        served = {pod for pod in owners.values()}
        candidates = [p for p in rt.pods("firewall") if p.name in served]
        assert candidates, (served, [(p.name, p.phase) for p in rt.pods("firewall", phase=None)])
        victim = candidates[0]
        t_kill = time.time_ns()
        os.killpg(victim.processes[0].pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(p.name == victim.name for p in rt.pods("firewall", phase=None)):
            assert time.monotonic() < deadline, "killed replica was not removed"
            time.sleep(0.05)
        removed_after = (time.time_ns() - t_kill) / 1e9
        wait_ready(rt.config)
        t_recovered = time.time_ns()
        time.sleep(1.5)
        after = _owners(rt, plan, "firewall")
        running = {p.name for p in rt.pods("firewall")}
        report = traffic.stop()
    finally:
        traffic.close()

    flows = long_lived_flows(report)
    victims_flows = [f for f in flows if owners.get(f) == victim.name]
    assert victims_flows
    assert removed_after < 2.0
    assert len(running) == 3 and victim.name not in running
    assert all(after.get(f) in running for f in victims_flows), "flows of the killed replica did not re-hash"
    others = [f for f in flows if f in owners and owners[f] != victim.name]
    assert all(after[f] == owners[f] for f in others), "flows of healthy replicas moved"
    assert lost_between(report, t_recovered, 2**63) == 0, "the chain did not recover"
    summary = summarize(report)
    assert summary["tcpAlive"] == summary["tcpFlows"], summary
