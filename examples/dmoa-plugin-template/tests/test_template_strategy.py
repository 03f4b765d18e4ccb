"""`first-peers`: built from its options by the installed entry point, planning the first peers."""

import random

import pytest
from dmoa_plugin_template import FirstPeersStrategy

from dmoa_p2p.moa import PeerLoad, QueryRequest
from dmoa_p2p.registry import PluginOptionsError, create_plugin

PEERS = [PeerLoad(f"peer-{i}") for i in range(4)]  # live peers arrive sorted by peer id


def test_every_layer_asks_the_first_peers() -> None:
    strategy = create_plugin("strategy", "first-peers")
    assert isinstance(strategy, FirstPeersStrategy)
    plan = strategy.plan(QueryRequest("q", layers=2, proposers=2), PEERS, random.Random(0))
    assert [layer.proposers for layer in plan.layers] == [("peer-0", "peer-1")] * 2
    assert [layer.mode for layer in plan.layers] == ["raw", "augmented"]
    assert plan.notes == ()


def test_offset_option_starts_further_down_and_wraps() -> None:
    strategy = create_plugin("strategy", "first-peers", {"offset": "3"})
    plan = strategy.plan(QueryRequest("q", proposers=2), PEERS, random.Random(0))
    assert [layer.proposers for layer in plan.layers] == [("peer-3", "peer-0")]


def test_fewer_peers_than_asked_is_noted_by_plan_layers() -> None:
    strategy = create_plugin("strategy", "first-peers", {"offset": "5"})
    plan = strategy.plan(QueryRequest("q", proposers=3), PEERS[:2], random.Random(0))
    assert [layer.proposers for layer in plan.layers] == [("peer-1", "peer-0")]
    assert plan.notes == ("asked for k=3 proposers, only 2 peers known",)
    assert strategy.plan(QueryRequest("q"), [], random.Random(0)).layers[0].proposers == ()


def test_bad_options_are_refused() -> None:
    with pytest.raises(PluginOptionsError, match="no option 'ofset' \\(did you mean 'offset'"):
        create_plugin("strategy", "first-peers", {"ofset": "1"})
    with pytest.raises(PluginOptionsError, match="offset"):
        create_plugin("strategy", "first-peers", {"offset": "-1"})
    with pytest.raises(PluginOptionsError, match="expected an integer"):
        create_plugin("strategy", "first-peers", {"offset": "two"})
