"""The manifests a local runtime runs: loaded (optionally moved to one namespace) and kept per namespace.

`flexsfc up --namespace NS` runs manifests in NS whatever their metadata says (as kustomize's
`namespace:` does): every object moves to NS, and the Multus annotation's `<namespace>/<network>`
references to a namespace of these manifests move with them. So the same example chain can run in
two namespaces side by side.

An apply owns the namespaces its objects are in: it replaces what the runtime runs there and leaves
other namespaces alone (as `kubectl apply --prune -n NS` would). The runtime keeps the documents of
each namespace in `<state dir>/manifests/<namespace>.json`; a supervisor that adopts the runtime
after the previous one died rebuilds the same plan from them, whatever happened to the files since.
"""

import copy
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flexsfc.local.config import RuntimeConfig
from flexsfc.model.chain import DEFAULT_NAMESPACE
from flexsfc.model.constants import ANNOTATION_NETWORKS, KIND_NAD
from flexsfc.model.errors import Issue, ManifestError, error
from flexsfc.model.loader import build_plan
from flexsfc.model.manifests import Document, load_documents
from flexsfc.model.names import dns_label_problem
from flexsfc.model.types import Plan

# The kinds a plan is built from: the runtime keeps only these (namespaces and unknown kinds were
# warned about when applied and play no part in what runs).
PLAN_KINDS = frozenset({"ServiceFunctionChain", "Deployment", KIND_NAD})


def namespace_of(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
    return namespace if isinstance(namespace, str) and namespace else DEFAULT_NAMESPACE


def load_in_namespace(path: str | Path, namespace: str | None) -> tuple[list[Document], list[Issue]]:
    """The documents at `path`, every namespaced object moved to `namespace` when given."""
    documents, issues = load_documents(path)
    if not namespace:
        return documents, issues
    problem = dns_label_problem(namespace)
    if problem:
        issues.append(error("--namespace", "", f"{namespace!r} {problem}", "give a namespace name"))
        return documents, issues
    originals = {namespace_of(d.obj) for d in documents if d.kind in PLAN_KINDS}
    return [Document(_moved(d.obj, namespace, originals), d.source) for d in documents], issues


def _moved(obj: dict[str, Any], namespace: str, originals: set[str]) -> dict[str, Any]:
    metadata = obj.get("metadata")
    if obj.get("kind") == "Namespace" or not isinstance(metadata or {}, dict):
        return obj  # cluster-scoped, or malformed: the loader reports it as it is
    moved = copy.deepcopy(obj)
    moved["metadata"] = {**(metadata or {}), "namespace": namespace}
    if moved.get("kind") == "Deployment":
        spec = moved.get("spec")
        template = spec.get("template") if isinstance(spec, dict) else None
        metadata = template.get("metadata") if isinstance(template, dict) else None
        annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
        if isinstance(annotations, dict) and isinstance(annotations.get(ANNOTATION_NETWORKS), str):
            annotations[ANNOTATION_NETWORKS] = _moved_networks(
                annotations[ANNOTATION_NETWORKS], namespace, originals
            )
    return moved


def _moved_networks(value: str, namespace: str, originals: set[str]) -> str:
    """The networks annotation with references to the manifests' own namespaces moved along."""
    if value.strip().startswith("["):
        try:
            entries = json.loads(value)
        except ValueError:
            return value  # the loader reports it
        if not isinstance(entries, list):
            return value
        for entry in entries:
            if isinstance(entry, dict) and entry.get("namespace") in originals:
                entry["namespace"] = namespace
        return json.dumps(entries)
    parts = []
    for entry in value.split(","):
        ref, at, ifname = entry.strip().partition("@")
        ns, slash, name = ref.rpartition("/")
        if slash and ns in originals:
            ref = f"{namespace}/{name}"
        parts.append(f"{ref}{at}{ifname}")
    return ", ".join(parts)


def plan_of(documents: list[Document], issues: Iterable[Issue] = ()) -> Plan:
    """The validated plan of `documents` (as `flexsfc validate` builds it); raises ManifestError."""
    plan = build_plan(documents)
    plan.issues[:0] = list(issues)
    if any(issue.is_error for issue in plan.issues):
        raise ManifestError(plan.issues)
    plan.warnings = [str(issue) for issue in plan.issues]
    return plan


def by_namespace(documents: Iterable[Document]) -> dict[str, list[dict[str, Any]]]:
    """The objects a plan is built from, grouped by namespace (each with its namespace written out)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for doc in documents:
        if doc.kind not in PLAN_KINDS:
            continue
        namespace = namespace_of(doc.obj)
        obj = copy.deepcopy(doc.obj)
        obj.setdefault("metadata", {})["namespace"] = namespace
        groups.setdefault(namespace, []).append(obj)
    return groups


def save(config: RuntimeConfig, namespace: str, source: str, objects: list[dict[str, Any]]) -> None:
    """Keep what runs in `namespace` (atomically: a crash leaves the old or the new file)."""
    config.manifests_dir.mkdir(parents=True, exist_ok=True)
    path = config.manifests_dir / f"{namespace}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"source": source, "documents": objects}, indent=1, default=str))
    os.replace(tmp, path)


def load_saved(config: RuntimeConfig) -> tuple[list[Document], dict[str, str]]:
    """Every saved namespace's documents, and namespace -> the path they were applied from."""
    documents: list[Document] = []
    sources: dict[str, str] = {}
    if not config.manifests_dir.is_dir():
        return documents, sources
    for path in sorted(config.manifests_dir.glob("*.json")):
        raw = json.loads(path.read_text())
        sources[path.stem] = str(raw.get("source", ""))
        documents += [Document(obj, f"{path} (applied from {raw.get('source')})") for obj in raw["documents"]]
    return documents, sources
