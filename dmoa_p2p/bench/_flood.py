"""`bench flood`: an honest user's query latency while one peer floods the node it asks.

One localhost swarm of real py-libp2p nodes (fake backend, fixed service time); the honest
user asks node 0, the victim, M=1/k=2 queries one after another. Phase A: no flood. Phase B:
the flooder of `_flood_peer` floods the victim with valid tasks and shuffle requests (each
carrying its own signed record). The flooder joins before phase A as a quiet peer (its
record offered once a second, refusing the tasks it is sent as a proposer), so that the two
phases differ by the flood alone.
"""

from __future__ import annotations

from pathlib import Path

import trio

from dmoa_p2p.admission import PromptRefused
from dmoa_p2p.backends import GenerationParams
from dmoa_p2p.bench._flood_handles import JOIN_TIMEOUT_S, in_process_flooder, process_flooder
from dmoa_p2p.bench._flood_results import (
    FloodBenchResult,
    FloodSettings,
    PhaseResult,
    QueryOutcome,
    victim_counters,
)
from dmoa_p2p.bench._overlay import BenchError, ProgressCallback
from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.node import Node
from dmoa_p2p.testing import fake_backend_config, libp2p_swarm

PROMPT = "Explain how a first-come, first-served queue works, with an example."


async def _phase(
    label: str,
    victim: Node,
    request: QueryRequest,
    settings: FloodSettings,
    flooder: str,
    progress: ProgressCallback,
) -> PhaseResult:
    """`settings.queries` queries to the victim, one after another."""
    before = victim_counters(victim)
    outcomes: list[QueryOutcome] = []
    refused: dict[str, int] = {}
    for i in range(settings.queries):
        start = trio.current_time()
        try:
            answer = await victim.ask(request)
        except PromptRefused as exc:
            refused[exc.cause] = refused.get(exc.cause, 0) + 1
        else:
            latency = trio.current_time() - start
            outcomes.append(QueryOutcome.of(latency, answer.trace, victim.peer_id, flooder))
        progress(label, i + 1, settings.queries)
    return PhaseResult(tuple(outcomes), refused, before, victim_counters(victim))


async def run_flood_bench(
    settings: FloodSettings,
    base_dir: Path | None = None,
    progress: ProgressCallback | None = None,
) -> FloodBenchResult:
    """Phase A then phase B on one swarm; see the module's docstring."""
    report: ProgressCallback = progress or (lambda _label, _done, _total: None)
    params = GenerationParams(settings.max_tokens)
    request = QueryRequest(PROMPT, settings.layers, settings.proposers, params=params)
    config = {"presence_interval_s": 1.0, **fake_backend_config(settings.service_time_s)}
    opener = process_flooder if settings.flooder == "process" else in_process_flooder
    async with libp2p_swarm(settings.nodes, base_dir, timeout_s=60, **config) as swarm:
        victim = swarm.nodes[0]
        await victim.ask(request)  # warm-up: streams, caches, code paths
        report("flooder joining", 0, 1)
        async with opener(victim.listen_addrs[0], victim.peer_id, settings.limits) as flooder:
            await _wait_joined(victim, flooder.peer_id)
            phase_a = "phase A: no flood"
            quiet = await _phase(phase_a, victim, request, settings, flooder.peer_id, report)
            flood_start = victim_counters(victim)
            await flooder.flood()
            report("flood warm-up", 0, 1)
            await trio.sleep(settings.flood_warmup_s)
            window_start = await flooder.mark()
            phase_b = "phase B: flood"
            flooded = await _phase(phase_b, victim, request, settings, flooder.peer_id, report)
            window_end = await flooder.mark()
            report("draining the flood", 0, 1)
            total = await flooder.stop()
            flood_end = victim_counters(victim)
    return FloodBenchResult(
        settings, quiet, flooded, window_start, window_end, total, flood_start, flood_end
    )


async def _wait_joined(victim: Node, peer_id: str) -> None:
    """Until the victim counts the flooder among its live peers (a proposer candidate)."""
    with trio.move_on_after(JOIN_TIMEOUT_S) as waiting:
        while peer_id not in victim.live_peer_ids():  # noqa: ASYNC110
            await trio.sleep(0.05)
    if waiting.cancelled_caught:
        raise BenchError(f"the flooder did not join the victim's view in {JOIN_TIMEOUT_S:g} s")
