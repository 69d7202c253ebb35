"""What `flexsfc status --kube` shows, read from the cluster: chains, NFs, replicas per node, each
node agent's health and data plane, drops and problems, as typed records (rendering is the CLI's).
This module gathers; the records are flexsfc.operator.cluster_records, the problem detection
flexsfc.operator.cluster_problems.

Sources, all read-only:
- ServiceFunctionChains (conditions from the chain controller) and CrossConnections (each node
  agent's `status.nodes[<node>]`);
- NF pods (label flexsfc.io/network-function) and Deployments: replicas per node and NF;
- Nodes: whether they exist and are Ready;
- the agents' heartbeat Leases in the agents' namespace (flexsfc/operator/heartbeat.py): alive or
  not, and their data-plane summary (links, replicas, last reconcile, drops, refused interfaces).
A source the caller may not read (RBAC) is reported as a problem; the rest is still shown.
"""

import datetime
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from flexsfc.model.constants import (
    API_GROUP,
    API_VERSION,
    LABEL_CHAIN,
    LABEL_NF,
    PLURAL_CHAIN,
    PLURAL_CROSS_CONNECTION,
)
from flexsfc.operator.cluster_problems import find_problems
from flexsfc.operator.cluster_records import AgentRecord as AgentRecord
from flexsfc.operator.cluster_records import ChainRecord as ChainRecord
from flexsfc.operator.cluster_records import ClusterStatus as ClusterStatus
from flexsfc.operator.cluster_records import LinkNode as LinkNode
from flexsfc.operator.cluster_records import LinkRecord as LinkRecord
from flexsfc.operator.cluster_records import NfRecord as NfRecord
from flexsfc.operator.cluster_records import NodeRecord as NodeRecord
from flexsfc.operator.cluster_records import Problem as Problem
from flexsfc.operator.heartbeat import AGENT_COMPONENT, LABEL_COMPONENT, AgentHeartbeat, heartbeat_from_lease
from flexsfc.operator.readiness import NodeReplicas, node_entries, placement


class _Reader:
    """API reads that turn a refusal (403) or a missing API (404) into a problem and a default."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems

    def read(self, what: str, call: Callable[[], list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], bool]:
        try:
            return call(), True
        except ApiException as exc:
            if exc.status not in (401, 403, 404):
                raise
            reason = "not allowed" if exc.status in (401, 403) else "not found (CRD or API not installed?)"
            self.problems.append(Problem("warning", "access", f"cannot list {what}: {reason}"))
            return [], False


def _items(result: Any) -> list[dict[str, Any]]:
    return list(result.get("items", [])) if isinstance(result, dict) else []


def _condition(obj: Mapping[str, Any], kind: str) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if isinstance(c, dict) and c.get("type") == kind), {})


def gather(
    api_client: kubernetes.client.ApiClient,
    *,
    namespace: str | None,
    agent_namespace: str,
    context: str | None = None,
    now: datetime.datetime | None = None,
) -> ClusterStatus:
    now = now or datetime.datetime.now(datetime.UTC)
    status = ClusterStatus(context=context, namespace=namespace, agent_namespace=agent_namespace)
    reader = _Reader(status.problems)
    custom = kubernetes.client.CustomObjectsApi(api_client)
    core = kubernetes.client.CoreV1Api(api_client)
    apps = kubernetes.client.AppsV1Api(api_client)
    coordination = kubernetes.client.CoordinationV1Api(api_client)
    serialize = api_client.sanitize_for_serialization

    def custom_list(plural: str, **kwargs: Any) -> list[dict[str, Any]]:
        if namespace:
            return _items(
                custom.list_namespaced_custom_object(API_GROUP, API_VERSION, namespace, plural, **kwargs)
            )
        return _items(custom.list_cluster_custom_object(API_GROUP, API_VERSION, plural, **kwargs))

    chains, _ = reader.read("ServiceFunctionChains", lambda: custom_list(PLURAL_CHAIN))
    xcs, _ = reader.read(
        "CrossConnections", lambda: custom_list(PLURAL_CROSS_CONNECTION, label_selector=LABEL_CHAIN)
    )

    def pods_call() -> list[dict[str, Any]]:
        if namespace:
            result = core.list_namespaced_pod(namespace, label_selector=LABEL_NF)
        else:
            result = core.list_pod_for_all_namespaces(label_selector=LABEL_NF)
        return [serialize(p) for p in result.items]

    def deployments_call() -> list[dict[str, Any]]:
        if namespace:
            result = apps.list_namespaced_deployment(namespace, label_selector=LABEL_NF)
        else:
            result = apps.list_deployment_for_all_namespaces(label_selector=LABEL_NF)
        return [serialize(d) for d in result.items]

    pods, _ = reader.read("NF pods", pods_call)
    deployments, _ = reader.read("NF Deployments", deployments_call)
    nodes, nodes_known = reader.read("Nodes", lambda: [serialize(n) for n in core.list_node().items])
    leases, leases_known = reader.read(
        f"agent Leases in {agent_namespace}",
        lambda: [
            serialize(lease)
            for lease in coordination.list_namespaced_lease(
                agent_namespace, label_selector=f"{LABEL_COMPONENT}={AGENT_COMPONENT}"
            ).items
        ],
    )

    _chains(status, chains)
    where = placement(pods)
    _nfs(status, chains, deployments, where)
    _links(status, xcs)
    heartbeats = {hb.node: hb for lease in leases if (hb := heartbeat_from_lease(lease)) is not None}
    _nodes(status, nodes, nodes_known, heartbeats, leases_known, where, now)
    find_problems(status, pods)
    return status


def _chains(status: ClusterStatus, chains: Iterable[dict[str, Any]]) -> None:
    for chain in chains:
        meta, spec, chain_status = chain["metadata"], chain.get("spec") or {}, chain.get("status") or {}
        ready = _condition(chain, "Ready")
        status.chains.append(
            ChainRecord(
                namespace=meta.get("namespace") or "default",
                name=meta["name"],
                nfs=[
                    str(nf.get("name")) for nf in spec.get("networkFunctions") or [] if isinstance(nf, dict)
                ],
                links=int(chain_status.get("links") or 0),
                ready=str(ready.get("status", "Unknown")),
                reason=str(ready.get("reason", "")),
                message=str(ready.get("message", "no status yet: is the chain controller running?")),
            )
        )
    status.chains.sort(key=lambda c: (c.namespace, c.name))


def _nfs(
    status: ClusterStatus,
    chains: Iterable[dict[str, Any]],
    deployments: Iterable[dict[str, Any]],
    where: Mapping[tuple[str, str], Mapping[str, NodeReplicas]],
) -> None:
    in_chains: dict[tuple[str, str], list[str]] = {}
    for chain in status.chains:
        for nf in chain.nfs:
            in_chains.setdefault((chain.namespace, nf), []).append(chain.name)
    by_nf: dict[tuple[str, str], dict[str, Any]] = {}
    for deployment in deployments:
        meta = deployment.get("metadata") or {}
        template_labels = (((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
            "labels"
        ) or {}
        label = template_labels.get(LABEL_NF) or (meta.get("labels") or {}).get(LABEL_NF)
        if label:
            by_nf.setdefault((meta.get("namespace") or "default", str(label)), deployment)
    for key in sorted(set(in_chains) | set(by_nf) | set(where)):
        found = by_nf.get(key)
        dep_spec = (found or {}).get("spec") or {}
        dep_status = (found or {}).get("status") or {}
        status.nfs.append(
            NfRecord(
                namespace=key[0],
                nf=key[1],
                chains=sorted(in_chains.get(key, [])),
                deployment=((found or {}).get("metadata") or {}).get("name"),
                desired=dep_spec.get("replicas") if found else None,
                ready=int(dep_status.get("readyReplicas") or 0) if found else None,
                nodes={
                    node: {"running": c.running, "pending": c.pending, "terminating": c.terminating}
                    for node, c in sorted(where.get(key, {}).items())
                },
            )
        )


def _links(status: ClusterStatus, xcs: Iterable[dict[str, Any]]) -> None:
    for xc in xcs:
        meta, spec = xc["metadata"], xc.get("spec") or {}
        generation = meta.get("generation")
        nodes = {
            node: LinkNode(
                ready=bool(entry.get("ready")),
                replicas_a=int(entry.get("replicasA") or 0),
                replicas_b=int(entry.get("replicasB") or 0),
                draining_a=int(entry.get("drainingA") or 0),
                draining_b=int(entry.get("drainingB") or 0),
                current=generation is None or entry.get("observedGeneration") == generation,
                message=str(entry.get("message") or ""),
            )
            for node, entry in sorted(node_entries(xc).items())
        }
        status.links.append(
            LinkRecord(
                namespace=meta.get("namespace") or "default",
                name=meta["name"],
                chain=str(spec.get("chain", "")),
                side_a=f"{(spec.get('sideA') or {}).get('nf')}/{(spec.get('sideA') or {}).get('interface')}",
                side_b=f"{(spec.get('sideB') or {}).get('nf')}/{(spec.get('sideB') or {}).get('interface')}",
                nodes=nodes,
            )
        )
    status.links.sort(key=lambda x: (x.namespace, x.name))


def _agent(heartbeat: AgentHeartbeat | None, leases_known: bool, now: datetime.datetime) -> AgentRecord:
    if heartbeat is None:
        return AgentRecord(state="missing" if leases_known else "unknown")
    summary = heartbeat.summary
    links = summary.get("links") or {}
    replicas = summary.get("replicas") or {}
    last = summary.get("lastReconcile") or {}
    age = heartbeat.age(now)
    return AgentRecord(
        state="ok" if heartbeat.alive(now) else "expired",
        renewed=heartbeat.renewed.isoformat() if heartbeat.renewed else None,
        age_seconds=round(age, 1) if age is not None else None,
        version=summary.get("version"),
        links_reported=links.get("reported"),
        links_ready=links.get("ready"),
        replicas_active=replicas.get("active"),
        replicas_draining=replicas.get("draining"),
        last_reconcile_ok=last.get("ok"),
        last_reconcile_time=last.get("time"),
        errors=[str(e) for e in last.get("errors") or []],
        drops={str(k): int(v) for k, v in (summary.get("drops") or {}).items()},
        refused=[
            {str(k): str(v) for k, v in r.items()}
            for r in summary.get("refused") or []
            if isinstance(r, dict)
        ],
        refused_total=int(summary.get("refusedTotal") or 0),
        tunnel=summary["tunnel"] if isinstance(summary.get("tunnel"), dict) else None,
    )


def _nodes(
    status: ClusterStatus,
    nodes: Iterable[dict[str, Any]],
    nodes_known: bool,
    heartbeats: Mapping[str, AgentHeartbeat],
    leases_known: bool,
    where: Mapping[tuple[str, str], Mapping[str, NodeReplicas]],
    now: datetime.datetime,
) -> None:
    hosted: dict[str, int] = {}
    for per_node in where.values():
        for node, counts in per_node.items():
            hosted[node] = hosted.get(node, 0) + counts.total
    existing = {n["metadata"]["name"]: str(_condition(n, "Ready").get("status", "Unknown")) for n in nodes}
    # Every Node, plus nodes only pods or Leases name (deleted Nodes, or Nodes we may not list).
    names = set(existing) | set(hosted) | set(heartbeats)
    for name in sorted(names):
        status.nodes.append(
            NodeRecord(
                name=name,
                exists=name in existing if nodes_known else True,
                node_ready=existing.get(name),
                nf_pods=hosted.get(name, 0),
                agent=_agent(heartbeats.get(name), leases_known, now),
            )
        )
