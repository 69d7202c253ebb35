"""A watch-free agent loop: front ends push the latest picture, the loop reconciles it.

The local runtime and the Kubernetes node-agent adapter both keep the newest desired cross-connections
and the newest replica list here. `sync()` reconciles at once in the caller's thread (the local runtime
uses it on every lifecycle change, for the shortest reaction time); `start()` runs a background thread
that reconciles whenever something changed and also every `resync_seconds`, so missed events heal.

The first pass (and every pass after a failed one) also converges the data plane fully: a writer
killed, or an update that raised, between two steps of a replica update leaves state the diff cannot
see (a port record already as desired, its filter or the new Maglev table not). `converge()` checks
every port's slot, records and filter and rebuilds every side's table from the records
(docs/agent.md, "Crash recovery").
"""

import copy
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import cast

from flexsfc.agent.desired import ChainSettingsMap
from flexsfc.agent.reconciler import ReconcileError, Reconciler, ReconcileReport
from flexsfc.agent.types import NfReplica, Topology, dataplane_name
from flexsfc.dataplane.api import DataplaneAPI
from flexsfc.dataplane.sessions import SweepReport
from flexsfc.model.constants import SESSION_SWEEP_SECONDS
from flexsfc.model.types import ChainSettings, CrossConnectionSpec, SessionTimeouts

log = logging.getLogger(__name__)

ReportListener = Callable[[str, ReconcileReport], None]


class AgentLoop:
    def __init__(
        self,
        dataplane: DataplaneAPI,
        *,
        resync_seconds: float = 10.0,
        history: int = 200,
        on_report: ReportListener | None = None,
        sweep_seconds: float = SESSION_SWEEP_SECONDS,
    ) -> None:
        self.reconciler = Reconciler(dataplane)
        self.resync_seconds = resync_seconds
        self.sweep_seconds = sweep_seconds
        self.last_sweep: SweepReport | None = None  # the data plane's last sweep
        self._sweeper: threading.Thread | None = None
        self.reports: deque[tuple[float, str, ReconcileReport]] = deque(maxlen=history)
        self._on_report = on_report
        self._lock = threading.RLock()  # one reconcile at a time, picture updates atomic
        self._xcs: list[CrossConnectionSpec] = []
        self._settings: ChainSettingsMap = {}  # by (namespace, chain); see Reconciler.reconcile
        self._replicas: dict[str, NfReplica] = {}
        self._topology: Topology | None = None  # None: one node, no tunnel (the local runtime's default)
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.converged = False  # whether a pass has converged the data plane since this loop began
        self.repairs: list[str] = []  # what the last convergence repaired

    # -- picture -------------------------------------------------------------------------------

    def set_cross_connections(
        self, xcs: Iterable[CrossConnectionSpec], settings: ChainSettingsMap | None = None
    ) -> None:
        with self._lock:
            self._xcs = list(xcs)
            self._settings = copy.copy(settings) if settings else {}  # the caller may reuse its own
        self._dirty.set()

    def set_topology(self, topology: Topology | None) -> None:
        """This node among the nodes: replicas on other nodes are reached through the tunnel."""
        with self._lock:
            self._topology = topology
        self._dirty.set()

    def set_replicas(self, replicas: Iterable[NfReplica]) -> None:
        with self._lock:
            self._replicas = {r.uid: r for r in replicas}
        self._dirty.set()

    def upsert_replica(self, replica: NfReplica) -> None:
        with self._lock:
            self._replicas[replica.uid] = replica
        self._dirty.set()

    def remove_replica(self, uid: str) -> None:
        with self._lock:
            self._replicas.pop(uid, None)
        self._dirty.set()

    def replicas(self) -> list[NfReplica]:
        with self._lock:
            return list(self._replicas.values())

    def cross_connections(self) -> list[CrossConnectionSpec]:
        """The desired cross-connections last pushed (the metrics exporter labels ports from them)."""
        with self._lock:
            return list(self._xcs)

    # -- reconciling ---------------------------------------------------------------------------

    def sync(self, reason: str = "sync") -> ReconcileReport:
        """Reconcile the current picture now, in this thread. Raises ReconcileError on failures."""
        seen = time.perf_counter_ns()  # before the lock: waiting for another pass counts too
        with self._lock:
            self._dirty.clear()
            try:
                report = self.reconciler.reconcile(
                    self._xcs,
                    list(self._replicas.values()),
                    chain_settings=self._settings,
                    topology=self._topology,
                )
            except ReconcileError as exc:
                self._dirty.set()  # retry on the next loop turn
                self.converged = False  # a step that raised may have left what a kill leaves
                self._converge()
                self._record(reason, exc.report, seen)
                raise
            self._converge()
            self._record(reason, report, seen)
            return report

    def _converge(self) -> None:
        """Converge the data plane once after (re)opening it, and again after a failed pass."""
        if self.converged:
            return
        try:
            self.repairs = self.reconciler.dataplane.converge()
        except Exception:
            log.exception("converging the data plane failed; trying again on the next pass")
            self._dirty.set()
            return
        for repair in self.repairs:
            log.warning("data plane repaired: %s", repair)
        self.converged = True

    def _record(self, reason: str, report: ReconcileReport, seen_ns: int) -> None:
        self.reports.append((time.time(), reason, report))
        if report.changed:
            attached = f" attached {report.ports_attached}" if report.ports_attached else ""
            detached = f" detached {report.ports_detached}" if report.ports_detached else ""
            log.info(
                "event %r seen -> data plane updated %.2f ms later: %s%s%s (%s)",
                reason,
                (time.perf_counter_ns() - seen_ns) / 1e6,
                report.summary(),
                attached,
                detached,
                report.step_summary(),
            )
        if self._on_report is not None:
            try:
                self._on_report(reason, report)
            except Exception:
                log.exception("report listener failed")

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="flexsfc-agent", daemon=True)
        self._thread.start()
        self.start_sweeper()

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
            self._sweeper = None

    # -- idle sessions -------------------------------------------------------------------------

    def start_sweeper(self) -> None:
        """Free idle confirmed sessions every `sweep_seconds` in a thread of its own (`start()` does
        this too; the local runtime, which reconciles in its own threads, calls it alone). Off the
        reconcile path: a sweep of 1M sessions takes about a second and holds no writer lock."""
        if self._sweeper is not None:
            return
        self._stop.clear()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="flexsfc-sweep", daemon=True)
        self._sweeper.start()

    def sweep(self) -> SweepReport:
        """One sweep with each cross-connection's chain timeouts (defaults for the others)."""
        with self._lock:  # a consistent picture; the sweep itself runs outside this lock
            timeouts = {dataplane_name(xc): self._timeouts(xc) for xc in self._xcs}
        report = self.reconciler.dataplane.sweep_sessions(timeouts)
        self.last_sweep = report
        if report.total_expired:
            log.info(
                "freed %d idle sessions %s in %.3f s", report.total_expired, report.expired, report.seconds
            )
        return report

    def _timeouts(self, xc: CrossConnectionSpec) -> SessionTimeouts:
        """The chain's timeouts: settings by (namespace, chain), else by bare chain name."""
        settings: Mapping[object, ChainSettings] = cast(Mapping[object, ChainSettings], self._settings)
        chain = settings.get((xc.namespace, xc.chain), settings.get(xc.chain))
        return chain.session_timeouts if chain is not None else SessionTimeouts()

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.sweep_seconds):
            try:
                self.sweep()
            except Exception:
                log.exception("session sweep failed; trying again in %.0f s", self.sweep_seconds)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait(timeout=self.resync_seconds)
            if self._stop.is_set():
                break
            try:
                self.sync("loop")
            except ReconcileError as exc:
                log.warning("%s; retrying", exc)
                time.sleep(0.5)
            except Exception:
                log.exception("reconcile crashed; retrying")
                time.sleep(0.5)
