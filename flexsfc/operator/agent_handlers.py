"""Kopf wiring of the node agent (one per node, standalone: agents must not pause each other).

NF pods of every node are watched with a server-side label selector (flexsfc.io/network-function:
a chain's tables hold its replicas cluster-wide), Nodes for their InternalIP, both only through
`on.event` handlers: Kopf then never patches a pod or a Node (no finalizers, no progress or diff-base
annotations), which a test asserts.
"""

import logging
from typing import Any, cast

import kopf

from flexsfc.agent.loop import AgentLoop
from flexsfc.dataplane.api import DataplaneAPI
from flexsfc.model.constants import API_GROUP, API_VERSION, LABEL_NF, PLURAL_CROSS_CONNECTION
from flexsfc.operator.agent import DEFAULT_RELIST_SECONDS, POD_LABEL_SELECTOR, NodeAgent, TunnelOptions
from flexsfc.operator.heartbeat import DEFAULT_HEARTBEAT_SECONDS
from flexsfc.operator.kube import KubeTarget

ANNOTATION_PREFIX = "agent.flexsfc.io"


def configure(settings: kopf.OperatorSettings, node_name: str) -> None:
    """`node_name` is kept for callers: the watches no longer depend on it (every node's pods)."""
    settings.watching.label_selectors["v1", "pods"] = POD_LABEL_SELECTOR
    # Event handlers store nothing; set explicit storages anyway so nothing could land in status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING


def build_registry(
    target: KubeTarget,
    node_name: str,
    dataplane: DataplaneAPI,
    *,
    cni_state_dir: str,
    resync_seconds: float = 10.0,
    relist_seconds: float | None = DEFAULT_RELIST_SECONDS,
    host_netns: str | None = None,
    heartbeat_seconds: float | None = DEFAULT_HEARTBEAT_SECONDS,
    lease_namespace: str | None = None,
    tunnel: TunnelOptions | None = None,
) -> tuple[kopf.OperatorRegistry, NodeAgent]:
    """The agent's Kopf registry. `host_netns` is where the host ends of the pods' veths live (None:
    this process's namespace, as for the DaemonSet with hostNetwork; tests use a private one).
    `tunnel`: this node's end of the multi-node underlay (None: replicas on other nodes are not used)."""
    registry = kopf.OperatorRegistry()
    target.register_login(registry)
    holder: list[NodeAgent] = []
    loop = AgentLoop(
        dataplane,
        resync_seconds=resync_seconds,
        on_report=lambda reason, report: holder[0].on_report(reason, report),
    )
    agent = NodeAgent(
        node_name,
        loop,
        target.api_client(),
        cni_state_dir=cni_state_dir,
        refresh_seconds=resync_seconds,
        relist_seconds=relist_seconds,
        host_netns=host_netns,
        heartbeat_seconds=heartbeat_seconds,
        lease_namespace=lease_namespace,
        tunnel=tunnel,
    )
    holder.append(agent)

    @kopf.on.startup(registry=registry)
    def start_agent(logger: kopf.Logger, **_: Any) -> None:
        agent.start()
        logger.info("node agent for %s started", node_name)

    @kopf.on.cleanup(registry=registry)
    def stop_agent(**_: Any) -> None:
        agent.stop()

    @kopf.on.event("v1", "pods", labels={LABEL_NF: kopf.PRESENT}, registry=registry)
    def pod_event(event: kopf.RawEvent, **_: Any) -> None:
        agent.on_pod_event(event.get("type"), cast(dict[str, Any], event["object"]))

    @kopf.on.event(API_GROUP, API_VERSION, PLURAL_CROSS_CONNECTION, registry=registry)
    def cross_connection_event(event: kopf.RawEvent, **_: Any) -> None:
        agent.on_xc_event(event.get("type"), cast(dict[str, Any], event["object"]))

    @kopf.on.event("v1", "nodes", registry=registry)
    def node_event(event: kopf.RawEvent, **_: Any) -> None:
        agent.on_node_event(event.get("type"), cast(dict[str, Any], event["object"]))

    return registry, agent
