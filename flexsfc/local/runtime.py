"""The embedded runtime: replica sets of local pods, wired to the node agent's reconciler.

One `Runtime` owns one data plane (its own pin directory), the agent loop and every replica set. Each
pod lifecycle change updates the agent's picture and reconciles at once, so the data plane follows the
pods with the shortest delay. The supervisor process (flexsfc.local.supervisor) wraps a Runtime with a
control socket; tests and benchmarks may also drive a Runtime in-process.
"""

import contextlib
import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flexsfc.agent.locked import LockedDataplane
from flexsfc.agent.loop import AgentLoop
from flexsfc.agent.reconciler import ReconcileError, ReconcileReport
from flexsfc.agent.types import ReplicaPhase
from flexsfc.dataplane.api import DataplaneAPI, ReplicaState
from flexsfc.local.config import RuntimeConfig
from flexsfc.local.pod import PROBE_INTERVAL_SECONDS, Attachment, Pod, PodError, cleanup_pod_state
from flexsfc.local.podspec import PodSpec, parse_pod_template
from flexsfc.model.records import AttachmentRecord
from flexsfc.model.types import NetworkAttachment, NfDeployment, Plan, Side

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 60.0
MONITOR_INTERVAL_SECONDS = 0.05
FIRST_PACKET_WATCH_SECONDS = 10.0
FIRST_PACKET_POLL_SECONDS = 0.001  # for the first FIRST_PACKET_FAST_SECONDS, then 10x slower
FIRST_PACKET_FAST_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
STATUS_SESSION_LIMIT = 200_000


class RuntimeRequestError(RuntimeError):
    """A request the runtime refuses (unknown NF, bad manifests) or a failure it reports."""


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

    def live(self) -> list[Pod]:
        return [p for p in self.pods.values() if p.phase in (ReplicaPhase.PENDING, ReplicaPhase.RUNNING)]

    def count(self, phase: ReplicaPhase) -> int:
        return sum(1 for p in self.pods.values() if p.phase is phase)


def _load_record(config: dict[str, Any], container_id: str, ifname: str) -> AttachmentRecord | None:
    from flexsfc.cni.state import record_for

    return record_for(container_id, ifname, state_dir=config["stateDir"])


class Runtime:
    def __init__(
        self,
        config: RuntimeConfig,
        dataplane_factory: Callable[[str], DataplaneAPI] | None = None,
    ) -> None:
        self.config = config
        config.root.mkdir(parents=True, exist_ok=True)
        config.logs_dir.mkdir(parents=True, exist_ok=True)
        config.cni_state_dir.mkdir(parents=True, exist_ok=True)
        if dataplane_factory is None:
            from flexsfc.dataplane.facade import Dataplane

            dataplane_factory = Dataplane
        self.dataplane: DataplaneAPI = LockedDataplane(dataplane_factory(config.pin_dir))  # type: ignore[assignment]
        self.agent = AgentLoop(self.dataplane, on_report=self._on_report)
        self.plan: Plan | None = None
        self.source = ""
        self.sets: dict[str, ReplicaSet] = {}
        self.reactions: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self._error_sink: list[str] | None = None  # errors during shutdown, reported by `down`
        self.agent_error = ""  # the last reconcile's failure, until one succeeds
        self.orphans: list[dict[str, Any]] = []  # pods whose removal failed: retried by shutdown/down
        self._lock = threading.RLock()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._shutting_down = False  # pods still starting give up instead of waiting for readiness
        self._monitor = threading.Thread(target=self._monitor_loop, name="flexsfc-monitor", daemon=True)
        self._monitor.start()
        self.persist()

    # -- requests ------------------------------------------------------------------------------

    def apply(self, plan: Plan, source: str) -> dict[str, Any]:
        """Make the runtime run `plan` (idempotent). Validates every pod template before acting."""
        specs = {
            d.name: parse_pod_template(d.pod_template, f"Deployment {d.namespace}/{d.name}")
            for d in plan.deployments
        }
        names = [d.name for d in plan.deployments]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise RuntimeRequestError(
                f"Deployments {', '.join(duplicates)} exist in several namespaces; the local runtime "
                "names pods after their Deployment: rename one of them"
            )
        attachments = {(a.namespace, a.name): a for a in plan.attachments}
        for dep in plan.deployments:
            for sel in dep.networks:
                if (sel.namespace or dep.namespace, sel.network) not in attachments:
                    raise RuntimeRequestError(
                        f"Deployment {dep.namespace}/{dep.name}: network {sel.network} has no "
                        "NetworkAttachmentDefinition in the manifests; add it"
                    )
        changes: dict[str, Any] = {"created": [], "scaled": [], "removed": []}
        with self._lock:
            self.plan = plan
            self.source = source
            settings = {c.name: c.settings for c in plan.chains}
            self.agent.set_cross_connections(plan.cross_connections, settings)
            for dep in plan.deployments:
                rs = self.sets.get(dep.name)
                if rs is None:
                    self.sets[dep.name] = ReplicaSet(dep, specs[dep.name], dep.replicas)
                    changes["created"].append(dep.name)
                else:
                    if rs.desired != dep.replicas:
                        changes["scaled"].append(f"{dep.name}: {rs.desired} -> {dep.replicas}")
                    rs.deployment, rs.pod_spec, rs.desired = dep, specs[dep.name], dep.replicas
            wanted = {d.name for d in plan.deployments}
            for name, rs in self.sets.items():
                if name not in wanted and rs.desired:
                    rs.desired = 0
                    changes["removed"].append(name)
        self._sync("apply")
        self._reconcile_sets()
        self.persist()
        changes["changed"] = any(changes[k] for k in ("created", "scaled", "removed"))
        return changes

    def scale(self, name: str, replicas: int) -> dict[str, Any]:
        if replicas < 0:
            raise RuntimeRequestError(f"replicas must be >= 0, got {replicas}; 0 stops every replica")
        with self._lock:
            rs = self._find_set(name)
            before, rs.desired = rs.desired, replicas
            rs.last_error, rs.failures, rs.retry_at = "", 0, 0.0
        self.event(f"scale {rs.name} {before} -> {replicas}")
        self._reconcile_sets()
        self.persist()
        return {"deployment": rs.name, "from": before, "to": replicas}

    def _find_set(self, name: str) -> ReplicaSet:
        if name in self.sets:
            return self.sets[name]
        by_nf = [rs for rs in self.sets.values() if rs.deployment.nf == name]
        if len(by_nf) == 1:
            return by_nf[0]
        known = ", ".join(sorted(self.sets)) or "none"
        raise RuntimeRequestError(f"no Deployment or network function named {name!r} (known: {known})")

    def ready(self) -> tuple[bool, str]:
        """(all replica sets at their desired number of running pods, first error seen)."""
        with self._lock:
            if self.agent_error:
                return False, f"data plane: {self.agent_error}"
            for rs in self.sets.values():
                if rs.last_error:
                    return False, f"{rs.name}: {rs.last_error}"
            done = all(
                rs.count(ReplicaPhase.RUNNING) == rs.desired and rs.count(ReplicaPhase.PENDING) == 0
                for rs in self.sets.values()
            )
            return done, ""

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while True:
            done, error = self.ready()
            if error:
                raise RuntimeRequestError(error)
            if done:
                return
            if time.monotonic() > deadline:
                raise RuntimeRequestError(f"not ready after {timeout:.0f}s: {self._not_ready_summary()}")
            time.sleep(0.02)

    def _not_ready_summary(self) -> str:
        with self._lock:
            parts = [
                f"{rs.name} {rs.count(ReplicaPhase.RUNNING)}/{rs.desired} running"
                for rs in self.sets.values()
                if rs.count(ReplicaPhase.RUNNING) != rs.desired
            ]
        return ", ".join(parts)

    def summary(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "name": rs.name,
                    "nf": rs.deployment.nf,
                    "desired": rs.desired,
                    "running": rs.count(ReplicaPhase.RUNNING),
                    "pending": rs.count(ReplicaPhase.PENDING),
                    "terminating": rs.count(ReplicaPhase.TERMINATING),
                    "lastError": rs.last_error,
                }
                for rs in self.sets.values()
            ]

    def pods(self) -> list[Pod]:
        with self._lock:
            return [p for rs in self.sets.values() for p in rs.pods.values()]

    def shutdown(self) -> list[str]:
        """Terminate every pod (gracefully, in parallel), destroy the data plane, remove the state."""
        with self._lock:
            self._error_sink = []
            self._shutting_down = True
            for rs in self.sets.values():
                rs.desired = 0
        deadline = time.monotonic() + 180.0
        while self.pods() and time.monotonic() < deadline:
            self._reconcile_sets()
            self._join_threads(timeout=max(0.0, deadline - time.monotonic()))
            time.sleep(0.02)
        self._stopping.set()
        self._monitor.join(timeout=2)
        for orphan in self.orphans:
            self._error_sink.extend(cleanup_pod_state(orphan))
        errors = list(self._error_sink)
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

    # -- replica sets --------------------------------------------------------------------------

    def _reconcile_sets(self) -> None:
        now = time.monotonic()
        with self._lock:
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
                if (
                    rs.desired == 0
                    and not rs.pods
                    and self.plan
                    and rs.name not in {d.name for d in self.plan.deployments}
                ):
                    del self.sets[rs.name]

    def _new_pod(self, rs: ReplicaSet) -> Pod:
        dep = rs.deployment
        name = f"{dep.name}-{secrets.token_hex(3)}"
        attachments = []
        nads = {(a.namespace, a.name): a for a in (self.plan.attachments if self.plan else [])}
        for sel in dep.networks:
            nad: NetworkAttachment = nads[(sel.namespace or dep.namespace, sel.network)]
            config = {**nad.config, "stateDir": str(self.config.cni_state_dir), "pinDir": self.config.pin_dir}
            attachments.append(Attachment(ifname=sel.interface, network=sel.network, config=config))
        pod = Pod(
            name=name,
            uid=Pod.new_uid(),
            namespace=dep.namespace,
            deployment=dep.name,
            nf=dep.nf,
            netns=f"{self.config.netns_prefix}-{name}",
            spec=rs.pod_spec,
            attachments=attachments,
            log_path=str(self.config.logs_dir / f"{name}.log"),
            workdir=str(self.config.root / "pods" / name),
        )
        rs.pods[pod.uid] = pod
        return pod

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _join_threads(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                alive = [t for t in self._threads if t.is_alive()]
            if not alive:
                return
            alive[0].join(timeout=max(0.0, deadline - time.monotonic()))

    def _start_pod(self, pod: Pod, rs: ReplicaSet) -> None:
        try:
            pod.create_sandbox()
            self.persist()
            pod.add_networks(_load_record)
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
            with self._lock:
                if pod.phase is not ReplicaPhase.PENDING:
                    return
                pod.phase = ReplicaPhase.RUNNING
                pod.times.running = time.time()
                rs.failures, rs.last_error = 0, ""
            self.agent.upsert_replica(pod.replica())
            report = self._sync(f"{pod.name} running")
            self.event(f"{pod.name} running", report)
            self.persist()
            self._watch_first_packet(pod, report)
        except Exception as exc:
            message = str(exc) if isinstance(exc, PodError) else f"pod {pod.name}: {exc}"
            log.error("%s", message)
            with self._lock:
                rs.last_error = message
                rs.failures += 1
                rs.retry_at = time.monotonic() + min(MAX_BACKOFF_SECONDS, 2.0**rs.failures)
            self.event(message, error=True)
            self._remove_pod(pod, rs, graceful=False)

    def _terminate_pod(self, pod: Pod, rs: ReplicaSet) -> None:
        """Graceful deletion: drain -> preStop -> SIGTERM -> grace -> SIGKILL -> gone -> CNI DEL."""
        deadline = time.monotonic() + pod.spec.grace_seconds
        self.agent.upsert_replica(pod.replica())
        report = self._sync(f"{pod.name} terminating")
        pod.times.drained = time.time()
        self.reactions.append(
            {
                "pod": pod.name,
                "nf": pod.nf,
                "kind": "terminating->out of table",
                "ms": (pod.times.drained - pod.times.terminating) * 1e3,
                "steps": _steps(report),
            }
        )
        self.event(f"{pod.name} terminating (drained)", report)
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
            with self._lock:
                pod.phase = ReplicaPhase.GONE
                pod.times.gone = time.time()
            # Leaving on every side at once first: what is still inside the pod gets out while no
            # new packet goes in. Then the veths and the namespace go, then the ports.
            self.agent.upsert_replica(pod.replica())
            report = self._sync(f"{pod.name} gone")
            errors = pod.delete_networks()
            pod.delete_sandbox()
        except Exception as exc:
            errors.append(f"pod {pod.name}: removal failed: {exc}")
        # Whatever failed above, the replica leaves the agent's picture and its ports the data plane.
        self.agent.remove_replica(pod.uid)
        try:
            self._sync(f"{pod.name} removed")
        except Exception as exc:
            errors.append(f"pod {pod.name}: removing its ports failed: {exc}")
        for error in errors:
            self.event(error, error=True)
        self.event(f"{pod.name} removed ({'graceful' if graceful else 'no drain'})", report)
        with self._lock:
            rs.pods.pop(pod.uid, None)
            if errors:
                self.orphans.append(pod.to_state())
        self.persist()

    def _fail_pod(self, pod: Pod, rs: ReplicaSet, reason: str) -> None:
        self.event(f"{pod.name} failed: {reason}; removing without drain", error=False)
        self._remove_pod(pod, rs, graceful=False)
        self._reconcile_sets()

    def _monitor_loop(self) -> None:
        while not self._stopping.wait(MONITOR_INTERVAL_SECONDS):
            try:
                with self._lock:
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
                self._reconcile_sets()
            except Exception:
                log.exception("monitor pass failed")

    # -- agent -------------------------------------------------------------------------------------

    def _sync(self, reason: str) -> ReconcileReport | None:
        try:
            report = self.agent.sync(reason)
            self.agent_error = ""
            return report
        except ReconcileError as exc:
            self.agent_error = str(exc)
            self.event(f"{reason}: {exc}", error=True)
            return exc.report

    def _on_report(self, reason: str, report: ReconcileReport) -> None:
        if report.changed:
            log.debug("agent [%s]: %s", reason, report.summary())

    def _watch_first_packet(self, pod: Pod, report: ReconcileReport | None) -> None:
        """Poll the data plane's per-port counters until the new replica receives its first packet."""
        ports = {r.host_ifindex for r in pod.records}
        start = time.monotonic()
        while time.monotonic() - start < FIRST_PACKET_WATCH_SECONDS and pod.phase is ReplicaPhase.RUNNING:
            stats = self.dataplane.port_stats()
            if any(stats[i].to_port_packets > 0 for i in ports if i in stats):
                pod.times.first_packet = time.time()
                self.reactions.append(
                    {
                        "pod": pod.name,
                        "nf": pod.nf,
                        "kind": "running->first packet",
                        "ms": (pod.times.first_packet - pod.times.running) * 1e3,
                        "steps": _steps(report),
                    }
                )
                self.persist()
                return
            fast = time.monotonic() - start < FIRST_PACKET_FAST_SECONDS
            time.sleep(FIRST_PACKET_POLL_SECONDS if fast else 10 * FIRST_PACKET_POLL_SECONDS)

    def event(self, message: str, report: ReconcileReport | None = None, *, error: bool = False) -> None:
        entry: dict[str, Any] = {"time": time.time(), "message": message, "error": error}
        if report is not None:
            entry["reconcileMs"] = report.total_ns / 1e6
            entry["steps"] = _steps(report)
        with self._lock:
            self.events.append(entry)
            del self.events[:-500]
            if error and self._error_sink is not None:
                self._error_sink.append(message)
        (log.error if error else log.info)("%s", message)

    def status(self) -> dict[str, Any]:
        """Chains, cross-connections, deployments and pods with per-replica counters and sessions."""
        counters_time = None
        try:
            stats = self.dataplane.port_stats()
            counters_time = time.monotonic()  # rates (status, autoscale) use exact intervals
            sessions = self.dataplane.sessions(limit=STATUS_SESSION_LIMIT)
            drops = self.dataplane.drop_stats()
        except Exception as exc:  # a status read must not take the supervisor down
            log.warning("data plane read failed: %s", exc)
            stats, sessions, drops = {}, [], {}
        port_sessions: Counter[int] = Counter()
        xc_sessions: Counter[str] = Counter()
        for entry in sessions:
            port_sessions[entry.ifindex_a] += 1
            port_sessions[entry.ifindex_b] += 1
            xc_sessions[entry.xc] += 1
        with self._lock:
            plan = self.plan
            pods = []
            for rs in self.sets.values():
                for pod in rs.pods.values():
                    ports = [r.host_ifindex for r in pod.records]
                    row = pod.to_state()
                    row["toPackets"] = sum(stats[i].to_port_packets for i in ports if i in stats)
                    row["toBytes"] = sum(stats[i].to_port_bytes for i in ports if i in stats)
                    row["fromPackets"] = sum(stats[i].from_port_packets for i in ports if i in stats)
                    row["fromBytes"] = sum(stats[i].from_port_bytes for i in ports if i in stats)
                    row["sessions"] = sum(port_sessions[i] for i in ports)
                    row["sessionsCreated"] = sum(stats[i].sessions_created for i in ports if i in stats)
                    pods.append(row)
            deployments = self.summary()
        xcs = []
        for xc in plan.cross_connections if plan else []:
            row = {
                "name": xc.name,
                "chain": xc.chain,
                "sideA": f"{xc.side_a.nf}:{xc.side_a.interface}",
                "sideB": f"{xc.side_b.nf}:{xc.side_b.interface}",
                "mode": f"{xc.side_a.mode}/{xc.side_b.mode}",
                "sessions": xc_sessions.get(xc.name, 0),
            }
            for side in Side:
                try:
                    ports = self.dataplane.replicas(xc.name, side)
                except Exception:
                    ports = []
                row[f"active{side.value}"] = sum(1 for p in ports if p.state is ReplicaState.ACTIVE)
                row[f"draining{side.value}"] = sum(1 for p in ports if p.state is ReplicaState.DRAINING)
            xcs.append(row)
        return {
            "supervisorPid": os.getpid(),
            "countersTime": counters_time,
            "source": self.source,
            "chains": [
                {"name": c.name, "namespace": c.namespace, "nfs": [nf.name for nf in c.network_functions]}
                for c in (plan.chains if plan else [])
            ],
            "crossConnections": xcs,
            "deployments": deployments,
            "pods": pods,
            "drops": drops,
            "reactions": self.reactions[-50:],
            "events": self.events[-30:],
        }

    def sessions(self, xc: str | None = None, limit: int = STATUS_SESSION_LIMIT) -> list[dict[str, Any]]:
        """Session table entries with the pods on both ends (what the demo's flow mapping reads)."""
        owners = {r.host_ifindex: p.name for p in self.pods() for r in p.records}
        return [
            {
                "xc": e.xc,
                "proto": e.proto,
                "addrLo": e.addr_lo,
                "portLo": e.port_lo,
                "addrHi": e.addr_hi,
                "portHi": e.port_hi,
                "podA": owners.get(e.ifindex_a, ""),
                "podB": owners.get(e.ifindex_b, ""),
            }
            for e in self.dataplane.sessions(xc, limit=limit)
        ]

    # -- state on disk -------------------------------------------------------------------------

    def persist(self) -> None:
        """Write the state file atomically: `status` and `down` read it from other shells."""
        with self._lock:
            state = {
                "supervisorPid": os.getpid(),
                "source": self.source,
                "config": {
                    "stateDir": self.config.state_dir,
                    "pinDir": self.config.pin_dir,
                    "netnsPrefix": self.config.netns_prefix,
                },
                "deployments": {
                    name: {"nf": rs.deployment.nf, "desired": rs.desired, "lastError": rs.last_error}
                    for name, rs in self.sets.items()
                },
                "pods": [p.to_state() for rs in self.sets.values() for p in rs.pods.values()],
                "orphans": self.orphans,
                "reactions": self.reactions[-200:],
            }
            if not self.config.root.exists():
                return
            tmp = self.config.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=1))
            os.replace(tmp, self.config.state_file)


def _steps(report: ReconcileReport | None) -> dict[str, float]:
    return report.step_ms() if report is not None else {}


def read_state(config: RuntimeConfig) -> dict[str, Any] | None:
    try:
        return json.loads(Path(config.state_file).read_text())
    except FileNotFoundError:
        return None
