"""`bench backend` and `bench moa --backend llama-cpp` with tiny settings on the real SmolLM2."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import trio

from dmoa_p2p.bench import BARE_PATH as BARE
from dmoa_p2p.bench import QUEUE_PATH as QUEUE
from dmoa_p2p.bench import run_backend_bench, run_model_moa_bench
from dmoa_p2p.bench._backend_results import METRICS, PATHS

pytest.importorskip("dmoa_p2p_llama_cpp", reason="needs pip install -e plugins/dmoa-p2p-llama-cpp")
pytestmark = pytest.mark.integration


async def test_backend_bench_times_both_paths_on_the_same_tokens() -> None:
    with trio.fail_after(60):
        result = await run_backend_bench(threads=1, prompt_tokens=64, gen_tokens=16, repeats=2)
    assert len(result.runs) == 2 * len(PATHS)
    assert sorted((run.repeat, run.path) for run in result.runs) == [
        (0, BARE), (0, QUEUE), (1, BARE), (1, QUEUE)
    ]
    # the repeats alternate which path goes first
    assert [run.path for run in result.runs] == [BARE, QUEUE, QUEUE, BARE]
    assert result.same_tokens
    prompt, first, short_prompt, answer = result.runs[0].tokens
    assert 48 <= prompt <= 80  # about 64, the chat template included
    assert short_prompt < prompt
    assert (first, answer) == (1, 16)
    for run in result.runs:
        assert run.prompt_s > 0 and run.short_full_s > run.generation_s > 0
        for metric in METRICS:
            assert getattr(run, metric) > 0
    for metric in METRICS:
        assert result.median(BARE, metric) > 0 and result.median(QUEUE, metric) > 0
        assert len(result.paired_ratios(metric)) == 2
        assert math.isfinite(result.ratio(metric)) and result.ratio(metric) > 0
    data = result.to_json()
    assert set(data["paths"]) == set(PATHS)
    assert data["paths"][QUEUE]["completion_tokens"] == 16
    assert set(data["ratio"]) == set(METRICS)
    assert data["pass"] == (
        data["same_tokens"] and all(r >= data["target_ratio"] for r in data["ratio"].values())
    )


async def test_model_moa_bench_splits_each_query_at_its_critical_path(tmp_path: Path) -> None:
    with trio.fail_after(60):
        result = await run_model_moa_bench(
            3, 1, 2, "llama-cpp", {"n_threads": "1"}, queries=2, max_tokens=16,
            base_dir=tmp_path,
        )
    assert len(result.queries) == 2
    for query in result.queries:
        assert query.calls == (2 + 1) * 1 + 1
        assert len(query.layer_llm_s) == 2  # one proposal layer, then the aggregation
        assert all(seconds > 0 for seconds in query.layer_llm_s)
        assert 0 < query.llm_s <= query.total_s
        assert query.other_s >= 0
        assert 0 < query.completion_tokens <= 4 * 16
    data = result.to_json()
    assert data["backend_options"] == {"n_threads": "1"}
    assert data["median"]["calls"] == 4
