"""The benchmarks' statistics: summaries of a sample, and paired ratios with what they allow one to
conclude.

Summaries (`summary`) describe one series of measurements; every section's JSON uses one of the
field sets below, so results of earlier runs stay comparable.

Paired ratios (a variant measured right after its reference): on a shared VM a figure moves by
10-20 % from one measurement to the next, more than the 3-5 % margins of the data-plane targets. Two
things make a comparison hold anyway: each ratio pairs two measurements taken seconds apart (the
drift of the machine cancels out), and the verdict comes with a distribution-free 95 % confidence
interval of the median ratio (the sign-test interval, exact for any distribution). A target is
*met* when the whole interval is on its side, *missed* when the whole interval is on the other side,
and *unresolved* when the run cannot tell, rather than a yes or no decided by noise.
"""

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

CONFIDENCE = 0.95

# Field sets of `summary`, by the sections that record them.
QUARTILES = ("n", "median", "p25", "p75", "min", "max")  # most sections
SPREAD = ("n", "median", "p90", "min", "max", "mean")  # reaction times
DECILES = ("median", "p10", "p90", "min", "n")  # data-plane microbenchmarks


def _rank(q: int) -> Callable[[list[float]], float]:
    """The sample at rank floor(q % of n): no interpolation, so p90 of 10 samples is the largest."""
    return lambda data: data[min(len(data) - 1, len(data) * q // 100)]


def _quartile(index: int) -> Callable[[list[float]], float]:
    """Interpolated quartile (inclusive method); one sample is its own quartile."""
    return lambda data: (
        statistics.quantiles(data, n=4, method="inclusive")[index] if len(data) > 1 else data[0]
    )


_FIELDS: dict[str, Callable[[list[float]], float | int]] = {
    "n": len,
    "median": statistics.median,
    "mean": statistics.fmean,
    "min": lambda data: data[0],
    "max": lambda data: data[-1],
    "p10": _rank(10),
    "p90": _rank(90),
    "p25": _quartile(0),
    "p75": _quartile(2),
}


def median(values: Iterable[float | None]) -> float | None:
    """Median of the measured values (a failed run records None); None when there are none."""
    data = [v for v in values if v is not None]
    return statistics.median(data) if data else None


def summary(
    values: Iterable[float | None], fields: Sequence[str] = QUARTILES, *, ndigits: int | None = None
) -> dict[str, float | int | None]:
    """`fields` (names from the sets above) of a sample, None values left out; each value rounded to
    `ndigits` when given. An empty sample has n = 0 and None elsewhere."""
    data = sorted(v for v in values if v is not None)
    if not data:
        return {name: 0 if name == "n" else None for name in fields}
    out: dict[str, float | int | None] = {}
    for name in fields:
        value = _FIELDS[name](data)
        out[name] = round(value, ndigits) if ndigits is not None and name != "n" else value
    return out


class Verdict(StrEnum):
    MET = "met"
    MISSED = "missed"
    UNRESOLVED = "unresolved"  # the confidence interval straddles the bound
    NO_DATA = "n/a"


@dataclass(frozen=True)
class RatioEstimate:
    median: float
    low: float  # confidence interval of the median, [low, high]
    high: float
    pairs: int
    confidence: float  # the interval's exact coverage (>= CONFIDENCE unless too few pairs)

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def ratios(values: Sequence[float | None], references: Sequence[float | None]) -> list[float]:
    """value / reference for every pair where both were measured (a failed run records None)."""
    return [v / r for v, r in zip(values, references, strict=False) if v and r]


def estimate(samples: Iterable[float]) -> RatioEstimate | None:
    """Median with its sign-test confidence interval: the k-th smallest and k-th largest sample, k
    as large as keeps the coverage at CONFIDENCE or more. With fewer than 6 pairs no interval reaches
    95 %: the widest one (min, max) is given with its true coverage."""
    xs = sorted(samples)
    n = len(xs)
    if n == 0:
        return None
    k = 1  # 1-based rank of the lower bound; the upper one is n + 1 - k
    while k + 1 <= (n + 1) // 2 and _coverage(n, k + 1) >= CONFIDENCE:
        k += 1
    coverage = _coverage(n, k)
    return RatioEstimate(
        median=_median(xs), low=xs[k - 1], high=xs[n - k], pairs=n, confidence=round(coverage, 4)
    )


def at_least(est: RatioEstimate | None, bound: float) -> Verdict:
    """Is the true median ratio >= bound (throughput targets)?"""
    if est is None:
        return Verdict.NO_DATA
    if est.confidence < CONFIDENCE:
        return Verdict.UNRESOLVED  # too few pairs for any interval to decide
    if est.low >= bound:
        return Verdict.MET
    if est.high < bound:
        return Verdict.MISSED
    return Verdict.UNRESOLVED


def at_most(est: RatioEstimate | None, bound: float) -> Verdict:
    """Is the true median ratio <= bound (latency and cost targets)?"""
    if est is None:
        return Verdict.NO_DATA
    if est.confidence < CONFIDENCE:
        return Verdict.UNRESOLVED
    if est.high <= bound:
        return Verdict.MET
    if est.low > bound:
        return Verdict.MISSED
    return Verdict.UNRESOLVED


def _coverage(n: int, k: int) -> float:
    """Chance that [k-th smallest, k-th largest] of n samples holds the true median: one minus the
    two tails where fewer than k samples fall on one side of it (binomial(n, 1/2))."""
    tail = sum(math.comb(n, i) for i in range(k)) / 2**n
    return max(0.0, 1 - 2 * tail)


def _median(xs: Sequence[float]) -> float:
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2
