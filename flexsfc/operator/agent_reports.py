"""What the node agent writes back to the cluster: its entry in status.nodes[<node>] of each
CrossConnection it hosts an NF of, after every reconcile, and its heartbeat Lease with a bounded
summary of its data plane (flexsfc/operator/heartbeat.py). NodeAgent (flexsfc.operator.agent) owns
the index these read; AgentIndex, the index itself, is here so both can name it."""

import datetime
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from flexsfc import __version__
from flexsfc.agent.hostports import Refusal
from flexsfc.agent.loop import AgentLoop
from flexsfc.agent.reconciler import ReconcileReport, desired_ports
from flexsfc.agent.types import NfReplica, ReplicaPhase, dataplane_name
from flexsfc.dataplane.api import ReplicaState
from flexsfc.model.constants import API_GROUP, API_VERSION, LABEL_NF, PLURAL_CROSS_CONNECTION
from flexsfc.model.types import ChainSettings, CrossConnectionSpec, Side
from flexsfc.operator.conditions import now_rfc3339
from flexsfc.operator.heartbeat import MAX_LISTED, lease_body, lease_name
from flexsfc.operator.pods import PodView, RecordIndex
from flexsfc.operator.readiness import pod_node, xc_sides

log = logging.getLogger("flexsfc.operator.agent")  # the node agent's one logger

XcKey = tuple[str, str]  # (namespace, name)
ParsedXc = tuple[CrossConnectionSpec, ChainSettings]


@dataclass
class AgentIndex:
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> pod object
    gone: dict[str, dict[str, Any]] = field(default_factory=dict)  # deleted since the last push
    xcs: dict[XcKey, dict[str, Any]] = field(default_factory=dict)


class AgentReports:
    """NodeAgent's status and heartbeat writing; the attributes are set up by NodeAgent."""

    node_name: str
    heartbeat_seconds: float | None
    lease_namespace: str
    coordination: Any
    custom: Any
    loop: AgentLoop
    refused: dict[tuple[str, str], Refusal]
    index: AgentIndex
    _beat_at: float
    _last_report: tuple[datetime.datetime, str, ReconcileReport] | None
    _lock: threading.RLock
    _written: dict[XcKey, dict[str, Any]]
    _views: dict[str, PodView]

    def _parse(self, key: XcKey, obj: dict[str, Any]) -> ParsedXc | str:
        raise NotImplementedError

    # -- status (agent loop thread) ---------------------------------------------------------

    def on_report(self, reason: str, report: ReconcileReport) -> None:
        with self._lock:
            xcs = {key: (obj, self._parse(key, obj)) for key, obj in self.index.xcs.items()}
            views = list(self._views.values())
            hosted = self._hosted_nfs()
        self._last_report = (datetime.datetime.now(datetime.UTC), reason, report)
        replicas = [v.replica for v in views]
        for key, (obj, parsed) in xcs.items():
            if not any((key[0], nf) in hosted for nf in xc_sides(obj)):
                self._written.pop(key, None)  # no entry from this node; the controller prunes an old one
                continue
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

    def _hosted_nfs(self) -> set[tuple[str, str]]:
        """(namespace, NF) of every pod this node hosts (scheduled here, not finished)."""
        hosted = set()
        for pod in self.index.pods.values():
            if pod_node(pod) == self.node_name:
                meta = pod["metadata"]
                hosted.add((meta.get("namespace") or "default", meta["labels"][LABEL_NF]))
        return hosted

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
        # The report names cross-connections as the data plane does: "namespace/name".
        errors = [e for e in report.errors if e.startswith(f"{dataplane_name(xc)}:")]
        for side in Side:
            ports = desired_ports(xc, side, replicas)
            status[f"replicas{side.value}"] = sum(p.state is ReplicaState.ACTIVE for p in ports)
            status[f"draining{side.value}"] = sum(p.state is ReplicaState.DRAINING for p in ports)
        notes = list(errors)
        refused = RecordIndex(r.record for r in self.refused.values())
        unattached = False  # a running replica whose interface is not in the data plane
        for view in views:
            if view.replica.namespace != xc.namespace:
                continue
            for xc_side in (xc.side_a, xc.side_b):
                if view.replica.nf == xc_side.nf and view.replica.interface(xc_side.interface) is None:
                    unattached = unattached or view.replica.phase is ReplicaPhase.RUNNING
                    notes.append(
                        f"pod {view.replica.pod_name}: interface {xc_side.interface} "
                        + self._why_missing(view, xc_side.interface, refused)
                    )
        status["ready"] = not errors and not unattached
        status["message"] = "; ".join(notes) if notes else "programmed"
        return status

    def _why_missing(self, view: PodView, ifname: str, refused: RecordIndex) -> str:
        replica = view.replica
        for record in refused.for_pod(replica.uid, replica.namespace, replica.pod_name):
            refusal = self.refused.get((record.container_id, record.ifname))
            if record.ifname == ifname and refusal is not None:
                return f"refused: {refusal.reason}"
        if ifname in view.missing_interfaces:
            return "Multus reports it but flexsfc-cni left no record"
        if ifname in view.annotated_only:
            return "only the pod annotation lists it (ignored: no record on this node)"
        return "not attached yet"

    # -- heartbeat ---------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """The bounded data-plane summary the Lease carries (flexsfc/operator/heartbeat.py)."""
        with self._lock:
            written = [s for s in self._written.values() if s is not None]
            refused = sorted(self.refused.values(), key=str)
            pods = len(self.index.pods)
        summary: dict[str, Any] = {
            "version": __version__,
            "pods": pods,
            "links": {"reported": len(written), "ready": sum(bool(s.get("ready")) for s in written)},
            "replicas": {
                "active": sum(s.get("replicasA", 0) + s.get("replicasB", 0) for s in written),
                "draining": sum(s.get("drainingA", 0) + s.get("drainingB", 0) for s in written),
            },
            "refused": [
                {
                    "pod": f"{r.record.pod_namespace}/{r.record.pod_name}",
                    "interface": r.record.ifname,
                    "reason": r.reason[:200],
                }
                for r in refused[:MAX_LISTED]
            ],
            "refusedTotal": len(refused),
        }
        if self._last_report is not None:
            moment, reason, report = self._last_report
            summary["lastReconcile"] = {
                "time": moment.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
                "reason": reason[:100],
                "ok": not report.failed,
                "errors": [e[:300] for e in report.errors[:MAX_LISTED]],
            }
        try:
            drops = self.loop.reconciler.dataplane.drop_stats()
            summary["drops"] = {str(k): int(v) for k, v in sorted(drops.items())[:MAX_LISTED]}
        except Exception as exc:  # a data plane without counters (tests) or unreadable maps
            log.debug("no drop counters: %r", exc)
        return summary

    def heartbeat(self, force: bool = False) -> None:
        """Renew this node's Lease (create it when missing) when a period has passed."""
        period = self.heartbeat_seconds
        if not period or (not force and time.monotonic() - self._beat_at < period):
            return
        now = datetime.datetime.now(datetime.UTC)
        body = lease_body(self.node_name, self.summary(), period=period, now=now)
        name, namespace = lease_name(self.node_name), self.lease_namespace
        try:
            try:
                self.coordination.patch_namespaced_lease(name, namespace, body)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                body["spec"]["acquireTime"] = body["spec"]["renewTime"]
                self.coordination.create_namespaced_lease(namespace, body)
            self._beat_at = time.monotonic()
        except ApiException as exc:
            log.warning("cannot renew the agent Lease %s/%s: %s", namespace, name, exc.reason)
