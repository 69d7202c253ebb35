"""Paired-ratio statistics of the traffic benchmark: the sign-test interval and the verdicts."""

import math
import random

import pytest

from flexsfc.bench import paired
from flexsfc.bench.paired import Verdict


def test_ratios_skip_rounds_where_either_side_failed() -> None:
    assert paired.ratios([2.0, None, 3.0, 4.0], [1.0, 1.0, None, 2.0]) == [2.0, 2.0]


@pytest.mark.parametrize(
    ("n", "low_rank", "coverage"),
    [(6, 1, 0.9688), (9, 2, 0.9609), (10, 2, 0.9785), (12, 3, 0.9614), (20, 6, 0.9586), (40, 14, 0.9615)],
)
def test_interval_is_the_textbook_sign_test_interval(n: int, low_rank: int, coverage: float) -> None:
    samples = [float(i) for i in range(1, n + 1)]
    random.Random(n).shuffle(samples)
    est = paired.estimate(samples)
    assert est is not None
    assert (est.low, est.high) == (float(low_rank), float(n + 1 - low_rank))
    assert est.confidence == pytest.approx(coverage, abs=1e-4)
    assert est.median == (n + 1) / 2


def test_interval_covers_the_true_median_as_often_as_it_claims() -> None:
    """Coverage by simulation: lognormal ratios whose true median is 1."""
    rng = random.Random(7)
    trials, hits = 4000, 0
    for _ in range(trials):
        est = paired.estimate(math.exp(rng.gauss(0, 0.1)) for _ in range(12))
        assert est is not None
        hits += est.low <= 1.0 <= est.high
    assert hits / trials >= 0.95


def test_few_pairs_give_the_widest_interval_and_its_true_coverage() -> None:
    est = paired.estimate([0.9, 1.1, 1.0])
    assert est is not None
    assert (est.low, est.high, est.confidence) == (0.9, 1.1, 0.75)
    assert paired.estimate([]) is None


def test_verdicts_need_the_whole_interval_on_one_side() -> None:
    clearly_above = paired.estimate([0.99, 1.0, 1.01, 0.995, 1.02, 0.985, 1.0, 1.01, 0.99, 1.0])
    straddling = paired.estimate([0.90, 1.0, 1.05, 0.95, 1.02, 0.93, 0.99, 1.04, 0.96, 1.0])
    clearly_below = paired.estimate([0.80, 0.82, 0.85, 0.81, 0.84, 0.83, 0.80, 0.86, 0.82, 0.81])
    assert paired.at_least(clearly_above, 0.97) is Verdict.MET
    assert paired.at_least(straddling, 0.97) is Verdict.UNRESOLVED
    assert paired.at_least(clearly_below, 0.97) is Verdict.MISSED
    assert paired.at_most(clearly_below, 1.0) is Verdict.MET
    assert paired.at_most(straddling, 1.0) is Verdict.UNRESOLVED
    assert paired.at_most(clearly_above, 0.9) is Verdict.MISSED
    assert paired.at_least(None, 0.97) is Verdict.NO_DATA


def test_too_few_pairs_never_decide() -> None:
    """Two pairs far below the bound are still no evidence at 95 %."""
    two = paired.estimate([0.5, 0.6])
    assert paired.at_least(two, 0.97) is Verdict.UNRESOLVED
    assert paired.at_most(two, 1.0) is Verdict.UNRESOLVED
