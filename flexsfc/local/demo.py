"""The demo scenario: the paper's chain under real traffic, an NF scaled out and in, measured.

Timeline (the traffic never stops): warm-up -> snapshot -> scale NF 1 -> N -> settle -> snapshot ->
scale N -> 1 (drain, preStop, termination) -> snapshot -> stop traffic. What is measured:
- per-replica share of the long-lived flows (session table) and of the new sessions (port counters);
- established flows whose replica changed across scale-out (must be none) and across scale-in;
- UDP datagrams lost (no echo) in each phase, TCP connections alive at the end;
- reaction times from the runtime: replica running -> its first packet, terminating -> out of table.
"""

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flexsfc.agent.types import ReplicaPhase
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
from flexsfc.model.types import Plan

Say = Callable[[str], None]


@dataclass
class DemoSettings:
    nf: str = "firewall"
    scale_to: int = 3
    warmup_seconds: float = 4.0
    settle_seconds: float = 6.0
    tail_seconds: float = 2.0
    ready_timeout: float = 60.0
    drain_probe_seconds: float = 1.0  # snapshot this long into the drain (inside the preStop delay)
    traffic: dict[str, Any] = field(
        default_factory=lambda: {
            "tcp": 16,
            "udp": 16,
            "late_tcp": 24,
            "late_udp": 24,
            "udp_pps": 50,
            "tcp_msgs": 20,
            "new_flows": 150,
        }
    )


@dataclass
class Snapshot:
    at_ns: int
    owners: dict[tuple[int, int], str]  # (proto, client port) -> pod of the scaled NF
    new_sessions: dict[str, int]  # pod -> sessions created on its ports so far
    pods: list[str]
    nodes: dict[str, str] = field(default_factory=dict)  # pod -> its node (`up --nodes N`)


def run_demo(config: RuntimeConfig, plan: Plan, settings: DemoSettings, say: Say) -> dict[str, Any]:
    ends = chain_ends(plan)
    chain = plan.chains[0]
    names = [nf.name for nf in chain.network_functions]
    if settings.nf not in names[1:-1]:
        middle = ", ".join(names[1:-1])
        raise ValueError(f"--nf {settings.nf}: pick a network function between the chain's ends ({middle})")
    upstream = names[names.index(settings.nf) - 1]
    xc = xc_between(plan, upstream, settings.nf)
    port = 9000

    def snapshot() -> Snapshot:
        status = control.status(config)
        pods = [
            p
            for p in status.pods
            if p.nf == settings.nf and p.phase in (ReplicaPhase.RUNNING, ReplicaPhase.TERMINATING)
        ]
        created = {p.name: p.counters.sessions_created if p.counters else 0 for p in pods}
        return Snapshot(
            time.time_ns(),
            flow_owners(config, xc, settings.nf, port),
            created,
            [p.name for p in pods],
            {p.name: p.node for p in pods if p.node},
        )

    tr = settings.traffic
    traffic = TrafficRun(config, ends, port=port, **tr)
    say(
        f"traffic {ends.client_nf} -> {ends.server_ip} ({ends.server_nf}): {tr['tcp']} TCP + {tr['udp']} UDP "
        f"long-lived flows, {tr['late_tcp']} + {tr['late_udp']} more after the scale-out, "
        f"{tr['new_flows']} new short UDP flows/s"
    )
    traffic.start()
    try:
        time.sleep(settings.warmup_seconds)
        before = snapshot()
        say(f"scale {settings.nf} 1 -> {settings.scale_to} under traffic")
        t_out = time.time_ns()
        control.scale(config, settings.nf, settings.scale_to)
        wait_ready(config, settings.ready_timeout)
        t_out_done = time.time_ns()
        time.sleep(settings.settle_seconds / 3)
        traffic.open_late_flows()  # some of them land on the new replicas
        time.sleep(settings.settle_seconds * 2 / 3)
        scaled = snapshot()
        say(f"scale {settings.nf} {settings.scale_to} -> 1 (drain, preStop, graceful termination)")
        t_in = time.time_ns()
        control.scale(config, settings.nf, 1)
        time.sleep(settings.drain_probe_seconds)
        draining = snapshot()
        wait_settled(config, settings.nf, 1, settings.ready_timeout)
        t_in_done = time.time_ns()
        time.sleep(settings.tail_seconds)
        after = snapshot()
        say("stopping traffic")
        report = traffic.stop()
    finally:
        traffic.close()

    flows = long_lived_flows(report)
    early = long_lived_flows(report, late=False)  # the ones that existed before the scale-out
    reactions = control.reactions(config)
    removed = [p for p in scaled.pods if p not in after.pods]
    on_removed = [f for f in flows if scaled.owners.get(f) in removed]
    return {
        "chain": chain.name,
        "nf": settings.nf,
        "scaleTo": settings.scale_to,
        "traffic": summarize(report),
        "phases": {
            "before scale-out": _phase(report, traffic.started_ns, t_out),
            "scale-out": _phase(report, t_out, t_out_done + int(settings.settle_seconds * 1e9)),
            "scale-in (drain, termination)": _phase(report, t_in, t_in_done),
            "after scale-in": _phase(report, t_in_done, 2**63),
        },
        "shares": {
            "before": _share(before.owners, early),
            "after scale-out": _share(scaled.owners, flows),
            "draining": _share(draining.owners, flows),
            "after scale-in": _share(after.owners, flows),
        },
        "newSessions": _delta(before.new_sessions, scaled.new_sessions),
        "movedOnScaleOut": _moved(before.owners, scaled.owners, early),
        "onRemovedReplicas": len(on_removed),
        "keptWhileDraining": sum(1 for f in on_removed if draining.owners.get(f) == scaled.owners[f]),
        "movedOffRemoved": sum(1 for f in on_removed if after.owners.get(f) not in (None, scaled.owners[f])),
        "movedOthersOnScaleIn": _moved(
            scaled.owners, after.owners, [f for f in flows if f not in set(on_removed)]
        ),
        # Simulated nodes: the scaled NF's replicas and the long-lived flows they serve, per node.
        "perNode": {
            label: _per_node(snap, flows if label != "before" else early)
            for label, snap in (
                ("before", before),
                ("after scale-out", scaled),
                ("draining", draining),
                ("after scale-in", after),
            )
            if snap.nodes
        },
        "scaleOutSeconds": (t_out_done - t_out) / 1e9,
        "scaleInSeconds": (t_in_done - t_in) / 1e9,
        "reactions": [
            r
            for r in reactions
            if r.nf == settings.nf and not (r.kind.startswith("running") and r.pod in before.pods)
        ],
    }


def _per_node(snap: Snapshot, flows: list[tuple[int, int]]) -> dict[str, dict[str, int]]:
    """node -> {"replicas": running or draining replicas there, "flows": long-lived flows they serve}."""
    result: dict[str, dict[str, int]] = {}
    for pod in snap.pods:
        result.setdefault(snap.nodes.get(pod, "?"), {"replicas": 0, "flows": 0})["replicas"] += 1
    for f in flows:
        owner = snap.owners.get(f)
        if owner is not None:
            result.setdefault(snap.nodes.get(owner, "?"), {"replicas": 0, "flows": 0})["flows"] += 1
    return dict(sorted(result.items()))


def _phase(report: dict[str, Any], start_ns: int, end_ns: int) -> dict[str, int]:
    return {"udpLost": lost_between(report, start_ns, end_ns)}


def _share(owners: dict[tuple[int, int], str], flows: list[tuple[int, int]]) -> dict[str, int]:
    return dict(sorted(Counter(owners[f] for f in flows if f in owners).items()))


def _moved(a: dict[tuple[int, int], str], b: dict[tuple[int, int], str], flows: list[tuple[int, int]]) -> int:
    return sum(1 for f in flows if f in a and f in b and a[f] != b[f])


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {pod: after[pod] - before.get(pod, 0) for pod in sorted(after)}
