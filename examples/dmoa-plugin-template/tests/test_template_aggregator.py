"""`shortest`: the shortest non-empty proposal, and the built-in MoA prompt for LLM layers."""

import pytest
from dmoa_plugin_template import ShortestAggregator

from dmoa_p2p.moa import TokenBudget
from dmoa_p2p.moa.aggregators import MoaAggregator
from dmoa_p2p.registry import PluginOptionsError, create_plugin


def test_shortest_non_empty_proposal_wins() -> None:
    aggregator = create_plugin("aggregator", "shortest")
    assert isinstance(aggregator, ShortestAggregator)
    assert aggregator.direct_answer("q", ["a long answer", "", "short", "tiny!"]) == "short"
    assert aggregator.direct_answer("q", ["", "  "]) == ""


def test_compose_is_the_moa_prompt_trimmed_to_the_budget() -> None:
    aggregator = create_plugin("aggregator", "shortest")
    roomy = TokenBudget(context_length=4096, reserve_for_answer=256, count=len)
    expected = MoaAggregator().compose("q", ["a", "b"], roomy)
    assert aggregator.compose("q", ["a", "b"], roomy) == expected
    tight = TokenBudget(context_length=600, reserve_for_answer=0, count=len)
    assert aggregator.compose("q", ["x" * 500, "y"], tight).truncated == (0,)


def test_it_takes_no_options() -> None:
    with pytest.raises(PluginOptionsError, match="takes no options"):
        create_plugin("aggregator", "shortest", {"length": "1"})
