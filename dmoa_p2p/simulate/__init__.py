"""Queue-stability experiments: the real node code under Poisson load, in virtual or real time."""

from __future__ import annotations

from pathlib import Path

from dmoa_p2p.simulate._metrics import Arrival, QueueStats, RunResult, percentile
from dmoa_p2p.simulate._model import (
    STRATEGIES,
    UNBOUNDED_QUEUE,
    RunConfig,
    device_utilisations,
    predicted_mean_queue,
    predicted_threshold,
    theorem1_rate,
)
from dmoa_p2p.simulate._run import simulate, simulate_real
from dmoa_p2p.simulate._sampling import (
    SamplingResult,
    SamplingSwarm,
    in_degree_summary,
    simulate_sampling,
)
from dmoa_p2p.simulate._sweep import DEFAULT_MULTIPLIERS, KNEE_MEANS, Knee, Sweep, run_sweep

__all__ = [
    "DEFAULT_MULTIPLIERS",
    "KNEE_MEANS",
    "STRATEGIES",
    "UNBOUNDED_QUEUE",
    "Arrival",
    "Knee",
    "QueueStats",
    "RunConfig",
    "RunResult",
    "SamplingResult",
    "SamplingSwarm",
    "Sweep",
    "device_utilisations",
    "in_degree_summary",
    "percentile",
    "plot_sweep",
    "predicted_mean_queue",
    "predicted_threshold",
    "run_sweep",
    "simulate",
    "simulate_real",
    "simulate_sampling",
    "theorem1_rate",
]


def plot_sweep(sweep: Sweep, path: Path) -> None:
    """Write the sweep's plot to `path` as a PNG (see `_plot`)."""
    # importing matplotlib takes a while: pay it only when a plot is asked for
    from dmoa_p2p.simulate._plot import plot_sweep as _plot

    _plot(sweep, path)
