"""A chain over three simulated nodes (`flexsfc up --nodes 3`, flexsfc.local.nodes) under real traffic.

Real here: each node is a network namespace with its own agent process (the node agent's code, its
own pinned data plane), a VXLAN device and an underlay veth into a shared fabric bridge; pods are
network namespaces whose CNI calls run through the shim inside their node's namespace; packets
cross nodes through VXLAN. Emulated: the nodes themselves (one kernel) and the control plane (the
supervisor pushes the picture to the agents instead of a Kubernetes API server).

The chain is the paper's (client -> nat (L3) -> firewall (L2 bridge) -> gw (L3) -> server), with
TCP and UDP flows whose echoes the client counts.
"""

import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_local import LocalRuntime, copy_example, leftovers

from flexsfc.local import control
from flexsfc.local.config import RuntimeConfig
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

NODES = 3
PORT = 9000
CHAIN = ["client", "nat", "firewall", "gw", "server"]


def _agents_of(config: RuntimeConfig) -> list[str]:
    """Node agent processes of this runtime still running (found by their control socket path)."""
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if f"{config.state_dir}/nodes/" in line and "--control" in line]


@contextlib.contextmanager
def multinode_runtime(tmp: Path) -> Iterator[LocalRuntime]:
    """A 3-node runtime of its own; removed on exit, also on failure (agents, namespaces, pins)."""
    tag = uuid.uuid4().hex[:6]
    config = RuntimeConfig(
        state_dir=str(tmp / "runtime"),
        pin_dir=f"/sys/fs/bpf/flexsfc/e2e-mn-{tag}",
        netns_prefix=f"fxm{tag[:4]}",
        nodes=NODES,
    )
    runtime = LocalRuntime(config)
    try:
        yield runtime
    finally:
        state = runtime.state()
        try:
            control.down(config)
        finally:
            if leftovers(config, state) or _agents_of(config):
                control.cleanup_from_state(config, state)
            left = leftovers(config) + _agents_of(config)
            for name in leftovers(config):
                if name.startswith("netns "):
                    subprocess.run(["ip", "netns", "del", name.split()[1]], capture_output=True)
            subprocess.run(["rm", "-rf", config.pin_dir], capture_output=True)
            assert not left, f"left behind: {left}"


@pytest.fixture
def mn(tmp_path: Path) -> Iterator[LocalRuntime]:
    with multinode_runtime(tmp_path) as runtime:
        yield runtime


def _up(rt: LocalRuntime, tmp_path: Path, pre_stop: float = 1):
    path = copy_example("transparent-firewall", tmp_path / "chain", pre_stop_seconds=pre_stop)
    plan = load_plan(path)
    rt.cli("up", "--nodes", str(NODES), str(path), timeout=180)
    return plan


def _owners(rt: LocalRuntime, plan, nf: str) -> dict[tuple[int, int], str]:
    upstream = CHAIN[CHAIN.index(nf) - 1]
    return flow_owners(rt.config, xc_between(plan, upstream, nf), nf, PORT)


def _wait_flows(rt: LocalRuntime, plan, nf: str, count: int) -> dict[tuple[int, int], str]:
    deadline = time.monotonic() + 15
    while True:
        owners = _owners(rt, plan, nf)
        if len(owners) >= count or time.monotonic() > deadline:
            return owners
        time.sleep(0.1)


def _node_of(rt: LocalRuntime) -> dict[str, str]:
    return {p.name: p.node for p in rt.status().pods}


def test_pods_spread_agents_programmed_mtu(mn: LocalRuntime, tmp_path: Path) -> None:
    """Scheduling, status and the NF MTU, without traffic: the 5 pods use every node, each node's
    agent answers and applied pushes, NF interfaces have the underlay MTU minus VXLAN's 50 bytes."""
    _up(mn, tmp_path)
    status = mn.status()
    assert {n.name for n in status.nodes} == {"node1", "node2", "node3"}
    assert all(n.agent == "ok" and n.pushes > 0 and not n.last_error for n in status.nodes), status.nodes
    assert {p.node for p in status.pods} == {"node1", "node2", "node3"}
    counts = [n.pods for n in status.nodes]
    assert max(counts) - min(counts) <= 1, counts
    fw = next(p for p in status.pods if p.nf == "firewall")
    link = subprocess.run(
        ["ip", "-n", fw.netns, "-o", "link", "show", "eth1"], capture_output=True, text=True, check=True
    ).stdout
    assert " mtu 1450 " in link, link
    shown = mn.cli("status").stdout
    assert "node1" in shown and "Nodes" in shown


def test_scale_l2_and_l3_nf_across_nodes_under_traffic(mn: LocalRuntime, tmp_path: Path) -> None:
    """nat (L3) and firewall (L2) each 1 -> 4 -> 1 over 3 nodes: replicas spread, established flows
    never moved by scale-out, no UDP datagram lost, no TCP connection reset."""
    rt = mn
    plan = _up(rt, tmp_path)
    traffic = TrafficRun(rt.config, chain_ends(plan), port=PORT, tcp=8, udp=8, udp_pps=100, new_flows=50)
    traffic.start()
    checks = []
    try:
        _wait_flows(rt, plan, "nat", 16)
        time.sleep(0.5)
        t_start = time.time_ns()
        for nf in ("nat", "firewall"):
            before = _owners(rt, plan, nf)
            t_out = time.time_ns()
            rt.request("scale", name=nf, replicas=4)
            wait_ready(rt.config)
            time.sleep(1.0)
            after = _owners(rt, plan, nf)
            nodes = {p.node for p in rt.status().pods if p.nf == nf and p.phase == "running"}
            assert nodes == {"node1", "node2", "node3"}, f"{nf}: 4 replicas not spread over the nodes"
            rt.request("scale", name=nf, replicas=1)
            wait_settled(rt.config, nf, 1)
            checks.append((nf, before, after, t_out))
        time.sleep(1.0)
        t_end = time.time_ns()
        report = traffic.stop()
    finally:
        traffic.close()

    flows = long_lived_flows(report)
    summary = summarize(report)
    assert summary["tcpAlive"] == summary["tcpFlows"] == 8, summary
    for nf, before, after, _t_out in checks:
        tracked = [f for f in flows if f in before and f in after]
        assert len(tracked) == len(flows), f"{nf}: flows missing from the session tables"
        moved = [f for f in tracked if before[f] != after[f]]
        assert moved == [], f"{nf}: scale-out moved established flows {moved}"
    assert lost_between(report, t_start, t_end) == 0, "UDP datagrams lost while scaling"


def test_node_fail_under_traffic(mn: LocalRuntime, tmp_path: Path) -> None:
    """A node hosting only firewall replicas (stateless L2) fails under traffic: flows on the
    survivors' replicas neither move nor lose a datagram; the lost replica's flows re-hash onto the
    survivors and continue; a replacement starts on a surviving node; no TCP connection resets."""
    rt = mn
    plan = _up(rt, tmp_path)
    rt.request("scale", name="firewall", replicas=3)
    wait_ready(rt.config)
    pods = rt.status().pods
    hosts: dict[str, set[str]] = {}
    for p in pods:
        hosts.setdefault(p.node, set()).add(p.nf)
    victim = next((n for n, nfs in sorted(hosts.items()) if nfs == {"firewall"}), None)
    assert victim is not None, f"no node hosts only firewall replicas: {hosts}"
    lost_pods = {p.name for p in pods if p.node == victim}

    traffic = TrafficRun(rt.config, chain_ends(plan), port=PORT, tcp=12, udp=12, udp_pps=100, new_flows=50)
    traffic.start()
    try:
        _wait_flows(rt, plan, "firewall", 24)
        time.sleep(0.5)
        owners = _owners(rt, plan, "firewall")
        t_fail = time.time_ns()
        rt.cli("node", "fail", victim, "--state-dir", rt.config.state_dir)
        wait_ready(rt.config)
        t_recovered = time.time_ns()
        time.sleep(1.5)
        after = _owners(rt, plan, "firewall")
        status = rt.status()
        report = traffic.stop()
    finally:
        traffic.close()

    assert next(n for n in status.nodes if n.name == victim).agent == "failed"
    running = [p for p in status.pods if p.nf == "firewall" and p.phase == "running"]
    assert len(running) == 3 and all(p.node != victim for p in running)
    assert not lost_pods & {p.name for p in status.pods}
    flows = long_lived_flows(report)
    on_victim = [f for f in flows if owners.get(f) in lost_pods]
    survivors = [f for f in flows if f in owners and owners[f] not in lost_pods]
    assert on_victim, "no long-lived flow went through the failed node's replica"
    assert all(after.get(f) == owners[f] for f in survivors), "flows of surviving replicas moved"
    assert all(after.get(f) in {p.name for p in running} for f in on_victim), "lost flows did not re-hash"
    survivor_udp = {port for proto, port in survivors if proto == 17}
    lost_on_survivors = sum(
        1 for f in report["udp"] if f["port"] in survivor_udp for t in f["lostSendNs"] if t >= t_fail
    )
    assert lost_on_survivors == 0, "flows on surviving nodes lost datagrams"
    assert lost_between(report, t_recovered, 2**63) == 0, "the chain did not recover"
    summary = summarize(report)
    assert summary["tcpAlive"] == summary["tcpFlows"], summary
