"""A dual-stack 5-NF chain over three simulated nodes under scaling and fragmented UDP (issue 16).

The paper's chain (client -> nat (L3) -> firewall (L2 bridge) -> gw (L3) -> server, the
transparent-firewall example) with an IPv6 address next to every IPv4 one, IPv6 routes and
forwarding, and nat made stateful in both families: besides masquerading IPv4, its forward policy
drops what conntrack does not know unless the client side opens it. So a reply or a fragment that
reaches a nat replica other than the one holding its connection is dropped, not quietly forwarded.

Real: nodes as network namespaces with their own agent process and pinned data plane, pods as
network namespaces attached through the CNI shim inside their node's namespace, VXLAN between the
nodes, NF interfaces at the multi-node MTU (1450). Emulated: the nodes share one kernel, and the
supervisor pushes the cluster picture to the agents instead of a Kubernetes API server.
"""

import dataclasses
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_local import LocalRuntime, copy_example
from test_multinode_local import NODES, multinode_runtime

from flexsfc.local.scenario import (
    PROTO_UDP,
    ChainEnds,
    TrafficRun,
    chain_ends,
    flow_owners,
    long_lived_flows,
    lost_between,
    pod_netns,
    wait_ready,
    wait_settled,
    xc_between,
)
from flexsfc.local.traffic import summarize
from flexsfc.model.loader import load_plan
from flexsfc.model.types import Plan

pytestmark = [pytest.mark.root, pytest.mark.slow]

PORT4, PORT6 = 9000, 9001  # one echo server per family, so each family's flows are told apart
SERVER6 = "fd00:10:3::2"
CHAIN = ["client", "nat", "firewall", "gw", "server"]
SCALED = ["nat", "firewall", "gw"]
PRE_STOP = 0.5  # a scale-in's drain: short, the long-lived flows stay on the oldest replica anyway
BIG_UDP = 4000  # bytes of UDP payload: three fragments at the NF MTU of 1450

# IPv6 next to the example's IPv4 on every L3 interface (the firewall's bridge ports stay L2):
# NetworkAttachmentDefinition -> (address, routes)
V6 = {
    "tfw-client-eth1": ("fd00:10:1::1/64", [("fd00:10::/32", "fd00:10:1::2")]),
    "tfw-nat-eth1": ("fd00:10:1::2/64", []),
    "tfw-nat-eth2": ("fd00:10:2::1/64", [("fd00:10:3::/64", "fd00:10:2::2")]),
    "tfw-gw-eth1": ("fd00:10:2::2/64", [("fd00:10:1::/64", "fd00:10:2::1")]),  # IPv6 is not NATed
    "tfw-gw-eth2": ("fd00:10:3::1/64", []),
    "tfw-server-eth1": (f"{SERVER6}/64", [("fd00:10::/32", "fd00:10:3::1")]),
}

NAT = """\
set -e
# Dual-stack router. IPv4 from the client leaves eth2 masqueraded as 10.10.2.1; in both families
# only connections opened from the client side and what conntrack finds established or related
# are forwarded, so traffic of a connection this replica does not hold is dropped.
sysctl -w net.ipv4.ip_forward=1
sysctl -w net.ipv6.conf.all.forwarding=1
nft -f - <<'NFT'
table ip flexsfc_nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "eth2" counter masquerade
  }
}
table inet flexsfc_state {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "eth1" ct state new accept
  }
}
NFT
exec sleep infinity
"""

GW = """\
set -e
# Dual-stack gateway between the firewall segment and the server segment.
sysctl -w net.ipv4.ip_forward=1
sysctl -w net.ipv6.conf.all.forwarding=1
exec sleep infinity
"""

FORWARDING = 'test "$(cat /proc/sys/net/ipv6/conf/all/forwarding)" = 1'


def _dual_stack_chain(dest: Path) -> Path:
    """The transparent-firewall example, made dual stack (see the module docstring)."""
    path = copy_example("transparent-firewall", dest, pre_stop_seconds=PRE_STOP)
    networks = path / "networks.yaml"
    docs = list(yaml.safe_load_all(networks.read_text()))
    for doc in docs:
        if doc["metadata"]["name"] not in V6:
            continue
        address, routes = V6[doc["metadata"]["name"]]
        config = json.loads(doc["spec"]["config"])
        config["ipam"]["addresses"].append({"address": address})
        config["ipam"].setdefault("routes", []).extend({"dst": d, "gw": gw} for d, gw in routes)
        doc["spec"]["config"] = json.dumps(config)
    networks.write_text(yaml.safe_dump_all(docs, sort_keys=False))

    functions = path / "network-functions.yaml"
    docs = list(yaml.safe_load_all(functions.read_text()))
    for doc in docs:
        container = doc["spec"]["template"]["spec"]["containers"][0]
        if doc["metadata"]["name"] == "nat":
            container["args"] = [NAT]
            probe = f"nft list table ip flexsfc_nat && nft list table inet flexsfc_state && {FORWARDING}"
            container["readinessProbe"]["exec"]["command"] = ["sh", "-c", probe]
        elif doc["metadata"]["name"] == "gw":
            container["args"] = [GW]
            container["readinessProbe"]["exec"]["command"] = ["sh", "-c", FORWARDING]
    functions.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def _up(rt: LocalRuntime, tmp_path: Path) -> Plan:
    path = _dual_stack_chain(tmp_path / "chain")
    plan = load_plan(path)
    rt.cli("up", "--nodes", str(NODES), str(path), timeout=180)
    return plan


def _ends(plan: Plan) -> tuple[ChainEnds, ChainEnds]:
    """The IPv4 ends (the server's first address) and the same ends over IPv6."""
    v4 = chain_ends(plan)
    return v4, dataclasses.replace(v4, server_ip=SERVER6)


Owners = dict[tuple[int, int, int], str]  # (server port, proto, client port) -> pod


def _owners(rt: LocalRuntime, plan: Plan, nf: str) -> dict[str, Owners]:
    """For each cross-connection of `nf` (by its neighbour, upstream first), which replica of `nf`
    serves each flow."""
    i = CHAIN.index(nf)
    found: dict[str, Owners] = {}
    for peer in (CHAIN[i - 1], CHAIN[i + 1]):
        xc = xc_between(plan, peer, nf)
        found[peer] = {
            (port, proto, client): pod
            for port in (PORT4, PORT6)
            for (proto, client), pod in flow_owners(rt.config, xc, nf, port).items()
        }
    return found


def _flows(report4: dict[str, Any], report6: dict[str, Any]) -> list[tuple[int, int, int]]:
    return [(PORT4, *f) for f in long_lived_flows(report4)] + [(PORT6, *f) for f in long_lived_flows(report6)]


def _forwarded(owners: dict[str, Owners], pod: str, port: int) -> bool:
    """Whether `pod` has a UDP flow to `port` on both of its cross-connections: it received the flow
    and sent it on (so it resolved its next hop, also across nodes)."""
    upstream, downstream = owners.values()
    return any(
        owner == pod and f[:2] == (port, PROTO_UDP) and downstream.get(f) == pod
        for f, owner in upstream.items()
    )


def _wait_flows(rt: LocalRuntime, plan: Plan, nf: str, count: int) -> None:
    """Until both families' long-lived flows have sessions on nf's cross-connections."""
    deadline = time.monotonic() + 15
    while min(len(o) for o in _owners(rt, plan, nf).values()) < count and time.monotonic() < deadline:
        time.sleep(0.1)


def test_dual_stack_chain_each_nf_scaled_across_nodes_under_traffic(
    tmp_path: Path,
) -> None:
    """nat (L3, stateful), firewall (L2) and gw (L3) each 1 -> 4 -> 1 over 3 nodes, under long TCP
    and UDP flows over IPv4 and IPv6: the 4 replicas use every node, the new ones take new
    sessions, established flows never move on either cross-connection of the scaled NF, no TCP
    connection resets, no UDP datagram is lost."""
    with multinode_runtime(tmp_path) as rt:
        plan = _up(rt, tmp_path)
        assert {p.node for p in rt.status().pods} == {"node1", "node2", "node3"}
        ends4, ends6 = _ends(plan)
        # Short flows (new_flows a second) give the new replicas sessions, to show they forward.
        common = {"tcp": 4, "udp": 4, "udp_pps": 100, "new_flows": 50}
        run4 = TrafficRun(rt.config, ends4, port=PORT4, **common)
        run6 = TrafficRun(rt.config, ends6, port=PORT6, **common)
        checks = []
        try:
            run4.start()
            run6.start()
            _wait_flows(rt, plan, "nat", 2 * 8)
            time.sleep(0.5)
            t_start = time.time_ns()
            for nf in SCALED:
                before = _owners(rt, plan, nf)
                old = {p.name for p in rt.pods(nf)}
                rt.request("scale", name=nf, replicas=4)
                wait_ready(rt.config)
                time.sleep(1.0)
                after_out = _owners(rt, plan, nf)
                pods = [p for p in rt.status().pods if p.nf == nf and p.phase == "running"]
                assert {p.node for p in pods} == {"node1", "node2", "node3"}, f"{nf}: 4 replicas not spread"
                fresh = [p for p in pods if p.name not in old]
                assert len(fresh) == 3
                for pod in fresh:
                    for port in (PORT4, PORT6):
                        assert _forwarded(after_out, pod.name, port), (
                            f"{nf}: new replica {pod.name} on {pod.node} passed no flow to port {port} on"
                        )
                rt.request("scale", name=nf, replicas=1)
                wait_settled(rt.config, nf, 1)
                time.sleep(0.5)
                after_in = _owners(rt, plan, nf)
                checks.append((nf, old, before, after_out, after_in))
            t_end = time.time_ns()
            report4, report6 = run4.stop(), run6.stop()
        finally:
            run4.close()
            run6.close()

    for family, report in (("IPv4", report4), ("IPv6", report6)):
        summary = summarize(report)
        assert summary["tcpAlive"] == summary["tcpFlows"] == 4, (family, summary)
        assert summary["udpSent"] > 0, (family, summary)
        lost = lost_between(report, t_start, t_end)
        assert lost == 0, f"{family}: {lost} UDP datagrams lost while scaling"
        assert summary["udpLost"] == 0, (family, summary)  # nor before or after
    flows = _flows(report4, report6)
    for nf, old, before, after_out, after_in in checks:
        for peer in before:
            tracked = [f for f in flows if f in before[peer] and f in after_out[peer] and f in after_in[peer]]
            assert len(tracked) == len(flows), f"{nf}/{peer}: flows missing from the session tables"
            assert all(before[peer][f] in old for f in tracked)
            moved = [f for f in tracked if after_out[peer][f] != before[peer][f]]
            assert moved == [], f"{nf}/{peer}: scale-out moved established flows {moved}"
            # Scale-in removes the newest replicas: the flows' replica stays, nothing re-hashes.
            moved = [f for f in tracked if after_in[peer][f] != before[peer][f]]
            assert moved == [], f"{nf}/{peer}: scale-in moved established flows {moved}"


def _three_stateful_replicas(rt: LocalRuntime, tmp_path: Path) -> tuple[Plan, dict[str, str]]:
    """The chain with nat at 3 replicas, one per node; returns the plan and each pod's node."""
    plan = _up(rt, tmp_path)
    rt.request("scale", name="nat", replicas=3)
    wait_ready(rt.config)
    pods = {p.name: p.node for p in rt.status().pods if p.phase == "running"}
    nat_nodes = {node for name, node in pods.items() if name.startswith("nat-")}
    assert nat_nodes == {"node1", "node2", "node3"}, f"nat replicas not one per node: {pods}"
    client = pod_netns(rt.config, "client")
    link = subprocess.run(
        ["ip", "-n", client, "-o", "link", "show", "eth1"], capture_output=True, text=True, check=True
    ).stdout
    assert " mtu 1450 " in link, link  # so the client's stack fragments the datagrams
    return plan, pods


def _udp_both_families(rt: LocalRuntime, plan: Plan, **args: object) -> tuple[dict[str, Any], dict[str, Any]]:
    """UDP flows over IPv4 and IPv6 at once (no TCP, no short flows) until their duration ends."""
    ends4, ends6 = _ends(plan)
    options = {"tcp": 0, "new_flows": 0, **args}
    run4 = TrafficRun(rt.config, ends4, port=PORT4, **options)
    run6 = TrafficRun(rt.config, ends6, port=PORT6, **options)
    try:
        run4.start()
        run6.start()
        return run4.stop(), run6.stop()
    finally:
        run4.close()
        run6.close()


def _assert_none_lost(report4: dict[str, Any], report6: dict[str, Any]) -> None:
    """Every UDP flow of both families sent (how many depends on how busy the machine is: the
    client sends no backlog after a stall) and got every echo back."""
    for family, report in (("IPv4", report4), ("IPv6", report6)):
        lost = {
            f["port"]: [round((t - report["startedNs"]) / 1e6) for t in f["lostSendNs"]]
            for f in report["udp"]
            if f["lostSendNs"]
        }
        assert all(f["sent"] >= 5 for f in report["udp"]), (family, [f["sent"] for f in report["udp"]])
        assert not lost, f"{family}: lost (client port: ms after start) {lost}"


def test_big_udp_across_nodes_through_three_stateful_replicas(tmp_path: Path) -> None:
    """4000 B UDP datagrams (IPv4 and IPv6, fragmented by the client's stack at MTU 1450) through
    3 replicas of the stateful nat, one per node: every datagram and its echo arrives, so every
    fragment reached the replica whose conntrack reassembles its datagram, in both directions, also
    across nodes.

    Straight after the scale-out: the 3 fresh replicas resolve their next hop (gw, behind the L2
    firewall) on their first datagrams, all at once. The cross-connection answers each of them in
    place with gw's address (flexsfc.agent.desired.answered_neighbours); carried through the
    firewall, their identical requests shared one session and only one replica got its answer,
    while the others' kernels dropped what their unresolved queues could not hold of 4000 B
    datagrams (a second's worth).
    """
    with multinode_runtime(tmp_path) as rt:
        plan, pods = _three_stateful_replicas(rt, tmp_path)
        report4, report6 = _udp_both_families(rt, plan, udp=12, udp_pps=20, udp_size=BIG_UDP, duration=3)
        owners = _owners(rt, plan, "nat")

    _assert_none_lost(report4, report6)
    flows = _flows(report4, report6)
    client_node = next(node for name, node in pods.items() if name.startswith("client-"))
    for peer, by_flow in owners.items():
        assert all(f in by_flow for f in flows), f"nat/{peer}: flows missing from the session table"
        serving = {by_flow[f] for f in flows}
        assert len(serving) == 3, f"nat/{peer}: the flows used {len(serving)} of the 3 replicas"
        assert any(pods[p] != client_node for p in serving), "no flow crossed nodes"
    mine = {f: pod for f, pod in owners["client"].items() if f in flows}
    assert mine == {f: owners["firewall"][f] for f in flows}, (
        "a flow's two sides went through different replicas"
    )
