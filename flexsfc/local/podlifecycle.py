"""The kubelet's part for one pod: started, watched, terminated, removed (each in its own thread).

Each step updates the agent's picture and reconciles at once (in the pod's own thread), so the data
plane follows the pods with the shortest delay. Steps are those of docs/local-runtime.md
("Lifecycle, as in Kubernetes"); every step is recorded in the state file through `persist`.
PodLifecycle holds the steps; ReplicaSets (flexsfc.local.replicasets) owns the state they use.
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from flexsfc.agent.reconciler import ReconcileReport
from flexsfc.agent.types import ReplicaPhase
from flexsfc.local.cluster import ReplicaAgent
from flexsfc.local.config import RuntimeConfig
from flexsfc.local.observe import Observer
from flexsfc.local.pod import PROBE_INTERVAL_SECONDS, Pod, PodError
from flexsfc.local.replicaset import (
    FAILED_PODS_KEPT,
    MAX_BACKOFF_SECONDS,
    MONITOR_INTERVAL_SECONDS,
    READY_TIMEOUT_SECONDS,
    ReplicaSet,
)
from flexsfc.local.status import PodStatus
from flexsfc.model.records import AttachmentRecord

log = logging.getLogger("flexsfc.local.replicasets")  # the name it had before the split


def _load_record(config: dict[str, Any], container_id: str, ifname: str) -> AttachmentRecord | None:
    from flexsfc.cni.state import record_for

    return record_for(container_id, ifname, state_dir=config["stateDir"])


class PodLifecycle:
    """The lifecycle steps of ReplicaSets' pods; the attributes are set up by ReplicaSets."""

    config: RuntimeConfig
    node_file: str
    agent: ReplicaAgent
    observer: Observer
    persist: Callable[[], None]
    lock: threading.RLock
    sets: dict[str, ReplicaSet]
    orphans: list[PodStatus]
    failed: list[PodStatus]
    _stopping: threading.Event
    _shutting_down: bool

    def sync(self, reason: str) -> ReconcileReport | None:
        raise NotImplementedError

    def reconcile(self) -> None:
        raise NotImplementedError

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        raise NotImplementedError

    def _node_file(self, pod: Pod) -> str:
        raise NotImplementedError

    def _start_pod(self, pod: Pod, rs: ReplicaSet) -> None:
        try:
            pod.create_sandbox()
            self.persist()
            pod.add_networks(_load_record, self._node_file(pod))
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
            errors = pod.delete_networks(self._node_file(pod))
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
