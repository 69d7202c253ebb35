"""Kopf wiring of the chain controller (cluster-wide; one active instance through Kopf peering).

Chains are handled on create, update and resume (operator start). NF Deployments,
NetworkAttachmentDefinitions and deleted CrossConnections re-sync the chains of their namespace, so
objects may arrive in any order. Only `on.event` handlers watch those foreign objects: they write
nothing to them (no finalizers, no annotations).
"""

import logging
from typing import Any

import kopf

from flexsfc.model.constants import (
    API_GROUP,
    API_VERSION,
    LABEL_CHAIN,
    LABEL_NF,
    PLURAL_CHAIN,
    PLURAL_CROSS_CONNECTION,
)
from flexsfc.operator.controller import NAD_GROUP, NAD_PLURAL, NAD_VERSION, ChainController, nf_fingerprint
from flexsfc.operator.kube import KubeTarget

ANNOTATION_PREFIX = "controller.flexsfc.io"


def configure(settings: kopf.OperatorSettings, *, peering: str | None, priority: int) -> None:
    # Kopf's bookkeeping goes to annotations on the chain: status stays ours (and schema-pruned).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own Events say what happened; no per-handler noise
    settings.watching.label_selectors["apps", "deployments"] = LABEL_NF
    settings.watching.label_selectors[API_GROUP, PLURAL_CROSS_CONNECTION] = LABEL_CHAIN
    if peering:
        settings.peering.name = peering
        settings.peering.clusterwide = True
        settings.peering.mandatory = True
        settings.peering.priority = priority


def build_registry(target: KubeTarget) -> tuple[kopf.OperatorRegistry, ChainController]:
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
    def chain_changed(name: str, namespace: str, logger: logging.Logger, **_: Any) -> None:
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

    def resync_namespace(namespace: str, logger: logging.Logger) -> None:
        for chain in controller.list_chains(namespace):
            name = chain["metadata"]["name"]
            result = controller.sync_latest(namespace, name, emitter)
            logger.debug("re-synced chain %s/%s: ready=%s", namespace, name, result and result.ready)

    def fingerprint_changed(kind: str, event: dict[str, Any], fingerprint: str) -> bool:
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
    def deployment_event(event: dict[str, Any], namespace: str, logger: logging.Logger, **_: Any) -> None:
        if fingerprint_changed("Deployment", event, nf_fingerprint(event["object"])):
            resync_namespace(namespace, logger)

    @kopf.on.event(NAD_GROUP, NAD_VERSION, NAD_PLURAL, registry=registry)
    def nad_event(event: dict[str, Any], namespace: str, logger: logging.Logger, **_: Any) -> None:
        spec = event["object"].get("spec") or {}
        if fingerprint_changed("NAD", event, str(spec.get("config"))):
            resync_namespace(namespace, logger)

    @kopf.on.event(
        API_GROUP, API_VERSION, PLURAL_CROSS_CONNECTION, labels={LABEL_CHAIN: kopf.PRESENT}, registry=registry
    )
    def cross_connection_event(
        event: dict[str, Any], namespace: str, logger: logging.Logger, **_: Any
    ) -> None:
        # Someone deleted or edited one of our objects: put it back as planned. Status writes by the
        # agents do not change metadata.generation, so they cost nothing here.
        meta = event["object"]["metadata"]
        if not fingerprint_changed("CrossConnection", event, str(meta.get("generation"))):
            return
        if event.get("type") not in ("DELETED", "MODIFIED"):
            return
        controller.sync_latest(namespace, meta["labels"][LABEL_CHAIN], emitter)

    return registry, controller
