"""Queue-stability experiments: the real node code under Poisson load, in virtual or real time."""

from dmoa_p2p.simulate._metrics import Arrival, QueueStats, RunResult
from dmoa_p2p.simulate._model import (
    RunConfig,
    device_utilisations,
    predicted_mean_queue,
    predicted_threshold,
    theorem1_rate,
)
from dmoa_p2p.simulate._run import simulate, simulate_real

__all__ = [
    "Arrival",
    "QueueStats",
    "RunConfig",
    "RunResult",
    "device_utilisations",
    "predicted_mean_queue",
    "predicted_threshold",
    "simulate",
    "simulate_real",
    "theorem1_rate",
]
