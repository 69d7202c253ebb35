"""Chain readiness from the node agents' reports: which nodes host a cross-connection, whether each
of them reports it programmed, and which per-node entries are stale and must be pruned.

A CrossConnection's `status.nodes[<node>]` is written by the agent of that node, and only while the
node hosts a replica of one of the link's two NFs (flexsfc/operator/agent.py). A link is programmed
when every node that hosts one of those replicas (pods with the NF label, `spec.nodeName` set, not
finished, on a Node that exists) has an entry that
- observed the object's current generation (`observedGeneration`),
- says `ready` (no data-plane error, every running replica's interface attached), and
- counts at least as many active replicas of each side as the API has running and Ready pods of that
  NF on the node (an agent that has not seen a new replica yet, or has stopped, falls behind here).
and whose agent is alive (its heartbeat Lease, flexsfc/operator/heartbeat.py, is renewed): an entry
left by an agent that has stopped says nothing about now, and while no agent runs there the node's
data plane is not updated (its replicas stay in every node's tables while their pods are Ready: the
pinned programs keep forwarding, and a lost node's pods are made not Ready by Kubernetes).
Entries of nodes that host nothing of the link, or no longer exist, are pruned by the controller.

Pure functions over API objects (dicts), shared by the chain controller and `flexsfc status --kube`.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flexsfc.agent.types import ReplicaPhase
from flexsfc.model.constants import LABEL_NF
from flexsfc.operator.pods import pod_phase

FINISHED_POD_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass
class NodeReplicas:
    """One NF's pods on one node, by lifecycle."""

    total: int = 0
    running: int = 0  # Running and Ready, not terminating: what the agent must have programmed
    terminating: int = 0

    @property
    def pending(self) -> int:
        return self.total - self.running - self.terminating


# (namespace, nf) -> node -> replicas
Placement = dict[tuple[str, str], dict[str, NodeReplicas]]


def pod_node(pod: Mapping[str, Any]) -> str | None:
    """The node a pod occupies: None when it is unscheduled, finished or no NF pod."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    if not (meta.get("labels") or {}).get(LABEL_NF) or status.get("phase") in FINISHED_POD_PHASES:
        return None
    node = spec.get("nodeName")
    return str(node) if node else None


def placement(pods: Iterable[Mapping[str, Any]]) -> Placement:
    found: Placement = {}
    for pod in pods:
        node = pod_node(pod)
        if node is None:
            continue
        meta = pod.get("metadata") or {}
        key = (meta.get("namespace") or "default", meta["labels"][LABEL_NF])
        counts = found.setdefault(key, {}).setdefault(node, NodeReplicas())
        counts.total += 1
        phase = pod_phase(dict(pod))
        if phase is ReplicaPhase.RUNNING:
            counts.running += 1
        elif phase is ReplicaPhase.TERMINATING:
            counts.terminating += 1
    return found


def xc_sides(xc: Mapping[str, Any]) -> tuple[str, str]:
    spec = xc.get("spec") or {}
    return (spec.get("sideA") or {}).get("nf", ""), (spec.get("sideB") or {}).get("nf", "")


def node_entries(xc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    nodes = (xc.get("status") or {}).get("nodes") or {}
    return {str(k): v for k, v in nodes.items() if isinstance(v, dict)}


@dataclass
class LinkReadiness:
    """One CrossConnection judged against the placement of its NFs."""

    name: str
    hosting: list[str]  # nodes that must report it
    programmed: list[str] = field(default_factory=list)  # of those, the ones that do
    problems: dict[str, list[str]] = field(default_factory=dict)  # node -> why it is not programmed
    prune: list[str] = field(default_factory=list)  # entries of nodes that host nothing or are gone
    agentless: list[str] = field(default_factory=list)  # hosting nodes without a live agent

    @property
    def ready(self) -> bool:
        return not self.problems


def judge_link(
    xc: Mapping[str, Any],
    where: Placement,
    node_exists: Mapping[str, bool],
    agent_alive: Mapping[str, bool | None] | None = None,
) -> LinkReadiness:
    """`node_exists`: node name -> whether its Node object exists (for every node named by the
    placement of the link's NFs and by its status entries). `agent_alive`: node name -> whether its
    agent's Lease is renewed (None or absent: not known, e.g. not allowed to read it: not judged)."""
    meta = xc.get("metadata") or {}
    namespace, name = meta.get("namespace") or "default", meta.get("name", "")
    generation = meta.get("generation")
    side_nfs = xc_sides(xc)
    per_side = [where.get((namespace, nf), {}) for nf in side_nfs]
    hosting = sorted({n for side in per_side for n in side if node_exists.get(n, False)})
    entries = node_entries(xc)
    result = LinkReadiness(name=name, hosting=hosting)
    result.prune = sorted(n for n in entries if n not in hosting)
    for node in hosting:
        entry = entries.get(node)
        issues: list[str] = []
        alive = (agent_alive or {}).get(node)
        if alive is False:
            result.agentless.append(node)
        if entry is None:
            dead = (
                ", and no live agent there (its heartbeat Lease is missing or expired)"
                if alive is False
                else ""
            )
            issues.append(f"{name}: no report from the node's agent{dead}")
        elif alive is False:
            issues.append(
                f"{name}: no live agent on the node (its heartbeat Lease is missing or expired): its report "
                "is not current"
            )
        elif generation is not None and entry.get("observedGeneration") != generation:
            issues.append(
                f"{name}: the agent reports generation {entry.get('observedGeneration')}, not {generation}"
            )
        elif not entry.get("ready"):
            issues.append(f"{name}: {entry.get('message') or 'not ready'}")
        else:
            for side, nf, counts in zip(("A", "B"), side_nfs, per_side, strict=True):
                running = counts[node].running if node in counts else 0
                active = entry.get(f"replicas{side}") or 0
                if active < running:
                    issues.append(f"{name}: {active} of {running} running {nf} replica(s) programmed")
        if issues:
            result.problems[node] = issues
        else:
            result.programmed.append(node)
    return result


def nodes_named(xcs: Iterable[Mapping[str, Any]], where: Placement) -> set[str]:
    """Every node whose existence `judge_link` needs to know for these links."""
    names: set[str] = set()
    for xc in xcs:
        namespace = (xc.get("metadata") or {}).get("namespace") or "default"
        names.update(node_entries(xc))
        for nf in xc_sides(xc):
            names.update(where.get((namespace, nf), {}))
    return names


def summarize(links: Iterable[LinkReadiness], limit: int = 4) -> tuple[list[str], list[str]]:
    """(nodes programmed everywhere, one line per node that is not): for the Ready condition."""
    by_node: dict[str, list[str]] = {}
    good: set[str] = set()
    for link in links:
        good.update(link.programmed)
        for node, issues in link.problems.items():
            by_node.setdefault(node, []).extend(issues)
    lines = []
    for node in sorted(by_node):
        issues = by_node[node]
        more = f" (and {len(issues) - limit} more)" if len(issues) > limit else ""
        lines.append(f"node {node}: " + "; ".join(issues[:limit]) + more)
    return sorted(good - set(by_node)), lines
