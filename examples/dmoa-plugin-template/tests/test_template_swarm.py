"""A real query on an in-memory swarm, every node running all five of the template's plugins."""

from pathlib import Path

import pytest
import trio.testing
from dmoa_plugin_template import CountingGossip

from dmoa_p2p.admission import PromptRefused
from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.registry import create_plugin
from dmoa_p2p.testing import memory_swarm

# distinct lengths, so the shortest answer tells whose proposal won; the origin's is longest
MODELS = ["origin-echo", "a", "bb", "ccc", "dddd"]
PROMPT = "What is a mixture of agents?"


async def test_first_peers_then_shortest(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backends = [create_plugin("backend", "echo", {"model": m}).load() for m in MODELS]
    budget = {"per_minute": "1"}
    swarm = memory_swarm(
        tmp_path, backends, seed=1, gossip="counting", admission="budget", admission_options=budget
    )
    async with swarm as nodes:
        origin, model_of = nodes[0], {n.peer_id: m for n, m in zip(nodes, MODELS, strict=True)}
        request = QueryRequest(PROMPT, proposers=2, strategy="first-peers", aggregator="shortest")
        answer = await origin.ask(request)

        chosen = tuple(sorted(n.peer_id for n in nodes[1:])[:2])  # the first two by peer id
        trace = answer.trace
        assert (trace.strategy, trace.aggregator) == ("first-peers", "shortest")
        assert [(layer.asked, layer.mode) for layer in trace.layers] == [(chosen, "raw")]
        assert sorted(trace.layers[0].answered) == sorted((origin.peer_id, *chosen))
        assert trace.layers[0].missing == ()
        winner = min((model_of[p] for p in chosen), key=len)
        assert answer.text == f"[{winner}] {PROMPT}"
        # `shortest` answered itself: three proposals, no aggregating LLM call
        assert sorted(call.role for call in trace.calls) == ["proposer"] * 3

        assert isinstance(origin.gossip, CountingGossip)
        assert origin.gossip.sent == {peer: 1 for peer in chosen}  # one task each
        assert origin.snapshot().plugins["gossip"] == "counting"

        with pytest.raises(PromptRefused) as refused:  # budget: one prompt a minute
            await origin.ask(request)
        assert refused.value.cause == "cap"
        assert origin.outcomes["refused"] == 1
