"""The node agent adapter: CrossConnections + this node's NF pods -> the agent loop -> data plane.

Kopf event handlers feed an in-memory index (pods of this node, all CrossConnections); every change
pushes the whole picture to :class:`flexsfc.agent.loop.AgentLoop`, whose thread reconciles it
(level-triggered: bursts of events coalesce into one reconcile). After each reconcile the agent
writes what it programmed into status.nodes[<node>] of every CrossConnection whose NFs have a pod on
this node (merge patches, so the agents of different nodes never overwrite each other); links the
node hosts nothing of get no entry from it, and the chain controller prunes entries left behind
(flexsfc/operator/readiness.py). Every `heartbeat_seconds` the agent renews its Lease with a summary
of its data plane (flexsfc/operator/heartbeat.py). What it writes back is flexsfc.operator.agent_reports.

Before the first reconcile the agent lists pods and CrossConnections itself (resync at start), so a
restarted agent never reconciles against half a picture and removes state it should keep. It lists
them again every `relist_seconds` (default 60 s) and replaces its picture with the listing: a watch
that broke and missed a DELETED event (Kopf re-lists on a new watch but never reports what vanished
meanwhile) leaves no pod or cross-connection in the data plane for longer than that.
"""

import datetime
import logging
import threading
import time
from typing import Any

import kubernetes

from flexsfc.agent.hostports import HostPorts, Refusal
from flexsfc.agent.loop import AgentLoop
from flexsfc.agent.reconciler import ReconcileReport
from flexsfc.agent.types import ChainKey, ReplicaPhase
from flexsfc.cni.state import load_records, owner_alias
from flexsfc.model.constants import (
    API_GROUP,
    API_VERSION,
    DEFAULT_AGENT_RELIST_SECONDS,
    LABEL_NF,
    PLURAL_CROSS_CONNECTION,
)
from flexsfc.model.types import ChainSettings, CrossConnectionSpec
from flexsfc.operator.agent_reports import AgentIndex, AgentReports, ParsedXc, XcKey
from flexsfc.operator.convert import xc_from_object
from flexsfc.operator.heartbeat import DEFAULT_HEARTBEAT_SECONDS, agent_namespace
from flexsfc.operator.pods import PodView, RecordIndex, pod_to_replica
from flexsfc.operator.readiness import node_entries

log = logging.getLogger(__name__)

DEFAULT_RELIST_SECONDS = DEFAULT_AGENT_RELIST_SECONDS


def pod_selectors(node_name: str) -> tuple[str, str]:
    """(label selector, field selector) of the NF pods one agent watches."""
    return LABEL_NF, f"spec.nodeName={node_name}"


class NodeAgent(AgentReports):
    def __init__(
        self,
        node_name: str,
        loop: AgentLoop,
        api_client: kubernetes.client.ApiClient,
        *,
        cni_state_dir: str,
        refresh_seconds: float = 10.0,
        relist_seconds: float | None = DEFAULT_RELIST_SECONDS,
        host_netns: str | None = None,
        heartbeat_seconds: float | None = DEFAULT_HEARTBEAT_SECONDS,
        lease_namespace: str | None = None,
    ) -> None:
        self.node_name = node_name
        self.heartbeat_seconds = heartbeat_seconds  # None or 0: no Lease (tests of other parts)
        self.lease_namespace = lease_namespace or agent_namespace()
        self.coordination = kubernetes.client.CoordinationV1Api(api_client)
        self._beat_at = 0.0  # monotonic time of the last Lease renewal
        self._last_report: tuple[datetime.datetime, str, ReconcileReport] | None = None
        self.loop = loop
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.cni_state_dir = cni_state_dir
        self.refresh_seconds = refresh_seconds
        self.relist_seconds = relist_seconds  # None or 0: only at start
        # Only veths flexsfc-cni made for the recorded attachment (host_netns: None, this process's).
        self.host_ports = HostPorts(owner_alias, netns=host_netns)
        self.refused: dict[tuple[str, str], Refusal] = {}  # (container id, ifname) -> why, last push
        self.index = AgentIndex()
        # Objects an event touched while a listing was in flight: the event is at least as new as
        # the listing, which must not undo it. None when no listing runs.
        self._touched: tuple[set[str], set[XcKey]] | None = None
        self._listed_at = 0.0
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
            if self._touched is not None:
                self._touched[0].add(uid)
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
            if self._touched is not None:
                self._touched[1].add(key)
            if event_type == "DELETED":
                self.index.xcs.pop(key, None)
                self._written.pop(key, None)
                self._parsed.pop(key, None)
            else:
                self.index.xcs[key] = obj
                # The controller pruned (or someone edited) this node's entry: write it again on
                # the next report instead of trusting what was last written.
                entry = node_entries(obj).get(self.node_name)
                reported = None if entry is None else {k: v for k, v in entry.items() if k != "lastSyncTime"}
                if key in self._written and reported != self._written[key]:
                    del self._written[key]
        self.push()

    def resync(self, reason: str = "resync") -> None:
        """Replace the index with a fresh listing (at start, before the first reconcile, and every
        `relist_seconds`): what the listing lacks was deleted, whether or not its event arrived.

        Events handled while the listing is in flight win over it for the objects they touch (they
        are at least as new); pods that vanished unseen are told GONE once, as a DELETED event does.
        """
        with self._lock:
            self._touched = (set(), set())
        try:
            labels, fields = pod_selectors(self.node_name)
            pods = self.core.list_pod_for_all_namespaces(label_selector=labels, field_selector=fields)
            xcs = self.custom.list_cluster_custom_object(API_GROUP, API_VERSION, PLURAL_CROSS_CONNECTION)
            client = self.core.api_client
            with self._lock:
                touched_pods, touched_xcs = self._touched
                listed_pods: dict[str, dict[str, Any]] = {}
                for item in pods.items:
                    pod = client.sanitize_for_serialization(item)
                    if self._mine(pod) and pod["metadata"]["uid"] not in touched_pods:
                        listed_pods[pod["metadata"]["uid"]] = pod
                listed_xcs = {
                    (o["metadata"].get("namespace") or "default", o["metadata"]["name"]): o
                    for o in xcs.get("items", [])
                    if (o["metadata"].get("namespace") or "default", o["metadata"]["name"]) not in touched_xcs
                }
                listed_pods.update({u: p for u, p in self.index.pods.items() if u in touched_pods})
                listed_xcs.update({k: o for k, o in self.index.xcs.items() if k in touched_xcs})
                vanished = sorted(set(self.index.pods) - set(listed_pods))
                for uid in vanished:
                    self.index.gone[uid] = self.index.pods[uid]
                removed = sorted(set(self.index.xcs) - set(listed_xcs))
                for key in removed:
                    self._written.pop(key, None)
                    self._parsed.pop(key, None)
                self.index.pods, self.index.xcs = listed_pods, listed_xcs
                self._listed_at = time.monotonic()
        finally:
            with self._lock:
                self._touched = None
        (log.info if reason == "resync" else log.debug)(  # the periodic re-list is routine
            "%s: %d NF pods on %s, %d cross-connections",
            reason,
            len(listed_pods),
            self.node_name,
            len(listed_xcs),
        )
        if vanished or removed:
            log.warning(
                "%s: deleted without an event seen: pods %s, cross-connections %s",
                reason,
                vanished,
                ["/".join(key) for key in removed],
            )
        self.push()

    # -- picture -> loop ---------------------------------------------------------------------

    def push(self) -> None:
        """Hand the whole current picture to the agent loop (it reconciles in its own thread).

        Pushes are serialised so an older picture can never overwrite a newer one; the index lock
        is not held while calling into the loop, whose report listener takes it.
        """
        with self._push_lock:
            trusted, refused = self.host_ports.check(load_records(self.cni_state_dir))
            records = RecordIndex(trusted)
            refusals = {(r.record.container_id, r.record.ifname): r for r in refused}
            for key, refusal in refusals.items():
                if self.refused.get(key) != refusal:  # once per record and reason, not every push
                    log.warning("%s", refusal)
            with self._lock:
                self.refused = refusals
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

    def _cross_connections(self) -> tuple[list[CrossConnectionSpec], dict[ChainKey, ChainSettings]]:
        xcs: list[CrossConnectionSpec] = []
        settings: dict[ChainKey, ChainSettings] = {}  # chains are namespaced: never by bare name
        for key, obj in sorted(self.index.xcs.items()):
            if (obj.get("metadata") or {}).get("deletionTimestamp"):
                continue
            parsed = self._parse(key, obj)
            if not isinstance(parsed, str):
                xc, chain_settings = parsed
                xcs.append(xc)
                settings[(xc.namespace, xc.chain)] = chain_settings
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

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Resync, then reconcile continuously; re-read the CNI records every refresh_seconds."""
        self.resync()
        self.heartbeat(force=True)
        self.loop.start()
        self._stop.clear()
        self._refresher = threading.Thread(target=self._refresh, name="flexsfc-agent-refresh", daemon=True)
        self._refresher.start()

    def _refresh(self) -> None:
        """Re-read the CNI records every refresh_seconds; re-list the API every relist_seconds."""
        period = min(self.refresh_seconds, self.relist_seconds or self.refresh_seconds)
        if self.heartbeat_seconds:
            period = min(period, self.heartbeat_seconds)
        while not self._stop.wait(period):
            try:
                if self.relist_seconds and time.monotonic() - self._listed_at >= self.relist_seconds:
                    self.resync("re-list")
                else:
                    self.push()
                self.heartbeat()
            except Exception:
                log.exception("refresh failed")

    def stop(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(timeout=5)
        self.loop.stop()
