"""`bench moa`: end-to-end MoA latency on a real localhost swarm against the LLM critical path."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from dmoa_p2p.backends import GenerationParams
from dmoa_p2p.moa import CallRecord, QueryRequest, Trace
from dmoa_p2p.simulate import percentile
from dmoa_p2p.testing import fake_backend_config, libp2p_swarm

TARGET_OVERHEAD_FRACTION = 0.05
TARGET_OVERHEAD_PER_LAYER_S = 0.030
PROMPT = "Explain how a first-come, first-served queue works, with an example."
DEFAULT_MAX_TOKENS = 64

CRITICAL_PATH_MEANS = (
    "LLM time on the critical path: for each layer (the final aggregation is layer M+1) the "
    "longest service time among that layer's calls, summed; other = end-to-end latency "
    "minus that: queueing, planning, signing, streams, validation, prompt composition; "
    "medians are taken per column, so they need not add up"
)
SHARED_CPU_NOTE = (
    "all nodes run in one process on this machine: a layer's parallel calls share its "
    "cores (llama.cpp runs in worker threads without the GIL), so with more busy threads "
    "than cores each call's service time is inflated against one node per machine"
)


@attrs.frozen
class MoaBenchResult:
    """Latencies of sequential queries (empty queues) against (M+1) fake service times."""

    nodes: int
    layers: int
    proposers: int
    service_time_s: float
    queries: int
    critical_path_s: float  # (M+1)·service time: LLM time alone on the critical path
    latencies_s: tuple[float, ...]
    allowed_overhead_s: float

    @property
    def median_latency_s(self) -> float:
        return statistics.median(self.latencies_s)

    @property
    def median_overhead_s(self) -> float:
        return self.median_latency_s - self.critical_path_s

    @property
    def overhead_per_layer_ms(self) -> float:
        return 1000 * self.median_overhead_s / self.layers

    @property
    def passed(self) -> bool:
        return self.median_overhead_s <= self.allowed_overhead_s

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "layers": self.layers,
            "proposers": self.proposers,
            "service_time_s": self.service_time_s,
            "queries": self.queries,
            "critical_path_s": self.critical_path_s,
            "latency_s": {
                "median": self.median_latency_s,
                "p90": percentile(self.latencies_s, 0.9),
                "min": min(self.latencies_s),
                "max": max(self.latencies_s),
            },
            "overhead_s": {"median": self.median_overhead_s, "allowed": self.allowed_overhead_s},
            "overhead_per_layer_ms": self.overhead_per_layer_ms,
            "overhead_fraction": self.median_overhead_s / self.critical_path_s,
            "target": "median overhead <= max(5% of the critical path, 30 ms per layer)",
            "passed": self.passed,
        }


def critical_calls(trace: Trace) -> list[CallRecord]:
    """Per layer (the final aggregation is layer M+1), the call with the longest service."""
    slowest: dict[int, CallRecord] = {}
    for call in trace.calls:
        if call.layer not in slowest or call.service_s > slowest[call.layer].service_s:
            slowest[call.layer] = call
    return [slowest[layer] for layer in sorted(slowest)]


@attrs.frozen
class QuerySplit:
    """One query's latency: LLM time on the critical path, and everything else."""

    total_s: float  # at the origin, around Node.ask
    layer_llm_s: tuple[float, ...]  # the longest service time of each layer, M+1 of them
    layer_prompt_tokens: tuple[int, ...]  # the prompt of each of those calls
    queue_wait_s: float  # the longest queue wait of each layer, summed: a part of `other`
    calls: int
    completion_tokens: int  # all calls of the query together

    @property
    def llm_s(self) -> float:
        return sum(self.layer_llm_s)

    @property
    def other_s(self) -> float:
        return self.total_s - self.llm_s

    @classmethod
    def of(cls, total_s: float, trace: Trace) -> QuerySplit:
        waits: dict[int, float] = {}
        for call in trace.calls:
            waits[call.layer] = max(waits.get(call.layer, 0.0), call.queue_wait_s)
        critical = critical_calls(trace)
        return cls(
            total_s=total_s,
            layer_llm_s=tuple(call.service_s for call in critical),
            layer_prompt_tokens=tuple(call.prompt_tokens for call in critical),
            queue_wait_s=sum(waits.values()),
            calls=len(trace.calls),
            completion_tokens=sum(call.completion_tokens for call in trace.calls),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "total_s": round(self.total_s, 4),
            "llm_s": round(self.llm_s, 4),
            "layer_llm_s": [round(seconds, 4) for seconds in self.layer_llm_s],
            "layer_prompt_tokens": list(self.layer_prompt_tokens),
            "other_s": round(self.other_s, 4),
            "queue_wait_s": round(self.queue_wait_s, 4),
            "calls": self.calls,
            "completion_tokens": self.completion_tokens,
        }


@attrs.frozen
class ModelMoaBenchResult:
    """Sequential queries on a swarm of real models, each split at its LLM critical path."""

    nodes: int
    layers: int
    proposers: int
    backend: str
    backend_options: tuple[tuple[str, str], ...]
    max_tokens: int
    queries: tuple[QuerySplit, ...]

    def median(self, field: str) -> float:
        return float(statistics.median(getattr(query, field) for query in self.queries))

    def to_json(self) -> dict[str, Any]:
        fields = ("total_s", "llm_s", "other_s", "queue_wait_s", "calls", "completion_tokens")
        return {
            "nodes": self.nodes,
            "layers": self.layers,
            "proposers": self.proposers,
            "backend": self.backend,
            "backend_options": dict(self.backend_options),
            "max_tokens": self.max_tokens,
            "queries": len(self.queries),
            "median": {field: round(self.median(field), 4) for field in fields},
            "per_query": [query.to_json() for query in self.queries],
            "critical_path_means": CRITICAL_PATH_MEANS,
            "note": SHARED_CPU_NOTE,
        }


async def run_moa_bench(
    nodes: int,
    layers: int,
    proposers: int,
    service_time_s: float,
    queries: int,
    base_dir: Path | None = None,
    progress: Callable[[int], None] = lambda _done: None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> MoaBenchResult:
    """Run `queries` queries one after another from rotating origins on a fake-backend swarm.

    Queues are empty when each query starts, so the LLM critical path is exactly (M+1)
    fixed service times; everything above it is dmoa-p2p: planning, signing, streams,
    validation, queueing, composition.
    """
    config = fake_backend_config(service_time_s)
    request = QueryRequest(PROMPT, layers, proposers, params=GenerationParams(max_tokens))
    timed = await _timed_queries(nodes, request, queries, config, base_dir, progress)
    critical = (layers + 1) * service_time_s
    allowed = max(TARGET_OVERHEAD_FRACTION * critical, TARGET_OVERHEAD_PER_LAYER_S * layers)
    latencies = tuple(latency for latency, _trace in timed)
    return MoaBenchResult(
        nodes, layers, proposers, service_time_s, queries, critical, latencies, allowed
    )


async def run_model_moa_bench(
    nodes: int,
    layers: int,
    proposers: int,
    backend: str,
    backend_options: Mapping[str, str],
    queries: int,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    base_dir: Path | None = None,
    progress: Callable[[int], None] = lambda _done: None,
) -> ModelMoaBenchResult:
    """Run `queries` queries one after another on a swarm where every node runs `backend`.

    Service times are whatever the models take, so each query is split using its trace:
    LLM time on the critical path (see CRITICAL_PATH_MEANS) and everything else.
    """
    config: dict[str, Any] = {"backend": backend, "backend_options": dict(backend_options)}
    request = QueryRequest(PROMPT, layers, proposers, params=GenerationParams(max_tokens))
    timed = await _timed_queries(nodes, request, queries, config, base_dir, progress)
    return ModelMoaBenchResult(
        nodes,
        layers,
        proposers,
        backend,
        tuple(sorted(backend_options.items())),
        max_tokens,
        tuple(QuerySplit.of(latency, trace) for latency, trace in timed),
    )


async def _timed_queries(
    nodes: int,
    request: QueryRequest,
    queries: int,
    config: dict[str, Any],
    base_dir: Path | None,
    progress: Callable[[int], None],
) -> list[tuple[float, Trace]]:
    """Start an in-process swarm, warm it up, then time `queries` queries one at a time."""
    timed = []
    swarm_config = {"presence_interval_s": 1.0, **config}
    async with libp2p_swarm(nodes, base_dir, timeout_s=60, **swarm_config) as swarm:
        await swarm.nodes[0].ask(request)  # warm-up: streams, caches, code paths, model pages
        for i in range(queries):
            origin = swarm.nodes[i % nodes]
            start = trio.current_time()
            answer = await origin.ask(request)
            timed.append((trio.current_time() - start, answer.trace))
            progress(i + 1)
    return timed
