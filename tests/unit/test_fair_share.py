"""Each origin's fair share of a node's model: queue slots, round robin, and task rate."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from dmoa_p2p import stability as st
from dmoa_p2p.backends import ChatMessage, GenerationParams
from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.gossip import PeerUnreachable
from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.moa._fair_share import (
    BURST,
    MIN_SERVICE_SAMPLES,
    UNKNOWN_SERVICE_S,
    FairRateLimiter,
    fair_rate_now,
)
from dmoa_p2p.queue import InferenceQueue, LoadEstimator, QueueFull
from dmoa_p2p.simulate import RunConfig
from dmoa_p2p.simulate import simulate as run_simulation
from dmoa_p2p.testing import memory_swarm
from dmoa_p2p.wire import ChatTurn, RejectReason, Task

PARAMS = GenerationParams(max_tokens=16)


def prompt(text: str) -> list[ChatMessage]:
    return [ChatMessage("user", text)]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def submit(
    queue: InferenceQueue, text: str, origin: str | None, out: list[str] | None = None
) -> None:
    """Submit and note the outcome: "served" or the QueueFull cause."""
    try:
        await queue.submit(prompt(text), PARAMS, origin=origin)
    except QueueFull as exc:
        if out is not None:
            out.append(exc.cause)
        return
    if out is not None:
        out.append("served")


def served_order(backend: FakeBackend) -> list[str]:
    return [messages[-1].content for messages in backend.prompts]


# ---- the queue: slots kept for own users, per-origin bounds, round robin ----------------


async def test_default_shares() -> None:
    backend = FakeBackend()
    queue = InferenceQueue(backend, 64)
    assert (queue.reserved, queue.per_origin) == (16, 12)
    one = InferenceQueue(backend, 1)  # a one-slot queue reserves nothing: it serves peers
    assert (one.reserved, one.per_origin) == (0, 1)
    assert (InferenceQueue(backend, 2).reserved, InferenceQueue(backend, 2).per_origin) == (1, 1)
    with pytest.raises(ValueError, match="reserved"):
        InferenceQueue(backend, 4, reserved=5)
    with pytest.raises(ValueError, match="per_origin"):
        InferenceQueue(backend, 4, per_origin=0)


async def test_a_flooding_peer_cannot_take_the_reserved_slots(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(mean_s=1.0)
    queue = InferenceQueue(backend, 8, per_origin=8)  # 2 reserved; only the peers' bound acts
    outcomes: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        for i in range(20):
            nursery.start_soon(submit, queue, f"flood {i}", "flooder", outcomes)
        await trio.sleep(0.1)
        assert queue.peers_held == 6 and outcomes.count("peers_share_full") == 14
        with pytest.raises(QueueFull, match="queue share for peers is full") as refused:
            await queue.submit(prompt("one more"), PARAMS, origin="other peer")
        assert refused.value.cause == "peers_share_full"
        own_started = trio.current_time()
        served = await queue.submit(prompt("mine"), PARAMS)  # own users: origin None
        # round robin: behind the flood's prompt in service and its next turn at most
        assert served.queue_wait_s <= 2.0 + 1e-9
        assert trio.current_time() - own_started <= 3.0 + 1e-9
        nursery.cancel_scope.cancel()


async def test_one_peer_holds_at_most_its_share(autojump_clock: trio.testing.MockClock) -> None:
    queue = InferenceQueue(FakeBackend(mean_s=1.0), 16, per_origin=3)
    outcomes: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        for i in range(5):
            nursery.start_soon(submit, queue, f"a{i}", "peer-a", outcomes)
        await trio.sleep(0.1)
        assert queue.held_by("peer-a") == 3 and outcomes == ["origin_share_full"] * 2
        with pytest.raises(QueueFull, match="this node's queue share for peer peer-a is full"):
            await queue.submit(prompt("a5"), PARAMS, origin="peer-a")
        nursery.start_soon(submit, queue, "b0", "peer-b", outcomes)
        await trio.sleep(0.1)
        assert queue.held_by("peer-b") == 1  # another peer still gets in
        nursery.cancel_scope.cancel()


async def test_the_whole_queue_full_says_so_to_everyone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = InferenceQueue(FakeBackend(mean_s=1.0), 2)
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        nursery.start_soon(submit, queue, "mine 1", None)
        nursery.start_soon(submit, queue, "mine 2", None)
        await trio.sleep(0.1)
        with pytest.raises(QueueFull, match="the model's queue is full") as refused:
            await queue.submit(prompt("mine 3"), PARAMS)
        assert refused.value.cause == "queue_full" and refused.value.retry_after_s >= 0.1
        nursery.cancel_scope.cancel()


async def test_round_robin_interleaves_origins(autojump_clock: trio.testing.MockClock) -> None:
    backend = FakeBackend(mean_s=1.0)
    queue = InferenceQueue(backend, 64, per_origin=8)
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        async with trio.open_nursery() as asks:
            for i in range(4):
                asks.start_soon(submit, queue, f"a{i}", "peer-a")
                await trio.sleep(0.01)  # a's four arrive first, in this order
            for i in range(2):
                asks.start_soon(submit, queue, f"b{i}", "peer-b")
                await trio.sleep(0.01)
            asks.start_soon(submit, queue, "own", None)
        nursery.cancel_scope.cancel()
    # FCFS within an origin; one turn each, in the order the origins first had work waiting
    assert served_order(backend) == ["a0", "a1", "b0", "own", "a2", "b1", "a3"]
    assert queue.length == 0 and queue.held_by("peer-a") == 0


async def test_a_prompt_given_up_while_waiting_frees_its_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(mean_s=1.0)
    queue = InferenceQueue(backend, 8, per_origin=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        nursery.start_soon(submit, queue, "busy", None)
        await trio.sleep(0.1)
        with trio.move_on_after(0.2):
            await queue.submit(prompt("impatient"), PARAMS, origin="peer-a")
        assert queue.held_by("peer-a") == 0 and queue.length == 1
        await queue.submit(prompt("patient"), PARAMS, origin="peer-a")  # its slot is free
        nursery.cancel_scope.cancel()
    assert served_order(backend) == ["busy", "patient"]


async def test_queue_length_follows_fcfs_whatever_the_origins(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Work-conserving and blind to service times: with service times drawn in service order
    the number in system is the same path as FCFS's, hence the same mean."""

    async def lengths(origins: list[str | None]) -> list[int]:
        queue = InferenceQueue(FakeBackend(1.0, "exponential", seed=5), 1000, per_origin=1000)
        seen: list[int] = []
        gaps = FakeBackend(0.9, "exponential", seed=6)  # Poisson arrivals at ρ ≈ 1.1
        async with trio.open_nursery() as nursery:
            await nursery.start(queue.run)
            for i, origin in enumerate(origins):
                nursery.start_soon(submit, queue, f"p{i}", origin)
                await trio.sleep(gaps.service_time())
                seen.append(queue.length)
            nursery.cancel_scope.cancel()
        return seen

    mixed: list[str | None] = [None, "a", "b", "a", "c", "a", "a", None, "b"] * 20
    assert await lengths(mixed) == await lengths([None] * len(mixed))


# ---- the fair task rate ----------------------------------------------------------------


def test_the_bucket_refuses_beyond_its_rate_and_recovers() -> None:
    clock = Clock()
    limiter = FairRateLimiter(clock, burst=4.0)
    rate = 0.25  # μ/n for α = 1 s, n = 4
    assert [limiter.take("flooder", rate) for _ in range(4)] == [0.0] * 4  # the burst
    assert limiter.take("flooder", rate) == pytest.approx(4.0)  # one token per 4 s
    assert limiter.take("honest", rate) == 0.0  # buckets are per origin
    clock.now = 2.0
    assert limiter.take("flooder", rate) == pytest.approx(2.0)  # half a token so far
    clock.now = 4.0
    assert limiter.take("flooder", rate) == 0.0
    # over a long flood it gets the rate, not more
    taken = 0
    for step in range(1, 401):
        clock.now = 4.0 + step * 0.1  # 10 tasks a second for 40 s
        taken += limiter.take("flooder", rate) == 0.0
    assert taken == 10  # 40 s × 0.25 /s
    clock.now = 1000.0  # idle: the bucket refills to its burst, no more
    assert [limiter.take("flooder", rate) for _ in range(5)].count(0.0) == 4


def test_buckets_are_bounded_least_recently_seen_first() -> None:
    clock = Clock()
    limiter = FairRateLimiter(clock, burst=1.0, max_origins=2)
    assert limiter.take("a", 0.1) == 0.0
    assert limiter.take("b", 0.1) == 0.0
    assert limiter.take("a", 0.1) > 0  # a seen again: b is now the oldest
    assert limiter.take("c", 0.1) == 0.0
    assert len(limiter) == 2
    assert limiter.take("a", 0.1) > 0  # a was kept
    assert limiter.take("b", 0.1) == 0.0  # b was forgotten: back with a full bucket


def test_the_fair_rate_is_generous_until_the_model_is_measured() -> None:
    load = LoadEstimator(Clock())
    assert fair_rate_now(load, 4) == pytest.approx(1 / (UNKNOWN_SERVICE_S * 4))
    for _ in range(MIN_SERVICE_SAMPLES):
        load.observe_service(2.0)
    assert fair_rate_now(load, 4) == pytest.approx(st.fair_task_rate(2.0, 4)) == 0.125
    assert fair_rate_now(load, 0) == 0.5  # this node counts itself


def poisson_refusals(ratio: float, burst: float, tasks: int) -> int:
    """Tasks refused by a bucket at rate 1 when Poisson tasks come at `ratio` of it."""
    clock = Clock()
    limiter = FairRateLimiter(clock, burst=burst)
    gaps = FakeBackend(1 / ratio, "exponential", seed=11)
    refused = 0
    for _ in range(tasks):
        clock.now += gaps.service_time()
        refused += limiter.take("honest", 1.0) > 0
    return refused


def test_honest_poisson_tasks_pass_the_default_burst() -> None:
    # at Theorem 1's threshold an honest origin sends 16/21 of μ/n (n = 4, M = k = 2)
    share = st.honest_share_of_fair_rate(4, 2, 2)
    assert poisson_refusals(0.9 * share, BURST, 20_000) == 0
    assert poisson_refusals(1.3, BURST, 20_000) > 4000  # a flooder at 1.3× is held to 1/1.3


# ---- the engine: what a peer's task gets ---------------------------------------------


def flood_task(origin: str, recipient: str, i: int) -> Task:
    return Task(
        query_id=f"flood-{i}",
        layer=1,
        origin=origin,
        recipient=recipient,
        messages=(ChatTurn(role="user", content=f"flood {i}"),),
        max_tokens=16,
        temperature=0.0,
        seed=0,
        deadline_s=600.0,
    )


async def test_a_flooding_peer_leaves_the_own_users_their_model(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """300 valid tasks in 4 s from one peer (the measured attack): the node's own user's
    proposer call and final aggregation are still served, the flood mostly refused."""
    backends = [FakeBackend(mean_s=1.0), FakeBackend(mean_s=1.0)]
    async with memory_swarm(tmp_path, backends) as nodes:
        victim, flooder = nodes
        send = flooder.engine.layer_context.send
        told: list[str] = []

        async def flood_one(i: int) -> None:
            try:
                await send(victim.peer_id, flood_task(flooder.peer_id, victim.peer_id, i))
            except PeerUnreachable as exc:
                told.append(str(exc))

        async with trio.open_nursery() as flood:
            for i in range(300):
                flood.start_soon(flood_one, i)
                await trio.sleep(4.0 / 300)
        assert victim.queue.held_by(flooder.peer_id) <= victim.queue.per_origin
        answer = await victim.ask(QueryRequest("mine", 1, 1, layer_timeout_s=60.0))
        # beyond its rate a task is rejected on arrival, unverified, and the flooder told why
        over_rate = victim.gate.rejections[RejectReason.OVER_FAIR_RATE]
        assert over_rate == len(told) and all("over its fair share" in t for t in told)
        # α not measured yet: the generous rate 1/(0.1 s · 2) for the flood's ~4 s, plus the burst
        generous = fair_rate_now(LoadEstimator(Clock()), 2)
        assert 300 - over_rate <= BURST + 5.0 * generous
        refusals = victim.engine.task_refusals  # the rest held by the queue to its 12 slots
        assert set(refusals) == {"origin_share_full"} and refusals["origin_share_full"] > 0
        assert not any("own model" in note for note in answer.trace.notes), answer.trace.notes
        roles = [c.role for c in answer.trace.calls if c.node == victim.peer_id]
        assert roles == ["proposer", "aggregator"]
        # the own calls waited for a turn, not behind the flood's dozen tasks
        assert all(c.queue_wait_s <= 2.0 for c in answer.trace.calls if c.node == victim.peer_id)


async def test_a_node_without_fair_share_takes_every_task_of_one_origin(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """`fair_share = false` (a swarm all of whose nodes are one's own): no over-rate refusal."""
    backends = [FakeBackend(mean_s=0.01), FakeBackend(mean_s=0.01)]
    async with memory_swarm(tmp_path, backends, queue_capacity=1000, fair_share=False) as nodes:
        victim, asker = nodes
        for i in range(MIN_SERVICE_SAMPLES):
            await victim.queue.submit(prompt(f"warm {i}"), PARAMS)
        tasks = [flood_task(asker.peer_id, victim.peer_id, i) for i in range(3 * int(BURST))]
        assert [victim.engine.over_fair_rate(task) for task in tasks] == [None] * len(tasks)


async def test_a_peer_over_its_fair_rate_is_refused_and_recovers(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backends = [FakeBackend(mean_s=0.01), FakeBackend(mean_s=0.01)]
    async with memory_swarm(tmp_path, backends, queue_capacity=1000) as nodes:
        victim, flooder = nodes
        engine = victim.engine
        for i in range(MIN_SERVICE_SAMPLES):  # measured: α = 0.01 s, so μ/n = 50 tasks/s
            await victim.queue.submit(prompt(f"warm {i}"), PARAMS)
        assert fair_rate_now(victim.queue.load, 2) == pytest.approx(50.0)
        for i in range(int(BURST)):  # all at once: the burst passes, the next does not
            assert engine.over_fair_rate(flood_task(flooder.peer_id, victim.peer_id, i)) is None
        refusal = engine.over_fair_rate(flood_task(flooder.peer_id, victim.peer_id, 99))
        assert refusal is not None and refusal.cause == "over_fair_rate"
        assert f"peer {flooder.peer_id} is over its fair share" in refusal.reason
        assert "50 tasks/s = μ/n, n = 2" in refusal.reason
        assert 0 < refusal.retry_after_s <= 1 / 50 + 1e-9
        elsewhere = flood_task(flooder.peer_id, flooder.peer_id, 100)  # not this node's task
        assert engine.over_fair_rate(elsewhere) is None
        await trio.sleep(refusal.retry_after_s)
        assert engine.over_fair_rate(flood_task(flooder.peer_id, victim.peer_id, 101)) is None
        assert engine.over_fair_rate(flood_task(flooder.peer_id, victim.peer_id, 102)) is not None


def test_honest_uniform_load_below_the_threshold_is_never_refused() -> None:
    """Real nodes with the default 64-slot queues, Poisson users at 0.9 λ*: no task refused
    (a refused task would show as a missing proposer, i.e. an incomplete answer)."""
    lam = 0.9 * st.max_stable_rate(1.0, 2, 2)
    config = RunConfig(
        alphas=(1.0,) * 4, layers=2, proposers=2, rate=lam, duration_s=300, queue_capacity=64
    )
    result = run_simulation(config)
    arrivals = result.raw.arrivals
    assert len(arrivals) > 100
    assert all(a.outcome == "answered" for a in arrivals)
    assert not any(a.incomplete for a in arrivals)


async def test_an_asker_who_leaves_mid_answer_frees_the_model_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(mean_s=10.0)
    queue = InferenceQueue(backend, 4)
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        with trio.move_on_after(1.0):  # the asker leaves 1 s into a 10 s answer
            await queue.submit(prompt("long"), PARAMS)
        started = trio.current_time()
        served = await queue.submit(prompt("next"), PARAMS)
        assert served.queue_wait_s == 0.0 and trio.current_time() - started == 10.0
        assert (queue.abandoned, queue.served, queue.failed) == (1, 1, 0)
        assert queue.load.service_samples == 1  # the stopped call is not a service time
        nursery.cancel_scope.cancel()
