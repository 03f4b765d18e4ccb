"""Each peer's fair share of this node's model: a token bucket per origin at μ/n tasks/s."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Literal

import attrs
import trio

from dmoa_p2p.queue import LoadEstimator, QueueFullCause
from dmoa_p2p.stability import fair_task_rate

# Why this node refused a peer's task: its queue (see QueueFullCause), the peer's rate, the
# task's deadline, or the model.
TaskRefusalCause = QueueFullCause | Literal["over_fair_rate", "deadline", "model_failed"]

UNKNOWN_SERVICE_S = 0.1  # α assumed until the model has served enough prompts: generous
MIN_SERVICE_SAMPLES = 16  # services before the measured mean is trusted (±25 % for exponential)
BURST = 32.0  # tokens a bucket holds: honest bursts pass (see FairRateLimiter)
MAX_ORIGINS = 1024  # buckets kept; the least recently used is forgotten beyond


@attrs.frozen
class TaskRefusal:
    """Why a peer's task is refused, and when the peer may try again."""

    cause: TaskRefusalCause
    reason: str
    retry_after_s: float


@attrs.define
class _Bucket:
    tokens: float
    updated_at: float


def fair_rate_now(load: LoadEstimator, devices: int) -> float:
    """μ/n tasks per second (`stability.fair_task_rate`) from the model's measured mean service
    time, or from `UNKNOWN_SERVICE_S` until `MIN_SERVICE_SAMPLES` services are measured."""
    alpha = load.mean_service_s if load.service_samples >= MIN_SERVICE_SAMPLES else None
    return fair_task_rate(alpha or UNKNOWN_SERVICE_S, max(1, devices))


class FairRateLimiter:
    """Holds each origin to a rate given at each task: a token bucket per origin.

    A bucket holds at most `burst` tokens and refills at the rate given with each task (μ/n
    moves as the model's service time and the number of peers are measured); a task takes a
    token or is refused. An honest origin sends at most ρ·s times the fair rate on average
    (s = `stability.honest_share_of_fair_rate`, 16/21 for n=4, M=k=2), in bursts, and μ is
    an estimate (±12 % from 64 services). The burst absorbs that: Poisson tasks at 0.85 of
    the rate lose 1 in 10⁶ to 32 tokens, 1 in 10³ to 16; in the simulator (n=4, M=k=2,
    2000 s) 16 tokens refused 1 and 3 of ~4,500 honest tasks at 0.95 and 1.0 λ*, 32 none.
    A flooder is held to `burst` + rate·t tasks over any t, and the queue's per-origin
    bound caps how many it holds at once.
    Memory is bounded: beyond `max_origins` the least recently seen origin is forgotten, and
    comes back with a full bucket, as it would have had after `burst`/rate seconds idle.
    """

    def __init__(
        self,
        clock: Callable[[], float] = trio.current_time,
        burst: float = BURST,
        max_origins: int = MAX_ORIGINS,
    ) -> None:
        if burst < 1:
            raise ValueError(f"a bucket must hold at least one token, not {burst}")
        self._clock = clock
        self.burst = burst
        self.max_origins = max_origins
        self._buckets: collections.OrderedDict[str, _Bucket] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, origin: str, rate: float) -> float:
        """Spend one of `origin`'s tokens, refilled at `rate` (> 0) per second: 0.0 if there was
        one, else the seconds until there will be (nothing is spent)."""
        if not rate > 0:
            raise ValueError(f"a bucket refills at a positive rate, not {rate}")
        now = self._clock()
        bucket = self._buckets.pop(origin, None) or _Bucket(self.burst, now)
        self._buckets[origin] = bucket  # the most recently seen, last
        while len(self._buckets) > self.max_origins:
            self._buckets.popitem(last=False)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated_at) * rate)
        bucket.updated_at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate

    def refusal(self, origin: str, load: LoadEstimator, devices: int) -> TaskRefusal | None:
        """None if `origin`'s task is within its fair share of a swarm of `devices` (this node
        and its live peers), else why not and when to retry."""
        rate = fair_rate_now(load, devices)
        wait_s = self.take(origin, rate)
        if wait_s == 0.0:
            return None
        reason = (
            f"peer {origin} is over its fair share of this node's model "
            f"({rate:.3g} tasks/s = μ/n, n = {devices}); retry in {wait_s:.1f} s"
        )
        return TaskRefusal("over_fair_rate", reason, wait_s)
