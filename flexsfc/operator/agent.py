"""The node agent adapter: CrossConnections + this node's NF pods -> the agent loop -> data plane.

Kopf event handlers feed an in-memory index (pods of this node, all CrossConnections); every change
pushes the whole picture to :class:`flexsfc.agent.loop.AgentLoop`, whose thread reconciles it
(level-triggered: bursts of events coalesce into one reconcile). After each reconcile the agent
writes what it programmed into status.nodes[<node>] of every CrossConnection (merge patches, so the
agents of different nodes never overwrite each other).

Before the first reconcile the agent lists pods and CrossConnections itself (resync at start), so a
restarted agent never reconciles against half a picture and removes state it should keep.
"""

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from flexsfc.agent.loop import AgentLoop
from flexsfc.agent.reconciler import ReconcileReport, desired_ports
from flexsfc.agent.types import NfReplica, ReplicaPhase
from flexsfc.cni.state import load_records
from flexsfc.dataplane.api import ReplicaState
from flexsfc.model.constants import API_GROUP, API_VERSION, LABEL_NF, PLURAL_CROSS_CONNECTION
from flexsfc.model.types import ChainSettings, CrossConnectionSpec, Side
from flexsfc.operator.conditions import now_rfc3339
from flexsfc.operator.convert import xc_from_object
from flexsfc.operator.pods import PodView, RecordIndex, pod_to_replica

log = logging.getLogger(__name__)

XcKey = tuple[str, str]  # (namespace, name)
ParsedXc = tuple[CrossConnectionSpec, ChainSettings]


def pod_selectors(node_name: str) -> tuple[str, str]:
    """(label selector, field selector) of the NF pods one agent watches."""
    return LABEL_NF, f"spec.nodeName={node_name}"


@dataclass
class AgentIndex:
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> pod object
    gone: dict[str, dict[str, Any]] = field(default_factory=dict)  # deleted since the last push
    xcs: dict[XcKey, dict[str, Any]] = field(default_factory=dict)


class NodeAgent:
    def __init__(
        self,
        node_name: str,
        loop: AgentLoop,
        api_client: kubernetes.client.ApiClient,
        *,
        cni_state_dir: str,
        refresh_seconds: float = 10.0,
    ) -> None:
        self.node_name = node_name
        self.loop = loop
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.cni_state_dir = cni_state_dir
        self.refresh_seconds = refresh_seconds
        self.index = AgentIndex()
        self._lock = threading.RLock()  # the index and what is derived from it
        self._push_lock = threading.Lock()
        self._written: dict[XcKey, dict[str, Any]] = {}  # last node status written, per xc
        # Last parse of each CrossConnection object: (the object, its spec or why it is malformed).
        self._parsed: dict[XcKey, tuple[dict[str, Any], ParsedXc | str]] = {}
        self._views: dict[str, PodView] = {}
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    # -- index updates (Kopf handlers) -----------------------------------------------------

    def _mine(self, pod: dict[str, Any]) -> bool:
        spec, meta = pod.get("spec") or {}, pod.get("metadata") or {}
        return spec.get("nodeName") == self.node_name and bool((meta.get("labels") or {}).get(LABEL_NF))

    def on_pod_event(self, event_type: str | None, pod: dict[str, Any]) -> None:
        uid = (pod.get("metadata") or {}).get("uid")
        if not uid:
            return
        with self._lock:
            if event_type == "DELETED" or not self._mine(pod):
                previous = self.index.pods.pop(uid, None)
                if previous is not None or event_type == "DELETED":
                    self.index.gone[uid] = pod
            else:
                self.index.pods[uid] = pod
                self.index.gone.pop(uid, None)
        self.push()

    def on_xc_event(self, event_type: str | None, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace") or "default", meta.get("name", ""))
        with self._lock:
            if event_type == "DELETED":
                self.index.xcs.pop(key, None)
                self._written.pop(key, None)
                self._parsed.pop(key, None)
            else:
                self.index.xcs[key] = obj
        self.push()

    def resync(self) -> None:
        """Replace the index with a fresh listing (at start, before the first reconcile)."""
        labels, fields = pod_selectors(self.node_name)
        pods = self.core.list_pod_for_all_namespaces(label_selector=labels, field_selector=fields)
        xcs = self.custom.list_cluster_custom_object(API_GROUP, API_VERSION, PLURAL_CROSS_CONNECTION)
        client = self.core.api_client
        with self._lock:
            self.index.pods = {}
            for item in pods.items:
                pod = client.sanitize_for_serialization(item)
                if self._mine(pod):
                    self.index.pods[pod["metadata"]["uid"]] = pod
            self.index.xcs = {
                (o["metadata"].get("namespace") or "default", o["metadata"]["name"]): o
                for o in xcs.get("items", [])
            }
        log.info(
            "resync: %d NF pods on %s, %d cross-connections",
            len(self.index.pods),
            self.node_name,
            len(self.index.xcs),
        )
        self.push()

    # -- picture -> loop ---------------------------------------------------------------------

    def push(self) -> None:
        """Hand the whole current picture to the agent loop (it reconciles in its own thread).

        Pushes are serialised so an older picture can never overwrite a newer one; the index lock
        is not held while calling into the loop, whose report listener takes it.
        """
        with self._push_lock:
            records = RecordIndex(load_records(self.cni_state_dir))
            with self._lock:
                views: dict[str, PodView] = {}
                for uid, pod in self.index.pods.items():
                    view = pod_to_replica(pod, records)
                    if view is not None:
                        views[uid] = view
                for uid, pod in self.index.gone.items():
                    view = pod_to_replica(pod, records, deleted=True)
                    if view is not None:
                        views[uid] = view
                self.index.gone.clear()  # GONE is told once; afterwards the replica is simply absent
                xcs, settings = self._cross_connections()
                self._views = {uid: v for uid, v in views.items() if v.replica.phase is not ReplicaPhase.GONE}
            self.loop.set_replicas([v.replica for v in views.values()])
            self.loop.set_cross_connections(xcs, settings)

    def _cross_connections(self) -> tuple[list[CrossConnectionSpec], dict[str, ChainSettings]]:
        xcs: list[CrossConnectionSpec] = []
        settings: dict[str, ChainSettings] = {}
        for key, obj in sorted(self.index.xcs.items()):
            if (obj.get("metadata") or {}).get("deletionTimestamp"):
                continue
            parsed = self._parse(key, obj)
            if not isinstance(parsed, str):
                xc, chain_settings = parsed
                xcs.append(xc)
                settings[xc.chain] = chain_settings
        return xcs, settings

    def _parse(self, key: XcKey, obj: dict[str, Any]) -> ParsedXc | str:
        """(spec, chain settings) of the object, or why it is malformed; once per version of it."""
        cached = self._parsed.get(key)
        if cached is not None and cached[0] is obj:
            return cached[1]
        result: ParsedXc | str
        try:
            result = xc_from_object(obj)
        except (KeyError, ValueError, TypeError) as exc:
            result = f"malformed spec: {exc!r}"
        self._parsed[key] = (obj, result)
        return result

    # -- status (agent loop thread) ---------------------------------------------------------

    def on_report(self, reason: str, report: ReconcileReport) -> None:
        with self._lock:
            xcs = {key: (obj, self._parse(key, obj)) for key, obj in self.index.xcs.items()}
            views = list(self._views.values())
        replicas = [v.replica for v in views]
        for key, (obj, parsed) in xcs.items():
            status = self._node_status(obj, parsed, replicas, views, report)
            if self._written.get(key) == status:
                continue
            body = {"status": {"nodes": {self.node_name: status | {"lastSyncTime": now_rfc3339()}}}}
            try:
                self.custom.patch_namespaced_custom_object_status(
                    API_GROUP, API_VERSION, key[0], PLURAL_CROSS_CONNECTION, key[1], body
                )
                self._written[key] = status
            except ApiException as exc:
                if exc.status != 404:  # deleted meanwhile: nothing to report on
                    log.warning("cannot write status of cross-connection %s/%s: %s", *key, exc.reason)

    def _node_status(
        self,
        obj: dict[str, Any],
        parsed: ParsedXc | str,
        replicas: list[NfReplica],
        views: list[PodView],
        report: ReconcileReport,
    ) -> dict[str, Any]:
        generation = (obj.get("metadata") or {}).get("generation")
        status: dict[str, Any] = {"observedGeneration": generation} if generation is not None else {}
        if isinstance(parsed, str):
            return status | {"ready": False, "message": parsed}
        xc, _ = parsed
        errors = [e for e in report.errors if e.startswith(f"{xc.name}:")]
        for side in Side:
            ports = desired_ports(xc, side, replicas)
            status[f"replicas{side.value}"] = sum(p.state is ReplicaState.ACTIVE for p in ports)
            status[f"draining{side.value}"] = sum(p.state is ReplicaState.DRAINING for p in ports)
        notes = list(errors)
        for view in views:
            for side in (xc.side_a, xc.side_b):
                if view.replica.nf == side.nf and view.replica.interface(side.interface) is None:
                    where = (
                        "Multus reports it but flexsfc-cni left no record"
                        if side.interface in view.missing_interfaces
                        else "not attached yet"
                    )
                    notes.append(f"pod {view.replica.pod_name}: interface {side.interface} {where}")
        status["ready"] = not errors
        status["message"] = "; ".join(notes) if notes else "programmed"
        return status

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Resync, then reconcile continuously; re-read the CNI records every refresh_seconds."""
        self.resync()
        self.loop.start()
        self._stop.clear()
        self._refresher = threading.Thread(target=self._refresh, name="flexsfc-agent-refresh", daemon=True)
        self._refresher.start()

    def _refresh(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            try:
                self.push()
            except Exception:
                log.exception("refresh failed")

    def stop(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(timeout=5)
        self.loop.stop()
