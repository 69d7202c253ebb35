"""What the node agent writes back to the cluster: its entry in status.nodes[<node>] of each
CrossConnection it hosts an NF of, after every reconcile, and its heartbeat Lease with a bounded
summary of its data plane (flexsfc/operator/heartbeat.py). NodeAgent (flexsfc.operator.agent) owns
the index these read; AgentIndex, the index itself, is here so both can name it.

Multi-node: each entry also says what the node programmed per side, read back from its data plane:
its local ports (`localA`/`localB`: pod, interface, state) and its remote targets grouped by node
(`remoteA`/`remoteB`: node, address, active and draining replicas). An entry is not ready, and a
Warning Event on the CrossConnection says why, when replicas of the link on other nodes get no
traffic from this node (their node has no usable address, or this node's tunnel is not up) or when a
local replica's interface MTU exceeds what the tunnel carries toward the other side's remote targets
(the NetworkAttachmentDefinition's CNI config `mtu` must be at most the underlay MTU minus 50)."""

import datetime
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from flexsfc import __version__
from flexsfc.agent.desired import desired_ports
from flexsfc.agent.hostports import Refusal
from flexsfc.agent.loop import AgentLoop
from flexsfc.agent.reconciler import ReconcileReport
from flexsfc.agent.types import NfReplica, ReplicaPhase, dataplane_name
from flexsfc.dataplane.api import ReplicaPort, ReplicaState
from flexsfc.dataplane.vxlan import nf_mtu
from flexsfc.model.constants import (
    API_GROUP,
    API_VERSION,
    KIND_CROSS_CONNECTION,
    LABEL_NF,
    PLURAL_CROSS_CONNECTION,
    TUNNEL_OVERHEAD,
)
from flexsfc.model.types import ChainSettings, CrossConnectionSpec, Side
from flexsfc.operator.conditions import now_rfc3339
from flexsfc.operator.heartbeat import AGENT_COMPONENT, MAX_LISTED, lease_body, lease_name
from flexsfc.operator.nodes import NodeMap
from flexsfc.operator.pods import PodView, RecordIndex, pod_phase
from flexsfc.operator.readiness import pod_node, xc_sides

log = logging.getLogger("flexsfc.operator.agent")  # the node agent's one logger

XcKey = tuple[str, str]  # (namespace, name)
ParsedXc = tuple[CrossConnectionSpec, ChainSettings]
MAX_PORTS_LISTED = 32  # local ports and remote nodes listed per side in an entry (counts are whole)
REASON_UNREACHABLE = "ReplicasUnreachable"
REASON_MTU = "TunnelMTU"


@dataclass
class AgentIndex:
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> pod object
    gone: dict[str, dict[str, Any]] = field(default_factory=dict)  # deleted since the last push
    xcs: dict[XcKey, dict[str, Any]] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> Node object


class AgentReports:
    """NodeAgent's status and heartbeat writing; the attributes are set up by NodeAgent."""

    node_name: str
    heartbeat_seconds: float | None
    lease_namespace: str
    coordination: Any
    core: Any
    custom: Any
    nodes: NodeMap
    underlay_mtu: int | None
    tunnel_error: str | None
    tunnel: Any  # flexsfc.operator.agent.TunnelOptions | None (defined there, above this module)
    loop: AgentLoop
    refused: dict[tuple[str, str], Refusal]
    index: AgentIndex
    _beat_at: float
    _last_report: tuple[datetime.datetime, str, ReconcileReport] | None
    _lock: threading.RLock
    _written: dict[XcKey, dict[str, Any]]
    _views: dict[str, PodView]
    _evented: dict[XcKey, set[str]]  # Warning Events posted per link, while their problem lasts

    def _parse(self, key: XcKey, obj: dict[str, Any]) -> ParsedXc | str:
        raise NotImplementedError

    # -- status (agent loop thread) ---------------------------------------------------------

    def on_report(self, reason: str, report: ReconcileReport) -> None:
        with self._lock:
            xcs = {key: (obj, self._parse(key, obj)) for key, obj in self.index.xcs.items()}
            views = list(self._views.values())
            hosted = self._hosted_nfs()
            # Replicas on other nodes whatever the tunnel's state (the picture has them only when
            # it is up): a link's entry names those that get no traffic from here.
            elsewhere = [
                (pod["spec"]["nodeName"], pod) for pod in self.index.pods.values() if not self._is_local(pod)
            ]
            names = {uid: pod["metadata"].get("name", "") for uid, pod in self.index.pods.items()}
        self._last_report = (datetime.datetime.now(datetime.UTC), reason, report)
        replicas = [v.replica for v in views]
        for key, (obj, parsed) in xcs.items():
            if not any((key[0], nf) in hosted for nf in xc_sides(obj)):
                self._written.pop(key, None)  # no entry from this node; the controller prunes an old one
                self._evented.pop(key, None)
                continue
            status = self._node_status(obj, parsed, replicas, views, report)
            if not isinstance(parsed, str):
                warnings = self._multinode(parsed[0], views, elsewhere, names, status)
                if warnings:
                    status["ready"] = False
                    notes = [m for m in [status.get("message", "")] if m and m != "programmed"]
                    status["message"] = "; ".join(notes + [text for _, text in warnings])
                self._post_events(obj, key, warnings)
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

    def tunnel_problem(self) -> str | None:
        """Why this node sends nothing through the tunnel (None: it does, or has no tunnel at all).
        A node without a usable address of its own is not a peer of the others: they would drop
        what it sends, so it must not target their replicas."""
        if self.tunnel is None:
            return None
        if self.tunnel_error is not None:
            return self.tunnel_error
        if not self.nodes.reachable(self.node_name):
            why = self.nodes.problems.get(self.node_name, "has no Node object")
            return f"node {self.node_name} {why}: the other nodes take no tunnel packets from it"
        return None

    def _is_local(self, pod: dict[str, Any]) -> bool:
        return bool((pod.get("spec") or {}).get("nodeName") == self.node_name)

    # -- multi-node ------------------------------------------------------------------------------

    def _programmed(self, name: str) -> dict[Side, list[ReplicaPort]] | None:
        """The link's ports as this node's data plane holds them; None when it cannot be read."""
        try:
            dataplane = self.loop.reconciler.dataplane
            return {side: list(dataplane.replicas(name, side)) for side in Side}
        except Exception as exc:  # not programmed yet, or no data plane (tests of other parts)
            log.debug("cannot read the ports of %s: %r", name, exc)
            return None

    def _multinode(
        self,
        xc: CrossConnectionSpec,
        views: list[PodView],
        elsewhere: list[tuple[str, dict[str, Any]]],
        names: dict[str, str],
        status: dict[str, Any],
    ) -> list[tuple[str, str]]:
        """Fill in what is programmed per side (local ports, remote targets by node) and return the
        link's multi-node problems as (Event reason, message)."""
        programmed = self._programmed(dataplane_name(xc))
        remote_sides: set[Side] = set()
        if programmed is not None:
            for side in Side:
                local, remote = self._side_detail(xc, side, programmed[side], names)
                status[f"local{side.value}"] = local
                status[f"remote{side.value}"] = remote
                if remote:
                    remote_sides.add(side)
        problems: list[tuple[str, str]] = []
        if self.tunnel is None:  # a single-node agent (tests of other parts): replicas elsewhere are not its
            return problems
        unreachable: dict[str, int] = {}
        blocked = self.tunnel_problem()
        for node, pod in elsewhere:
            meta = pod["metadata"]
            if (meta.get("namespace") or "default") != xc.namespace:
                continue
            if meta["labels"][LABEL_NF] not in (xc.side_a.nf, xc.side_b.nf):
                continue
            if pod_phase(pod) not in (ReplicaPhase.RUNNING, ReplicaPhase.TERMINATING):
                continue
            if blocked is not None or not self.nodes.reachable(node):
                unreachable[node] = unreachable.get(node, 0) + 1
            elif programmed is None:  # not read back: judge by the picture
                nf = meta["labels"][LABEL_NF]
                remote_sides.update(side for side in Side if xc.side(side).nf == nf)
        for node, count in sorted(unreachable.items()):
            if blocked is not None:
                why = f"this node's tunnel is not up ({blocked})"
            else:
                why = f"node {node} " + self.nodes.problems.get(node, "has no Node object")
            problems.append(
                (
                    REASON_UNREACHABLE,
                    f"{count} replica(s) on node {node} get no traffic from this node: {why}",
                )
            )
        if self.underlay_mtu is not None:
            problems += self._mtu_problems(xc, views, remote_sides)
        return problems

    def _side_detail(
        self, xc: CrossConnectionSpec, side: Side, ports: list[ReplicaPort], names: dict[str, str]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        local: list[dict[str, Any]] = []
        by_node: dict[tuple[str, str], dict[str, Any]] = {}
        for port in sorted(ports, key=lambda p: (names.get(p.identity, p.identity), p.ifindex)):
            if port.remote is None:
                local.append(
                    {
                        "pod": names.get(port.identity, port.identity),
                        "interface": xc.side(side).interface,
                        "state": port.state.value,
                    }
                )
                continue
            target = by_node.setdefault(
                (port.remote.node, port.remote.address),
                {"node": port.remote.node, "address": port.remote.address, "active": 0, "draining": 0},
            )
            if port.state is ReplicaState.ACTIVE:
                target["active"] += 1
            elif port.state is ReplicaState.DRAINING:
                target["draining"] += 1
        return local[:MAX_PORTS_LISTED], [by_node[k] for k in sorted(by_node)][:MAX_PORTS_LISTED]

    def _mtu_problems(
        self, xc: CrossConnectionSpec, views: list[PodView], remote_sides: set[Side]
    ) -> list[tuple[str, str]]:
        """A local replica sends to the other side's replicas: when some of those are on other
        nodes, its interface MTU must fit in the tunnel."""
        assert self.underlay_mtu is not None
        limit = nf_mtu(self.underlay_mtu)
        problems = []
        for side in Side:
            if side.other not in remote_sides:
                continue
            this = xc.side(side)
            for view in views:
                replica = view.replica
                record = replica.interface(this.interface)
                if replica.namespace != xc.namespace or replica.nf != this.nf or record is None:
                    continue
                if record.mtu > limit:
                    problems.append(
                        (
                            REASON_MTU,
                            f"pod {replica.pod_name}: interface {this.interface} has MTU {record.mtu}, more "
                            f"than the tunnel to other nodes carries ({limit}: underlay MTU "
                            f"{self.underlay_mtu} - {TUNNEL_OVERHEAD} VXLAN overhead); set `mtu` to {limit} "
                            f"or less in the CNI config of NetworkAttachmentDefinition network "
                            f"{record.network!r}, or raise the underlay MTU",
                        )
                    )
        return problems

    def _post_events(self, obj: dict[str, Any], key: XcKey, problems: list[tuple[str, str]]) -> None:
        """A Warning Event on the CrossConnection per problem, once while the problem lasts."""
        posted = self._evented.setdefault(key, set())
        current = {message for _, message in problems}
        for reason, message in problems:
            if message in posted:
                continue
            meta = obj.get("metadata") or {}
            now = now_rfc3339()
            event = {
                "metadata": {"generateName": f"{key[1]}.", "namespace": key[0]},
                "involvedObject": {
                    "apiVersion": f"{API_GROUP}/{API_VERSION}",
                    "kind": KIND_CROSS_CONNECTION,
                    "name": key[1],
                    "namespace": key[0],
                    "uid": meta.get("uid"),
                },
                "type": "Warning",
                "reason": reason,
                "message": f"node {self.node_name}: {message}"[:1024],
                "source": {"component": AGENT_COMPONENT, "host": self.node_name},
                "reportingComponent": AGENT_COMPONENT,
                "reportingInstance": self.node_name,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
            try:
                self.core.create_namespaced_event(key[0], event)
            except ApiException as exc:
                log.warning("cannot post an Event on cross-connection %s/%s: %s", *key, exc.reason)
                current.discard(message)  # tried again on the next report
        self._evented[key] = current

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
        if self.tunnel is not None:
            # The reconciler's line per replica on a node with no address: the multi-node notes say
            # it per node, with the reason (flexsfc.operator.nodes).
            unplaced = set(report.unplaced)
            errors = [e for e in errors if e not in unplaced]
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
            pods = sum(self._is_local(pod) for pod in self.index.pods.values())
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
        if self.tunnel is not None:
            summary["tunnel"] = {
                "device": self.tunnel.device or "",
                "port": self.tunnel.port,
                "underlayMtu": self.underlay_mtu,
                "problem": (self.tunnel_problem() or "")[:300],
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
