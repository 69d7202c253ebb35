"""Paired ratios (a variant measured right after its reference) and what they allow one to conclude.

On a shared VM a figure moves by 10-20 % from one measurement to the next, more than the 3-5 %
margins of the data-plane targets. Two things make a comparison hold anyway: each ratio pairs two
measurements taken seconds apart (the drift of the machine cancels out), and the verdict comes with a
distribution-free 95 % confidence interval of the median ratio (the sign-test interval, exact for any
distribution). A target is *met* when the whole interval is on its side, *missed* when the whole
interval is on the other side, and *unresolved* when the run cannot tell, rather than a yes or no
decided by noise.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

CONFIDENCE = 0.95


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
