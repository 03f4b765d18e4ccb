"""`bench moa`: end-to-end MoA latency on a real localhost swarm against the LLM critical path."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from dmoa_p2p.bench._results import percentile
from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.swarm import open_inprocess_swarm

TARGET_OVERHEAD_FRACTION = 0.05
TARGET_OVERHEAD_PER_LAYER_S = 0.030


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


async def run_moa_bench(
    nodes: int,
    layers: int,
    proposers: int,
    service_time_s: float,
    queries: int,
    base_dir: Path | None = None,
    progress: Callable[[int], None] = lambda _done: None,
) -> MoaBenchResult:
    """Run `queries` queries one after another from rotating origins on a fake-backend swarm.

    Queues are empty when each query starts, so the LLM critical path is exactly (M+1)
    fixed service times; everything above it is dmoa-p2p: planning, signing, streams,
    validation, queueing, composition.
    """
    config: dict[str, Any] = {
        "backend": "fake",
        "backend_options": {"service_time": str(service_time_s), "distribution": "fixed"},
        "presence_interval_s": 1.0,
    }
    latencies = []
    async with open_inprocess_swarm(nodes, base_dir, **config) as swarm:
        await swarm.wait_converged(timeout_s=60)
        request = QueryRequest("Benchmark prompt: explain queues.", layers, proposers)
        await swarm.nodes[0].ask(request)  # warm-up: streams, caches, code paths
        for i in range(queries):
            origin = swarm.nodes[i % nodes]
            start = trio.current_time()
            await origin.ask(request)
            latencies.append(trio.current_time() - start)
            progress(i + 1)
    critical = (layers + 1) * service_time_s
    allowed = max(TARGET_OVERHEAD_FRACTION * critical, TARGET_OVERHEAD_PER_LAYER_S * layers)
    return MoaBenchResult(
        nodes, layers, proposers, service_time_s, queries, critical, tuple(latencies), allowed
    )
