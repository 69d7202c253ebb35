"""A watch-free agent loop: front ends push the latest picture, the loop reconciles it.

The local runtime and the Kubernetes node-agent adapter both keep the newest desired cross-connections
and the newest replica list here. `sync()` reconciles at once in the caller's thread (the local runtime
uses it on every lifecycle change, for the shortest reaction time); `start()` runs a background thread
that reconciles whenever something changed and also every `resync_seconds`, so missed events heal.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from flexsfc.agent.reconciler import ReconcileError, Reconciler, ReconcileReport
from flexsfc.agent.types import NfReplica
from flexsfc.dataplane.api import DataplaneAPI
from flexsfc.model.types import ChainSettings, CrossConnectionSpec

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
    ) -> None:
        self.reconciler = Reconciler(dataplane)
        self.resync_seconds = resync_seconds
        self.reports: deque[tuple[float, str, ReconcileReport]] = deque(maxlen=history)
        self._on_report = on_report
        self._lock = threading.RLock()  # one reconcile at a time, picture updates atomic
        self._xcs: list[CrossConnectionSpec] = []
        self._settings: dict[str, ChainSettings] = {}
        self._replicas: dict[str, NfReplica] = {}
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- picture -------------------------------------------------------------------------------

    def set_cross_connections(
        self, xcs: Iterable[CrossConnectionSpec], settings: Mapping[str, ChainSettings] | None = None
    ) -> None:
        with self._lock:
            self._xcs = list(xcs)
            self._settings = dict(settings or {})
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
                    self._xcs, list(self._replicas.values()), chain_settings=self._settings
                )
            except ReconcileError as exc:
                self._dirty.set()  # retry on the next loop turn
                self._record(reason, exc.report, seen)
                raise
            self._record(reason, report, seen)
            return report

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

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

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
