"""What a run measured: prompts' fates, queue samples, busy time; and the figures made from them."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import attrs

from dmoa_p2p import stability as st
from dmoa_p2p.simulate._model import (
    RunConfig,
    device_utilisations,
    predicted_mean_queue,
    predicted_threshold,
    saturation_rate,
    theorem1_rate,
)

Outcome = Literal["in_flight", "answered", "refused", "failed"]


@attrs.define
class Arrival:
    """One user prompt: when it arrived, at which node, and how it ended."""

    node: int
    at: float
    outcome: Outcome = "in_flight"
    ended: float | None = None
    degraded: bool = False  # admission ran it with a smaller (M, k)
    ran: tuple[int, int] | None = None  # the (M, k) it was answered with
    incomplete: bool = False  # answered, but some proposal or the aggregation was missing
    error: str = ""


@attrs.frozen
class Raw:
    """Everything recorded during one run, before any statistics."""

    arrivals: tuple[Arrival, ...]
    samples: tuple[tuple[float, tuple[int, ...]], ...]  # (time, queue length per node)
    window: tuple[float, float]  # the measured part of the run, run clock
    busy_s: tuple[float, ...]  # per node, inside the window
    node_outcomes: Counter[str]  # summed over nodes
    rho_seen: tuple[float, ...]  # per sample: admission's projected ρ, mean over nodes
    connections: tuple[tuple[int, ...], ...]  # per sample: each node's open connections
    drawn_load: tuple[float, ...]  # per device: inferences per unit λ as drawn, sample mean
    wall_s: float


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return float(ordered[rank - 1])


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys against xs; 0 with fewer than two distinct xs."""
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


@attrs.frozen
class QueueStats:
    mean: float  # over nodes and samples
    p99: float  # pooled over nodes and samples
    max_node_mean: float  # the busiest node's mean
    growth: float  # mean in the last third of the window minus mean in the first third
    drift_per_s: float  # least-squares slope of the per-node mean queue, prompts per second


def queue_stats(samples: Sequence[tuple[float, tuple[int, ...]]]) -> QueueStats:
    if not samples:
        return QueueStats(math.nan, math.nan, math.nan, math.nan, math.nan)
    pooled = [float(q) for _, lengths in samples for q in lengths]
    per_node = list(zip(*(lengths for _, lengths in samples), strict=True))
    means = [statistics.fmean(lengths) for _, lengths in samples]
    third = max(1, len(samples) // 3)
    return QueueStats(
        mean=statistics.fmean(pooled),
        p99=percentile(pooled, 0.99),
        max_node_mean=max(statistics.fmean(node) for node in per_node),
        growth=statistics.fmean(means[-third:]) - statistics.fmean(means[:third]),
        drift_per_s=slope([t for t, _ in samples], means),
    )


def connection_stats(samples: Sequence[tuple[int, ...]]) -> dict[str, float | None]:
    """Connections per node, pooled over nodes and samples."""
    pooled = [float(c) for sample in samples for c in sample]
    if not pooled:
        return {"median": None, "p99": None, "max": None}
    median = statistics.median(pooled)
    return {"median": median, "p99": percentile(pooled, 0.99), "max": max(pooled)}


def books(raw: Raw) -> dict[str, int]:
    """Every arrival's fate; `unfinished` were still running when the run ended."""
    fates = Counter(a.outcome for a in raw.arrivals)
    return {
        "arrivals": len(raw.arrivals),
        "answered": fates["answered"],
        "refused": fates["refused"],
        "failed": fates["failed"],
        "unfinished": fates["in_flight"],
        "degraded": sum(a.degraded for a in raw.arrivals),
        "incomplete": sum(a.incomplete for a in raw.arrivals),
    }


def books_balance(raw: Raw) -> bool:
    """Arrivals = answered + refused + failed + unfinished, and the nodes counted the same.

    A node counts a prompt still running at the end of the run as cancelled.
    """
    b = books(raw)
    ours = b["answered"] + b["refused"] + b["failed"] + b["unfinished"] == b["arrivals"]
    nodes = raw.node_outcomes
    return (
        ours
        and nodes["answered"] == b["answered"]
        and nodes["refused"] == b["refused"]
        and nodes["failed"] == b["failed"]
        and nodes["cancelled"] == b["unfinished"]
        and nodes["accepted"] + nodes["degraded"] + nodes["refused"] == b["arrivals"]
    )


@attrs.frozen
class RunResult:
    """One run's figures; `to_json` is what `simulate --json` prints per point."""

    config: RunConfig
    real: bool
    raw: Raw = attrs.field(repr=False, eq=False)

    @property
    def threshold(self) -> float:
        return predicted_threshold(self.config)

    @property
    def drawn_threshold(self) -> float | None:
        """The prediction for the proposers as actually drawn: the λ at which the busiest
        device, at the load the nodes' candidate sets put on it, saturates. Uniform choice
        among the candidates only (`capacity` weighs them by load)."""
        if self.config.strategy == "capacity" or not self.raw.drawn_load:
            return None
        rate = st.max_stable_rate_for_loads(self.raw.drawn_load, self.config.alphas)
        return rate if math.isfinite(rate) else None

    @property
    def multiplier(self) -> float:
        return self.config.rate / self.threshold

    @property
    def rho(self) -> float:
        """Predicted utilisation of the busiest device (Theorem 1's ρ when the α's are equal).

        Not rate / threshold in general: under `capacity` the weights change with λ.
        """
        return max(device_utilisations(self.config))

    @property
    def queue(self) -> QueueStats:
        return queue_stats(self.raw.samples)

    @property
    def window_s(self) -> float:
        low, high = self.raw.window
        return high - low

    def measured(self) -> list[Arrival]:
        low, high = self.raw.window
        return [a for a in self.raw.arrivals if low <= a.at < high]

    def latencies(self) -> list[float]:
        done = [a for a in self.measured() if a.outcome == "answered"]
        return [a.ended - a.at for a in done if a.ended is not None]

    def answered_as(self) -> dict[str, int]:
        """How many prompts were answered with each (M, k), as "M,k"."""
        counts = Counter(f"{a.ran[0]},{a.ran[1]}" for a in self.raw.arrivals if a.ran is not None)
        return dict(sorted(counts.items()))

    @property
    def realised_rate(self) -> float:
        """Prompts per second per user that actually arrived in the window."""
        return len(self.measured()) / self.window_s / self.config.n

    @property
    def goodput(self) -> float:
        """Prompts answered inside the window, per second per user."""
        low, high = self.raw.window
        done = sum(
            1
            for a in self.raw.arrivals
            if a.outcome == "answered" and a.ended is not None and low <= a.ended < high
        )
        return done / self.window_s / self.config.n

    @property
    def busy(self) -> list[float]:
        return [b / self.window_s for b in self.raw.busy_s]

    @property
    def busy_knee(self) -> float:
        """The λ at which the busiest device would be busy all the time.

        Busy fractions scaled along the predicted ρ_i(λ): λ / max busy fraction under
        uniform choice, where ρ_i is linear in λ.
        """
        rhos = device_utilisations(self.config)
        scales = [b / rho if rho > 0 else 0.0 for b, rho in zip(self.busy, rhos, strict=True)]
        return saturation_rate(self.config, scales)

    def to_json(self) -> dict[str, Any]:
        c = self.config
        q = self.queue
        lat = self.latencies()
        measured = self.measured()
        return {
            "mode": "real" if self.real else "memory",
            **_config_json(c),
            "realised_rate": self.realised_rate,
            "multiplier": self.multiplier,
            "threshold_rate": self.threshold,
            "theorem1_rate": theorem1_rate(c),
            "drawn_threshold_rate": self.drawn_threshold,
            "rho": self.rho,
            "rho_theorem1": st.utilisation(sum(c.alphas) / c.n, c.rate, c.layers, c.proposers),
            "predicted_mean_queue": _finite(predicted_mean_queue(c)),
            "warmup_s": c.warmup,
            "duration_s": c.duration_s,
            "queue": {
                "mean": q.mean,
                "p99": q.p99,
                "max_node_mean": q.max_node_mean,
                "growth": q.growth,
                "drift_per_s": q.drift_per_s,
            },
            "latency_s": {
                "mean": statistics.fmean(lat) if lat else None,
                "p99": percentile(lat, 0.99) if lat else None,
            },
            "measured_arrivals": len(measured),
            "measured_refused": sum(a.outcome == "refused" for a in measured),
            "goodput_per_user": self.goodput,
            "goodput_fraction": self.goodput / self.threshold,
            "busy_fraction": self.busy,
            "utilisation": statistics.fmean(self.busy),
            "admission_rho_seen": statistics.fmean(self.raw.rho_seen)
            if self.raw.rho_seen
            else None,
            "connections": connection_stats(self.raw.connections),
            "busy_knee_rate": _finite(self.busy_knee),
            "books": books(self.raw),
            "answered_as": self.answered_as(),
            "books_balance": books_balance(self.raw),
            "wall_s": self.raw.wall_s,
        }


def _config_json(c: RunConfig) -> dict[str, Any]:
    return {
        "n": c.n,
        "alphas_s": list(c.alphas),
        "layers": c.layers,
        "proposers": c.proposers,
        "strategy": c.strategy,
        "admission": c.admission,
        "admission_options": dict(c.admission_options),
        "seed": c.seed,
        "rate": c.rate,
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
