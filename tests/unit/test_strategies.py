"""Built-in strategies: inference counts, prompt modes, fresh random draws, capacity weighting."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from dmoa_p2p.moa._types import PeerLoad, Plan, QueryRequest, Strategy
from dmoa_p2p.moa.strategies import (
    AugmentedStrategy,
    CapacityStrategy,
    LocalStrategy,
    RawStrategy,
    spare_capacity_weights,
)
from dmoa_p2p.registry import load_plugin
from dmoa_p2p.stability import SPARE_FLOOR

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


def _choices(
    candidates: list[PeerLoad], draws: int, proposers: int = 1, layers: int = 1
) -> Counter[str]:
    request = QueryRequest("q", layers=layers, proposers=proposers)
    rng, chosen = random.Random(7), Counter[str]()
    for _ in range(draws):
        for layer in CapacityStrategy().plan(request, candidates, rng).layers:
            assert len(set(layer.proposers)) == len(layer.proposers) == proposers
            chosen.update(layer.proposers)
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


def test_capacity_draws_each_peer_with_exactly_its_capped_share() -> None:
    # M = 2: spare = 1/α − 3λ; weights 4, 0.7, 0.4, 1, 0.25, 0.1 (sum 6.45). With k = 3 the
    # first peer's share 3·4/6.45 exceeds 1: it is capped at 1 and the other two places are
    # spread over the remaining weight 2.45.
    times = [0.25, 1.0, 1.0, 1.0, 4.0, 4.0]
    rates = [None, 0.1, 0.2, None, 0.0, 0.05]
    candidates = [
        PeerLoad(f"p{i}", mean_service_s=a, arrival_rate=lam)
        for i, (a, lam) in enumerate(zip(times, rates, strict=True))
    ]
    expected = [1.0, 1.4 / 2.45, 0.8 / 2.45, 2.0 / 2.45, 0.5 / 2.45, 0.2 / 2.45]
    draws = 20_000
    chosen = _choices(candidates, draws, proposers=3, layers=2)
    for peer, pi in zip(candidates, expected, strict=True):
        sd = math.sqrt(pi * (1 - pi) / (2 * draws))  # two layers per plan
        assert chosen[peer.peer_id] / (2 * draws) == pytest.approx(pi, abs=4.5 * sd + 1e-12)


def test_capacity_draws_together_any_set_of_peers() -> None:
    # without the shuffle, systematic sampling of four equal peers (π = 1/2) would only ever
    # draw {first, third} or {second, fourth}
    request = QueryRequest("q", layers=1, proposers=2)
    rng = random.Random(3)
    pairs = {
        frozenset(CapacityStrategy().plan(request, peers(4), rng).layers[0].proposers)
        for _ in range(300)
    }
    assert len(pairs) == 6


def test_capacity_rarely_but_possibly_picks_a_saturated_peer() -> None:
    candidates = [PeerLoad(f"idle-{i}", mean_service_s=1.0) for i in range(3)]
    # its own users need 2 × (M+1) = 4 inferences per second of a 1 per second model
    busy = PeerLoad("busy", mean_service_s=1.0, arrival_rate=2.0)
    chosen = _choices([busy, *candidates], 20_000)
    expected = SPARE_FLOOR / (3 + SPARE_FLOOR)  # about 1.6 %
    assert 0.5 * expected < chosen["busy"] / 20_000 < 1.5 * expected


def test_weights_are_spare_capacity_with_the_median_rate_for_unknown_times() -> None:
    candidates = [
        PeerLoad("a", mean_service_s=1.0, arrival_rate=0.1),
        PeerLoad("b", mean_service_s=None),
        PeerLoad("c", mean_service_s=4.0, arrival_rate=0.04, queue_length=9, queue_capacity=9),
        PeerLoad("d", mean_service_s=0.0, arrival_rate=1.0),
    ]
    # known rates 1 and 0.25 (0 s is not a measurement): median 0.625; M = 2, so own users
    # take 3λ; a full queue no longer matters; d's users saturate it: floor
    assert spare_capacity_weights(candidates, 2) == pytest.approx(
        [1.0 - 0.3, 0.625, 0.25 - 0.12, 0.625 * SPARE_FLOOR]
    )
    assert spare_capacity_weights([PeerLoad("x"), PeerLoad("y")], 2) == [1.0, 1.0]


def test_a_peer_that_refuses_most_prompts_is_loaded_by_the_ones_it_admits() -> None:
    # its users offer 2 prompts a second, it admits 0.1: its own load is 3 × 0.1
    throttled = PeerLoad("t", mean_service_s=1.0, arrival_rate=2.0, admitted_rate=0.1)
    assert spare_capacity_weights([throttled], 2) == pytest.approx([1.0 - 0.3])


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
