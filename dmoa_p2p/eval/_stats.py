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


def accuracy_interval(
    scores: Sequence[float], *, seed: int = 1, resamples: int = 2000
) -> tuple[float, float]:
    """A 95 % interval of the mean of per-item scores: Wilson's when each item was asked
    once (scores 0 or 1); with repeats (an item's score is the share of its repeats right),
    a bootstrap over items, since the repeats of one item are not independent trials."""
    if all(score in (0, 1) for score in scores):
        return wilson_interval(int(sum(scores)), len(scores))
    return _bootstrap(scores, seed, resamples)


def _bootstrap(values: Sequence[float], seed: int, resamples: int) -> tuple[float, float]:
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    return means[int(0.025 * (resamples - 1))], means[math.ceil(0.975 * (resamples - 1))]


def sign_flip_p(deltas: Sequence[float], *, seed: int = 1, resamples: int = 2000) -> float:
    """Two-sided paired randomisation test: under no difference each item's delta is as
    likely negated, so how often is a random choice of signs as far from 0 as observed?"""
    observed = abs(sum(deltas))
    if observed == 0:
        return 1.0
    rng = random.Random(seed)
    as_far = sum(
        abs(sum(d if rng.random() < 0.5 else -d for d in deltas)) >= observed - 1e-12
        for _ in range(resamples)
    )
    return (as_far + 1) / (resamples + 1)


@attrs.frozen
class PairedComparison:
    """A configuration against the baseline on the same items."""

    items: int
    difference: float  # accuracy minus the baseline's
    low: float  # 95 % paired-bootstrap interval of the difference
    high: float
    only_this: int  # items this one got right and the baseline wrong (more often, with repeats)
    only_baseline: int
    p_value: float  # exact McNemar; with repeats, the sign-flip test of the per-item differences


def compare_paired(
    this: Sequence[float], baseline: Sequence[float], *, seed: int = 1, resamples: int = 2000
) -> PairedComparison:
    """`this` against `baseline`, item by item (the same items in the same order): each an
    item's score, 1 or 0 (right or wrong), or the share of its repeats right."""
    if len(this) != len(baseline):
        raise ValueError(f"{len(this)} results against {len(baseline)} baseline results")
    n = len(this)
    if n == 0:
        return PairedComparison(0, 0.0, 0.0, 0.0, 0, 0, 1.0)
    deltas = [float(a) - float(b) for a, b in zip(this, baseline, strict=True)]
    only_this = sum(d > 0 for d in deltas)
    only_baseline = sum(d < 0 for d in deltas)
    low, high = _bootstrap(deltas, seed, resamples)
    binary = all(score in (0, 1) for score in (*this, *baseline))
    p_value = (
        mcnemar_p(only_this, only_baseline)
        if binary
        else sign_flip_p(deltas, seed=seed, resamples=resamples)
    )
    return PairedComparison(n, sum(deltas) / n, low, high, only_this, only_baseline, p_value)
