"""Problem detection for `flexsfc status --kube`: what the gathered records say is wrong (chains not
Ready, nodes gone or not Ready, agents without heartbeat, failed reconciles, refused interfaces,
links not ready, NF pods not scheduled)."""

from collections.abc import Iterable
from typing import Any

from flexsfc.operator.cluster_records import ClusterStatus, Problem
from flexsfc.operator.heartbeat import lease_name


def find_problems(status: ClusterStatus, pods: Iterable[dict[str, Any]]) -> None:
    problems = status.problems
    for chain in status.chains:
        if chain.ready != "True":
            problems.append(
                Problem("error", f"chain {chain.key}", f"not Ready ({chain.reason}): {chain.message}")
            )
    for node in status.nodes:
        agent = node.agent
        subject = f"node {node.name}"
        if not node.exists and node.nf_pods:
            problems.append(Problem("warning", subject, f"gone, {node.nf_pods} NF pod(s) still bound to it"))
        elif node.node_ready not in (None, "True") and node.nf_pods:
            problems.append(Problem("warning", subject, f"Node not Ready ({node.node_ready})"))
        if node.nf_pods and agent.state in ("missing", "expired"):
            since = f", last heartbeat {agent.age_seconds:.0f}s ago" if agent.age_seconds is not None else ""
            problems.append(
                Problem(
                    "error", subject, f"hosts {node.nf_pods} NF pod(s) but its agent has no heartbeat{since}"
                )
            )
        elif agent.state == "expired" and not node.exists:
            lease = f"kubectl -n {status.agent_namespace} delete lease {lease_name(node.name)}"
            problems.append(Problem("warning", subject, f"Node gone, its agent's Lease left over ({lease})"))
        elif agent.state == "expired":
            problems.append(
                Problem("warning", subject, f"agent heartbeat expired {agent.age_seconds:.0f}s ago")
            )
        if agent.last_reconcile_ok is False:
            problems.append(
                Problem("error", subject, "last reconcile failed: " + "; ".join(agent.errors[:3]))
            )
        for refused in agent.refused:
            problems.append(
                Problem(
                    "error",
                    f"pod {refused.get('pod')}",
                    f"interface {refused.get('interface')} refused on {node.name}: {refused.get('reason')}",
                )
            )
        if agent.tunnel and agent.tunnel.get("problem") and node.nf_pods:
            problems.append(
                Problem("error", subject, f"sends nothing to other nodes: {agent.tunnel['problem']}")
            )
        if agent.refused_total > len(agent.refused):
            more = agent.refused_total - len(agent.refused)
            problems.append(Problem("error", subject, f"{more} more refused interface(s)"))
    for link in status.links:
        for node_name, entry in link.nodes.items():
            if not entry.ready:
                problems.append(
                    Problem("error", f"link {link.namespace}/{link.name}", f"on {node_name}: {entry.message}")
                )
    for pod in pods:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        if not spec.get("nodeName") and (pod.get("status") or {}).get("phase") == "Pending":
            key = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
            problems.append(Problem("warning", f"pod {key}", "not scheduled"))
