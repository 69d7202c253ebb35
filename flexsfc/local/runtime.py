"""The embedded runtime: replica sets of local pods, wired to the node agent's reconciler.

One `Runtime` owns one data plane (its own pin directory), the agent loop and every replica set. It
validates requests and hands them on: the replica sets and pod lifecycles to
flexsfc.local.replicasets, what it tells about itself (events, reaction times, status, sessions) to
flexsfc.local.observe, and its state file to flexsfc.local.state. The supervisor process
(flexsfc.local.supervisor) wraps a Runtime with a control socket; tests and benchmarks may also drive
a Runtime in-process.

The plan is kept per namespace (flexsfc.local.manifests): an apply replaces the namespaces its
objects are in. A Runtime given the state of one whose supervisor died (`adopt`) takes over its pods
and its pinned data plane without restarting or moving anything.
"""

import contextlib
import dataclasses
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable

from flexsfc.agent.locked import LockedDataplane
from flexsfc.agent.loop import AgentLoop
from flexsfc.agent.reconciler import ReconcileReport
from flexsfc.agent.types import ReplicaPhase, dataplane_name
from flexsfc.dataplane.api import DataplaneAPI
from flexsfc.local import manifests
from flexsfc.local.config import RuntimeConfig
from flexsfc.local.node import LocalCniAgent
from flexsfc.local.observe import STATUS_SESSION_LIMIT, Observer
from flexsfc.local.pod import Pod
from flexsfc.local.podspec import PodSpec, parse_pod_template
from flexsfc.local.replicasets import READY_TIMEOUT_SECONDS, ReplicaSet, ReplicaSets, deployment_key
from flexsfc.local.state import DesiredReplicas, RuntimeState, read_state, write_state
from flexsfc.local.status import (
    ApplyResult,
    DeploymentStatus,
    Reaction,
    RuntimeEvent,
    RuntimeStatus,
    ScaleResult,
    SessionRecord,
)
from flexsfc.model.errors import ManifestError
from flexsfc.model.types import NetworkAttachment, Plan

__all__ = ["READY_TIMEOUT_SECONDS", "ReplicaSet", "Runtime", "RuntimeRequestError", "read_state"]

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_SECONDS = 180.0
STATE_REACTIONS = 200  # the newest ones the state file keeps


class RuntimeRequestError(RuntimeError):
    """A request the runtime refuses (unknown NF, bad manifests) or a failure it reports."""


def plan_namespaces(plan: Plan) -> set[str]:
    return (
        {c.namespace for c in plan.chains}
        | {d.namespace for d in plan.deployments}
        | {a.namespace for a in plan.attachments}
        | {x.namespace for x in plan.cross_connections}
    )


def plan_part(plan: Plan, namespace: str) -> Plan:
    """The objects of `plan` in `namespace`."""
    return Plan(
        chains=[c for c in plan.chains if c.namespace == namespace],
        cross_connections=[x for x in plan.cross_connections if x.namespace == namespace],
        deployments=[d for d in plan.deployments if d.namespace == namespace],
        attachments=[a for a in plan.attachments if a.namespace == namespace],
    )


def merge_plans(parts: Iterable[Plan]) -> Plan:
    merged = Plan(chains=[], cross_connections=[], deployments=[], attachments=[])
    for part in parts:
        merged.chains += part.chains
        merged.cross_connections += part.cross_connections
        merged.deployments += part.deployments
        merged.attachments += part.attachments
    return merged


def _manifest_error(exc: ManifestError) -> RuntimeRequestError:
    errors = [str(issue) for issue in exc.errors]
    return RuntimeRequestError(f"{len(errors)} error(s) in the manifests: " + "; ".join(errors))


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

        self.dataplane: DataplaneAPI = LockedDataplane(dataplane_factory(config.pin_dir))
        self.agent = AgentLoop(self.dataplane, on_report=self._on_report)
        self.agent.start_sweeper()  # idle sessions; the reconciles run in the runtime's threads
        self.plan: Plan | None = None  # every namespace's part, merged
        self._parts: dict[str, Plan] = {}  # namespace -> what runs there
        self._sources: dict[str, str] = {}  # namespace -> the manifests it was applied from
        self._lock = threading.RLock()
        self.observer = Observer(self.dataplane)
        self.replica_sets = ReplicaSets(config, self.agent, self.observer, self.persist, self._lock)
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
            raise _manifest_error(exc) from None
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
        specs, networks = self._check(merged)
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

    def _check(self, plan: Plan) -> tuple[dict[str, PodSpec], dict[tuple[str, str], NetworkAttachment]]:
        """Pod templates parsed, every network selection resolved; raises what is wrong."""
        specs = {
            deployment_key(d.namespace, d.name): parse_pod_template(
                d.pod_template, f"Deployment {d.namespace}/{d.name}"
            )
            for d in plan.deployments
        }
        networks = {(a.namespace, a.name): a for a in plan.attachments}
        for dep in plan.deployments:
            for sel in dep.networks:
                if (sel.namespace or dep.namespace, sel.network) not in networks:
                    raise RuntimeRequestError(
                        f"Deployment {dep.namespace}/{dep.name}: network {sel.network} has no "
                        "NetworkAttachmentDefinition in the manifests; add it"
                    )
        return specs, networks

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
            raise _manifest_error(exc) from None
        specs, networks = self._check(plan)
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
        reading = self.observer.read_dataplane()
        with self._lock:
            plan = self.plan
            pods = [reading.pod_status(p) for p in self.pods()]
            deployments = self.summary()
        status = self.observer.status(reading, plan, self.source, pods, deployments)
        return status if self.cni is None else dataclasses.replace(status, cni=self.cni.status())

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
        return self.observer.sessions(self.pods(), xc, limit)

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
