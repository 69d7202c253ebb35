"""The local runtime's autoscaler: the HPA algorithm on the packets per second each NF replica receives.

Every period it reads the NF's replicas and their cumulative rx packet counters (what the data plane
delivered to the replica's interfaces: the same counter the exporter publishes as
flexsfc_nf_rx_packets_total), turns them into per-replica pps since the previous reading, asks
:class:`HorizontalAutoscaler` for a decision and scales the replica set through the runtime.

The runtime is reached through :class:`ScaleTarget`; :class:`RuntimeTarget` adapts an in-process
`flexsfc.local.runtime.Runtime`, :class:`StatusTarget` anything that returns the runtime's status
document (e.g. the supervisor's control socket).

With a :class:`PodRateSource` (e.g. `flexsfc.autoscale.prometheus.PrometheusPodRates`, what
`flexsfc autoscale --prometheus URL` uses) the per-replica pps come from it instead of the counters:
the target still names the pods, their phases and the current size, and does the scaling.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from flexsfc.agent.types import ReplicaPhase
from flexsfc.autoscale.hpa import (
    Decision,
    HorizontalAutoscaler,
    HpaSpec,
    PodMetric,
    PodPhase,
    default_scale_down,
)

log = logging.getLogger(__name__)

LOCAL_SCALE_DOWN_WINDOW_SECONDS = 30.0  # Kubernetes uses 300 s; a demo on one machine cannot wait
DEFAULT_PERIOD_SECONDS = 1.0

_PHASES: dict[ReplicaPhase, PodPhase] = {
    ReplicaPhase.PENDING: PodPhase.PENDING,
    ReplicaPhase.RUNNING: PodPhase.RUNNING,
    ReplicaPhase.TERMINATING: PodPhase.TERMINATING,
    ReplicaPhase.GONE: PodPhase.FAILED,
}


def local_spec(
    target_pps: float,
    min_replicas: int = 1,
    max_replicas: int = 8,
    *,
    scale_down_window: float = LOCAL_SCALE_DOWN_WINDOW_SECONDS,
    tolerance: float = 0.1,
) -> HpaSpec:
    """An HPA spec with Kubernetes' default behaviour except a shorter scale-down window."""
    return HpaSpec(
        target_average_value=target_pps,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        tolerance=tolerance,
        scale_down=default_scale_down(scale_down_window),
    )


@dataclass(frozen=True)
class ReplicaReading:
    pod: str
    phase: ReplicaPhase
    rx_packets: int  # cumulative, summed over the replica's data-plane interfaces
    namespace: str = ""  # the pod's (Kubernetes) namespace: how a metrics server names its series


@dataclass(frozen=True)
class TargetReading:
    desired: int  # the replica set's spec.replicas
    replicas: tuple[ReplicaReading, ...]
    # When the counters were read, on any clock (only differences count); None: the autoscaler
    # stamps the reading itself, just before asking for it.
    sampled_at: float | None = None


class ScaleTarget(Protocol):
    name: str

    def read(self) -> TargetReading: ...

    def scale(self, replicas: int) -> None: ...


class TargetNotFound(LookupError):
    pass


class PodRateSource(Protocol):
    """Per-pod packets per second from elsewhere than the counters (e.g. a Prometheus server)."""

    def rates(self, pods: Iterable[tuple[str, str]], at: float | None = None) -> dict[tuple[str, str], float]:
        """(namespace, pod) -> pps, for the pods the source has a value for (others: no sample)."""
        ...


class RuntimeTarget:
    """An NF's replica set in an in-process local Runtime (the demo and tests drive it this way)."""

    def __init__(self, runtime: Any, nf: str) -> None:
        self.runtime = runtime
        sets = dict(runtime.sets)
        matches = [rs for rs in sets.values() if nf in (rs.name, rs.deployment.nf)]
        if len(matches) != 1:
            known = ", ".join(sorted(sets)) or "none"
            raise TargetNotFound(f"no single Deployment or network function named {nf!r} (known: {known})")
        self.replica_set = matches[0]
        self.name = self.replica_set.name

    def read(self) -> TargetReading:
        stats = self.runtime.dataplane.port_stats()
        sampled_at = time.monotonic()
        readings = []
        for pod in self.runtime.pods():
            if pod.deployment != self.name:
                continue
            ports = [r.host_ifindex for r in pod.records]
            readings.append(
                ReplicaReading(
                    pod.name,
                    pod.phase,
                    sum(stats[i].to_port_packets for i in ports if i in stats),
                    pod.namespace,
                )
            )
        return TargetReading(self.replica_set.desired, tuple(readings), sampled_at)

    def scale(self, replicas: int) -> None:
        self.runtime.scale(self.name, replicas)


class StatusTarget:
    """An NF's replica set seen through the runtime's status document (`Runtime.status()` shape)."""

    def __init__(
        self, nf: str, fetch_status: Callable[[], dict[str, Any]], scale: Callable[[str, int], Any]
    ) -> None:
        self._fetch = fetch_status
        self._scale = scale
        deployments = fetch_status().get("deployments", [])
        matches = [d for d in deployments if nf in (d["name"], d["nf"])]
        if len(matches) != 1:
            known = ", ".join(sorted(d["name"] for d in deployments)) or "none"
            raise TargetNotFound(f"no single Deployment or network function named {nf!r} (known: {known})")
        self.name = matches[0]["name"]

    def read(self) -> TargetReading:
        status = self._fetch()
        [deployment] = [d for d in status["deployments"] if d["name"] == self.name]
        readings = tuple(
            ReplicaReading(
                pod["name"],
                ReplicaPhase(pod["phase"]),
                int(pod.get("toPackets", 0)),
                str(pod.get("namespace", "")),
            )
            for pod in status.get("pods", [])
            if pod.get("deployment") == self.name
        )
        # A status that stamps its counter reading ("countersTime", any clock) gives exact intervals
        # even when the request waited for the runtime.
        stamp = status.get("countersTime")
        return TargetReading(int(deployment["desired"]), readings, None if stamp is None else float(stamp))

    def scale(self, replicas: int) -> None:
        self._scale(self.name, replicas)


def next_tick(previous: float, period: float, now: float | None = None) -> float:
    """Next tick time on a fixed grid; after a late tick, skip ahead rather than tick twice in a row
    (back-to-back ticks would measure rates over a sliver of time)."""
    now = time.monotonic() if now is None else now
    upcoming = previous + period
    return upcoming if upcoming > now else now + period


@dataclass(frozen=True)
class Tick:
    """One autoscaler period: what it saw and what it decided."""

    at: float  # the autoscaler's clock
    decision: Decision
    pps: dict[str, float | None]  # per pod counted by the algorithm; None = no rate yet
    scaled: bool

    @property
    def desired(self) -> int:
        return self.decision.desired


@dataclass
class LocalAutoscaler:
    target: ScaleTarget
    spec: HpaSpec
    period: float = DEFAULT_PERIOD_SECONDS
    clock: Callable[[], float] = time.monotonic
    on_tick: Callable[[Tick], None] | None = None
    history: list[Tick] = field(default_factory=list)
    # Where the per-replica pps come from: None = the target's rx counters, differenced per period.
    pod_rates: PodRateSource | None = None

    def __post_init__(self) -> None:
        if self.period <= 0:
            raise ValueError(f"period must be > 0 seconds (got {self.period})")
        self.hpa = HorizontalAutoscaler(self.spec)
        # (stamp, stamped by the target?, counters) of the previous reading
        self._previous: tuple[float, bool, dict[str, int]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()

    def step(self) -> Tick:
        """Read, decide, scale if the decision differs from the current size."""
        # Both runtime views read the port counters first thing: stamp the sample before the read,
        # not after (a status request may take a while once the session table is large).
        now = self.clock()
        reading = self.target.read()
        if self.pod_rates is None:
            counters = {r.pod: r.rx_packets for r in reading.replicas}
            pps = self._rates(reading.sampled_at, now, counters)
        else:
            rates = self.pod_rates.rates([(r.namespace, r.pod) for r in reading.replicas])
            keys = {r.pod: (r.namespace, r.pod) for r in reading.replicas}
            pps = {pod: rates[key] for pod, key in keys.items() if key in rates}
        pods = [PodMetric(r.pod, _PHASES[r.phase], pps.get(r.pod)) for r in reading.replicas]
        decision = self.hpa.decide(now, reading.desired, pods)
        scaled = decision.desired != reading.desired
        if scaled:
            log.info(
                "autoscale %s: %d -> %d (%s, average %.0f pps, target %.0f)",
                self.target.name,
                reading.desired,
                decision.desired,
                decision.reason,
                decision.average or 0.0,
                self.spec.target_average_value,
            )
            self.target.scale(decision.desired)
        tick = Tick(now, decision, {p.name: p.value for p in pods if p.phase is PodPhase.RUNNING}, scaled)
        with self._changed:
            self.history.append(tick)
            self._changed.notify_all()
        if self.on_tick is not None:
            self.on_tick(tick)
        return tick

    def _rates(self, target_stamp: float | None, now: float, counters: dict[str, int]) -> dict[str, float]:
        stamped = target_stamp is not None
        sampled_at = target_stamp if target_stamp is not None else now
        previous, self._previous = self._previous, (sampled_at, stamped, counters)
        # Stamps from the target and from our clock may differ in origin: never subtract across them.
        if previous is None or previous[1] != stamped or sampled_at <= previous[0]:
            return {}
        then, _, old = previous
        return {
            pod: (count - old[pod] if count >= old[pod] else count) / (sampled_at - then)
            for pod, count in counters.items()
            if pod in old
        }

    # -- background loop -----------------------------------------------------------------------

    def run(self) -> None:
        """Tick every period until stop()."""
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                log.exception("autoscaler tick for %s failed", self.target.name)
            next_at = next_tick(next_at, self.period)
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self.run, name=f"autoscale-{self.target.name}", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def wait_for(self, predicate: Callable[[Tick], bool], timeout: float) -> Tick:
        """Block until a tick satisfies `predicate` (checked on ticks from now on); TimeoutError else."""
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = len(self.history)
            while True:
                for tick in self.history[seen:]:
                    if predicate(tick):
                        return tick
                seen = len(self.history)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    last = self.history[-1] if self.history else None
                    raise TimeoutError(
                        f"autoscaler of {self.target.name}: condition not met in {timeout}s "
                        f"(last tick: {last})"
                    )
                self._changed.wait(remaining)


@contextmanager
def autoscaling(
    runtime: Any, nf: str, spec: HpaSpec, *, period: float = DEFAULT_PERIOD_SECONDS
) -> Iterator[LocalAutoscaler]:
    """Autoscale `nf` of an in-process Runtime for the duration of the block (for the demo).

    Example::

        with autoscaling(runtime, "firewall", local_spec(target_pps=2000, scale_down_window=10)) as scaler:
            start_load(...); scaler.wait_for(lambda t: t.desired >= 2, timeout=30)
            reduce_load(...); scaler.wait_for(lambda t: t.desired == 1, timeout=60)
        print(format_history(scaler.history))
    """
    scaler = LocalAutoscaler(RuntimeTarget(runtime, nf), spec, period=period)
    scaler.start()
    try:
        yield scaler
    finally:
        scaler.stop()


def format_tick(tick: Tick, target: float) -> str:
    counted = [v for v in tick.pps.values() if v is not None]
    pps = " ".join(f"{v:.0f}" for v in counted) or "-"
    arrow = f"{tick.decision.current} -> {tick.desired}" if tick.scaled else f"{tick.desired}"
    return f"replicas {arrow:<8} per-replica pps [{pps}] target {target:.0f}  {tick.decision.reason}"
