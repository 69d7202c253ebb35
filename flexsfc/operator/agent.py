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

Multi-node chains (docs/multinode.md, docs/kubernetes.md "Multi-node"): the agent watches the NF pods
of every node (label flexsfc.io/network-function; `spec.nodeName` says where each runs) and every
Node (its InternalIP, flexsfc/operator/nodes.py). Ports are attached only for this node's pods (the
CNI records exist only for them); the replicas on other nodes go to the loop as remote replicas
(identity = pod UID, the one their own node uses, so every node builds the same Maglev tables) with a
Topology naming every node's address and this node's tunnel device, which the agent creates at start.
"""

import contextlib
import datetime
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import kubernetes
from pyroute2.netlink.exceptions import NetlinkError

from flexsfc.agent.hostports import HostPorts, Refusal
from flexsfc.agent.loop import AgentLoop
from flexsfc.agent.reconciler import ReconcileReport
from flexsfc.agent.types import ChainKey, NfReplica, ReplicaPhase, Topology
from flexsfc.cni.state import load_records, owner_alias
from flexsfc.dataplane.vxlan import TunnelDeviceError, ensure_tunnel_device, nf_mtu
from flexsfc.model.constants import (
    API_GROUP,
    API_VERSION,
    DEFAULT_AGENT_RELIST_SECONDS,
    DEFAULT_TUNNEL_DEVICE,
    DEFAULT_TUNNEL_PORT,
    LABEL_NF,
    PLURAL_CROSS_CONNECTION,
    TUNNEL_OVERHEAD,
)
from flexsfc.model.types import ChainSettings, CrossConnectionSpec
from flexsfc.operator.agent_reports import AgentIndex, AgentReports, ParsedXc, XcKey
from flexsfc.operator.convert import xc_from_object
from flexsfc.operator.heartbeat import DEFAULT_HEARTBEAT_SECONDS, agent_namespace
from flexsfc.operator.nodes import NodeMap, node_map, underlay_mtu
from flexsfc.operator.pods import PodView, RecordIndex, pod_to_replica, remote_replica
from flexsfc.operator.readiness import node_entries
from flexsfc.util.netns import in_netns

log = logging.getLogger(__name__)

DEFAULT_RELIST_SECONDS = DEFAULT_AGENT_RELIST_SECONDS


# The NF pods of every node: a chain's Maglev tables hold its replicas cluster-wide.
POD_LABEL_SELECTOR = LABEL_NF


class TunnelError(RuntimeError):
    pass


@dataclass(frozen=True)
class TunnelOptions:
    """This node's end of the multi-node underlay (docs/kubernetes.md, "Multi-node")."""

    device: str | None = DEFAULT_TUNNEL_DEVICE  # None: no tunnel, replicas on other nodes are not used
    port: int = DEFAULT_TUNNEL_PORT  # UDP; the same on every node
    underlay_mtu: int | None = None  # None: the MTU of the link holding the node's InternalIP
    netns: str | None = None  # where the device lives (None: this process's namespace)

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"tunnel port: {self.port} is not a UDP port (1..65535)")
        if self.device is not None and not 1 <= len(self.device) <= 15:
            raise ValueError(f"tunnel device: {self.device!r} is not an interface name (1..15 characters)")
        if self.underlay_mtu is not None and not 68 + TUNNEL_OVERHEAD <= self.underlay_mtu <= 65535:
            raise ValueError(
                f"underlay MTU: {self.underlay_mtu} must be {68 + TUNNEL_OVERHEAD}..65535 "
                f"(NF interfaces get {TUNNEL_OVERHEAD} bytes less)"
            )


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
        tunnel: TunnelOptions | None = None,
    ) -> None:
        self.node_name = node_name
        # None: single-node behaviour (tests of other parts); replicas elsewhere are not used.
        self.tunnel = tunnel
        self.underlay_mtu: int | None = None  # known once the tunnel is set up
        # Why the tunnel is not up (None: up, or not wanted): replicas elsewhere are not used then.
        self.tunnel_error: str | None = None
        if tunnel is not None:
            self.tunnel_error = (
                "not set up yet" if tunnel.device else "disabled (the agent's tunnel device is empty)"
            )
        self._evented: dict[XcKey, set[str]] = {}
        self.nodes = NodeMap()
        self._remote: list[NfReplica] = []  # replicas on other nodes, last push
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
        # the listing, which must not undo it. None when no listing runs. (pods, xcs, nodes)
        self._touched: tuple[set[str], set[XcKey], set[str]] | None = None
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

    @staticmethod
    def _indexed(pod: dict[str, Any]) -> bool:
        """An NF pod bound to a node (of any node: unscheduled pods are nobody's replica yet)."""
        spec, meta = pod.get("spec") or {}, pod.get("metadata") or {}
        return bool(spec.get("nodeName")) and bool((meta.get("labels") or {}).get(LABEL_NF))

    def _local(self, pod: dict[str, Any]) -> bool:
        return bool((pod.get("spec") or {}).get("nodeName") == self.node_name)

    def on_pod_event(self, event_type: str | None, pod: dict[str, Any]) -> None:
        uid = (pod.get("metadata") or {}).get("uid")
        if not uid:
            return
        with self._lock:
            if self._touched is not None:
                self._touched[0].add(uid)
            if event_type == "DELETED" or not self._indexed(pod):
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

    def on_node_event(self, event_type: str | None, node: dict[str, Any]) -> None:
        name = (node.get("metadata") or {}).get("name")
        if not name:
            return
        with self._lock:
            if self._touched is not None:
                self._touched[2].add(name)
            if event_type == "DELETED":
                self.index.nodes.pop(name, None)
            else:
                previous = self.index.nodes.get(name)
                self.index.nodes[name] = node
                if previous is not None and node_map([previous]) == node_map([node]):
                    return  # a status heartbeat of the kubelet: nothing the picture depends on
        self.push()

    def resync(self, reason: str = "resync") -> None:
        """Replace the index with a fresh listing (at start, before the first reconcile, and every
        `relist_seconds`): what the listing lacks was deleted, whether or not its event arrived.

        Events handled while the listing is in flight win over it for the objects they touch (they
        are at least as new); pods that vanished unseen are told GONE once, as a DELETED event does.
        """
        with self._lock:
            self._touched = (set(), set(), set())
        try:
            pods = self.core.list_pod_for_all_namespaces(label_selector=POD_LABEL_SELECTOR)
            xcs = self.custom.list_cluster_custom_object(API_GROUP, API_VERSION, PLURAL_CROSS_CONNECTION)
            nodes = self.core.list_node()
            client = self.core.api_client
            with self._lock:
                touched_pods, touched_xcs, touched_nodes = self._touched
                listed_nodes = {
                    node["metadata"]["name"]: node
                    for node in map(client.sanitize_for_serialization, nodes.items)
                    if node["metadata"]["name"] not in touched_nodes
                }
                listed_nodes.update({n: o for n, o in self.index.nodes.items() if n in touched_nodes})
                self.index.nodes = listed_nodes
                listed_pods: dict[str, dict[str, Any]] = {}
                for item in pods.items:
                    pod = client.sanitize_for_serialization(item)
                    if self._indexed(pod) and pod["metadata"]["uid"] not in touched_pods:
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
            "%s: %d NF pods (%d on %s), %d nodes, %d cross-connections",
            reason,
            len(listed_pods),
            sum(self._local(p) for p in listed_pods.values()),
            self.node_name,
            len(listed_nodes),
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
                self.nodes = node_map(self.index.nodes.values())  # before _tunnel_up: it needs them
                views: dict[str, PodView] = {}
                remote: dict[str, NfReplica] = {}
                for deleted, pods in ((False, self.index.pods), (True, self.index.gone)):
                    for uid, pod in pods.items():
                        if self._local(pod):
                            view = pod_to_replica(pod, records, deleted=deleted)
                            if view is not None:
                                views[uid] = view
                        elif self._tunnel_up():
                            # No records are looked up: a record by this pod's name would be a stale one.
                            replica = remote_replica(pod, deleted=deleted)
                            if replica is not None:
                                remote[uid] = replica
                self.index.gone.clear()  # GONE is told once; afterwards the replica is simply absent
                xcs, settings = self._cross_connections()
                self._views = {uid: v for uid, v in views.items() if v.replica.phase is not ReplicaPhase.GONE}
                self._remote = [r for r in remote.values() if r.phase is not ReplicaPhase.GONE]
                topology = self._topology()
            if topology is not None:
                # The reconciler programs the tunnel's peers (Dataplane.set_nodes) before the ports.
                self.loop.set_topology(topology)
            self.loop.set_replicas([v.replica for v in views.values()] + list(remote.values()))
            self.loop.set_cross_connections(xcs, settings)

    def _tunnel_up(self) -> bool:
        return self.tunnel is not None and bool(self.tunnel.device) and self.tunnel_problem() is None

    def _topology(self) -> Topology | None:
        if self.tunnel is None or not self._tunnel_up():
            return None
        return Topology(
            node=self.node_name, nodes=dict(self.nodes.addresses), tunnel_device=self.tunnel.device
        )

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
        """Resync, set up the tunnel, then reconcile continuously; re-read the CNI records every
        refresh_seconds."""
        self.resync()
        self.setup_tunnel()
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
                    if self.tunnel_error is not None:
                        self.setup_tunnel()
                else:
                    self.push()
                self.heartbeat()
            except Exception:
                log.exception("refresh failed")

    def setup_tunnel(self) -> None:
        """Create this node's VXLAN device (kept if it is there); the topology hands it to the loop.

        Its MTU is the underlay's minus the VXLAN overhead, so an inner packet the tunnel cannot
        carry is refused at the device instead of leaving as an outer packet the underlay drops.
        The device stays when the agent stops: pinned programs keep forwarding through it.
        """
        options = self.tunnel
        if options is None or not options.device:
            return
        try:
            self._setup_tunnel(options.device, options)
        except (TunnelError, TunnelDeviceError, OSError, NetlinkError) as exc:  # e.g. the UDP port taken
            # The node's own chains still work: only replicas on other nodes are left out (and
            # reported on every link that has some); retried at every re-list.
            if str(exc) != self.tunnel_error:
                log.error("tunnel: %s; replicas on other nodes are not used until this is fixed", exc)
            self.tunnel_error = str(exc)
            return
        self.tunnel_error = None
        self.push()

    def _setup_tunnel(self, device: str, options: TunnelOptions) -> None:
        address = self.nodes.addresses.get(self.node_name)
        mtu = options.underlay_mtu
        if mtu is None:
            if address is None:
                why = self.nodes.problems.get(self.node_name, "its Node object was not found")
                raise TunnelError(
                    f"node {self.node_name} {why}: cannot find the underlay MTU; set it (agent "
                    "--underlay-mtu) or fix the Node's addresses"
                )
            with self._in_tunnel_netns():
                mtu = underlay_mtu(address)
            if mtu is None:
                raise TunnelError(
                    f"no link here holds node {self.node_name}'s InternalIP {address}: cannot find the "
                    "underlay MTU; set it (agent --underlay-mtu)"
                )
        with self._in_tunnel_netns():
            ensure_tunnel_device(device, port=options.port, mtu=nf_mtu(mtu))
        self.underlay_mtu = mtu  # the next push's topology names the device: the reconciler sets it
        log.info(
            "tunnel device %s: UDP %d, underlay MTU %d (NF interfaces up to %d across nodes)",
            device,
            options.port,
            mtu,
            nf_mtu(mtu),
        )

    def _in_tunnel_netns(self) -> contextlib.AbstractContextManager[None]:
        netns = self.tunnel.netns if self.tunnel is not None else None
        return in_netns(netns) if netns else contextlib.nullcontext()

    def stop(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(timeout=5)
        self.loop.stop()
