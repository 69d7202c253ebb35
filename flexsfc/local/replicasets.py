"""Replica sets and the kubelet's part for one machine: pods started, watched, terminated, removed.

Each pod lifecycle step updates the agent's picture and reconciles at once (in the pod's own thread),
so the data plane follows the pods with the shortest delay. Steps are those of docs/local-runtime.md
("Lifecycle, as in Kubernetes"); every step is recorded in the state file through `persist`.

Replica sets are keyed by namespace/name, as Deployments are: the same Deployment may run in several
namespaces. Pod names are unique in the whole runtime (the generated suffix is checked), so a pod
name alone still finds one pod; netns names carry the namespace (flexsfc.local.config).

The steps of one pod's lifecycle are in flexsfc.local.podlifecycle, the take-over of a dead
supervisor's pods in flexsfc.local.adoption, one replica set in flexsfc.local.replicaset.
"""

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from flexsfc.agent.reconciler import ReconcileError, ReconcileReport
from flexsfc.agent.types import ReplicaPhase
from flexsfc.local.adoption import Adoption
from flexsfc.local.cluster import ReplicaAgent
from flexsfc.local.config import RuntimeConfig
from flexsfc.local.nodes import NF_MTU, SimNode, SimulatedNodes
from flexsfc.local.observe import Observer
from flexsfc.local.pod import Attachment, Pod, cleanup_pod_state
from flexsfc.local.podspec import PodSpec
from flexsfc.local.replicaset import READY_TIMEOUT_SECONDS, ReplicaSet, deployment_key
from flexsfc.local.status import ApplyResult, DeploymentStatus, PodStatus
from flexsfc.model.types import NetworkAttachment, NfDeployment

__all__ = ["READY_TIMEOUT_SECONDS", "ReplicaSet", "ReplicaSets", "deployment_key"]


class ReplicaSets(Adoption):
    """Every Deployment's replica set and the threads that run its pods' lifecycles."""

    def __init__(
        self,
        config: RuntimeConfig,
        agent: ReplicaAgent,
        observer: Observer,
        persist: Callable[[], None],
        lock: threading.RLock,
    ) -> None:
        self.config = config
        # The shim finds the supervisor's CNI socket in this node file (flexsfc.local.node).
        self.node_file = str(config.cni_node_file)
        self.agent = agent
        self.observer = observer
        self.persist = persist
        self.lock = lock  # the runtime's: guards the sets, their pods' phases and `orphans`
        self.sets: dict[str, ReplicaSet] = {}  # namespace/name -> replica set
        self.networks: dict[tuple[str, str], NetworkAttachment] = {}  # (namespace, name) -> NAD
        self.wanted: set[str] = set()  # Deployments of the current plan (namespace/name)
        self.orphans: list[PodStatus] = []  # pods whose removal failed: retried by shutdown/down
        self.failed: list[PodStatus] = []  # the newest pods that failed to start (their logs stay)
        self.agent_error = ""  # the last reconcile's failure, until one succeeds
        # Simulated nodes (`up --nodes N`): pods are scheduled over the live ones; None: one node.
        self.cluster: SimulatedNodes | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._shutting_down = False  # pods still starting give up instead of waiting for readiness
        self._monitor = threading.Thread(target=self._monitor_loop, name="flexsfc-monitor", daemon=True)
        self._monitor.start()

    # -- desired state ---------------------------------------------------------------------------

    def update(
        self,
        deployments: list[NfDeployment],
        specs: Mapping[str, PodSpec],
        networks: dict[tuple[str, str], NetworkAttachment],
        changed: set[str] | None = None,
    ) -> ApplyResult:
        """Take a plan's Deployments as the desired state; Deployments no longer in it go to 0.

        Replica counts follow the manifests only for the Deployments in `changed` (namespace/name;
        all when None): an apply to one namespace leaves the scale of the others as it is.
        """
        created, scaled, removed = [], [], []
        with self.lock:
            self.networks = networks
            self.wanted = {deployment_key(d.namespace, d.name) for d in deployments}
            for dep in deployments:
                key = deployment_key(dep.namespace, dep.name)
                rs = self.sets.get(key)
                if rs is None:
                    self.sets[key] = ReplicaSet(dep, specs[key], dep.replicas)
                    created.append(key)
                else:
                    desired = dep.replicas if changed is None or key in changed else rs.desired
                    if rs.desired != desired:
                        scaled.append(f"{key}: {rs.desired} -> {desired}")
                    rs.deployment, rs.pod_spec, rs.desired = dep, specs[key], desired
            for key, rs in self.sets.items():
                if key not in self.wanted and rs.desired:
                    rs.desired = 0
                    removed.append(key)
        return ApplyResult(tuple(created), tuple(scaled), tuple(removed))

    def find(self, name: str, namespace: str | None = None) -> list[ReplicaSet]:
        """Replica sets of Deployment `name` ("namespace/name" too), else of network function `name`.

        In `namespace` when given; more than one means the name is ambiguous across namespaces.
        """
        ns, slash, bare = name.rpartition("/")
        if slash:
            if namespace not in (None, ns):
                return []
            name, namespace = bare, ns
        with self.lock:
            pool = [rs for rs in self.sets.values() if namespace in (None, rs.namespace)]
        by_name = [rs for rs in pool if rs.name == name]
        return by_name or [rs for rs in pool if rs.deployment.nf == name]

    def pods(self) -> list[Pod]:
        with self.lock:
            return [p for rs in self.sets.values() for p in rs.pods.values()]

    def summary(self) -> list[DeploymentStatus]:
        with self.lock:
            return [rs.status() for rs in self.sets.values()]

    def first_error(self) -> str:
        with self.lock:
            if self.agent_error:
                return f"data plane: {self.agent_error}"
            return next((f"{rs.key}: {rs.last_error}" for rs in self.sets.values() if rs.last_error), "")

    # -- reconciling pods with the desired state -------------------------------------------------

    def reconcile(self) -> None:
        now = time.monotonic()
        with self.lock:
            for rs in list(self.sets.values()):
                live = rs.live()
                if len(live) < rs.desired and now >= rs.retry_at:
                    for _ in range(rs.desired - len(live)):
                        self._spawn(self._start_pod, self._new_pod(rs), rs)
                elif len(live) > rs.desired:
                    # Kubernetes deletes not-ready pods first, then the newest; pods still starting
                    # are left to finish and considered on the next pass.
                    running = sorted(
                        (p for p in live if p.phase is ReplicaPhase.RUNNING),
                        key=lambda p: p.times.running,
                        reverse=True,
                    )
                    for pod in running[: len(live) - rs.desired]:
                        pod.phase = ReplicaPhase.TERMINATING
                        pod.times.terminating = time.time()
                        self._spawn(self._terminate_pod, pod, rs)
                if rs.desired == 0 and not rs.pods and rs.key not in self.wanted:
                    del self.sets[rs.key]

    def stop(self, timeout: float) -> list[str]:
        """Terminate every pod gracefully, stop watching; returns what the orphans' clean-up failed."""
        with self.lock:
            self._shutting_down = True
            for rs in self.sets.values():
                rs.desired = 0
        deadline = time.monotonic() + timeout
        while self.pods() and time.monotonic() < deadline:
            self.reconcile()
            self._join_threads(timeout=max(0.0, deadline - time.monotonic()))
            time.sleep(0.02)
        self._stopping.set()
        self._monitor.join(timeout=2)
        return [error for orphan in self.orphans for error in cleanup_pod_state(orphan, self.node_file)]

    def sync(self, reason: str) -> ReconcileReport | None:
        """Reconcile the data plane with the agent's picture now; a failure is kept, not raised."""
        try:
            report = self.agent.sync(reason)
            self.agent_error = ""
            return report
        except ReconcileError as exc:
            self.agent_error = str(exc)
            self.observer.event(f"{reason}: {exc}", error=True)
            return exc.report

    def _pod_name(self, deployment: str) -> str:
        """<deployment>-<6 hex digits>, unique in the runtime (all namespaces, failed pods too)."""
        with self.lock:
            taken = {p.name for p in self.pods()} | {p.name for p in (*self.failed, *self.orphans)}
        while True:
            name = f"{deployment}-{secrets.token_hex(3)}"
            if name not in taken:
                return name

    def _schedule(self, rs: ReplicaSet) -> SimNode | None:
        """The node for a new pod of `rs`, as the default scheduler spreads a Deployment: fewest
        live pods of that Deployment, then fewest live pods, then node order. None: one node."""
        if self.cluster is None:
            return None
        live = self.cluster.live()
        if not live:
            raise RuntimeError("no node left to schedule a pod on")
        pods = [p for p in self.pods() if p.phase in (ReplicaPhase.PENDING, ReplicaPhase.RUNNING)]
        return min(
            live,
            key=lambda n: (
                sum(1 for p in rs.live() if p.node == n.name),
                sum(1 for p in pods if p.node == n.name),
                n.index,
            ),
        )

    def _node_file(self, pod: Pod) -> str:
        if self.cluster is not None and pod.node in self.cluster.all:
            return self.cluster.all[pod.node].node_file
        return self.node_file

    def _new_pod(self, rs: ReplicaSet) -> Pod:
        dep = rs.deployment
        name = self._pod_name(dep.name)
        node = self._schedule(rs)
        attachments = []
        for sel in dep.networks:
            nad = self.networks[(sel.namespace or dep.namespace, sel.network)]
            if node is None:
                state_dir, pin_dir = str(self.config.cni_state_dir), self.config.pin_dir
                config = {**nad.config, "stateDir": state_dir, "pinDir": pin_dir}
            else:
                # Packets may cross the VXLAN underlay: NF interfaces leave room for its overhead
                # (a NAD's own smaller `mtu` stays; a larger one is refused by Runtime._check).
                config = {**nad.config, "stateDir": node.cni_state_dir, "pinDir": node.pin_dir}
                config.setdefault("mtu", NF_MTU)
            attachments.append(Attachment(ifname=sel.interface, network=sel.network, config=config))
        pod = Pod(
            name=name,
            uid=Pod.new_uid(),
            namespace=dep.namespace,
            deployment=dep.name,
            nf=dep.nf,
            netns=self.config.netns_name(dep.namespace, name),
            spec=rs.pod_spec,
            attachments=attachments,
            log_path=str(self.config.log_path(dep.namespace, name)),
            workdir=str(self.config.workdir(dep.namespace, name)),
            node=node.name if node is not None else "",
            node_netns=node.netns if node is not None else "",
        )
        rs.pods[pod.uid] = pod
        return pod

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self.lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _join_threads(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                alive = [t for t in self._threads if t.is_alive()]
            if not alive:
                return
            alive[0].join(timeout=max(0.0, deadline - time.monotonic()))

    # -- one pod's lifecycle (each in its own thread) --------------------------------------------
