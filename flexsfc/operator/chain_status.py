"""What the chain controller writes on a ServiceFunctionChain: the result of one sync, the Ready and
Degraded conditions it makes of it (with their reasons and messages) and the status patch.

flexsfc.operator.controller syncs a chain and hands the result here; the readiness of each link
comes from flexsfc.operator.readiness.
"""

import json
from dataclasses import dataclass, field
from typing import Any

from flexsfc.model.constants import API_GROUP, API_VERSION, PLURAL_CHAIN
from flexsfc.operator.conditions import Condition, merge_conditions
from flexsfc.operator.readiness import LinkReadiness, summarize

MAX_CONDITION_MESSAGE = 32768  # metav1.Condition's limit
REASON_INVALID = "InvalidSpec"
REASON_APPLIED = "CrossConnectionsApplied"
REASON_PARTIAL = "Unresolved"
REASON_PROGRAMMED = "Programmed"
REASON_NOT_PROGRAMMED = "NotProgrammed"
REASON_NO_AGENT = "NodeWithoutAgent"


@dataclass
class SyncResult:
    valid: bool
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    desired: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # why the chain is not (fully) resolved
    links: list[LinkReadiness] = field(default_factory=list)  # each applied link, judged per node
    pruned: list[str] = field(default_factory=list)  # "xc: node" entries removed from xc status

    @property
    def node_problems(self) -> list[str]:
        """One line per node hosting the chain that does not report all of its links programmed."""
        return summarize(self.links)[1]

    @property
    def nodes(self) -> list[str]:
        """The nodes that host the chain and report every link of theirs programmed."""
        return summarize(self.links)[0]

    @property
    def agentless(self) -> list[str]:
        """Nodes hosting replicas of the chain without a live agent."""
        return sorted({node for link in self.links for node in link.agentless})

    @property
    def ready(self) -> bool:
        return self.valid and not self.problems and not self.node_problems


def write_status(custom: Any, body: dict[str, Any], result: SyncResult, links: list[Any]) -> None:
    """Patch the chain's status (conditions, its CrossConnections) unless it already says so."""
    meta = body["metadata"]
    generation = meta.get("generation")
    if not result.valid:
        wanted = [
            Condition("Ready", False, REASON_INVALID, "the chain is invalid; nothing was applied"),
            Condition("Degraded", True, REASON_INVALID, _bounded("; ".join(result.problems))),
        ]
    elif result.problems:
        wanted = [
            Condition("Ready", False, REASON_PARTIAL, f"{len(result.desired)} of the links are applied"),
            Condition("Degraded", True, REASON_PARTIAL, _bounded("; ".join(result.problems))),
        ]
    elif result.node_problems:
        wanted = [
            Condition(
                "Ready",
                False,
                REASON_NOT_PROGRAMMED,
                _bounded("not programmed on every node hosting it: " + "; ".join(result.node_problems)),
            ),
            Condition("Degraded", False, REASON_APPLIED, "all links are resolved"),
        ]
    else:
        wanted = [
            Condition("Ready", True, REASON_PROGRAMMED, ready_message(result)),
            Condition("Degraded", False, REASON_APPLIED, "all links are resolved"),
        ]
    status: dict[str, Any] = {
        "conditions": merge_conditions((body.get("status") or {}).get("conditions"), wanted, generation),
        "crossConnections": result.desired,
        "links": len(result.desired),
    }
    if generation is not None:
        status["observedGeneration"] = generation
    if _same_status(body.get("status") or {}, status):
        return
    custom.patch_namespaced_custom_object_status(
        API_GROUP,
        API_VERSION,
        meta.get("namespace") or "default",
        PLURAL_CHAIN,
        meta["name"],
        {"status": status},
    )


def ready_message(result: SyncResult) -> str:
    nodes = result.nodes
    where = f"on {len(nodes)} node(s): {', '.join(nodes[:8])}" + (" ..." if len(nodes) > 8 else "")
    if not nodes:
        where = "(no node hosts a replica yet)"
    return f"{len(result.desired)} CrossConnection(s) applied, programmed {where}"


def _bounded(message: str, limit: int = MAX_CONDITION_MESSAGE) -> str:
    return message if len(message) <= limit else message[: limit - 20] + " ... (truncated)"


def current_condition(body: dict[str, Any], kind: str) -> dict[str, Any] | None:
    conditions = (body.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if isinstance(c, dict) and c.get("type") == kind), None)


def _same_status(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(
        json.dumps(current.get(k), sort_keys=True) == json.dumps(v, sort_keys=True) for k, v in wanted.items()
    )
