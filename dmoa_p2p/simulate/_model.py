"""What one simulated run is (the swarm, the users, the policy) and what theory predicts for it."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence

import attrs

from dmoa_p2p import stability as st

# a queue large enough never to fill: instability shows as growth, not as refused tasks
UNBOUNDED_QUEUE = 1_000_000
STRATEGIES = ("augmented", "capacity")


def _alphas(value: tuple[float, ...] | list[float]) -> tuple[float, ...]:
    return tuple(float(a) for a in value)


def _options(value: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(dict(value).items()))


@attrs.frozen
class RunConfig:
    """One run: n devices with mean service times `alphas`, every user at rate λ = `rate`.

    Times are seconds (virtual under MockClock). Arrivals run for `warmup_s` unmeasured,
    then `duration_s` measured; afterwards in-flight prompts get up to `drain_s` to finish.
    """

    alphas: tuple[float, ...] = attrs.field(converter=_alphas)
    layers: int
    proposers: int
    rate: float
    duration_s: float
    seed: int = 1
    strategy: str = "augmented"
    admission: str = "none"
    admission_options: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_options)
    warmup_s: float | None = None  # None: `default_warmup_s`
    drain_s: float | None = None  # None: a quarter of the duration
    sample_interval_s: float | None = None  # None: half the smallest α
    queue_capacity: int = UNBOUNDED_QUEUE
    latency_s: float = 0.001  # one-way message latency of the in-memory overlay
    presence_interval_s: float = 1.0

    @property
    def n(self) -> int:
        return len(self.alphas)

    @property
    def warmup(self) -> float:
        return default_warmup_s(self.alphas) if self.warmup_s is None else self.warmup_s

    @property
    def drain(self) -> float:
        return self.duration_s / 4 if self.drain_s is None else self.drain_s

    @property
    def sample_interval(self) -> float:
        if self.sample_interval_s is not None:
            return self.sample_interval_s
        return min(self.alphas) / 2

    def with_rate(self, rate: float) -> RunConfig:
        return attrs.evolve(self, rate=rate)

    def rng(self, purpose: str, index: int = 0) -> random.Random:
        """An independent generator per purpose and node, fixed by the run's seed."""
        return random.Random(f"dmoa-sim/{self.seed}/{purpose}/{index}")

    def identity_seed(self, index: int) -> bytes:
        return hashlib.sha256(f"dmoa-sim/{self.seed}/identity/{index}".encode()).digest()


def default_warmup_s(alphas: tuple[float, ...]) -> float:
    """Long enough for many services on every device and dozens of prompts per user."""
    return max(70.0, 50.0 * max(alphas))


def theorem1_rate(config: RunConfig) -> float:
    """Theorem 1's threshold λ* = 1/(ᾱ·((k+1)M+1)), with the mean α when they differ."""
    return st.max_stable_rate(sum(config.alphas) / config.n, config.layers, config.proposers)


def _choice(config: RunConfig) -> st.Choice:
    return "capacity" if config.strategy == "capacity" else "uniform"


def predicted_threshold(config: RunConfig) -> float:
    """The strategy's maximum stable per-user λ from the per-device condition. Exact.

    Equal α's and uniform choice: Theorem 1. Unequal α's, uniform: Remark 1 (α_max).
    `capacity`: proposers drawn by spare capacity (`stability.max_stable_scale`, bisection).
    """
    ones = [1.0] * config.n
    return st.max_stable_scale(
        ones, list(config.alphas), config.layers, config.proposers, _choice(config)
    )


def device_utilisations(config: RunConfig, rate: float | None = None) -> list[float]:
    """Predicted ρ_i of every device at per-user rate `rate` (default: the config's)."""
    lam = config.rate if rate is None else rate
    alphas = list(config.alphas)
    arrivals = st.inference_arrival_rates(
        [lam] * config.n, alphas, config.layers, config.proposers, _choice(config)
    )
    return st.device_utilisations(arrivals, alphas)


def saturation_rate(config: RunConfig, scales: Sequence[float]) -> float:
    """The λ at which max_i scales_i·ρ_i(λ) reaches 1, ρ_i from `device_utilisations`.

    With busy fractions measured as scales_i·ρ_i: where the busiest device would be busy all
    the time. Under uniform choice ρ_i is linear in λ; under `capacity` it is not.
    """
    if max(scales) <= 0:
        return math.inf

    def busiest(lam: float) -> float:
        rhos = device_utilisations(config, lam)
        return max(c * rho for c, rho in zip(scales, rhos, strict=True))

    return st.crossing(busiest, predicted_threshold(config))


def predicted_mean_queue(config: RunConfig, rate: float | None = None) -> float:
    """Mean over devices of the M/M/1 E[N] = ρ_i/(1−ρ_i); infinite once any ρ_i ≥ 1.

    Approximate: a device's arrivals are not Poisson (an origin's own tasks of one prompt
    come one after another, never together). Exponential service makes M/G/1 equal M/M/1.
    """
    rhos = device_utilisations(config, rate)
    if max(rhos) >= 1.0 - 1e-9:  # at the threshold itself rounding can leave ρ a hair below 1
        return math.inf
    return sum(rho / (1.0 - rho) for rho in rhos) / len(rhos)
