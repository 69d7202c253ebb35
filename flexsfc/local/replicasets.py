"""Replica sets and the kubelet's part for one machine: pods started, watched, terminated, removed.

Each pod lifecycle step updates the agent's picture and reconciles at once (in the pod's own thread),
so the data plane follows the pods with the shortest delay. Steps are those of docs/local-runtime.md
("Lifecycle, as in Kubernetes"); every step is recorded in the state file through `persist`.

Replica sets are keyed by namespace/name, as Deployments are: the same Deployment may run in several
namespaces. Pod names are unique in the whole runtime (the generated suffix is checked), so a pod
name alone still finds one pod; netns names carry the namespace (flexsfc.local.config).

`adopt` rebuilds the replica sets of a runtime whose supervisor died from its state file: running
pods are taken over as they are (no restart, nothing in the data plane changes), pods caught halfway
are finished: starting ones removed (the replica set replaces them), terminating ones terminated.
"""

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flexsfc.agent.loop import AgentLoop
from flexsfc.agent.reconciler import ReconcileError, ReconcileReport
from flexsfc.agent.types import ReplicaPhase
from flexsfc.local.config import RuntimeConfig
from flexsfc.local.observe import Observer
from flexsfc.local.pod import PROBE_INTERVAL_SECONDS, Attachment, Pod, PodError, cleanup_pod_state
from flexsfc.local.podspec import PodSpec
from flexsfc.local.status import ApplyResult, DeploymentStatus, PodStatus
from flexsfc.model.records import AttachmentRecord
from flexsfc.model.types import NetworkAttachment, NfDeployment

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 60.0
MONITOR_INTERVAL_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 30.0
FAILED_PODS_KEPT = 20  # pods that failed to start, kept in the state file for `flexsfc logs`

# What adoption leaves to do for a pod caught halfway: (method, pod, replica set).
FollowUp = tuple[Callable[["Pod", "ReplicaSet"], None], "Pod", "ReplicaSet"]


def deployment_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


@dataclass
class ReplicaSet:
    deployment: NfDeployment
    pod_spec: PodSpec
    desired: int
    pods: dict[str, Pod] = field(default_factory=dict)  # uid -> pod
    last_error: str = ""
    failures: int = 0
    retry_at: float = 0.0

    @property
    def name(self) -> str:
        return self.deployment.name

    @property
    def namespace(self) -> str:
        return self.deployment.namespace

    @property
    def key(self) -> str:
        return deployment_key(self.namespace, self.name)

    def live(self) -> list[Pod]:
        return [p for p in self.pods.values() if p.phase in (ReplicaPhase.PENDING, ReplicaPhase.RUNNING)]

    def count(self, phase: ReplicaPhase) -> int:
        return sum(1 for p in self.pods.values() if p.phase is phase)

    def status(self) -> DeploymentStatus:
        return DeploymentStatus(
            name=self.name,
            namespace=self.namespace,
            nf=self.deployment.nf,
            desired=self.desired,
            running=self.count(ReplicaPhase.RUNNING),
            pending=self.count(ReplicaPhase.PENDING),
            terminating=self.count(ReplicaPhase.TERMINATING),
            last_error=self.last_error,
        )


def _load_record(config: dict[str, Any], container_id: str, ifname: str) -> AttachmentRecord | None:
    from flexsfc.cni.state import record_for

    return record_for(container_id, ifname, state_dir=config["stateDir"])


class ReplicaSets:
    """Every Deployment's replica set and the threads that run its pods' lifecycles."""

    def __init__(
        self,
        config: RuntimeConfig,
        agent: AgentLoop,
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

    def _new_pod(self, rs: ReplicaSet) -> Pod:
        dep = rs.deployment
        name = self._pod_name(dep.name)
        attachments = []
        for sel in dep.networks:
            nad = self.networks[(sel.namespace or dep.namespace, sel.network)]
            config = {**nad.config, "stateDir": str(self.config.cni_state_dir), "pinDir": self.config.pin_dir}
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

    def _start_pod(self, pod: Pod, rs: ReplicaSet) -> None:
        try:
            pod.create_sandbox()
            self.persist()
            pod.add_networks(_load_record, self.node_file)
            pod.times.networked = time.time()
            self.persist()
            self.agent.upsert_replica(pod.replica())
            pod.start_containers()
            pod.times.started = time.time()
            self.persist()
            deadline = time.monotonic() + READY_TIMEOUT_SECONDS
            while not pod.is_ready():
                exited = pod.exited_container()
                if exited:
                    raise PodError(
                        f"pod {pod.name}: {exited} before it became ready; see flexsfc logs {pod.name}"
                    )
                if time.monotonic() > deadline:
                    raise PodError(
                        f"pod {pod.name}: readiness probe still failing after {READY_TIMEOUT_SECONDS:.0f}s"
                    )
                if self._shutting_down:
                    self._remove_pod(pod, rs, graceful=False)
                    return
                time.sleep(PROBE_INTERVAL_SECONDS)
            with self.lock:
                if pod.phase is not ReplicaPhase.PENDING:
                    return
                pod.phase = ReplicaPhase.RUNNING
                pod.times.running = time.time()
                rs.failures, rs.last_error = 0, ""
            self.agent.upsert_replica(pod.replica())
            report = self.sync(f"{pod.name} running")
            self.observer.event(f"{pod.name} running", report)
            self.persist()
            if self.observer.watch_first_packet(pod, report):
                self.persist()
        except Exception as exc:
            message = str(exc) if isinstance(exc, PodError) else f"pod {pod.name}: {exc}"
            log.error("%s", message)
            with self.lock:
                rs.last_error = message
                rs.failures += 1
                rs.retry_at = time.monotonic() + min(MAX_BACKOFF_SECONDS, 2.0**rs.failures)
                # The error names the pod's log: keep the pod in the state file for `flexsfc logs`,
                # written before anyone can read the error (`ready` takes this lock too).
                self.failed = [*self.failed, pod.status()][-FAILED_PODS_KEPT:]
                self.persist()
            self.observer.event(message, error=True)
            self._remove_pod(pod, rs, graceful=False)

    def _terminate_pod(self, pod: Pod, rs: ReplicaSet) -> None:
        """Graceful deletion: drain -> preStop -> SIGTERM -> grace -> SIGKILL -> gone -> CNI DEL."""
        deadline = time.monotonic() + pod.spec.grace_seconds
        self.agent.upsert_replica(pod.replica())
        report = self.sync(f"{pod.name} terminating")
        pod.times.drained = time.time()
        self.observer.reaction(
            pod, "terminating->out of table", pod.times.terminating, pod.times.drained, report
        )
        self.observer.event(f"{pod.name} terminating (drained)", report)
        self.persist()
        pod.run_pre_stop(deadline)
        self._remove_pod(pod, rs, graceful=True, deadline=deadline)

    def _remove_pod(self, pod: Pod, rs: ReplicaSet, *, graceful: bool, deadline: float | None = None) -> None:
        """Stop the containers, ports leaving (sources only), CNI DEL, sandbox removed, ports out.

        Whatever fails, the pod leaves its replica set; what could not be removed is kept as an
        orphan in the state file, so `down` tries again (also from another process).
        """
        errors: list[str] = []
        report = None
        try:
            pod.stop_containers(deadline if deadline is not None else time.monotonic())
            with self.lock:
                pod.phase = ReplicaPhase.GONE
                pod.times.gone = time.time()
            # Leaving on every side at once first: what is still inside the pod gets out while no
            # new packet goes in. Then the veths and the namespace go, then the ports.
            self.agent.upsert_replica(pod.replica())
            report = self.sync(f"{pod.name} gone")
            errors = pod.delete_networks(self.node_file)
            pod.delete_sandbox()
        except Exception as exc:
            errors.append(f"pod {pod.name}: removal failed: {exc}")
        # Whatever failed above, the replica leaves the agent's picture and its ports the data plane.
        self.agent.remove_replica(pod.uid)
        try:
            self.sync(f"{pod.name} removed")
        except Exception as exc:
            errors.append(f"pod {pod.name}: removing its ports failed: {exc}")
        for error in errors:
            self.observer.event(error, error=True)
        self.observer.event(f"{pod.name} removed ({'graceful' if graceful else 'no drain'})", report)
        with self.lock:
            rs.pods.pop(pod.uid, None)
            if errors:
                self.orphans.append(pod.status())
        self.persist()

    def _resume_termination(self, pod: Pod, rs: ReplicaSet) -> None:
        """A pod the previous supervisor was terminating: drained if it was not yet, then removed.

        The grace period still counts from when termination began. The preStop hook runs again:
        the supervisor that ran it is gone with no record of how far it got, and Kubernetes, too,
        delivers hooks at least once.
        """
        deadline = time.monotonic() + max(0.0, pod.times.terminating + pod.spec.grace_seconds - time.time())
        if not pod.times.drained:
            report = self.sync(f"{pod.name} terminating")
            pod.times.drained = time.time()
            self.observer.event(f"{pod.name} terminating (drained)", report)
            self.persist()
        pod.run_pre_stop(deadline)
        self._remove_pod(pod, rs, graceful=True, deadline=deadline)

    # -- adoption ------------------------------------------------------------------------------

    def adopt(
        self,
        deployments: list[NfDeployment],
        specs: Mapping[str, PodSpec],
        networks: dict[tuple[str, str], NetworkAttachment],
        desired: Mapping[str, int],
        pods: Iterable[PodStatus],
    ) -> list[FollowUp]:
        """Rebuild the replica sets and take over `pods` (the state file's); tell the agent about them.

        Returns what is left to do for pods caught halfway, for `start_follow_ups` once the data
        plane has been reconciled with the adopted picture.
        """
        follow_ups: list[FollowUp] = []
        with self.lock:
            self.networks = networks
            self.wanted = {deployment_key(d.namespace, d.name) for d in deployments}
            for dep in deployments:
                key = deployment_key(dep.namespace, dep.name)
                self.sets[key] = ReplicaSet(dep, specs[key], desired.get(key, dep.replicas))
            for status in pods:
                key = deployment_key(status.namespace, status.deployment)
                rs = self.sets.get(key)
                if rs is None:
                    # Its Deployment was being removed: no pod template left, so no hook and no
                    # grace period either (docs/local-runtime.md, "Crash recovery").
                    dep = NfDeployment(status.deployment, status.namespace, status.nf, 0, ())
                    rs = self.sets[key] = ReplicaSet(dep, PodSpec(containers=(), grace_seconds=0.0), 0)
                pod = Pod.adopt(status, rs.pod_spec)
                rs.pods[pod.uid] = pod
                self.agent.upsert_replica(pod.replica())
                if pod.phase is ReplicaPhase.TERMINATING:
                    follow_ups.append((self._resume_termination, pod, rs))
                elif pod.phase is not ReplicaPhase.RUNNING:
                    # Starting (how far is unknown) or already being removed: remove without drain;
                    # its replica set starts a replacement.
                    follow_ups.append((self._remove_without_drain, pod, rs))
                # A running pod whose container died meanwhile is the monitor's: failed, replaced.
        return follow_ups

    def start_follow_ups(self, follow_ups: list[FollowUp]) -> None:
        for method, pod, rs in follow_ups:
            self._spawn(method, pod, rs)

    def _remove_without_drain(self, pod: Pod, rs: ReplicaSet) -> None:
        self._remove_pod(pod, rs, graceful=False)
        self.reconcile()

    def _fail_pod(self, pod: Pod, rs: ReplicaSet, reason: str) -> None:
        self.observer.event(f"{pod.name} failed: {reason}; removing without drain", error=False)
        self._remove_pod(pod, rs, graceful=False)
        self.reconcile()

    def _monitor_loop(self) -> None:
        """A container that exits fails its running pod: removed without drain, then replaced."""
        while not self._stopping.wait(MONITOR_INTERVAL_SECONDS):
            try:
                with self.lock:
                    failed = []
                    for rs in self.sets.values():
                        for pod in rs.pods.values():
                            if pod.phase is ReplicaPhase.RUNNING:
                                exited = pod.exited_container()
                                if exited:
                                    pod.phase = ReplicaPhase.GONE
                                    failed.append((pod, rs, exited))
                for pod, rs, reason in failed:
                    self._spawn(self._fail_pod, pod, rs, reason)
                self.reconcile()
            except Exception:
                log.exception("monitor pass failed")
