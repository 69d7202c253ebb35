"""The Kubernetes HorizontalPodAutoscaler algorithm (autoscaling/v2, `Pods` metric, `AverageValue`).

A pure re-statement of the controller in kubernetes/pkg/controller/podautoscaler (replica_calculator.go
`calcPlainMetricReplicas` and horizontal.go `normalizeDesiredReplicasWithBehaviors`), so the local
runtime scales an NF exactly as an HPA on a cluster would on the same traffic metric:

1. Metric recommendation: desired = ceil(ready_pods x average / target). Terminating and failed pods
   are ignored; pending pods and pods without a sample are handled as Kubernetes does (on a scale-up
   they count as 0, a missing pod counts as exactly the target on a scale-down, and a result that
   flips direction is discarded). |ratio - 1| <= tolerance means "no change".
2. Stabilization: scale-down follows the highest recommendation of the last window (default 300 s),
   scale-up the lowest of its window (default 0 s).
3. Rate limits: the behaviour policies (default: up by max(4 pods, 100 %) per 15 s, down by 100 %
   per 15 s), then the min/max clamps.

No clocks and no I/O here: the caller passes `now`, so decisions on synthetic sequences are exact.
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

DEFAULT_TOLERANCE = 0.1
KUBERNETES_SCALE_DOWN_WINDOW_SECONDS = 300.0


class PodPhase(StrEnum):
    RUNNING = "running"  # ready: its sample counts as is
    PENDING = "pending"  # not ready yet: counts as 0 on a scale-up, ignored otherwise
    TERMINATING = "terminating"  # deletion started (draining): ignored entirely
    FAILED = "failed"  # ignored entirely


@dataclass(frozen=True)
class PodMetric:
    """One pod of the scale target and its metric sample (e.g. packets per second); None = missing."""

    name: str
    phase: PodPhase
    value: float | None


class PolicyType(StrEnum):
    PODS = "Pods"
    PERCENT = "Percent"


class SelectPolicy(StrEnum):
    MAX = "Max"  # the policy allowing the biggest change wins
    MIN = "Min"  # the policy allowing the smallest change wins
    DISABLED = "Disabled"  # no scaling in this direction


@dataclass(frozen=True)
class ScalingPolicy:
    type: PolicyType
    value: int
    period_seconds: float


@dataclass(frozen=True)
class ScalingRules:
    stabilization_window_seconds: float
    policies: tuple[ScalingPolicy, ...]
    select_policy: SelectPolicy = SelectPolicy.MAX


def default_scale_up() -> ScalingRules:
    """Kubernetes' default: no stabilization, add max(4 pods, 100 %) per 15 s."""
    return ScalingRules(
        stabilization_window_seconds=0.0,
        policies=(ScalingPolicy(PolicyType.PODS, 4, 15.0), ScalingPolicy(PolicyType.PERCENT, 100, 15.0)),
    )


def default_scale_down(window_seconds: float = KUBERNETES_SCALE_DOWN_WINDOW_SECONDS) -> ScalingRules:
    """Kubernetes' default: 300 s stabilization, remove up to 100 % per 15 s."""
    return ScalingRules(
        stabilization_window_seconds=window_seconds,
        policies=(ScalingPolicy(PolicyType.PERCENT, 100, 15.0),),
    )


@dataclass(frozen=True)
class HpaSpec:
    target_average_value: float  # e.g. packets per second per pod
    min_replicas: int = 1
    max_replicas: int = 8
    tolerance: float = DEFAULT_TOLERANCE
    scale_up: ScalingRules = field(default_factory=default_scale_up)
    scale_down: ScalingRules = field(default_factory=default_scale_down)

    def __post_init__(self) -> None:
        if not self.target_average_value > 0:
            raise ValueError(
                f"target_average_value must be > 0 (got {self.target_average_value}); "
                "set the per-pod target, e.g. --target-pps 20000"
            )
        if self.min_replicas < 1:
            raise ValueError(f"min_replicas must be >= 1 (got {self.min_replicas})")
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})"
            )
        if self.tolerance < 0:
            raise ValueError(f"tolerance must be >= 0 (got {self.tolerance})")
        for name, rules in (("scale_up", self.scale_up), ("scale_down", self.scale_down)):
            if rules.stabilization_window_seconds < 0:
                raise ValueError(f"{name}.stabilization_window_seconds must be >= 0")
            for policy in rules.policies:
                if policy.value <= 0 or policy.period_seconds <= 0:
                    raise ValueError(f"{name} policy {policy}: value and period_seconds must be > 0")


class NoMetricsError(Exception):
    """No usable sample for any counted pod: Kubernetes keeps the current size (FailedGetPodsMetric)."""


@dataclass(frozen=True)
class MetricRecommendation:
    replicas: int
    average: float  # the average over pods with a sample (what `kubectl get hpa` shows)
    ratio: float  # average / target, before missing/pending pods were filled in


def metric_replicas(
    current_replicas: int, pods: Iterable[PodMetric], target: float, tolerance: float = DEFAULT_TOLERANCE
) -> MetricRecommendation:
    """replica_calculator.go calcPlainMetricReplicas for an AverageValue target."""
    ready: dict[str, float] = {}
    pending: list[str] = []
    missing: list[str] = []
    for pod in pods:
        if pod.phase in (PodPhase.TERMINATING, PodPhase.FAILED):
            continue
        if pod.phase is PodPhase.PENDING:
            pending.append(pod.name)
        elif pod.value is None:
            missing.append(pod.name)
        else:
            ready[pod.name] = pod.value
    if not ready:
        raise NoMetricsError("no metric sample for any ready pod (pods might be unready)")

    average = sum(ready.values()) / len(ready)
    ratio = average / target
    scale_up_with_pending = bool(pending) and ratio > 1.0
    if not scale_up_with_pending and not missing:
        if abs(1.0 - ratio) <= tolerance:
            return MetricRecommendation(current_replicas, average, ratio)
        return MetricRecommendation(math.ceil(ratio * len(ready)), average, ratio)

    # Fill the gaps conservatively, as Kubernetes does: they may only dampen the change.
    filled = list(ready.values())
    filled += [target if ratio < 1.0 else 0.0] * len(missing)
    if scale_up_with_pending:
        filled += [0.0] * len(pending)
    new_ratio = sum(filled) / len(filled) / target
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return MetricRecommendation(current_replicas, average, ratio)
    replicas = math.ceil(new_ratio * len(filled))
    if (new_ratio < 1.0 and replicas > current_replicas) or (new_ratio > 1.0 and replicas < current_replicas):
        return MetricRecommendation(current_replicas, average, ratio)
    return MetricRecommendation(replicas, average, ratio)


@dataclass(frozen=True)
class Decision:
    current: int
    desired: int  # what to scale to (== current: leave it)
    reason: str  # Kubernetes-style reason: ScaleUpStabilized, ScaleUpLimit, TooFewReplicas, ...
    metric_replicas: int | None = None  # the raw recommendation (None: no metrics)
    average: float | None = None


@dataclass(frozen=True)
class _Recommendation:
    at: float
    replicas: int


@dataclass(frozen=True)
class _ScaleEvent:
    at: float
    change: int  # replicas added (scale-up event) or removed (scale-down event), > 0


class HorizontalAutoscaler:
    """One HPA's decision loop state: recommendation history and recent scale events.

    Call :meth:`decide` once per sync period with the target's current (spec) replica count and its
    pods' samples, then scale to `decision.desired`. `now` is any monotonic clock in seconds.
    """

    def __init__(self, spec: HpaSpec) -> None:
        self.spec = spec
        self._recommendations: list[_Recommendation] = []
        self._up_events: list[_ScaleEvent] = []
        self._down_events: list[_ScaleEvent] = []
        self._started = False

    def decide(self, now: float, current_replicas: int, pods: Iterable[PodMetric]) -> Decision:
        spec = self.spec
        if not self._started:
            # horizontal.go maybeInitScaleDownStabilizationWindow: a fresh autoscaler does not scale
            # down before one window has passed, as if it had recommended the current size.
            self._started = True
            if spec.scale_down.stabilization_window_seconds > 0:
                self._recommendations.append(_Recommendation(now, current_replicas))
        if current_replicas == 0:  # Kubernetes: scaled to zero by hand disables autoscaling
            return Decision(0, 0, "ScalingDisabled")
        if current_replicas > spec.max_replicas:
            return self._record(now, Decision(current_replicas, spec.max_replicas, "TooManyReplicas"))
        if current_replicas < spec.min_replicas:
            return self._record(now, Decision(current_replicas, spec.min_replicas, "TooFewReplicas"))
        try:
            rec = metric_replicas(current_replicas, pods, spec.target_average_value, spec.tolerance)
        except NoMetricsError:
            return Decision(current_replicas, current_replicas, "FailedGetPodsMetric")

        stabilized, reason = self._stabilize(now, current_replicas, rec.replicas)
        desired, limit_reason = self._limit_rate(now, current_replicas, stabilized)
        decision = Decision(current_replicas, desired, limit_reason or reason, rec.replicas, rec.average)
        return self._record(now, decision)

    def _stabilize(self, now: float, current: int, recommended: int) -> tuple[int, str]:
        """Clamp between the lowest recent (scale-up window) and highest recent (scale-down window)."""
        up_cutoff = now - self.spec.scale_up.stabilization_window_seconds
        down_cutoff = now - self.spec.scale_down.stabilization_window_seconds
        up_bound = recommended
        down_bound = recommended
        for past in self._recommendations:
            if past.at > up_cutoff:
                up_bound = min(up_bound, past.replicas)
            if past.at > down_cutoff:
                down_bound = max(down_bound, past.replicas)
        self._recommendations = [r for r in self._recommendations if r.at > min(up_cutoff, down_cutoff)]
        self._recommendations.append(_Recommendation(now, recommended))
        stabilized = min(max(current, up_bound), down_bound)
        if stabilized == recommended:
            return stabilized, "ReadyForNewScale"
        return stabilized, "ScaleUpStabilized" if stabilized < recommended else "ScaleDownStabilized"

    def _limit_rate(self, now: float, current: int, desired: int) -> tuple[int, str | None]:
        spec = self.spec
        if desired > current:
            limit = max(self._scale_up_limit(now, current), current)
            if spec.max_replicas > limit:
                return min(desired, limit), "ScaleUpLimit" if desired > limit else None
            return min(desired, spec.max_replicas), "TooManyReplicas" if desired > spec.max_replicas else None
        if desired < current:
            limit = min(self._scale_down_limit(now, current), current)
            floor = max(spec.min_replicas, limit)
            if desired < floor:
                return floor, "ScaleDownLimit" if limit > spec.min_replicas else "TooFewReplicas"
            return desired, None
        return current, None

    def _period_start(self, now: float, current: int, period: float) -> int:
        added = sum(e.change for e in self._up_events if e.at + period > now)
        removed = sum(e.change for e in self._down_events if e.at + period > now)
        return current - added + removed

    def _scale_up_limit(self, now: float, current: int) -> int:
        return self._policy_limit(now, current, self.spec.scale_up, up=True)

    def _scale_down_limit(self, now: float, current: int) -> int:
        return self._policy_limit(now, current, self.spec.scale_down, up=False)

    def _policy_limit(self, now: float, current: int, rules: ScalingRules, *, up: bool) -> int:
        """The furthest the rate policies let replicas move from `current` in one direction."""
        if rules.select_policy is SelectPolicy.DISABLED or not rules.policies:
            return current
        proposals = []
        for policy in rules.policies:
            start = self._period_start(now, current, policy.period_seconds)
            if policy.type is PolicyType.PODS:
                proposals.append(start + policy.value if up else start - policy.value)
            elif up:
                proposals.append(math.ceil(start * (1 + policy.value / 100)))
            else:
                proposals.append(int(start * (1 - policy.value / 100)))  # Kubernetes truncates here
        # "Max" selects the policy allowing the biggest change: the highest ceiling or the lowest floor.
        biggest, smallest = (max, min) if up else (min, max)
        return biggest(proposals) if rules.select_policy is SelectPolicy.MAX else smallest(proposals)

    def _record(self, now: float, decision: Decision) -> Decision:
        """Remember a scale event so the rate policies see it in their periods."""
        change = decision.desired - decision.current
        longest = max(
            (p.period_seconds for p in (*self.spec.scale_up.policies, *self.spec.scale_down.policies)),
            default=0.0,
        )
        self._up_events = [e for e in self._up_events if e.at + longest > now]
        self._down_events = [e for e in self._down_events if e.at + longest > now]
        if change > 0:
            self._up_events.append(_ScaleEvent(now, change))
        elif change < 0:
            self._down_events.append(_ScaleEvent(now, -change))
        return decision
