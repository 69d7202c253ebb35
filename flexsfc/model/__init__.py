"""The chain model: specs, manifest loading, validation and planning.

Entry points: :func:`load_plan` (manifests -> validated Plan or one ManifestError listing every
error), :func:`validate_chain` / :func:`parse_chain` (one ServiceFunctionChain object, as the chain
controller sees it), :func:`plan_chain` / :func:`chain_links` (cross-connections of one chain from the
Deployments and NetworkAttachmentDefinitions visible, with the sides that cannot be resolved yet).

The names below load on first use (PEP 562): importing a small submodule such as
``flexsfc.model.records`` (flexsfc-cni, whose start-up is part of every pod's creation) must not pull
in PyYAML and the planner.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flexsfc.model.chain import parse_chain, validate_chain
    from flexsfc.model.errors import Issue, ManifestError, Severity
    from flexsfc.model.loader import build_plan, load_plan, load_plan_text
    from flexsfc.model.names import cross_connection_name
    from flexsfc.model.planner import (
        ChainLink,
        ChainPlan,
        UnresolvedReason,
        UnresolvedSide,
        chain_links,
        plan_chain,
    )
    from flexsfc.model.workloads import ForeignNetwork, parse_deployment, parse_nad, parse_networks_annotation

_SUBMODULE_OF = {
    "parse_chain": "chain",
    "validate_chain": "chain",
    "Issue": "errors",
    "ManifestError": "errors",
    "Severity": "errors",
    "build_plan": "loader",
    "load_plan": "loader",
    "load_plan_text": "loader",
    "cross_connection_name": "names",
    "ChainLink": "planner",
    "ChainPlan": "planner",
    "UnresolvedReason": "planner",
    "UnresolvedSide": "planner",
    "chain_links": "planner",
    "plan_chain": "planner",
    "ForeignNetwork": "workloads",
    "parse_deployment": "workloads",
    "parse_nad": "workloads",
    "parse_networks_annotation": "workloads",
}

__all__ = [
    "ChainLink",
    "ChainPlan",
    "ForeignNetwork",
    "Issue",
    "ManifestError",
    "Severity",
    "UnresolvedReason",
    "UnresolvedSide",
    "build_plan",
    "chain_links",
    "cross_connection_name",
    "load_plan",
    "load_plan_text",
    "parse_chain",
    "parse_deployment",
    "parse_nad",
    "parse_networks_annotation",
    "plan_chain",
    "validate_chain",
]


def __getattr__(name: str) -> Any:
    submodule = _SUBMODULE_OF.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{submodule}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
