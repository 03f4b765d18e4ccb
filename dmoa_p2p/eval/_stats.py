"""Honest statistics for scored answers: Wilson intervals and paired tests against a baseline."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import attrs

Z_95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95 % by default); (0, 1) with no trials."""
    if not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes in {trials} trials")
    if trials == 0:
        return 0.0, 1.0
    if successes in (0, trials):  # the closed forms: no rounding off the end
        bound = trials / (trials + z * z)
        return (0.0, 1 - bound) if successes == 0 else (bound, 1.0)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_p(only_first: int, only_second: int) -> float:
    """Exact two-sided McNemar p-value: of the items exactly one of two configurations got
    right, is the split `only_first` : `only_second` farther from even than chance makes it?
    (A binomial test of the discordant pairs at p = 1/2; 1.0 with none.)"""
    discordant = only_first + only_second
    if min(only_first, only_second) < 0:
        raise ValueError("counts must be >= 0")
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, i) for i in range(min(only_first, only_second) + 1))
    return min(1.0, 2.0 * tail / (1 << discordant))


@attrs.frozen
class PairedComparison:
    """A configuration against the baseline on the same items."""

    items: int
    difference: float  # accuracy minus the baseline's
    low: float  # 95 % paired-bootstrap interval of the difference
    high: float
    only_this: int  # items this one got right and the baseline wrong
    only_baseline: int
    p_value: float  # exact McNemar


def compare_paired(
    this: Sequence[bool], baseline: Sequence[bool], *, seed: int = 1, resamples: int = 2000
) -> PairedComparison:
    """`this` against `baseline`, item by item (the same items in the same order)."""
    if len(this) != len(baseline):
        raise ValueError(f"{len(this)} results against {len(baseline)} baseline results")
    n = len(this)
    only_this = sum(a and not b for a, b in zip(this, baseline, strict=True))
    only_baseline = sum(b and not a for a, b in zip(this, baseline, strict=True))
    if n == 0:
        return PairedComparison(0, 0.0, 0.0, 0.0, 0, 0, 1.0)
    deltas = [int(a) - int(b) for a, b in zip(this, baseline, strict=True)]
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(deltas, k=n)) / n for _ in range(resamples))
    low = means[int(0.025 * (resamples - 1))]
    high = means[math.ceil(0.975 * (resamples - 1))]
    return PairedComparison(
        n, sum(deltas) / n, low, high, only_this, only_baseline, mcnemar_p(only_this, only_baseline)
    )

