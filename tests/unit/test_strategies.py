"""Built-in strategies: inference counts, prompt modes, fresh random draws, capacity weighting."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from dmoa_p2p.moa._types import PeerLoad, Plan, QueryRequest, Strategy
from dmoa_p2p.moa.strategies import (
    BUSY_WEIGHT_FLOOR,
    AugmentedStrategy,
    CapacityStrategy,
    LocalStrategy,
    RawStrategy,
    spare_capacity_weights,
)
from dmoa_p2p.registry import load_plugin

DRAWING: list[Strategy] = [AugmentedStrategy(), RawStrategy(), CapacityStrategy()]
DRAWING_IDS = ["augmented", "raw", "capacity"]


def peers(n: int) -> list[PeerLoad]:
    return [PeerLoad(f"peer-{i:02d}", mean_service_s=1.0) for i in range(n)]


def plan(strategy: Strategy, layers: int, proposers: int, n: int = 6, seed: int = 0) -> Plan:
    request = QueryRequest("why is the sky blue?", layers=layers, proposers=proposers)
    return strategy.plan(request, peers(n), random.Random(seed))


@pytest.mark.parametrize("strategy", DRAWING, ids=DRAWING_IDS)
@pytest.mark.parametrize(("m", "k"), [(0, 0), (1, 1), (1, 2), (2, 2), (2, 3)])
def test_inference_calls_match_the_paper(strategy: Strategy, m: int, k: int) -> None:
    result = plan(strategy, m, k)
    assert result.inference_calls == (k + 1) * m + 1
    assert len(result.layers) == m
    assert all(len(layer.proposers) == k for layer in result.layers)
    assert result.notes == ()


def test_augmented_feeds_later_layers_the_augmented_prompt() -> None:
    for strategy in (AugmentedStrategy(), CapacityStrategy()):
        result = plan(strategy, 3, 2)
        assert [layer.mode for layer in result.layers] == ["raw", "augmented", "augmented"]
        assert not result.aggregate_all_layers


def test_raw_layers_are_combined_only_at_the_end() -> None:
    result = plan(RawStrategy(), 3, 2)
    assert [layer.mode for layer in result.layers] == ["raw", "raw", "raw"]
    assert result.aggregate_all_layers


@pytest.mark.parametrize("strategy", DRAWING, ids=DRAWING_IDS)
def test_each_layer_is_a_fresh_draw_of_distinct_known_peers(strategy: Strategy) -> None:
    known = {p.peer_id for p in peers(6)}
    differ = 0
    for seed in range(200):
        first, second = plan(strategy, 2, 3, seed=seed).layers
        for layer in (first, second):
            assert len(set(layer.proposers)) == len(layer.proposers) == 3
            assert set(layer.proposers) <= known
        differ += set(first.proposers) != set(second.proposers)
    assert differ > 50  # uniform draws of 3 of 6 agree with probability 1/20


@pytest.mark.parametrize("strategy", DRAWING, ids=DRAWING_IDS)
def test_fewer_peers_than_asked_uses_all_and_says_so(strategy: Strategy) -> None:
    result = plan(strategy, 2, 3, n=2)
    assert all(sorted(layer.proposers) == ["peer-00", "peer-01"] for layer in result.layers)
    assert result.notes == ("asked for k=3 proposers, only 2 peers known",)
    alone = plan(strategy, 1, 2, n=0)
    assert alone.layers[0].proposers == ()
    assert alone.inference_calls == 2


@pytest.mark.parametrize("strategy", [*DRAWING, LocalStrategy()], ids=[*DRAWING_IDS, "local"])
def test_a_seed_gives_one_plan(strategy: Strategy) -> None:
    assert plan(strategy, 3, 2, seed=42) == plan(strategy, 3, 2, seed=42)


def test_local_answers_alone_and_notes_ignored_layers() -> None:
    assert plan(LocalStrategy(), 0, 0) == Plan(layers=())
    result = plan(LocalStrategy(), 2, 3)
    assert result.layers == ()
    assert result.inference_calls == 1
    assert result.notes == ("strategy 'local' answers alone: asked for M=2 layers, using M=0",)


def _choices(candidates: list[PeerLoad], draws: int, proposers: int = 1) -> Counter[str]:
    request = QueryRequest("q", layers=1, proposers=proposers)
    rng, chosen = random.Random(7), Counter[str]()
    for _ in range(draws):
        chosen.update(CapacityStrategy().plan(request, candidates, rng).layers[0].proposers)
    return chosen


def test_capacity_picks_faster_peers_in_proportion_to_their_rate() -> None:
    fast = [PeerLoad(f"fast-{i}", mean_service_s=1.0) for i in range(3)]
    slow = [PeerLoad(f"slow-{i}", mean_service_s=4.0) for i in range(3)]
    chosen = _choices(sorted(fast + slow, key=lambda p: p.peer_id), 20_000)
    fast_count = sum(chosen[p.peer_id] for p in fast)
    slow_count = sum(chosen[p.peer_id] for p in slow)
    assert 3.5 < fast_count / slow_count < 4.5


def test_capacity_with_several_proposers_still_prefers_fast_peers() -> None:
    fast = [PeerLoad(f"fast-{i}", mean_service_s=1.0) for i in range(4)]
    slow = [PeerLoad(f"slow-{i}", mean_service_s=4.0) for i in range(4)]
    chosen = _choices(fast + slow, 5_000, proposers=2)
    assert sum(chosen.values()) == 10_000
    assert min(chosen[p.peer_id] for p in fast) > 2 * max(chosen[p.peer_id] for p in slow)


def test_capacity_rarely_but_possibly_picks_a_full_queue() -> None:
    candidates = [PeerLoad(f"idle-{i}", mean_service_s=1.0) for i in range(3)]
    busy = PeerLoad("busy", mean_service_s=1.0, queue_length=8, queue_capacity=8)
    chosen = _choices([busy, *candidates], 20_000)
    expected = BUSY_WEIGHT_FLOOR / (3 + BUSY_WEIGHT_FLOOR)  # about 1.6 %
    assert 0.5 * expected < chosen["busy"] / 20_000 < 1.5 * expected


def test_weights_use_median_rate_for_unknown_times_and_the_free_queue_fraction() -> None:
    candidates = [
        PeerLoad("a", mean_service_s=1.0),
        PeerLoad("b", mean_service_s=None),
        PeerLoad("c", mean_service_s=4.0, queue_length=2, queue_capacity=4),
        PeerLoad("d", mean_service_s=0.0, queue_length=9, queue_capacity=4),
    ]
    # known rates 1 and 0.25 (0 s is not a measurement): median 0.625
    assert spare_capacity_weights(candidates) == pytest.approx(
        [1.0, 0.625, 0.25 * 0.5, 0.625 * BUSY_WEIGHT_FLOOR]
    )
    assert spare_capacity_weights([PeerLoad("x"), PeerLoad("y")]) == [1.0, 1.0]


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("local", LocalStrategy),
        ("augmented", AugmentedStrategy),
        ("raw", RawStrategy),
        ("capacity", CapacityStrategy),
    ],
)
def test_registered_by_entry_point(name: str, cls: type) -> None:
    assert load_plugin("strategy", name) is cls
