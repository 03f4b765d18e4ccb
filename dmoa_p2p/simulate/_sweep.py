"""λ sweeps around the predicted threshold, and the measured stability knee."""

from __future__ import annotations

import concurrent.futures
import functools
import math
import multiprocessing
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from dmoa_p2p.simulate._checkpoint import PointStore
from dmoa_p2p.simulate._metrics import RunResult
from dmoa_p2p.simulate._model import (
    RunConfig,
    device_utilisations,
    predicted_mean_queue,
    predicted_threshold,
    saturation_rate,
    theorem1_rate,
)
from dmoa_p2p.simulate._run import Progress, simulate, simulate_real

DEFAULT_MULTIPLIERS = (0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.5, 2.0)
# a device busy this much or more is saturated: its busy fraction no longer grows with λ
SATURATED_BUSY = 0.95

KNEE_MEANS = (
    "knee: the per-user λ where queues start to grow. Each run's drift is the least-squares "
    "slope of the mean queue (over nodes) against time in the measured window; a hinge "
    "drift = s·max(0, λ − knee) is fitted to (realised λ, drift) over all points by least "
    "squares. Cross-check (busy_knee): λ at which the busiest device's busy fraction, "
    "fitted per device as c·ρ(λ) over unsaturated points (ρ the strategy's predicted "
    "utilisation; b·λ through the origin under uniform choice), would reach 1."
)


def point_config(base: RunConfig, multiplier: float, index: int) -> RunConfig:
    """The run at `multiplier` × the predicted threshold, with its own seed.

    Independent seeds per point: one seed's arrival pattern must not bias every point alike.
    """
    seed = base.rng("sweep-point", index).getrandbits(31)
    return attrs.evolve(base, rate=multiplier * predicted_threshold(base), seed=seed)


@attrs.frozen
class Knee:
    rate: float | None  # hinge fit; None: no point had growing queues
    drift_slope: float  # drift per unit λ above the knee
    busy_rate: float | None  # busy-fraction cross-check
    threshold: float  # the prediction it is compared with
    below: int = 0  # sweep points below the knee (realised λ)
    above: int = 0

    @property
    def well_placed(self) -> bool:
        """At least two points on each side: otherwise the corner is barely pinned down."""
        return self.rate is not None and self.below >= 2 and self.above >= 2

    @property
    def ratio(self) -> float | None:
        return None if self.rate is None else self.rate / self.threshold

    @property
    def busy_ratio(self) -> float | None:
        return None if self.busy_rate is None else self.busy_rate / self.threshold


def hinge_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """(c, s) minimising Σ (y − s·max(0, x − c))² with s ≥ 0; None if no y is positive."""
    if not xs or max(ys) <= 0:
        return None
    low, high = min(xs), max(xs)
    best: tuple[float, float, float] | None = None
    steps = 4000
    for i in range(steps):
        c = low - (high - low) * 0.5 + (high - low) * 1.5 * i / steps
        h = [max(0.0, x - c) for x in xs]
        hh = sum(v * v for v in h)
        if hh == 0:
            continue
        s = max(0.0, sum(v * y for v, y in zip(h, ys, strict=True)) / hh)
        err = sum((y - s * v) ** 2 for v, y in zip(h, ys, strict=True))
        if best is None or err < best[0]:
            best = (err, c, s)
    return None if best is None else (best[1], best[2])


def busy_knee(results: Sequence[RunResult]) -> float | None:
    """Where max_i c_i·ρ_i(λ) = 1, busy_i = c_i·ρ_i(λ) fitted by least squares per device.

    ρ_i is the strategy's predicted utilisation at the realised λ: linear in λ under uniform
    choice (then this is 1 / max_i b_i for busy_i = b_i·λ through the origin), not so under
    `capacity`, whose weights change with λ.
    """
    points = [r for r in results if max(r.busy) < SATURATED_BUSY and r.realised_rate > 0]
    if not points:
        return None
    base = points[0].config
    rhos = [device_utilisations(base, r.realised_rate) for r in points]
    scales = []
    for i in range(base.n):
        sxy = sum(rho[i] * r.busy[i] for rho, r in zip(rhos, points, strict=True))
        sxx = sum(rho[i] ** 2 for rho in rhos)
        scales.append(sxy / sxx if sxx > 0 else 0.0)
    knee = saturation_rate(base, scales)
    return knee if math.isfinite(knee) else None


@attrs.frozen
class Sweep:
    base: RunConfig
    multipliers: tuple[float, ...]
    results: tuple[RunResult, ...]
    real: bool

    @property
    def threshold(self) -> float:
        return predicted_threshold(self.base)

    def knee(self) -> Knee:
        rates = [r.realised_rate for r in self.results]
        fit = hinge_fit(rates, [r.queue.drift_per_s for r in self.results])
        if fit is None:
            return Knee(None, math.nan, busy_knee(self.results), self.threshold)
        above = sum(x > fit[0] for x in rates)
        return Knee(
            fit[0], fit[1], busy_knee(self.results), self.threshold, len(rates) - above, above
        )

    @property
    def drawn_threshold(self) -> float | None:
        """The median over points of their prediction for the proposers as drawn."""
        rates = [r.drawn_threshold for r in self.results]
        known = [rate for rate in rates if rate is not None]
        return statistics.median(known) if known else None

    def to_json(self) -> dict[str, Any]:
        knee = self.knee()
        drawn = self.drawn_threshold
        alphas = list(self.base.alphas)
        return {
            "mode": "real" if self.real else "memory",
            "n": self.base.n,
            "alphas_s": alphas,
            "layers": self.base.layers,
            "proposers": self.base.proposers,
            "strategy": self.base.strategy,
            "admission": self.base.admission,
            "threshold_rate": self.threshold,
            "theorem1_rate": theorem1_rate(self.base),
            "knee_rate": knee.rate,
            "knee_over_threshold": knee.ratio,
            "drawn_threshold_rate": drawn,
            "knee_over_drawn_threshold": None
            if knee.rate is None or drawn is None
            else knee.rate / drawn,
            "knee_points_below_above": [knee.below, knee.above],
            "knee_well_placed": knee.well_placed,
            "busy_knee_rate": knee.busy_rate,
            "busy_knee_over_threshold": knee.busy_ratio,
            "knee_means": KNEE_MEANS,
            "prediction_means": (
                "predicted_mean_queue: mean over devices of M/M/1 E[N] = ρ_i/(1−ρ_i) with ρ_i "
                "from the per-device condition of the strategy; approximate (arrivals at a "
                "device are not Poisson)"
            ),
            "points": [r.to_json() for r in self.results],
        }


def run_sweep(
    base: RunConfig,
    multipliers: Sequence[float],
    *,
    real: bool = False,
    jobs: int = 1,
    progress: Callable[[float], None] | None = None,
    checkpoint: Path | None = None,
) -> Sweep:
    """One run per multiplier of the predicted threshold; `progress` gets points done (float).

    `jobs` > 1 runs that many virtual-time points at once, each in its own process (the
    results are the same: every point has its own seed). Real runs share the machine's
    clock and cores, so they go one at a time. With `checkpoint`, each finished point is
    kept in that directory and a rerun of the same sweep takes it back instead of running it.
    """
    if real and jobs > 1:
        raise ValueError("real runs go one at a time: they would slow each other down")
    configs = [point_config(base, m, i) for i, m in enumerate(multipliers)]
    store = PointStore(checkpoint) if checkpoint is not None else None
    results: dict[int, RunResult] = {}  # by point index
    if store is not None:
        for index, config in enumerate(configs):
            if (kept := store.get(config, real)) is not None:
                results[index] = kept
    todo = [i for i in range(len(configs)) if i not in results]

    def finished(index: int, result: RunResult) -> None:
        results[index] = result
        if store is not None:
            store.put(result)
        if progress is not None:
            progress(len(results))

    if progress is not None and results:
        progress(len(results))
    if jobs > 1 and len(todo) > 1:
        _run_in_processes({i: configs[i] for i in todo}, jobs, finished)
    else:
        run = simulate_real if real else simulate
        for index in todo:
            step: Progress | None = None
            if progress is not None:
                step = functools.partial(_offset, progress, len(results))
            finished(index, run(configs[index], step))
    ordered = tuple(results[i] for i in range(len(configs)))
    return Sweep(base, tuple(multipliers), ordered, real)


def _run_in_processes(
    configs: dict[int, RunConfig], jobs: int, finished: Callable[[int, RunResult], None]
) -> None:
    # spawn, not fork: the parent may have threads (the progress bar's) that fork would copy
    context = multiprocessing.get_context("spawn")
    workers = min(jobs, len(configs))
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {pool.submit(simulate, config): i for i, config in configs.items()}
        for future in concurrent.futures.as_completed(futures):
            finished(futures[future], future.result())


def _offset(progress: Callable[[float], None], done: int, fraction: float) -> None:
    progress(done + fraction)


def prediction_curve(base: RunConfig, points: int = 200) -> list[tuple[float, float]]:
    """(λ, predicted mean queue) up to just below the predicted threshold."""
    top = predicted_threshold(base)
    rates = [top * (i + 1) / (points + 1) for i in range(points)]
    return [(lam, predicted_mean_queue(base, lam)) for lam in rates]
