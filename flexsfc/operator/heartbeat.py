"""The node agent's heartbeat: one coordination.k8s.io/v1 Lease per node, as the kubelet keeps its own.

Each agent renews the Lease `flexsfc-agent-<node>` in its own namespace (default `flexsfc-system`)
every `heartbeat_seconds`, with `leaseDurationSeconds` three periods long: an agent whose Lease has
expired is not running (or cannot reach the API server). The Lease's annotation
`flexsfc.io/agent-status` carries a bounded JSON summary of the node's data plane: links reported and
ready, replicas active and draining, the last reconcile (time, outcome, first errors), drop counters
by reason, and the CNI records the agent refused (at most `MAX_LISTED`, plus their total).

Why a Lease: it needs no CRD, the agent's extra RBAC is a Role on leases in its own namespace (never
cluster-wide, so it cannot touch other components' leader-election leases), one write per node per
period whatever the number of chains, and it reports nodes that host no chain too. Readers
(`flexsfc status --kube`) need `get`/`list` on leases in that namespace.
"""

import datetime
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Final

LEASE_PREFIX: Final = "flexsfc-agent-"
ANNOTATION_AGENT_STATUS: Final = "flexsfc.io/agent-status"
LABEL_COMPONENT: Final = "app.kubernetes.io/name"
AGENT_COMPONENT: Final = "flexsfc-agent"
DEFAULT_AGENT_NAMESPACE: Final = "flexsfc-system"
ENV_AGENT_NAMESPACE: Final = "FLEXSFC_AGENT_NAMESPACE"
DEFAULT_HEARTBEAT_SECONDS: Final = 20.0
LEASE_PERIODS: Final = 3  # leaseDurationSeconds = LEASE_PERIODS x the renewal period
MAX_LISTED: Final = 20  # refused records and errors listed in the summary
MAX_NAME: Final = 253


def agent_namespace() -> str:
    """Where the agents' Leases live: $FLEXSFC_AGENT_NAMESPACE, $POD_NAMESPACE or flexsfc-system."""
    return os.environ.get(ENV_AGENT_NAMESPACE) or os.environ.get("POD_NAMESPACE") or DEFAULT_AGENT_NAMESPACE


def lease_name(node: str) -> str:
    name = LEASE_PREFIX + node
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(node.encode()).hexdigest()[:16]
    return f"{name[: MAX_NAME - 17]}-{digest}"


def micro_time(moment: datetime.datetime) -> str:
    """metav1.MicroTime (RFC 3339 with microseconds, UTC)."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any) -> datetime.datetime | None:
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def lease_body(
    node: str, summary: dict[str, Any], *, period: float, now: datetime.datetime
) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": lease_name(node),
            "labels": {LABEL_COMPONENT: AGENT_COMPONENT, "app.kubernetes.io/part-of": "flexsfc"},
            "annotations": {ANNOTATION_AGENT_STATUS: json.dumps(summary, sort_keys=True)},
        },
        "spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": max(1, round(LEASE_PERIODS * period)),
            "renewTime": micro_time(now),
        },
    }


@dataclass(frozen=True)
class AgentHeartbeat:
    """What one agent's Lease says."""

    node: str
    renewed: datetime.datetime | None
    duration_seconds: int
    summary: dict[str, Any] = field(default_factory=dict)

    def age(self, now: datetime.datetime) -> float | None:
        return None if self.renewed is None else (now - self.renewed).total_seconds()

    def alive(self, now: datetime.datetime) -> bool:
        age = self.age(now)
        return age is not None and age <= self.duration_seconds


def heartbeat_from_lease(lease: dict[str, Any]) -> AgentHeartbeat | None:
    """None for a Lease that is not an agent's."""
    meta, spec = lease.get("metadata") or {}, lease.get("spec") or {}
    if (meta.get("labels") or {}).get(LABEL_COMPONENT) != AGENT_COMPONENT:
        return None
    try:
        summary = json.loads((meta.get("annotations") or {}).get(ANNOTATION_AGENT_STATUS) or "{}")
    except ValueError:
        summary = {"unreadable": True}
    node = spec.get("holderIdentity") or str(meta.get("name", "")).removeprefix(LEASE_PREFIX)
    return AgentHeartbeat(
        node=str(node),
        renewed=parse_time(spec.get("renewTime")),
        duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
        summary=summary if isinstance(summary, dict) else {},
    )
