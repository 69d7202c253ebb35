"""The chain model: specs, manifest loading, validation and planning.

Entry points: :func:`load_plan` (manifests -> validated Plan or one ManifestError listing every
error), :func:`validate_chain` / :func:`parse_chain` (one ServiceFunctionChain object, as the chain
controller sees it), :func:`plan_chain` / :func:`chain_links` (cross-connections of one chain from the
Deployments and NetworkAttachmentDefinitions visible, with the sides that cannot be resolved yet).
"""

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
