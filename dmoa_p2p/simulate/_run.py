"""One run: Poisson users ask real nodes, a sampler reads every queue, the books are kept."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence

import attrs
import trio
import trio.testing

from dmoa_p2p import stability as st
from dmoa_p2p.admission import PromptRefused, projected_rho
from dmoa_p2p.logs import events_hushed
from dmoa_p2p.moa import Answer, QueryRequest
from dmoa_p2p.node import Node
from dmoa_p2p.simulate._metrics import Arrival, Raw, RunResult
from dmoa_p2p.simulate._model import RunConfig
from dmoa_p2p.simulate._swarm import MeteredBackend, open_run_swarm
from dmoa_p2p.wire import limits

# as long as a task may be given: a slow layer must show as latency and queue, not as a lost
# proposal (runs are shorter than this, so even an overloaded one never reaches it)
LAYER_TIMEOUT_S = limits.MAX_DEADLINE_S

Progress = Callable[[float], None]  # fraction of the run's arrival period done


def simulate(config: RunConfig, progress: Progress | None = None) -> RunResult:
    """Run `config` on the in-memory overlay under trio's MockClock (virtual time)."""
    started = time.perf_counter()
    with events_hushed():
        raw = trio.run(
            _run, config, False, progress, clock=trio.testing.MockClock(autojump_threshold=0)
        )
    return RunResult(config, False, _with_wall(raw, time.perf_counter() - started))


def simulate_real(config: RunConfig, progress: Progress | None = None) -> RunResult:
    """Run `config` on real py-libp2p nodes on 127.0.0.1, in real time."""
    started = time.perf_counter()
    raw = trio.run(_run, config, True, progress)
    return RunResult(config, True, _with_wall(raw, time.perf_counter() - started))


def _with_wall(raw: Raw, wall_s: float) -> Raw:
    return attrs.evolve(raw, wall_s=wall_s)


async def _run(config: RunConfig, real: bool, progress: Progress | None) -> Raw:
    backends = [
        MeteredBackend(alpha, seed=config.rng("service", i).getrandbits(32))
        for i, alpha in enumerate(config.alphas)
    ]
    arrivals: list[Arrival] = []
    seen = _Samples()
    async with open_run_swarm(config, backends, real=real) as nodes:
        start = trio.current_time()
        window = (start + config.warmup, start + config.warmup + config.duration_s)
        for backend in backends:
            backend.window = window
        async with trio.open_nursery() as prompts:
            async with trio.open_nursery() as users:
                for i, node in enumerate(nodes):
                    users.start_soon(_user, config, i, node, start, window[1], arrivals, prompts)
                users.start_soon(_sample, config, nodes, window, seen)
                if progress is not None:
                    users.start_soon(_report, progress, start, window[1])
            with trio.move_on_after(config.drain):
                await _drain(arrivals, 30 * max(config.alphas))
            prompts.cancel_scope.cancel()  # what is left counts as unfinished
        outcomes: Counter[str] = Counter()
        for node in nodes:
            outcomes.update(node.outcomes)
    return Raw(
        tuple(arrivals),
        tuple(seen.queues),
        window,
        tuple(b.busy_s for b in backends),
        outcomes,
        tuple(seen.rho),
        tuple(seen.connections),
        tuple(map(statistics.fmean, zip(*seen.drawn, strict=True))) if seen.drawn else (),
        0.0,
    )


async def _drain(arrivals: Sequence[Arrival], check_s: float) -> None:
    """Let in-flight prompts finish, but give up once fewer than half finish per check.

    A stable run empties in a few checks; an overloaded one would take thousands of
    seconds (and every waiting layer costs a wake-up per second), so its leftovers are
    reported as unfinished instead.
    """
    left = sum(a.outcome == "in_flight" for a in arrivals)
    while left:
        await trio.sleep(check_s)
        now = sum(a.outcome == "in_flight" for a in arrivals)
        if now > left / 2:
            return
        left = now


async def _user(
    config: RunConfig,
    index: int,
    node: Node,
    start: float,
    stop: float,
    arrivals: list[Arrival],
    prompts: trio.Nursery,
) -> None:
    """A Poisson stream of prompts at rate λ; each prompt runs in its own task."""
    rng = config.rng("arrivals", index)
    at = start
    count = 0
    while True:
        at += rng.expovariate(config.rate)
        if at >= stop:
            return
        await trio.sleep_until(at)  # absolute times: a late wake-up does not thin the stream
        count += 1
        request = QueryRequest(
            f"user {index} prompt {count}: how do queues behave near saturation?",
            config.layers,
            config.proposers,
            strategy=config.strategy,
            layer_timeout_s=LAYER_TIMEOUT_S,
        )
        record = Arrival(index, trio.current_time())
        arrivals.append(record)
        prompts.start_soon(_ask, node, request, record)


async def _ask(node: Node, request: QueryRequest, record: Arrival) -> None:
    try:
        answer = await node.ask(request)
    except PromptRefused:
        record.outcome = "refused"
    except Exception as exc:  # counted and reported, never silently lost
        record.outcome = "failed"
        record.error = f"{type(exc).__name__}: {exc}"
    else:
        record.outcome = "answered"
        record.ran = (answer.trace.layers_requested, answer.trace.proposers_requested)
        record.degraded = record.ran != (request.layers, request.proposers)
        record.incomplete = _incomplete(answer)
    record.ended = trio.current_time()


def _incomplete(answer: Answer) -> bool:
    trace = answer.trace
    return any(layer.missing for layer in trace.layers) or any(
        "own model" in note or "aggregation failed" in note for note in trace.notes
    )


@attrs.define
class _Samples:
    queues: list[tuple[float, tuple[int, ...]]] = attrs.Factory(list)  # time, each node's
    rho: list[float] = attrs.Factory(list)
    connections: list[tuple[int, ...]] = attrs.Factory(list)
    drawn: list[list[float]] = attrs.Factory(list)


async def _sample(
    config: RunConfig, nodes: Sequence[Node], window: tuple[float, float], seen: _Samples
) -> None:
    """Every node's queue length (waiting plus in service) and connections at fixed times in
    the window, and each device's load per unit λ as drawn: from the proposer candidates
    every node has then (`stability.view_arrival_rates`).

    Also what admission would see: each node's projected utilisation of the busiest device
    at the requested (M, k), from its measured α's and arrival rates.
    """
    layers, proposers = config.layers, config.proposers
    index = {node.peer_id: i for i, node in enumerate(nodes)}
    interval = config.sample_interval
    at = window[0] + interval / 2  # off the round times that timers tend to share
    while at < window[1]:
        await trio.sleep_until(at)
        seen.queues.append((at, tuple(node.queue.length for node in nodes)))
        seen.connections.append(tuple(len(node.overlay.connected_peers()) for node in nodes))
        views = [[index[r.peer_id] for r in node.records() if r.peer_id in index] for node in nodes]
        seen.drawn.append(st.view_arrival_rates([1.0] * len(nodes), views, layers, proposers))
        rhos = [projected_rho(node.operating_point(), layers, proposers) for node in nodes]
        known = [rho for rho in rhos if rho is not None]
        if known:
            seen.rho.append(sum(known) / len(known))
        at += interval


async def _report(progress: Progress, start: float, stop: float) -> None:
    step = (stop - start) / 100
    for i in range(1, 101):
        await trio.sleep_until(start + i * step)
        progress(i / 100)
