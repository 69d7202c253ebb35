"""The chain controller: ServiceFunctionChain -> one CrossConnection per link, with status and Events.

Level-triggered: every sync reads the chain, the NF Deployments and the NetworkAttachmentDefinitions
of its namespace, plans with the model (the same code and messages as `flexsfc validate`) and makes
the chain's CrossConnections exactly the planned ones. An invalid chain changes nothing; it gets
Degraded=True with the validation messages and a Warning Event. Deleting a chain deletes its
CrossConnections through their ownerReferences (the Kubernetes garbage collector), so chains carry no
finalizer and never block in deletion when the controller is down.
"""

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from flexsfc.model import parse_chain, parse_deployment, parse_nad, plan_chain
from flexsfc.model.constants import (
    ANNOTATION_NETWORKS,
    API_GROUP,
    API_VERSION,
    LABEL_CHAIN,
    LABEL_NF,
    NAD_API_GROUP_VERSION,
    PLURAL_CHAIN,
    PLURAL_CROSS_CONNECTION,
)
from flexsfc.model.errors import Issue
from flexsfc.model.types import ChainSettings, NetworkAttachment, NfDeployment
from flexsfc.model.workloads import ForeignNetwork
from flexsfc.operator.conditions import Condition, merge_conditions
from flexsfc.operator.convert import owner_reference, xc_object

log = logging.getLogger(__name__)

NAD_GROUP, NAD_VERSION = NAD_API_GROUP_VERSION.split("/")
NAD_PLURAL = "network-attachment-definitions"

# (event type "Normal"/"Warning", reason, message) -> posted as a Kubernetes Event on the chain.
EventSink = Callable[[str, str, str], None]

MAX_CONDITION_MESSAGE = 32768  # metav1.Condition's limit
REASON_INVALID = "InvalidSpec"
REASON_APPLIED = "CrossConnectionsApplied"
REASON_PARTIAL = "Unresolved"


@dataclass
class SyncResult:
    valid: bool
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    desired: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # why the chain is not (fully) Ready

    @property
    def ready(self) -> bool:
        return self.valid and not self.problems


def _issue_lines(issues: list[Issue]) -> list[str]:
    return [str(issue) for issue in issues if issue.is_error]


def _essential(obj: dict[str, Any]) -> dict[str, Any]:
    """What the controller owns in a CrossConnection: compared to decide whether to patch."""
    meta = obj.get("metadata", {})
    return {
        "labels": {LABEL_CHAIN: (meta.get("labels") or {}).get(LABEL_CHAIN)},
        "owners": [(o.get("uid"), o.get("controller")) for o in meta.get("ownerReferences") or []],
        "spec": obj.get("spec"),
    }


class ChainController:
    """Sync logic, free of Kopf so it can be reasoned about (and called) on its own."""

    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.apps = kubernetes.client.AppsV1Api(api_client)
        self._locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)

    def sync_latest(
        self, namespace: str, name: str, emit_for: Callable[[dict[str, Any]], EventSink]
    ) -> SyncResult | None:
        """Sync one chain from a fresh read, one sync per chain at a time.

        Handlers for the chain and for its Deployments, NADs and CrossConnections run concurrently;
        without this, a sync that read an older chain could finish last and overwrite newer status.
        """
        with self._locks[(namespace, name)]:
            body = self.get_chain(namespace, name)
            if body is None:
                return None
            return self.sync(body, emit_for(body))

    # -- reading -----------------------------------------------------------------------------

    def get_chain(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, PLURAL_CHAIN, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_chains(self, namespace: str) -> list[dict[str, Any]]:
        result = self.custom.list_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL_CHAIN)
        return list(result.get("items", []))

    def _deployments(self, namespace: str) -> tuple[list[NfDeployment], list[Issue]]:
        result = self.apps.list_namespaced_deployment(namespace, label_selector=None)
        client = self.apps.api_client
        deployments, issues = [], []
        for item in result.items:
            raw = client.sanitize_for_serialization(item)
            raw.setdefault("apiVersion", "apps/v1")
            raw.setdefault("kind", "Deployment")
            deployment, found = parse_deployment(raw)
            issues.extend(found)
            if deployment is not None:
                deployments.append(deployment)
        return deployments, issues

    def _networks(self, namespaces: set[str]) -> tuple[list[NetworkAttachment | ForeignNetwork], list[Issue]]:
        networks: list[NetworkAttachment | ForeignNetwork] = []
        issues: list[Issue] = []
        for namespace in sorted(namespaces):
            try:
                result = self.custom.list_namespaced_custom_object(
                    NAD_GROUP, NAD_VERSION, namespace, NAD_PLURAL
                )
            except ApiException as exc:
                if exc.status == 404:  # Multus' CRD is not installed: no attachments at all
                    continue
                raise
            for item in result.get("items", []):
                network, found = parse_nad(item)
                issues.extend(found)
                if network is not None:
                    networks.append(network)
        return networks, issues

    def _existing_xcs(self, namespace: str, chain: str) -> dict[str, dict[str, Any]]:
        result = self.custom.list_namespaced_custom_object(
            API_GROUP,
            API_VERSION,
            namespace,
            PLURAL_CROSS_CONNECTION,
            label_selector=f"{LABEL_CHAIN}={chain}",
        )
        return {
            item["metadata"]["name"]: item
            for item in result.get("items", [])
            # the API server filters; an emulator or a stale cache might not
            if (item["metadata"].get("labels") or {}).get(LABEL_CHAIN) == chain
        }

    # -- syncing -----------------------------------------------------------------------------

    def sync(self, body: dict[str, Any], emit: EventSink) -> SyncResult:
        """Make the chain's CrossConnections match its plan and write its status."""
        meta = body["metadata"]
        namespace, name = meta.get("namespace") or "default", meta["name"]
        if meta.get("deletionTimestamp"):
            return SyncResult(valid=True)  # the garbage collector removes the CrossConnections
        chain, issues = parse_chain(body)
        if chain is None:
            result = SyncResult(valid=False, problems=_issue_lines(issues))
            self._write_status(body, result, [])
            emit("Warning", REASON_INVALID, "; ".join(result.problems)[:1000])
            return result

        deployments, deployment_issues = self._deployments(namespace)
        nad_namespaces = {namespace} | {
            s.namespace for d in deployments if d.namespace == namespace for s in d.networks if s.namespace
        }
        networks, network_issues = self._networks(nad_namespaces)
        plan = plan_chain(chain, deployments, networks)

        result = SyncResult(valid=True)
        result.problems = [f"{u.cross_connection}: {u.message}. Fix: {u.fix}" for u in plan.unresolved]
        if plan.unresolved:
            # Broken NF objects explain unresolved links better than "no Deployment" alone.
            result.problems += _issue_lines(deployment_issues + network_issues)

        desired = {
            xc.name: xc_object(xc, chain.settings or ChainSettings(), body) for xc in plan.cross_connections
        }
        result.desired = sorted(desired)
        self._apply(namespace, name, meta["uid"], desired, result)
        self._write_status(body, result, [n for n in plan.links if n.name in desired])
        for xc_name in result.created:
            emit("Normal", "CrossConnectionCreated", f"created CrossConnection {xc_name}")
        for xc_name in result.updated:
            emit("Normal", "CrossConnectionUpdated", f"updated CrossConnection {xc_name}")
        for xc_name in result.deleted:
            emit("Normal", "CrossConnectionDeleted", f"deleted CrossConnection {xc_name}")
        previous = _condition(body, "Degraded")
        message = "; ".join(result.problems)[:1000]
        if result.problems and (previous is None or previous.get("message") != message):
            emit("Warning", REASON_PARTIAL, message)
        return result

    def _apply(
        self,
        namespace: str,
        chain: str,
        chain_uid: str,
        desired: dict[str, dict[str, Any]],
        result: SyncResult,
    ) -> None:
        existing = self._existing_xcs(namespace, chain)
        for xc_name, obj in desired.items():
            current = existing.get(xc_name)
            if current is None:
                try:
                    self.custom.create_namespaced_custom_object(
                        API_GROUP, API_VERSION, namespace, PLURAL_CROSS_CONNECTION, obj
                    )
                    result.created.append(xc_name)
                    continue
                except ApiException as exc:
                    if exc.status != 409:  # exists without our label: adopt it by patching below
                        raise
            elif _essential(current) == _essential(obj):
                continue
            patch = {
                "metadata": {k: obj["metadata"][k] for k in ("labels", "ownerReferences")},
                "spec": obj["spec"],
            }
            self.custom.patch_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, PLURAL_CROSS_CONNECTION, xc_name, patch
            )
            result.updated.append(xc_name)
        for xc_name, current in existing.items():
            owners = {o.get("uid") for o in current["metadata"].get("ownerReferences") or []}
            if xc_name in desired or (owners and chain_uid not in owners):
                continue  # another chain's of the same name owns it: not ours to delete
            try:
                self.custom.delete_namespaced_custom_object(
                    API_GROUP, API_VERSION, namespace, PLURAL_CROSS_CONNECTION, xc_name
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
            result.deleted.append(xc_name)

    def _write_status(self, body: dict[str, Any], result: SyncResult, links: list[Any]) -> None:
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
        else:
            wanted = [
                Condition("Ready", True, REASON_APPLIED, f"{len(result.desired)} CrossConnection(s) applied"),
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
        self.custom.patch_namespaced_custom_object_status(
            API_GROUP,
            API_VERSION,
            meta.get("namespace") or "default",
            PLURAL_CHAIN,
            meta["name"],
            {"status": status},
        )


def _bounded(message: str, limit: int = MAX_CONDITION_MESSAGE) -> str:
    return message if len(message) <= limit else message[: limit - 20] + " ... (truncated)"


def _condition(body: dict[str, Any], kind: str) -> dict[str, Any] | None:
    conditions = (body.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if isinstance(c, dict) and c.get("type") == kind), None)


def _same_status(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(
        json.dumps(current.get(k), sort_keys=True) == json.dumps(v, sort_keys=True) for k, v in wanted.items()
    )


def nf_fingerprint(deployment: dict[str, Any]) -> str:
    """What of a Deployment the plan depends on; scaling and status changes do not alter it."""
    template = (deployment.get("spec") or {}).get("template") or {}
    meta = template.get("metadata") or {}
    return json.dumps(
        {
            "nf": (meta.get("labels") or {}).get(LABEL_NF),
            "networks": (meta.get("annotations") or {}).get(ANNOTATION_NETWORKS),
        },
        sort_keys=True,
    )


__all__ = ["ChainController", "EventSink", "SyncResult", "nf_fingerprint", "owner_reference"]
