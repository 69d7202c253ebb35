"""The chain controller: ServiceFunctionChain -> one CrossConnection per link, with status and Events.

Level-triggered: every sync reads the chain, the NF Deployments and the NetworkAttachmentDefinitions
of its namespace, plans with the model (the same code and messages as `flexsfc validate`) and makes
the chain's CrossConnections exactly the planned ones. An invalid chain changes nothing; it gets
Degraded=True with the validation messages and a Warning Event. Deleting a chain deletes its
CrossConnections through their ownerReferences (the Kubernetes garbage collector), so chains carry no
finalizer and never block in deletion when the controller is down.

Ready comes from the node agents (flexsfc/operator/readiness.py): the chain is Ready when its links are
resolved and applied and every node hosting one of its NF replicas reports each of its links
programmed for the current generation. The controller prunes the per-node status entries of nodes that
host nothing of a link or no longer exist (a merge patch on /status, conditional on the
resourceVersion it judged, so an agent's concurrent report is never lost). The chain's own status
(conditions, reasons, messages) is written by flexsfc.operator.chain_status.
"""

import datetime
import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping
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
from flexsfc.operator.chain_status import (
    REASON_INVALID,
    REASON_NO_AGENT,
    REASON_NOT_PROGRAMMED,
    REASON_PARTIAL,
    SyncResult,
    current_condition,
    ready_message,
    write_status,
)
from flexsfc.operator.convert import owner_reference, xc_object
from flexsfc.operator.heartbeat import agent_namespace, heartbeat_from_lease, lease_name
from flexsfc.operator.readiness import judge_link, nodes_named, placement

log = logging.getLogger(__name__)

NAD_GROUP, NAD_VERSION = NAD_API_GROUP_VERSION.split("/")
NAD_PLURAL = "network-attachment-definitions"

# (event type "Normal"/"Warning", reason, message) -> posted as a Kubernetes Event on the chain.
EventSink = Callable[[str, str, str], None]


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
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.coordination = kubernetes.client.CoordinationV1Api(api_client)
        self.agent_namespace = agent_namespace()
        self._hosted: set[tuple[str, str]] = set()  # chains whose last sync found replicas on a node
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
                self._hosted.discard((namespace, name))
                return None
            result = self.sync(body, emit_for(body))
            if any(link.hosting for link in result.links):
                self._hosted.add((namespace, name))
            else:
                self._hosted.discard((namespace, name))
            return result

    def hosted_chains(self) -> list[tuple[str, str]]:
        """Chains whose readiness depends on agents' heartbeats (replicas on some node)."""
        return sorted(self._hosted)

    # -- reading -----------------------------------------------------------------------------

    def get_chain(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            chain: dict[str, Any] = self.custom.get_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, PLURAL_CHAIN, name
            )
            return chain
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_chains(self, namespace: str) -> list[dict[str, Any]]:
        result = self.custom.list_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL_CHAIN)
        return list(result.get("items", []))

    def chains_reported_by(self, node: str) -> list[tuple[str, str]]:
        """(namespace, chain) of every chain with a CrossConnection that carries the node's report."""
        result = self.custom.list_cluster_custom_object(
            API_GROUP, API_VERSION, PLURAL_CROSS_CONNECTION, label_selector=LABEL_CHAIN
        )
        found = set()
        for item in result.get("items", []):
            meta = item.get("metadata") or {}
            chain = (meta.get("labels") or {}).get(LABEL_CHAIN)
            if chain and node in ((item.get("status") or {}).get("nodes") or {}):
                found.add((meta.get("namespace") or "default", chain))
        return sorted(found)

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
            write_status(self.custom, body, result, [])
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
        current = self._apply(namespace, name, meta["uid"], desired, result)
        self._judge(namespace, current, result)
        previous_ready = current_condition(body, "Ready")
        try:
            write_status(self.custom, body, result, [n for n in plan.links if n.name in desired])
        except ApiException as exc:
            if exc.status != 404:
                raise
            # The chain was deleted during this sync: what it created may have missed the garbage
            # collector's cascade (a real one would still find the owner gone, later).
            self._delete_created(namespace, name, result)
            return result
        for xc_name in result.created:
            emit("Normal", "CrossConnectionCreated", f"created CrossConnection {xc_name}")
        for xc_name in result.updated:
            emit("Normal", "CrossConnectionUpdated", f"updated CrossConnection {xc_name}")
        for xc_name in result.deleted:
            emit("Normal", "CrossConnectionDeleted", f"deleted CrossConnection {xc_name}")
        previous = current_condition(body, "Degraded")
        message = "; ".join(result.problems)[:1000]
        if result.problems and (previous is None or previous.get("message") != message):
            emit("Warning", REASON_PARTIAL, message)
        was_ready = previous_ready is not None and previous_ready.get("status") == "True"
        told = str((previous_ready or {}).get("message", ""))
        for node in result.agentless:
            if f"node {node}: " not in told or "no live agent" not in told:
                emit(
                    "Warning",
                    REASON_NO_AGENT,
                    f"node {node} hosts replicas of the chain but has no live flexsfc agent (Lease "
                    f"{self.agent_namespace}/{lease_name(node)} missing or expired): its data plane is "
                    "not updated; is the agent DaemonSet's pod running there?",
                )
        if result.ready and not was_ready:
            emit("Normal", "Ready", ready_message(result)[:1000])
        elif not result.problems and result.node_problems and (was_ready or previous_ready is None):
            emit("Warning", REASON_NOT_PROGRAMMED, "; ".join(result.node_problems)[:1000])
        return result

    def _delete_created(self, namespace: str, chain: str, result: SyncResult) -> None:
        for xc_name in result.created:
            self._delete_xc(namespace, xc_name)
        log.info(
            "chain %s/%s deleted while syncing; removed what it created: %s", namespace, chain, result.created
        )

    # -- readiness ---------------------------------------------------------------------------

    def _judge(self, namespace: str, current: dict[str, dict[str, Any]], result: SyncResult) -> None:
        """Judge each applied link against its NFs' placement; prune entries of nodes that host
        nothing of it or are gone. The links are read (by `_apply`) before the pods: an entry an agent
        wrote after that read changes the resourceVersion and the prune of it is refused."""
        pods = self.core.list_namespaced_pod(namespace, label_selector=LABEL_NF)
        client = self.core.api_client
        where = placement(client.sanitize_for_serialization(item) for item in pods.items)
        exists = {node: self._node_exists(node) for node in nodes_named(current.values(), where)}
        alive = {node: self._agent_alive(node) for node, found in exists.items() if found}
        for xc_name in sorted(current):
            link = judge_link(current[xc_name], where, exists, alive)
            result.links.append(link)
            if link.prune and self._prune(namespace, current[xc_name], link.prune):
                result.pruned += [f"{xc_name}: {node}" for node in link.prune]

    def _node_exists(self, node: str) -> bool:
        try:
            self.core.read_node(node)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def _agent_alive(self, node: str) -> bool | None:
        """Whether the node's agent renews its Lease; None when that cannot be told (not allowed)."""
        try:
            lease = self.coordination.read_namespaced_lease(lease_name(node), self.agent_namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            if exc.status in (401, 403):
                log.debug("cannot read the agent Lease of %s: %s", node, exc.reason)
                return None
            raise
        heartbeat = heartbeat_from_lease(self.coordination.api_client.sanitize_for_serialization(lease))
        return heartbeat is not None and heartbeat.alive(datetime.datetime.now(datetime.UTC))

    def _prune(self, namespace: str, xc: dict[str, Any], nodes: list[str]) -> bool:
        meta = xc["metadata"]
        patch: dict[str, Any] = {"status": {"nodes": dict.fromkeys(nodes)}}  # null removes the key
        if meta.get("resourceVersion"):
            patch["metadata"] = {"resourceVersion": meta["resourceVersion"]}  # precondition
        try:
            self.custom.patch_namespaced_custom_object_status(
                API_GROUP, API_VERSION, namespace, PLURAL_CROSS_CONNECTION, meta["name"], patch
            )
        except ApiException as exc:
            if exc.status in (404, 409):  # gone, or an agent wrote meanwhile: the next sync decides
                log.debug("prune of %s/%s skipped: %s", namespace, meta["name"], exc.reason)
                return False
            raise
        log.info("cross-connection %s/%s: pruned the status of nodes %s", namespace, meta["name"], nodes)
        return True

    def _apply(
        self,
        namespace: str,
        chain: str,
        chain_uid: str,
        desired: dict[str, dict[str, Any]],
        result: SyncResult,
    ) -> dict[str, dict[str, Any]]:
        """Create, patch and delete until the chain's CrossConnections are `desired`; returns them
        as the API server last returned them (status included)."""
        existing = self._existing_xcs(namespace, chain)
        applied: dict[str, dict[str, Any]] = {}
        for xc_name, obj in desired.items():
            current = existing.get(xc_name)
            if current is None:
                try:
                    applied[xc_name] = self.custom.create_namespaced_custom_object(
                        API_GROUP, API_VERSION, namespace, PLURAL_CROSS_CONNECTION, obj
                    )
                    result.created.append(xc_name)
                    continue
                except ApiException as exc:
                    if exc.status != 409:  # exists without our label: adopt it by patching below
                        raise
            elif _essential(current) == _essential(obj):
                applied[xc_name] = current
                continue
            patch = {
                "metadata": {k: obj["metadata"][k] for k in ("labels", "ownerReferences")},
                "spec": obj["spec"],
            }
            applied[xc_name] = self.custom.patch_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, PLURAL_CROSS_CONNECTION, xc_name, patch
            )
            result.updated.append(xc_name)
        for xc_name, current in existing.items():
            owners = {o.get("uid") for o in current["metadata"].get("ownerReferences") or []}
            if xc_name in desired or (owners and chain_uid not in owners):
                continue  # another chain's of the same name owns it: not ours to delete
            self._delete_xc(namespace, xc_name)
            result.deleted.append(xc_name)
        return applied

    def _delete_xc(self, namespace: str, xc_name: str) -> None:
        """Delete the CrossConnection; one already gone is fine."""
        try:
            self.custom.delete_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, PLURAL_CROSS_CONNECTION, xc_name
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


def nf_fingerprint(deployment: Mapping[str, Any]) -> str:
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
