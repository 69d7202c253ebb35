"""The benchmarks' statistics: the summaries every section records, and the paired-ratio sign-test
interval with its verdicts."""

import math
import random

import pytest

from flexsfc.bench import stats
from flexsfc.bench.stats import Verdict


def test_ratios_skip_rounds_where_either_side_failed() -> None:
    assert stats.ratios([2.0, None, 3.0, 4.0], [1.0, 1.0, None, 2.0]) == [2.0, 2.0]


@pytest.mark.parametrize(
    ("n", "low_rank", "coverage"),
    [(6, 1, 0.9688), (9, 2, 0.9609), (10, 2, 0.9785), (12, 3, 0.9614), (20, 6, 0.9586), (40, 14, 0.9615)],
)
def test_interval_is_the_textbook_sign_test_interval(n: int, low_rank: int, coverage: float) -> None:
    samples = [float(i) for i in range(1, n + 1)]
    random.Random(n).shuffle(samples)
    est = stats.estimate(samples)
    assert est is not None
    assert (est.low, est.high) == (float(low_rank), float(n + 1 - low_rank))
    assert est.confidence == pytest.approx(coverage, abs=1e-4)
    assert est.median == (n + 1) / 2


def test_interval_covers_the_true_median_as_often_as_it_claims() -> None:
    """Coverage by simulation: lognormal ratios whose true median is 1."""
    rng = random.Random(7)
    trials, hits = 4000, 0
    for _ in range(trials):
        est = stats.estimate(math.exp(rng.gauss(0, 0.1)) for _ in range(12))
        assert est is not None
        hits += est.low <= 1.0 <= est.high
    assert hits / trials >= 0.95


def test_few_pairs_give_the_widest_interval_and_its_true_coverage() -> None:
    est = stats.estimate([0.9, 1.1, 1.0])
    assert est is not None
    assert (est.low, est.high, est.confidence) == (0.9, 1.1, 0.75)
    assert stats.estimate([]) is None


def test_verdicts_need_the_whole_interval_on_one_side() -> None:
    clearly_above = stats.estimate([0.99, 1.0, 1.01, 0.995, 1.02, 0.985, 1.0, 1.01, 0.99, 1.0])
    straddling = stats.estimate([0.90, 1.0, 1.05, 0.95, 1.02, 0.93, 0.99, 1.04, 0.96, 1.0])
    clearly_below = stats.estimate([0.80, 0.82, 0.85, 0.81, 0.84, 0.83, 0.80, 0.86, 0.82, 0.81])
    assert stats.at_least(clearly_above, 0.97) is Verdict.MET
    assert stats.at_least(straddling, 0.97) is Verdict.UNRESOLVED
    assert stats.at_least(clearly_below, 0.97) is Verdict.MISSED
    assert stats.at_most(clearly_below, 1.0) is Verdict.MET
    assert stats.at_most(straddling, 1.0) is Verdict.UNRESOLVED
    assert stats.at_most(clearly_above, 0.9) is Verdict.MISSED
    assert stats.at_least(None, 0.97) is Verdict.NO_DATA


def test_too_few_pairs_never_decide() -> None:
    """Two pairs far below the bound are still no evidence at 95 %."""
    two = stats.estimate([0.5, 0.6])
    assert stats.at_least(two, 0.97) is Verdict.UNRESOLVED
    assert stats.at_most(two, 1.0) is Verdict.UNRESOLVED


SAMPLE = [7.0, 1.0, None, 4.0, 10.0, 2.0, 9.0, 3.0, 8.0, 5.0, 6.0]  # 1..10 shuffled, one failed run


def test_summary_quartiles_interpolate_and_skip_missing_values() -> None:
    assert stats.summary(SAMPLE) == {
        "n": 10,
        "median": 5.5,
        "p25": 3.25,
        "p75": 7.75,
        "min": 1.0,
        "max": 10.0,
    }
    assert stats.summary([4.0]) == {"n": 1, "median": 4.0, "p25": 4.0, "p75": 4.0, "min": 4.0, "max": 4.0}
    assert stats.summary([None]) == {
        "n": 0,
        "median": None,
        "p25": None,
        "p75": None,
        "min": None,
        "max": None,
    }


def test_summary_spread_of_reaction_times_is_rounded() -> None:
    spread = stats.summary([1.00049, 2.0, 3.0], stats.SPREAD, ndigits=3)
    assert spread == {"n": 3, "median": 2.0, "p90": 3.0, "min": 1.0, "max": 3.0, "mean": 2.0}
    assert list(spread) == ["n", "median", "p90", "min", "max", "mean"]  # the JSON's key order


def test_summary_deciles_take_the_sample_at_the_rank_without_interpolation() -> None:
    deciles = stats.summary(SAMPLE, stats.DECILES)
    assert deciles == {"median": 5.5, "p10": 2.0, "p90": 10.0, "min": 1.0, "n": 10}
    assert list(deciles) == ["median", "p10", "p90", "min", "n"]


def test_median_ignores_failed_runs() -> None:
    assert stats.median([None, 3.0, 1.0]) == 2.0
    assert stats.median([None]) is None
