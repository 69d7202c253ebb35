"""Manifests (file or directory) -> validated Plan, with every error reported at once.

:func:`load_plan` is the entry point of `flexsfc validate`, `flexsfc up` and the demo: it either
returns a complete Plan (warnings attached) or raises one :class:`ManifestError` listing every error.
"""

import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from flexsfc.model.chain import DEFAULT_NAMESPACE, mapping_field, object_label, parse_chain
from flexsfc.model.constants import (
    API_GROUP_VERSION,
    KIND_CROSS_CONNECTION,
    KIND_NAD,
    LABEL_NF,
    NAD_API_GROUP_VERSION,
)
from flexsfc.model.errors import Issue, IssueCollector, ManifestError, error, warning
from flexsfc.model.manifests import Document, load_documents, load_text
from flexsfc.model.planner import ChainPlan, UnresolvedReason, plan_chain
from flexsfc.model.types import ChainSpec, IPInterface, Mode, NetworkAttachment, NfDeployment, Plan
from flexsfc.model.workloads import ForeignNetwork, parse_deployment, parse_nad

# Kinds that may sit next to a chain's manifests and need nothing from flexsfc.
_IGNORED_KINDS = {("v1", "Namespace")}


@dataclass
class _Objects:
    chains: list[tuple[ChainSpec, str]] = field(default_factory=list)  # (chain, source)
    deployments: list[tuple[NfDeployment, str]] = field(default_factory=list)
    networks: list[tuple[NetworkAttachment | ForeignNetwork, str]] = field(default_factory=list)
    # Objects that failed to parse: their errors are reported already, so a chain referring to them
    # must not add "does not exist" follow-ups.
    invalid_networks: set[str] = field(default_factory=set)  # "namespace/name"
    invalid_nfs: set[tuple[str, str]] = field(default_factory=set)  # (namespace, NF label)
    # NFs named by chains that failed to parse, and namespaces of such chains whose NF list is
    # unreadable: "NF is in no chain" would be a follow-up of the chain's own errors there.
    invalid_chain_nfs: set[tuple[str, str]] = field(default_factory=set)  # (namespace, NF name)
    invalid_chain_namespaces: set[str] = field(default_factory=set)


def load_plan(path: str | Path) -> Plan:
    """Validated plan of the manifests at `path`; raises ManifestError listing every error."""
    documents, issues = load_documents(path)
    return _plan_or_raise(documents, issues)


def load_plan_text(text: str, name: str = "<string>") -> Plan:
    """Like :func:`load_plan` for YAML in memory."""
    documents, issues = load_text(text, name)
    return _plan_or_raise(documents, issues)


def _plan_or_raise(documents: list[Document], issues: list[Issue]) -> Plan:
    plan = build_plan(documents)
    plan.issues[:0] = issues
    if any(issue.is_error for issue in plan.issues):
        raise ManifestError(plan.issues)
    plan.warnings = [str(issue) for issue in plan.issues]
    return plan


def build_plan(documents: list[Document]) -> Plan:
    """Plan of parsed documents; never raises: errors are in plan.issues (then the plan is partial)."""
    issues: list[Issue] = []
    objects = _parse(documents, issues)
    _check_unique(objects, issues)
    chain_plans = [
        plan_chain(chain, [d for d, _ in objects.deployments], [n for n, _ in objects.networks])
        for chain, _ in objects.chains
    ]
    for (_chain, source), chain_plan in zip(objects.chains, chain_plans, strict=True):
        _report_undeployed(chain_plan, source, objects, issues)
        _report_unresolved(chain_plan, source, objects, issues)
        _check_addresses(chain_plan, source, issues)
    _check_unused(objects, chain_plans, issues)
    return Plan(
        chains=[chain for chain, _ in objects.chains],
        cross_connections=[xc for cp in chain_plans for xc in cp.cross_connections],
        deployments=[d for d, _ in objects.deployments],
        attachments=[n for n, _ in objects.networks if isinstance(n, NetworkAttachment)],
        issues=issues,
    )


def _parse(documents: list[Document], issues: list[Issue]) -> _Objects:
    objects = _Objects()
    for doc in documents:
        kind, api_version = doc.kind, doc.api_version
        if kind == "ServiceFunctionChain":
            chain, found = parse_chain(doc.obj, doc.source)
            issues.extend(found)
            if chain is not None:
                objects.chains.append((chain, doc.source))
            else:
                _note_invalid_chain(doc, objects)
        elif kind == "Deployment" and api_version == "apps/v1":
            deployment, found = parse_deployment(doc.obj, doc.source)
            issues.extend(found)
            if deployment is not None:
                objects.deployments.append((deployment, doc.source))
            elif found:
                objects.invalid_nfs.add(_nf_label(doc))
        elif kind == KIND_NAD and api_version == NAD_API_GROUP_VERSION:
            network, found = parse_nad(doc.obj, doc.source)
            issues.extend(found)
            if network is not None:
                objects.networks.append((network, doc.source))
            else:
                objects.invalid_networks.add(_namespaced_name(doc))
        elif (api_version, kind) in _IGNORED_KINDS:
            continue
        elif kind == KIND_CROSS_CONNECTION and api_version == API_GROUP_VERSION:
            issues.append(
                warning(
                    object_label(kind, doc.obj),
                    "",
                    "CrossConnections are generated from ServiceFunctionChains; this one is skipped",
                    "remove it from the manifests",
                    doc.source,
                )
            )
        elif not kind:
            issues.append(error(doc.source, "kind", "missing required field", "set kind (and apiVersion)"))
        else:
            issues.append(
                warning(
                    object_label(kind, doc.obj),
                    "",
                    f"unknown kind {api_version or '<no apiVersion>'}/{kind}: skipped",
                    f"flexsfc reads {API_GROUP_VERSION} ServiceFunctionChain, apps/v1 Deployment and "
                    f"{NAD_API_GROUP_VERSION} {KIND_NAD}; remove it if it does not belong here",
                    doc.source,
                )
            )
    return objects


def _note_invalid_chain(doc: Document, objects: _Objects) -> None:
    """Remember which NFs an invalid chain names, read as leniently as possible."""
    namespace = mapping_field(doc.obj, "metadata").get("namespace") or DEFAULT_NAMESPACE
    namespace = namespace if isinstance(namespace, str) else DEFAULT_NAMESPACE
    entries = mapping_field(doc.obj, "spec").get("networkFunctions")
    if not isinstance(entries, list):
        objects.invalid_chain_namespaces.add(namespace)  # which NFs it meant is unknowable
        return
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            objects.invalid_chain_nfs.add((namespace, entry["name"]))


def _namespaced_name(doc: Document) -> str:
    metadata = mapping_field(doc.obj, "metadata")
    return f"{metadata.get('namespace') or DEFAULT_NAMESPACE}/{metadata.get('name')}"


def _nf_label(doc: Document) -> tuple[str, str]:
    template = (doc.obj.get("spec") or {}).get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    metadata = mapping_field(doc.obj, "metadata")
    return metadata.get("namespace") or DEFAULT_NAMESPACE, str(labels.get(LABEL_NF))


def _check_unique(objects: _Objects, issues: list[Issue]) -> None:
    groups = (
        ("ServiceFunctionChain", [(c.namespace, c.name, s) for c, s in objects.chains]),
        ("Deployment", [(d.namespace, d.name, s) for d, s in objects.deployments]),
        (KIND_NAD, [(n.namespace, n.name, s) for n, s in objects.networks]),
    )
    for kind, keys in groups:
        counts = Counter((namespace, name) for namespace, name, _ in keys)
        reported: set[tuple[str, str]] = set()
        for namespace, name, source in keys:
            if counts[(namespace, name)] > 1 and (namespace, name) not in reported:
                reported.add((namespace, name))
                sources = [s for ns, n, s in keys if (ns, n) == (namespace, name)]
                issues.append(
                    error(
                        f"{kind} {namespace}/{name}",
                        "metadata.name",
                        f"defined {len(sources)} times ({', '.join(sources)})",
                        "give each object a unique name in its namespace, or remove the copies",
                        source,
                    )
                )


def _report_undeployed(chain_plan: ChainPlan, source: str, objects: _Objects, issues: list[Issue]) -> None:
    """One warning per NF of the chain that no Deployment of the manifests runs, linked or not.

    A warning, not an error: on a cluster the Deployment may come later, and the chain itself is fine.
    """
    chain = chain_plan.chain
    report = IssueCollector(f"ServiceFunctionChain {chain.namespace}/{chain.name}", source, issues)
    deployed = {(d.namespace, d.nf) for d, _ in objects.deployments} | objects.invalid_nfs
    for index, nf in enumerate(chain.network_functions):
        if (chain.namespace, nf.name) not in deployed:
            report.warning(
                f"spec.networkFunctions[{index}]",
                f"NF {nf.name!r}: no Deployment in namespace {chain.namespace!r} has pod label "
                f"{LABEL_NF}={nf.name}",
                "create the NF's Deployment with that label on spec.template.metadata.labels",
            )


def _report_unresolved(chain_plan: ChainPlan, source: str, objects: _Objects, issues: list[Issue]) -> None:
    chain = chain_plan.chain
    report = IssueCollector(f"ServiceFunctionChain {chain.namespace}/{chain.name}", source, issues)
    index = {nf.name: i for i, nf in enumerate(chain.network_functions)}
    for side in chain_plan.unresolved:
        if side.network in objects.invalid_networks or (chain.namespace, side.nf) in objects.invalid_nfs:
            continue  # a follow-up of an error reported on that object
        if side.reason is UnresolvedReason.NO_DEPLOYMENT:
            continue  # reported once per NF by _report_undeployed
        report.error(f"spec.networkFunctions[{index[side.nf]}].links", side.message, side.fix)


def _check_addresses(chain_plan: ChainPlan, source: str, issues: list[Issue]) -> None:
    chain = chain_plan.chain
    report = IssueCollector(f"ServiceFunctionChain {chain.namespace}/{chain.name}", source, issues)
    owner: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, tuple[str, str]] = {}
    for xc in chain_plan.cross_connections:
        for side in (xc.side_a, xc.side_b):
            for address in side.addresses:
                previous = owner.setdefault(address.ip, (side.nf, side.interface))
                if previous != (side.nf, side.interface):
                    report.error(
                        "spec.networkFunctions",
                        f"address {address.ip} is on {previous[0]}:{previous[1]} "
                        f"and {side.nf}:{side.interface}",
                        "give every NF interface its own address in its NetworkAttachmentDefinition",
                    )
        a, b = xc.side_a, xc.side_b
        if a.mode is Mode.L3 and b.mode is Mode.L3 and not _share_subnet(a.addresses, b.addresses):
            report.warning(
                "spec.networkFunctions",
                f"cross-connection {xc.name}: {a.nf}:{a.interface} and {b.nf}:{b.interface} are both L3 "
                "but share no subnet, so they cannot reach each other directly",
                "put the two interfaces of a link in one subnet",
            )


def _share_subnet(left: tuple[IPInterface, ...], right: tuple[IPInterface, ...]) -> bool:
    return any(
        x.version == y.version and (x.ip in y.network or y.ip in x.network) for x in left for y in right
    )


def _check_unused(objects: _Objects, chain_plans: list[ChainPlan], issues: list[Issue]) -> None:
    used_nfs = {(cp.chain.namespace, nf.name) for cp in chain_plans for nf in cp.chain.network_functions}
    linked = {
        (cp.chain.namespace, end.nf, end.interface)
        for cp in chain_plans
        for link in cp.links
        for end in (link.side_a, link.side_b)
    }
    flexsfc_networks = {
        (n.namespace, n.name) for n, _ in objects.networks if isinstance(n, NetworkAttachment)
    }
    for deployment, source in objects.deployments:
        report = IssueCollector(f"Deployment {deployment.namespace}/{deployment.name}", source, issues)
        key = (deployment.namespace, deployment.nf)
        if key in objects.invalid_chain_nfs or deployment.namespace in objects.invalid_chain_namespaces:
            continue  # its chain is invalid: the chain's errors say what to fix, not one warning per NF
        if key not in used_nfs:
            report.warning(
                f"spec.template.metadata.labels.{LABEL_NF}",
                f"NF {deployment.nf!r} is in no ServiceFunctionChain of namespace {deployment.namespace!r}",
                "add it to a chain's spec.networkFunctions, or remove the label",
            )
            continue
        for selection in deployment.networks:
            key = (selection.namespace or deployment.namespace, selection.network)
            if (
                key in flexsfc_networks
                and (deployment.namespace, deployment.nf, selection.interface) not in linked
            ):
                report.warning(
                    "spec.template.metadata.annotations",
                    f"interface {selection.interface!r} uses the flexsfc plugin but no chain link uses it",
                    f"link interface {selection.interface!r} of NF {deployment.nf!r}, or detach it",
                )
