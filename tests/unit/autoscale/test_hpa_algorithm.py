"""The HPA algorithm against hand-computed Kubernetes decisions (pure, no clock, no kernel)."""

import math

import pytest

from flexsfc.autoscale.hpa import (
    HorizontalAutoscaler,
    HpaSpec,
    NoMetricsError,
    PodMetric,
    PodPhase,
    PolicyType,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
    default_scale_down,
    metric_replicas,
)

R, P, T, F = PodPhase.RUNNING, PodPhase.PENDING, PodPhase.TERMINATING, PodPhase.FAILED


def pods(*samples: tuple[PodPhase, float | None]) -> list[PodMetric]:
    return [PodMetric(f"pod-{i}", phase, value) for i, (phase, value) in enumerate(samples)]


# (case, current replicas, pods, target, expected replicas)
METRIC_CASES = [
    ("scale up 1.5x", 2, pods((R, 150), (R, 150)), 100, 3),
    ("ceil rounds up", 3, pods((R, 101), (R, 150), (R, 200)), 100, 5),  # ratio 1.503 x 3 = 4.5
    ("inside tolerance above", 2, pods((R, 109), (R, 109)), 100, 2),
    ("inside tolerance below", 2, pods((R, 91), (R, 91)), 100, 2),
    ("just outside tolerance", 10, pods(*[(R, 112)] * 10), 100, 12),
    ("scale down", 4, pods(*[(R, 20)] * 4), 100, 1),
    ("zero traffic", 3, pods(*[(R, 0)] * 3), 100, 0),  # min clamp happens later
    ("terminating ignored", 3, pods((R, 200), (R, 200), (T, 0)), 100, 4),
    ("failed ignored", 3, pods((R, 200), (R, 200), (F, 0)), 100, 4),
    ("pending counts 0 on scale up", 2, pods((R, 300), (P, None)), 100, 3),
    ("pending ignored on scale down", 3, pods((R, 50), (R, 50), (P, None)), 100, 1),
    ("missing = target on scale down", 4, pods((R, 10), (R, 10), (R, 10), (R, None)), 100, 2),
    ("missing = 0 on scale up", 2, pods((R, 300), (R, None)), 100, 3),
    ("missing flips direction: keep", 4, pods((R, 120), (R, None), (R, None), (R, None)), 100, 4),
    ("fill lands in tolerance: keep", 2, pods((R, 210), (R, None)), 100, 2),  # 105 after fill
]


@pytest.mark.parametrize(
    ("current", "samples", "target", "expected"),
    [c[1:] for c in METRIC_CASES],
    ids=[c[0] for c in METRIC_CASES],
)
def test_metric_recommendation(current: int, samples: list[PodMetric], target: float, expected: int) -> None:
    assert metric_replicas(current, samples, target).replicas == expected


def test_average_is_over_pods_with_samples() -> None:
    rec = metric_replicas(3, pods((R, 100), (R, 300), (T, 5000), (R, None)), 100)
    assert rec.average == 200
    assert rec.ratio == 2


@pytest.mark.parametrize("samples", [pods(), pods((T, 10)), pods((P, None), (R, None))])
def test_no_ready_sample_is_an_error(samples: list[PodMetric]) -> None:
    with pytest.raises(NoMetricsError):
        metric_replicas(2, samples, 100)


# The plain formula: every pod ready and sampled, no stabilization, generous rate limits.
# (current, per-pod average, target, min, max)
FORMULA_CASES = [
    (1, 350.0, 100.0, 1, 8),
    (2, 10.0, 100.0, 1, 8),
    (3, 100.0, 100.0, 1, 8),
    (4, 108.0, 100.0, 1, 8),
    (4, 89.0, 100.0, 1, 8),
    (5, 1000.0, 100.0, 1, 8),
    (6, 1.0, 100.0, 2, 8),
    (2, 20_000.0, 15_000.0, 1, 8),
    (7, 14_000.0, 15_000.0, 1, 8),
]


@pytest.mark.parametrize(("current", "average", "target", "low", "high"), FORMULA_CASES)
def test_decision_follows_formula(current: int, average: float, target: float, low: int, high: int) -> None:
    generous = ScalingRules(0.0, (ScalingPolicy(PolicyType.PERCENT, 1000, 1.0),))
    spec = HpaSpec(target, low, high, scale_up=generous, scale_down=generous)
    decision = HorizontalAutoscaler(spec).decide(0.0, current, pods(*[(R, average)] * current))
    ratio = average / target
    expected = current if abs(1 - ratio) <= 0.1 else math.ceil(current * ratio)
    assert decision.desired == min(max(expected, low), high)


def local_spec(window: float = 30.0, **kwargs: object) -> HpaSpec:
    return HpaSpec(100.0, 1, 8, scale_down=default_scale_down(window), **kwargs)  # type: ignore[arg-type]


def run(hpa: HorizontalAutoscaler, steps: list[tuple[float, int, list[float]]]) -> list[tuple[int, str]]:
    """Feed (time, current replicas, per-pod values) steps; returns (desired, reason) per step."""
    return [
        ((d := hpa.decide(t, current, pods(*[(R, v) for v in values]))).desired, d.reason)
        for t, current, values in steps
    ]


def test_scale_out_at_once_scale_in_after_window() -> None:
    hpa = HorizontalAutoscaler(local_spec(window=30.0))
    steps = [
        (0.0, 1, [300]),  # ramp: 3x the target
        (2.0, 3, [100, 100, 100]),  # settled
        (4.0, 3, [20, 20, 20]),  # traffic falls: recommendation 1, held by the window
        (20.0, 3, [20, 20, 20]),
        (31.5, 3, [20, 20, 20]),  # the t=2 recommendation (3) is in the window until t=32
        (32.5, 3, [20, 20, 20]),
    ]
    assert run(hpa, steps) == [
        (3, "ReadyForNewScale"),
        (3, "ReadyForNewScale"),
        (3, "ScaleDownStabilized"),
        (3, "ScaleDownStabilized"),
        (3, "ScaleDownStabilized"),
        (1, "ReadyForNewScale"),
    ]


def test_scale_down_follows_highest_recommendation_in_window() -> None:
    hpa = HorizontalAutoscaler(local_spec(window=10.0))
    steps = [
        (0.0, 6, [100] * 6),  # seeds the window with 6, recommends 6
        (5.0, 6, [70] * 6),  # recommends 5; the window still holds 6
        (8.0, 6, [50] * 6),  # recommends 3; still 6
        (10.5, 6, [50] * 6),  # t=0 left the window: highest is 5 (t=5)
        (15.5, 5, [20] * 5),  # recommends 1; window holds 3 (t=8), 3 (t=10.5) -> 3
        (20.5, 3, [20] * 3),  # only 1s left (t=10.5 is exactly at the cutoff: out) -> 1
    ]
    assert [desired for desired, _ in run(hpa, steps)] == [6, 6, 6, 5, 3, 1]


def test_fresh_autoscaler_waits_one_window_before_scale_down() -> None:
    hpa = HorizontalAutoscaler(local_spec(window=30.0))
    assert run(hpa, [(0.0, 4, [10] * 4), (29.0, 4, [10] * 4), (30.5, 4, [10] * 4)]) == [
        (4, "ScaleDownStabilized"),
        (4, "ScaleDownStabilized"),
        (1, "ReadyForNewScale"),
    ]


def test_scale_up_rate_limit_per_period() -> None:
    hpa = HorizontalAutoscaler(local_spec())  # default up policy: max(+4 pods, +100 %) per 15 s
    steps = [
        (0.0, 1, [1000]),  # wants 10: limited to 1 + 4 = 5
        (5.0, 5, [200] * 5),  # wants 10: period started at 1 replica -> still 5
        (16.0, 5, [200] * 5),  # new period: max(5 + 4, 5 x 2) = 10, clamped to max 8
    ]
    assert run(hpa, steps) == [(5, "ScaleUpLimit"), (5, "ScaleUpLimit"), (8, "TooManyReplicas")]


def test_scale_down_rate_limit_pods_policy() -> None:
    down = ScalingRules(0.0, (ScalingPolicy(PolicyType.PODS, 1, 10.0),))
    hpa = HorizontalAutoscaler(HpaSpec(100.0, 1, 8, scale_down=down))
    steps = [(0.0, 4, [10] * 4), (1.0, 3, [10] * 3), (11.0, 3, [10] * 3)]
    assert run(hpa, steps) == [(3, "ScaleDownLimit"), (3, "ScaleDownLimit"), (2, "ScaleDownLimit")]


def test_scale_up_stabilization_window_takes_lowest() -> None:
    up = ScalingRules(10.0, (ScalingPolicy(PolicyType.PERCENT, 1000, 1.0),))
    hpa = HorizontalAutoscaler(local_spec(window=0.0, scale_up=up))
    steps = [(0.0, 2, [100, 100]), (1.0, 2, [400, 400]), (11.5, 2, [400, 400])]
    assert run(hpa, steps) == [(2, "ReadyForNewScale"), (2, "ScaleUpStabilized"), (8, "ReadyForNewScale")]


def test_disabled_direction_never_moves() -> None:
    off = ScalingRules(0.0, (), SelectPolicy.DISABLED)
    hpa = HorizontalAutoscaler(HpaSpec(100.0, 1, 8, scale_up=off))
    assert hpa.decide(0.0, 2, pods((R, 900), (R, 900))).desired == 2


@pytest.mark.parametrize(
    ("current", "expected", "reason"),
    [(10, 8, "TooManyReplicas"), (0, 0, "ScalingDisabled")],
)
def test_out_of_range_current(current: int, expected: int, reason: str) -> None:
    decision = HorizontalAutoscaler(HpaSpec(100.0, 2, 8)).decide(0.0, current, pods((R, 100)))
    assert (decision.desired, decision.reason) == (expected, reason)


def test_below_min_goes_to_min() -> None:
    decision = HorizontalAutoscaler(HpaSpec(100.0, 2, 8)).decide(0.0, 1, pods((R, 0)))
    assert (decision.desired, decision.reason) == (2, "TooFewReplicas")


def test_no_metrics_keeps_size() -> None:
    decision = HorizontalAutoscaler(local_spec()).decide(0.0, 3, pods((T, 5), (P, None)))
    assert (decision.desired, decision.reason) == (3, "FailedGetPodsMetric")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"target_average_value": 0}, "target_average_value"),
        ({"target_average_value": 1, "min_replicas": 0}, "min_replicas"),
        ({"target_average_value": 1, "min_replicas": 3, "max_replicas": 2}, "max_replicas"),
        ({"target_average_value": 1, "tolerance": -1}, "tolerance"),
    ],
)
def test_bad_spec_names_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        HpaSpec(**kwargs)  # type: ignore[arg-type]
