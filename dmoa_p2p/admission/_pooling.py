"""Pooling the devices' noisy service-time estimates before the busiest one is picked."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import attrs


@attrs.frozen
class ServiceEstimate:
    """One device's measured mean service time, its variance and how many services it saw."""

    mean_s: float
    var_s2: float | None
    samples: int


def pooled_service_times(estimates: Sequence[ServiceEstimate]) -> list[float]:
    """Empirical-Bayes shrinkage of each device's mean service time toward the swarm's. Approximate.

    Admission looks at the busiest device, and the maximum of n noisy estimates is biased
    upwards (by about one standard error for n = 4), so identical devices measured from 64
    exponential services each would look 12 % slower than they are. Each estimate is moved
    toward the swarm's mean by the share of its spread that sampling noise explains: the
    normal-normal model on log α, with sampling variance CV²/samples (CV² = 1, exponential
    times, until two samples give a variance) and the between-device variance estimated by
    moments. Identical devices pool into one figure; devices that really differ (say 1 s and
    4 s with 64 samples each) keep within a few per cent of their own. Shrinkage of the
    log is the geometric mean, a little below the arithmetic one (CV²/2·samples: 1 % at 64).
    """
    usable = [e for e in estimates if e.mean_s > 0 and e.samples > 0]
    if len(usable) < 2 or len(usable) != len(estimates):
        return [e.mean_s for e in estimates]
    logs = [math.log(e.mean_s) for e in usable]
    noise = [_log_mean_variance(e) for e in usable]
    centre = statistics.fmean(logs)
    spread = max(0.0, statistics.variance(logs) - statistics.fmean(noise))
    pooled = []
    for value, var in zip(logs, noise, strict=True):
        keep = 1.0 if var == 0 else spread / (spread + var)
        pooled.append(math.exp(centre + keep * (value - centre)))
    return pooled


def _log_mean_variance(estimate: ServiceEstimate) -> float:
    """Var(log of a sample mean) ≈ CV²/samples (delta method)."""
    if estimate.samples >= 2 and estimate.var_s2 is not None:
        cv2 = estimate.var_s2 / (estimate.mean_s * estimate.mean_s)
    else:
        cv2 = 1.0
    return cv2 / estimate.samples
