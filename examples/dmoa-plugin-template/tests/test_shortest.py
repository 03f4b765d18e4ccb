"""The template's `shortest` aggregator and example strategy."""

from __future__ import annotations

import random

from dmoa_plugin_template import FirstPeersStrategy, ShortestAggregator

from dmoa_p2p.moa import PeerLoad, QueryRequest, TokenBudget
from dmoa_p2p.moa.aggregators import MoaAggregator
from dmoa_p2p.registry import load_plugin, registered


def test_shortest_non_empty_proposal_wins() -> None:
    aggregator = ShortestAggregator()
    assert aggregator.direct_answer("q", ["a long answer", "", "short", "tiny!"]) == "short"
    assert aggregator.direct_answer("q", ["", "  "]) == ""


def test_compose_is_the_moa_prompt() -> None:
    budget = TokenBudget(context_length=4096, reserve_for_answer=256, count=len)
    expected = MoaAggregator().compose("q", ["a", "b"], budget)
    assert ShortestAggregator().compose("q", ["a", "b"], budget) == expected


def test_installed_entry_point_names_the_class() -> None:
    # `pip install -e .` registered it under the name in pyproject.toml
    assert load_plugin("aggregator", "shortest") is ShortestAggregator


def test_strategy_asks_the_first_peers() -> None:
    peers = [PeerLoad(f"peer-{i}") for i in range(4)]
    plan = FirstPeersStrategy().plan(QueryRequest("q", layers=2), peers, random.Random(0))
    assert [layer.proposers for layer in plan.layers] == [("peer-0", "peer-1")] * 2
    assert [layer.mode for layer in plan.layers] == ["raw", "augmented"]
    # without installing, register in-process for a test; it is removed afterwards
    with registered("strategy", "first-peers", FirstPeersStrategy):
        assert load_plugin("strategy", "first-peers") is FirstPeersStrategy
