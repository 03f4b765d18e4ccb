"""A node's load estimates (service time, arrival rate) and their pooling across devices."""

from __future__ import annotations

import itertools
import math
import random
import statistics
from pathlib import Path

import pytest
import trio
import trio.testing

from dmoa_p2p.admission import OperatingPoint
from dmoa_p2p.admission._pooling import ServiceEstimate, pooled_service_times
from dmoa_p2p.backends import ChatMessage, GenerationParams
from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.moa import PeerLoad, QueryRequest
from dmoa_p2p.queue import InferenceQueue, LoadEstimator
from dmoa_p2p.testing import memory_swarm


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_service_time_is_the_mean_and_variance_of_the_last_window() -> None:
    load = LoadEstimator(Clock(), service_window=3)
    assert (load.mean_service_s, load.service_var_s2, load.service_samples) == (None, None, 0)
    load.observe_service(4.0)
    assert (load.mean_service_s, load.service_var_s2, load.service_samples) == (4.0, 0.0, 1)
    for seconds in (1.0, 2.0, 3.0):  # 4.0 falls out of the window
        load.observe_service(seconds)
    assert load.mean_service_s == pytest.approx(2.0)
    assert load.service_var_s2 == pytest.approx(1.0)
    assert load.service_samples == 3


def test_the_service_variance_is_the_sample_variance() -> None:
    rng = random.Random(5)
    load = LoadEstimator(Clock(), service_window=64)
    seen = [rng.expovariate(1 / 3.0) for _ in range(64)]
    for seconds in seen:
        load.observe_service(seconds)
    assert load.service_var_s2 == pytest.approx(statistics.variance(seen), rel=1e-12)


def test_arrival_rate_before_and_after_the_window_fills() -> None:
    clock = Clock()
    load = LoadEstimator(clock, arrival_window=4, max_age_s=100.0, rate_decay_s=math.inf)
    assert load.arrival_rate is None  # no time has passed
    for at in (1.0, 2.0, 3.0):
        clock.now = at
        load.observe_arrival()
    clock.now = 10.0
    assert load.arrival_rate == pytest.approx(3 / 10)  # 3 arrivals in 10 s
    clock.now = 11.0
    load.observe_arrival()
    clock.now = 13.0
    assert load.arrival_rate == pytest.approx(3 / 12)  # full: 3 gaps back to t = 1
    clock.now = 200.0  # everything is older than max_age_s
    assert load.arrival_rate == 0.0


@pytest.mark.parametrize("decay_s", [math.inf, 60.0, 20.0])
def test_arrival_rate_is_unbiased_for_poisson_arrivals(decay_s: float) -> None:
    """Asked at a moment fixed in advance, as a status page or a presence is: the rate is
    right on average with or without decay, window full (most runs) or not."""
    rng = random.Random(7)
    rate = 0.25
    estimates = []
    for _ in range(1000):
        clock = Clock()
        clock.now = 1000.0
        load = LoadEstimator(clock, arrival_window=16, max_age_s=1e9, rate_decay_s=decay_s)
        asked_at = clock.now + 160.0  # 40 arrivals on average
        while (arrival := clock.now + rng.expovariate(rate)) < asked_at:
            clock.now = arrival
            load.observe_arrival()
        clock.now = asked_at
        estimate = load.arrival_rate
        assert estimate is not None
        estimates.append(estimate)
    # standard error of the mean: at most 0.09/sqrt(1000) ≈ 0.003 (the shortest decay)
    assert statistics.fmean(estimates) == pytest.approx(rate, abs=0.009)


def test_a_burst_fades_with_time_not_only_with_new_prompts() -> None:
    clock = Clock()
    load = LoadEstimator(clock, arrival_window=64, max_age_s=600.0, rate_decay_s=60.0)
    clock.now = 1.0
    for _ in range(10):  # ten prompts in a second, then silence
        clock.now += 0.1
        load.observe_arrival()
    rates = []
    for _ in range(6):
        rates.append(load.arrival_rate)
        clock.now += 60.0
    assert rates[0] == pytest.approx(10 / 2.0, rel=0.05)  # what two seconds have seen
    falling = [b < a / 2 for a, b in itertools.pairwise(rates) if a is not None and b is not None]
    assert falling == [True] * 5
    assert rates[1] is not None and rates[1] < 0.1  # a minute later
    assert rates[-1] is not None and rates[-1] < 2e-3  # five minutes later


async def test_an_idle_swarm_stops_looking_loaded_after_a_burst(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """ρ (the status page's, and dmoa_rho's) falls while nobody asks, as presences go on."""
    backends = [FakeBackend(mean_s=0.5) for _ in range(3)]
    async with memory_swarm(tmp_path, backends) as nodes, trio.open_nursery() as asks:
        for _ in range(10):  # ten prompts in a second
            asks.start_soon(nodes[0].ask, QueryRequest("Why is the sky blue?", 1, 2))
            await trio.sleep(0.1)
        await trio.sleep(30.0)  # all answered, and every node has measured its α
        busy = nodes[1].snapshot().swarm_load.rho  # as a peer sees it, through presence
        await trio.sleep(60.0)
        idle = nodes[1].snapshot().swarm_load.rho
        await trio.sleep(240.0)
        later = nodes[1].snapshot().swarm_load.rho
    assert busy is not None and idle is not None and later is not None
    assert idle < busy / 2 and later < 0.01 < busy


def exponential_estimate(rng: random.Random, alpha: float, samples: int) -> ServiceEstimate:
    times = [rng.expovariate(1 / alpha) for _ in range(samples)]
    return ServiceEstimate(statistics.fmean(times), statistics.variance(times), samples)


def test_pooling_removes_most_of_the_busiest_device_bias() -> None:
    """Four identical devices: the largest raw estimate is ~12 % high, the pooled one is not."""
    rng = random.Random(3)
    raw_max, pooled_max = [], []
    for _ in range(300):
        estimates = [exponential_estimate(rng, 1.0, 64) for _ in range(4)]
        raw_max.append(max(e.mean_s for e in estimates))
        pooled_max.append(max(pooled_service_times(estimates)))
    assert statistics.fmean(raw_max) > 1.09
    assert statistics.fmean(pooled_max) == pytest.approx(1.0, abs=0.04)


def test_pooling_keeps_devices_that_really_differ() -> None:
    rng = random.Random(5)
    errors = []
    for _ in range(100):
        estimates = [exponential_estimate(rng, a, 64) for a in (1, 1, 1, 1, 4, 4, 4, 4)]
        pooled = pooled_service_times(estimates)
        errors += [p / e.mean_s - 1 for p, e in zip(pooled, estimates, strict=True)]
    assert max(abs(e) for e in errors) < 0.08
    assert abs(statistics.fmean(errors)) < 0.02


def test_pooling_leaves_too_little_data_alone() -> None:
    one = [ServiceEstimate(2.0, None, 1)]
    assert pooled_service_times(one) == [2.0]
    unmeasured = [ServiceEstimate(2.0, 0.5, 10), ServiceEstimate(3.0, None, 0)]
    assert pooled_service_times(unmeasured) == [2.0, 3.0]
    exact = [ServiceEstimate(2.0, 0.0, 10), ServiceEstimate(3.0, 0.0, 10)]
    assert pooled_service_times(exact) == pytest.approx([2.0, 3.0])  # no noise, no pooling


def test_operating_point_pools_and_fills_unknown_service_times() -> None:
    loads = (
        PeerLoad("me", 1.05, service_var_s2=1.0, service_samples=64),
        PeerLoad("a", 0.95, service_var_s2=1.0, service_samples=64),
        PeerLoad("new"),
    )
    alphas = OperatingPoint(loads, 1.05).alphas()
    assert alphas is not None
    assert alphas[0] == alphas[1] == alphas[2]  # 1.05 vs 0.95 is within sampling noise
    assert alphas[0] == pytest.approx((1.05 * 0.95) ** 0.5)
    assert OperatingPoint((PeerLoad("me"), PeerLoad("a")), None).alphas() is None
    assert OperatingPoint((PeerLoad("me"), PeerLoad("a")), 2.0).alphas() == [2.0, 2.0]


async def test_the_queue_measures_every_origins_services(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The service time behind μ = 1/α (and so the fair task rate μ/n) counts own users'
    prompts and peers' tasks alike, and queue and wait times are those of its order."""
    queue = InferenceQueue(FakeBackend(mean_s=2.0), 8)
    params = GenerationParams(max_tokens=8)
    waits: dict[str | None, float] = {}

    async def ask(origin: str | None) -> None:
        served = await queue.submit([ChatMessage("user", "hi")], params, origin=origin)
        waits[origin] = served.queue_wait_s

    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        async with trio.open_nursery() as asks:
            for origin in (None, "peer-a", "peer-b"):
                asks.start_soon(ask, origin)
                await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    assert queue.load.service_samples == 3 and queue.load.mean_service_s == pytest.approx(2.0)
    assert waits == pytest.approx({None: 0.0, "peer-a": 1.5, "peer-b": 3.0})
    assert (queue.served, queue.length) == (3, 0)
