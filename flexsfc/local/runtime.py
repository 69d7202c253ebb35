"""The embedded runtime: replica sets of local pods, wired to the node agent's reconciler.

One `Runtime` owns one data plane (its own pin directory), the agent loop and every replica set. It
validates requests and hands them on: the replica sets and pod lifecycles to
flexsfc.local.replicasets, what it tells about itself (events, reaction times, status, sessions) to
flexsfc.local.observe, and its state file to flexsfc.local.state. The supervisor process
(flexsfc.local.supervisor) wraps a Runtime with a control socket; tests and benchmarks may also drive
a Runtime in-process.

The plan is kept per namespace (flexsfc.local.manifests, flexsfc.local.plans): an apply replaces
the namespaces its objects are in. With simulated nodes (`up --nodes N`) the nodes' agents write their
data planes, and flexsfc.local.clusterview reads them for the status and the sessions. A Runtime
given the state of one whose supervisor died (`adopt`) takes over its pods and its pinned data plane
without restarting or moving anything.
"""

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable

from flexsfc.agent.locked import LockedDataplane
from flexsfc.agent.loop import AgentLoop
from flexsfc.agent.reconciler import ReconcileReport
from flexsfc.agent.types import ReplicaPhase, dataplane_name
from flexsfc.dataplane.api import DataplaneAPI
from flexsfc.local import manifests
from flexsfc.local.cluster import ClusterAgent
from flexsfc.local.clusterview import ClusterView
from flexsfc.local.config import RuntimeConfig
from flexsfc.local.node import LocalCniAgent
from flexsfc.local.nodes import NodeError, SimulatedNodes
from flexsfc.local.observe import STATUS_SESSION_LIMIT, Observer
from flexsfc.local.plans import (
    RuntimeRequestError,
    check_plan,
    manifest_error,
    merge_plans,
    plan_namespaces,
    plan_part,
)
from flexsfc.local.pod import Pod, remove_sandbox, signal_group
from flexsfc.local.replicasets import READY_TIMEOUT_SECONDS, ReplicaSet, ReplicaSets, deployment_key
from flexsfc.local.state import DesiredReplicas, RuntimeState, read_state, write_state
from flexsfc.local.status import (
    ApplyResult,
    DeploymentStatus,
    PodStatus,
    Reaction,
    RuntimeEvent,
    RuntimeStatus,
    ScaleResult,
    SessionRecord,
)
from flexsfc.model.errors import ManifestError
from flexsfc.model.types import Plan

__all__ = ["READY_TIMEOUT_SECONDS", "ReplicaSet", "Runtime", "RuntimeRequestError", "read_state"]

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_SECONDS = 180.0
STATE_REACTIONS = 200  # the newest ones the state file keeps


def _with_remote_picks(pod: PodStatus, picks: int) -> PodStatus:
    if not picks or pod.counters is None:
        return pod
    counters = dataclasses.replace(pod.counters, sessions_created=pod.counters.sessions_created + picks)
    return pod.with_counters(counters)


class Runtime:
    def __init__(
        self,
        config: RuntimeConfig,
        dataplane_factory: Callable[[str], DataplaneAPI] | None = None,
        *,
        adopt: RuntimeState | None = None,
        serve_cni: bool = True,
    ) -> None:
        self.config = config
        config.root.mkdir(parents=True, exist_ok=True)
        config.logs_dir.mkdir(parents=True, exist_ok=True)
        config.cni_state_dir.mkdir(parents=True, exist_ok=True)
        if dataplane_factory is None:
            from flexsfc.dataplane.facade import Dataplane

            def dataplane_factory(pin_dir: str) -> DataplaneAPI:
                # The supervisor is the node's writer: it upgrades a pinned program of another version.
                return Dataplane(pin_dir, upgrade=True)

        # Simulated nodes (`up --nodes N`): each node's agent process owns that node's data plane;
        # this process pushes them the picture and reads their pins for the status.
        self.nodes: SimulatedNodes | None = None
        self.cluster_view: ClusterView | None = None
        self._read_lock = threading.Lock()  # a refresh and the reads after it, one status at a time
        self.agent: AgentLoop | ClusterAgent
        if config.nodes > 1:
            if adopt is not None:
                raise RuntimeRequestError(
                    f"cannot adopt the {config.nodes}-node runtime in {config.state_dir} (adoption is "
                    "for one node only); `flexsfc down` removes it"
                )
            self.cluster_view = ClusterView.start(config, self._read_lock)
            self.nodes = self.cluster_view.nodes
            self.dataplane = self.cluster_view.locked[self.nodes.live()[0].name]
            self.agent = ClusterAgent(self.nodes, on_report=self._on_report)
            serve_cni = False  # every node's agent serves its own
        else:
            self.dataplane = LockedDataplane(dataplane_factory(config.pin_dir))
            self.agent = AgentLoop(self.dataplane, on_report=self._on_report)
            self.agent.start_sweeper()  # idle sessions; the reconciles run in the runtime's threads
        self.plan: Plan | None = None  # every namespace's part, merged
        self._parts: dict[str, Plan] = {}  # namespace -> what runs there
        self._sources: dict[str, str] = {}  # namespace -> the manifests it was applied from
        self._lock = threading.RLock()
        self.observer = Observer(self.dataplane)
        if self.cluster_view is not None:
            self.observer.node_reader = self.cluster_view.fresh_reader
        self.replica_sets = ReplicaSets(config, self.agent, self.observer, self.persist, self._lock)
        self.replica_sets.cluster = self.nodes
        # This process is the node's agent: the pods' CNI calls come back to it through the shim,
        # so it is the only writer of the data plane (the DEL's leaving mark included). Served
        # before adoption: the DELs the shim queued while no supervisor ran are replayed first, and
        # adoption's follow-ups (a pod caught halfway is removed) need the socket. `serve_cni=False`
        # is for callers that never start a pod (unit tests over an in-memory data plane).
        self.cni: LocalCniAgent | None = LocalCniAgent(config) if serve_cni else None
        try:
            if self.cni is not None:
                self.cni.start()
            if adopt is not None:
                self._adopt(adopt)
        except BaseException:
            if self.cni is not None:
                self.cni.stop()
            raise
        self.persist()

    @property
    def source(self) -> str:
        """Where the manifests came from: the path, or `namespace: path` per namespace."""
        sources = dict(sorted(self._sources.items()))
        if len(set(sources.values())) <= 1 and len(sources) <= 1:
            return next(iter(sources.values()), "")
        return "; ".join(f"{ns}: {path}" for ns, path in sources.items())

    @property
    def sets(self) -> dict[str, ReplicaSet]:
        return self.replica_sets.sets

    @property
    def reactions(self) -> list[Reaction]:
        return self.observer.reactions

    @property
    def events(self) -> list[RuntimeEvent]:
        return self.observer.events

    @property
    def agent_error(self) -> str:
        return self.replica_sets.agent_error

    # -- requests ------------------------------------------------------------------------------

    def apply_manifests(self, path: str, namespace: str | None = None) -> ApplyResult:
        """Apply the manifests at `path` (moved to `namespace` when given), and keep them for adoption."""
        documents, issues = manifests.load_in_namespace(path, namespace)
        try:
            plan = manifests.plan_of(documents, issues)
        except ManifestError as exc:
            raise manifest_error(exc) from None
        return self.apply(plan, path, documents=manifests.by_namespace(documents))

    def apply(
        self, plan: Plan, source: str, *, documents: dict[str, list[dict[str, object]]] | None = None
    ) -> ApplyResult:
        """Make the runtime run `plan` in its namespaces (idempotent); other namespaces stay as they are.

        Validates every pod template before acting. `documents` (namespace -> objects) are saved
        for a supervisor that adopts this runtime later.
        """
        namespaces = plan_namespaces(plan)
        with self._lock:
            parts = {ns: p for ns, p in self._parts.items() if ns not in namespaces}
        parts |= {ns: plan_part(plan, ns) for ns in namespaces}
        merged = merge_plans(parts[ns] for ns in sorted(parts))
        specs, networks = check_plan(merged, self.nodes is not None)
        with self._lock:
            self._parts = parts
            self._sources = {ns: s for ns, s in self._sources.items() if ns in parts}
            self._sources |= dict.fromkeys(namespaces, source)
            self.plan = merged
            self._tell_agent(merged)
            changed = {deployment_key(d.namespace, d.name) for d in plan.deployments}
            changes = self.replica_sets.update(merged.deployments, specs, networks, changed)
            for ns, objects in (documents or {}).items():
                manifests.save(self.config, ns, source, objects)
        self.replica_sets.sync("apply")
        self.replica_sets.reconcile()
        self.persist()
        return changes

    def _tell_agent(self, plan: Plan) -> None:
        # Chains are namespaced: the same chain name may run in several namespaces.
        settings = {(c.namespace, c.name): c.settings for c in plan.chains}
        self.agent.set_cross_connections(plan.cross_connections, settings)

    def find(self, name: str, namespace: str | None = None) -> ReplicaSet:
        """The one replica set `name` (Deployment, namespace/Deployment or NF) means; else why not."""
        matches = self.replica_sets.find(name, namespace)
        if len(matches) == 1:
            return matches[0]
        if matches:
            where = ", ".join(sorted(rs.namespace for rs in matches))
            raise RuntimeRequestError(
                f"{name!r} runs in several namespaces ({where}); name one: -n NAMESPACE or NAMESPACE/{name}"
            )
        known = ", ".join(sorted(self.sets)) or "none"
        inside = f" in namespace {namespace!r}" if namespace else ""
        raise RuntimeRequestError(
            f"no Deployment or network function named {name!r}{inside} (known: {known})"
        )

    def scale(self, name: str, replicas: int, namespace: str | None = None) -> ScaleResult:
        if replicas < 0:
            raise RuntimeRequestError(f"replicas must be >= 0, got {replicas}; 0 stops every replica")
        with self._lock:
            rs = self.find(name, namespace)
            before, rs.desired = rs.desired, replicas
            rs.last_error, rs.failures, rs.retry_at = "", 0, 0.0
        self.event(f"scale {rs.key} {before} -> {replicas}")
        self.replica_sets.reconcile()
        self.persist()
        return ScaleResult(rs.name, before, replicas, rs.namespace)

    # -- adoption ------------------------------------------------------------------------------

    def _adopt(self, state: RuntimeState) -> None:
        """Take over the runtime a dead supervisor left: its plan, replica counts, pods, orphans.

        The pinned data plane was reopened as it is; the agent is told the same picture the old
        supervisor had and reconciles once before anything else happens, which changes nothing for
        running pods: their traffic keeps flowing through the handover.
        """
        documents, sources = manifests.load_saved(self.config)
        if state.pods and not documents:
            raise RuntimeRequestError(
                f"cannot adopt the runtime in {self.config.state_dir}: its state file has pods but no "
                "saved manifests (written by an older flexsfc?); `flexsfc down` removes it"
            )
        try:
            plan = manifests.plan_of(documents)
        except ManifestError as exc:
            raise manifest_error(exc) from None
        specs, networks = check_plan(plan, self.nodes is not None)
        with self._lock:
            self._parts = {ns: plan_part(plan, ns) for ns in plan_namespaces(plan)}
            self._sources = sources
            self.plan = plan
            self._tell_agent(plan)
            desired = {key: d.desired for key, d in state.deployments.items()}
            follow_ups = self.replica_sets.adopt(plan.deployments, specs, networks, desired, state.pods)
            self.replica_sets.orphans = list(state.orphans)
            self.replica_sets.failed = list(state.failed)
            self.observer.reactions.extend(state.reactions)
        report = self.replica_sets.sync("adopted")
        running = sum(1 for p in state.pods if p.phase is ReplicaPhase.RUNNING)
        if report is not None and report.changed:
            what = [*report.xcs_created, *report.xcs_deleted, *report.sides_updated]
            what += report.neighbours_updated
            outcome = f"updated: {report.summary()} ({', '.join(what)})"
        else:
            outcome = "unchanged"
        self.event(
            f"adopted {len(state.pods)} pods ({running} running) from supervisor {state.supervisor_pid}; "
            f"data plane {outcome}",
            report,
        )
        self.replica_sets.start_follow_ups(follow_ups)
        self.replica_sets.reconcile()

    def ready(self) -> tuple[bool, str]:
        """(all replica sets at their desired number of running pods, first error seen)."""
        with self._lock:
            error = self.replica_sets.first_error()
            if error:
                return False, error
            return all(d.settled for d in self.summary()), ""

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while True:
            done, error = self.ready()
            if error:
                raise RuntimeRequestError(error)
            if done:
                # A pod turns Running before its step writes the state file: readers of that file
                # (traffic in the pods, `flexsfc exec`) must find what `ready` just counted.
                self.persist()
                return
            if time.monotonic() > deadline:
                raise RuntimeRequestError(f"not ready after {timeout:.0f}s: {self._not_ready_summary()}")
            time.sleep(0.02)

    def _not_ready_summary(self) -> str:
        return ", ".join(
            f"{d.name} {d.running}/{d.desired} running" for d in self.summary() if d.running != d.desired
        )

    def summary(self) -> list[DeploymentStatus]:
        return self.replica_sets.summary()

    def pods(self) -> list[Pod]:
        return self.replica_sets.pods()

    def shutdown(self) -> list[str]:
        """Terminate every pod (gracefully, in parallel), destroy the data plane, remove the state."""
        self.observer.collect_errors()
        orphan_errors = self.replica_sets.stop(SHUTDOWN_TIMEOUT_SECONDS)
        errors = [*self.observer.errors(), *orphan_errors]
        if self.cni is not None:
            self.cni.stop()  # every pod's DEL is done: nothing calls the socket any more
        self.agent.stop()
        if self.cluster_view is not None:
            self.cluster_view.close()
            errors += self.cluster_view.nodes.remove()  # agents, node namespaces, fabric, the nodes' pins
        else:
            try:
                self.dataplane.destroy()
            except Exception as exc:
                errors.append(f"data plane destroy: {exc}; removed the pins")
        # Every pod's veths are gone (and their filters with them): only pins could remain.
        shutil.rmtree(self.config.pin_dir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.config.root)
        return errors

    # -- observation ---------------------------------------------------------------------------

    def _on_report(self, reason: str, report: ReconcileReport) -> None:
        if report.changed:
            log.debug("agent [%s]: %s", reason, report.summary())

    def event(self, message: str, report: ReconcileReport | None = None, *, error: bool = False) -> None:
        self.observer.event(message, report, error=error)

    def status(self) -> RuntimeStatus:
        """Chains, cross-connections, deployments and pods with per-replica counters and sessions."""
        view = self.cluster_view
        with self._read_lock:
            if view is not None:
                view.refresh()
            reading = self.observer.read_dataplane()
            # Ifindexes are per node namespace: a pod's counters come from its own node's data plane.
            readings = view.readings() if view is not None else {}
            remote_picks = view.remote_picks(readings) if view is not None else Counter[str]()
        with self._lock:
            plan = self.plan
            pods = [readings.get(p.node, reading).pod_status(p) for p in self.pods()]
            deployments = self.summary()
        pods = [_with_remote_picks(p, remote_picks.get(p.uid, 0)) for p in pods]
        status = self.observer.status(reading, plan, self.source, pods, deployments)
        if view is not None:
            status = dataclasses.replace(status, nodes=view.node_status(pods))
        return status if self.cni is None else dataclasses.replace(status, cni=self.cni.status())

    def fail_node(self, name: str) -> dict[str, object]:
        """`flexsfc node fail`: the node disappears abruptly (agent SIGKILLed, its namespace and its
        pods' namespaces deleted, under traffic); the other nodes are told, and the replica sets
        replace the lost replicas on the nodes that remain."""
        view = self.cluster_view
        if view is None:
            raise RuntimeRequestError("this runtime has one node; `flexsfc up --nodes N` simulates several")
        try:
            view.nodes.fail(name)
        except NodeError as exc:
            raise RuntimeRequestError(str(exc)) from None
        with self._read_lock:  # no status read is using its maps while they close
            gone = view.drop(name)
            if gone is self.dataplane and view.locked:
                # Cross-connection figures are read from one node: another one from now on.
                self.dataplane = self.observer.dataplane = next(iter(view.locked.values()))
            view.close_reader(name)
        lost = []
        with self._lock:
            for rs in self.sets.values():
                for pod in [p for p in rs.pods.values() if p.node == name]:
                    pod.phase = ReplicaPhase.GONE
                    rs.pods.pop(pod.uid, None)
                    lost.append(pod)
        for pod in lost:
            # Gone with the node: no CNI DEL (its agent and host veths are gone), no drain.
            for info in pod.processes:
                signal_group(info, signal.SIGKILL)
            remove_sandbox(pod.netns)
            self.agent.remove_replica(pod.uid)
        report = self.replica_sets.sync(f"node {name} failed")
        self.event(f"node {name} failed: {len(lost)} pods lost ({', '.join(p.name for p in lost)})", report)
        self.replica_sets.reconcile()
        self.persist()
        return {"node": name, "lost": [p.name for p in lost]}

    def sessions(self, xc: str | None = None, limit: int = STATUS_SESSION_LIMIT) -> list[SessionRecord]:
        """Session table entries with the pods on both ends (what the demo's flow mapping reads).

        `xc` is a data-plane name ("namespace/name"); a bare cross-connection name is taken as the
        one cross-connection of that name, when only one namespace has it.
        """
        if xc is not None and "/" not in xc:
            with self._lock:
                named = [x for x in (self.plan.cross_connections if self.plan else []) if x.name == xc]
            if len(named) == 1:
                xc = dataplane_name(named[0])
        if self.cluster_view is None:
            return self.observer.sessions(self.pods(), xc, limit)
        return self.cluster_view.sessions(self.pods(), xc, limit)

    # -- state on disk -------------------------------------------------------------------------

    def persist(self) -> None:
        """Write the state file atomically: `status` and `down` read it from other shells."""
        with self._lock:
            sets = self.replica_sets.sets
            state = RuntimeState(
                supervisor_pid=os.getpid(),
                source=self.source,
                config=self.config,
                deployments={
                    key: DesiredReplicas(rs.deployment.nf, rs.desired, rs.last_error)
                    for key, rs in sets.items()
                },
                pods=tuple(p.status() for rs in sets.values() for p in rs.pods.values()),
                orphans=tuple(self.replica_sets.orphans),
                failed=tuple(self.replica_sets.failed),
                reactions=tuple(self.observer.reactions[-STATE_REACTIONS:]),
            )
            write_state(self.config, state)
