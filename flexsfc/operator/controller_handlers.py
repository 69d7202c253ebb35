"""Kopf wiring of the chain controller (cluster-wide; one active instance through Kopf peering).

Chains are handled on create, update and resume (operator start). NF Deployments,
NetworkAttachmentDefinitions and deleted CrossConnections re-sync the chains of their namespace, so
objects may arrive in any order. Readiness follows the agents: a CrossConnection whose per-node status
changes (not its heartbeat-free `lastSyncTime`), an NF pod that lands on, leaves or becomes ready on a
node, and a deleted Node re-sync the chains concerned. Only `on.event` handlers watch those foreign
objects: they write nothing to them (no finalizers, no annotations). The agents' heartbeat Leases are
not watched (that would need cluster-wide rights on leases): a thread re-judges, every
`agent_check_seconds`, the chains this controller synced with replicas on some node, so an agent that
stops (or starts) renewing shows in Ready within about that. Not a Kopf timer: timers put a finalizer
on the chain, and chains must never block in deletion while the controller is down. A peer paused by
Kopf's peering has synced nothing, so its thread does nothing.
"""

import datetime
import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from flexsfc.model.constants import (
    API_GROUP,
    API_VERSION,
    LABEL_CHAIN,
    LABEL_NF,
    PLURAL_CHAIN,
    PLURAL_CROSS_CONNECTION,
)
from flexsfc.operator.controller import NAD_GROUP, NAD_PLURAL, NAD_VERSION, ChainController, nf_fingerprint
from flexsfc.operator.heartbeat import DEFAULT_HEARTBEAT_SECONDS
from flexsfc.operator.kube import KubeTarget
from flexsfc.operator.pods import pod_phase
from flexsfc.operator.readiness import node_entries, pod_node

ANNOTATION_PREFIX = "controller.flexsfc.io"

log = logging.getLogger(__name__)


def configure(settings: kopf.OperatorSettings, *, peering: str | None, priority: int) -> None:
    # Kopf's bookkeeping goes to annotations on the chain: status stays ours (and schema-pruned).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own Events say what happened; no per-handler noise
    settings.watching.label_selectors["apps", "deployments"] = LABEL_NF
    settings.watching.label_selectors[API_GROUP, PLURAL_CROSS_CONNECTION] = LABEL_CHAIN
    settings.watching.label_selectors["v1", "pods"] = LABEL_NF  # NF pods only, filtered by the server
    if peering:
        settings.peering.name = peering
        settings.peering.clusterwide = True
        settings.peering.mandatory = True
        settings.peering.priority = priority


def build_registry(
    target: KubeTarget, *, agent_check_seconds: float = DEFAULT_HEARTBEAT_SECONDS
) -> tuple[kopf.OperatorRegistry, ChainController]:
    registry = kopf.OperatorRegistry()
    target.register_login(registry)
    controller = ChainController(target.api_client())
    fingerprints: dict[tuple[str, str, str], str] = {}

    def emitter(body: Any) -> Any:
        def emit(kind: str, reason: str, message: str) -> None:
            kopf.event(body, type=kind, reason=reason, message=message)

        return emit

    @kopf.on.resume(API_GROUP, API_VERSION, PLURAL_CHAIN, registry=registry)
    @kopf.on.create(API_GROUP, API_VERSION, PLURAL_CHAIN, registry=registry)
    @kopf.on.update(API_GROUP, API_VERSION, PLURAL_CHAIN, registry=registry)
    def chain_changed(name: str, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
        assert namespace is not None  # a namespaced resource
        result = controller.sync_latest(namespace, name, emitter)
        if result is None:
            return  # deleted meanwhile
        logger.info(
            "chain synced: ready=%s created=%s updated=%s deleted=%s",
            result.ready,
            result.created,
            result.updated,
            result.deleted,
        )

    stop = threading.Event()

    def api_emitter(body: Any) -> Any:
        # kopf.event needs Kopf's context (its event queue), which this thread has not.
        def emit(kind: str, reason: str, message: str) -> None:
            post_event(controller.core, body, kind, reason, message)

        return emit

    def recheck() -> None:
        while not stop.wait(agent_check_seconds):
            for namespace, name in controller.hosted_chains():
                if stop.is_set():
                    return
                try:
                    controller.sync_latest(namespace, name, api_emitter)
                except Exception:  # the next round retries; events keep syncing meanwhile
                    if not stop.is_set():
                        log.exception("re-check of chain %s/%s failed", namespace, name)

    @kopf.on.startup(registry=registry)
    def start_recheck(**_: Any) -> None:
        stop.clear()
        threading.Thread(target=recheck, name="flexsfc-agent-recheck", daemon=True).start()

    @kopf.on.cleanup(registry=registry)
    def stop_recheck(**_: Any) -> None:
        stop.set()

    def resync_namespace(namespace: str | None, logger: kopf.Logger) -> None:
        assert namespace is not None  # every object watched here is namespaced
        for chain in controller.list_chains(namespace):
            name = chain["metadata"]["name"]
            result = controller.sync_latest(namespace, name, emitter)
            logger.debug("re-synced chain %s/%s: ready=%s", namespace, name, result and result.ready)

    def fingerprint_changed(kind: str, event: kopf.RawEvent, fingerprint: str) -> bool:
        meta = event["object"]["metadata"]
        key = (kind, meta.get("namespace") or "default", meta["name"])
        if event.get("type") == "DELETED":
            fingerprints.pop(key, None)
            return True
        if fingerprints.get(key) == fingerprint:
            return False
        fingerprints[key] = fingerprint
        return True

    @kopf.on.event("apps", "v1", "deployments", labels={LABEL_NF: kopf.PRESENT}, registry=registry)
    def deployment_event(event: kopf.RawEvent, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
        if fingerprint_changed("Deployment", event, nf_fingerprint(event["object"])):
            resync_namespace(namespace, logger)

    @kopf.on.event(NAD_GROUP, NAD_VERSION, NAD_PLURAL, registry=registry)
    def nad_event(event: kopf.RawEvent, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
        spec = event["object"].get("spec") or {}
        if fingerprint_changed("NAD", event, str(spec.get("config"))):
            resync_namespace(namespace, logger)

    @kopf.on.event(
        API_GROUP, API_VERSION, PLURAL_CROSS_CONNECTION, labels={LABEL_CHAIN: kopf.PRESENT}, registry=registry
    )
    def cross_connection_event(
        event: kopf.RawEvent, namespace: str | None, logger: kopf.Logger, **_: Any
    ) -> None:
        # Someone deleted or edited one of our objects: put it back as planned; or an agent's report
        # changed: judge the chain's readiness again.
        assert namespace is not None  # a namespaced resource
        meta = event["object"]["metadata"]
        if not fingerprint_changed("CrossConnection", event, xc_fingerprint(event["object"])):
            return
        if event.get("type") not in ("DELETED", "MODIFIED"):
            return
        controller.sync_latest(namespace, meta["labels"][LABEL_CHAIN], emitter)

    @kopf.on.event("v1", "pods", labels={LABEL_NF: kopf.PRESENT}, registry=registry)
    def pod_event(event: kopf.RawEvent, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
        # Which node must report the chain, and how many replicas it must have programmed.
        # The initial listing (type None) only records: every chain is synced on resume anyway.
        changed = fingerprint_changed("Pod", event, pod_fingerprint(event["object"]))
        if changed and event.get("type") is not None:
            resync_namespace(namespace, logger)

    @kopf.on.event("v1", "nodes", registry=registry)
    def node_event(event: kopf.RawEvent, logger: kopf.Logger, **_: Any) -> None:
        if event.get("type") != "DELETED":
            return
        node = event["object"]["metadata"]["name"]
        for namespace, chain in controller.chains_reported_by(node):
            controller.sync_latest(namespace, chain, emitter)
            logger.info("node %s deleted: re-synced chain %s/%s", node, namespace, chain)

    return registry, controller


def post_event(core: Any, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    """A core/v1 Event on the object, as kopf.event would post it (from outside Kopf's handlers)."""
    meta = body.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    now = datetime.datetime.now(datetime.UTC).isoformat()
    event = {
        "metadata": {"generateName": f"{meta.get('name', 'chain')}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "name": meta.get("name"),
            "namespace": namespace,
            "uid": meta.get("uid"),
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "flexsfc-controller"},
        "reportingComponent": "flexsfc-controller",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        core.create_namespaced_event(namespace, event)
    except ApiException as exc:
        log.warning("cannot post an Event on %s/%s: %s", namespace, meta.get("name"), exc.reason)


def xc_fingerprint(xc: Mapping[str, Any]) -> str:
    """A CrossConnection's generation and the agents' reports, without their sync times."""
    entries = node_entries(xc)
    reports = {
        node: {k: v for k, v in entry.items() if k != "lastSyncTime"} for node, entry in entries.items()
    }
    generation = (xc.get("metadata") or {}).get("generation")
    return json.dumps({"generation": generation, "nodes": reports}, sort_keys=True)


def pod_fingerprint(pod: Mapping[str, Any]) -> str:
    """What of an NF pod readiness depends on: its NF, its node, its lifecycle phase."""
    nf = ((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_NF)
    return json.dumps([nf, pod_node(pod), pod_phase(dict(pod)).value])
