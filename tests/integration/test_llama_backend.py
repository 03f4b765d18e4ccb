"""A MoA query on a real 3-node swarm on 127.0.0.1 where every node runs SmolLM2 via llama.cpp."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dmoa_p2p.backends import GenerationParams
from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.swarm import open_inprocess_swarm

pytest.importorskip("dmoa_p2p_llama_cpp", reason="needs pip install -e plugins/dmoa-p2p-llama-cpp")
pytestmark = pytest.mark.integration


async def test_three_smollm2_nodes_answer_a_one_by_two_query(tmp_path: Path) -> None:
    async with open_inprocess_swarm(
        3, tmp_path, presence_interval_s=0.5,
        backend="llama-cpp", backend_options={"n_threads": "1"},
    ) as swarm:
        await swarm.wait_converged(timeout_s=20)
        origin = swarm.nodes[0]
        assert {n.backend.model_name for n in swarm.nodes} == {"SmolLM2-135M-Instruct.Q4_1"}
        request = QueryRequest(
            "What is the capital of France?", 1, 2, params=GenerationParams(max_tokens=48)
        )
        with trio.fail_after(60):
            answer = await origin.ask(request)
    assert answer.text.strip()
    trace = answer.trace
    assert len(trace.calls) == (2 + 1) * 1 + 1
    proposals = [c for c in trace.calls if c.layer == 1]
    assert sorted(c.node for c in proposals) == sorted(n.peer_id for n in swarm.nodes)
    assert [(c.node, c.role) for c in trace.calls if c.layer == 2] == [
        (origin.peer_id, "aggregator")
    ]
    (layer,) = trace.layers
    assert layer.missing == ()
    for call in trace.calls:  # real token counts from the model's own tokenizer
        assert call.prompt_tokens > 0
        assert 0 < call.completion_tokens <= 48
