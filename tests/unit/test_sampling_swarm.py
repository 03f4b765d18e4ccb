"""Virtual swarms of peer-sampling views under churn: uniform choice, joins, crashes, in-degree.

Plain loops over rounds of `simulate.simulate_sampling` (no trio), seeded. Each node keeps
6 to 8 links and shuffles along them; shuffles move records (never copy them); a node draws
among its view and its neighbours. Bounds are the measured values with margin; measured
(seed 1, defaults: C = 20, L = 8, rounds of 0.5 s, TTL 9 s, k = 3, churn 1 % a minute):
n = 100, 3 min: TV a round 0.044 (max 0.056), over the window 0.020; busiest device 1.09x
its share; joiners drawn within 0–1.5 s, crashed nodes last drawn 7.5 s after.
n = 1000, 15 s: TV a round 0.031 (max 0.035), over the window 0.021; busiest 1.11x.
7.3 links a node; 0.0014 dials a node-second; 8 shuffle messages a node-second at both sizes.
"""

from __future__ import annotations

import statistics

import pytest

from dmoa_p2p import stability as st
from dmoa_p2p.node import SamplingConfig
from dmoa_p2p.simulate import SamplingResult, SamplingSwarm, simulate_sampling

CONFIG = SamplingConfig()


@pytest.fixture(scope="module")
def hundred() -> SamplingResult:
    # 3 minutes measured: 1 % a minute is three crashes and three joins
    return simulate_sampling(SamplingSwarm(nodes=100, rounds=360, warmup_rounds=60))


@pytest.fixture(scope="module")
def thousand() -> SamplingResult:
    return simulate_sampling(SamplingSwarm(nodes=1000, rounds=30, warmup_rounds=20))


@pytest.fixture(scope="module")
def churning() -> SamplingResult:
    # 10 % a minute for 2 minutes: twenty crashes and twenty joins
    swarm = SamplingSwarm(
        nodes=100, rounds=240, warmup_rounds=40, churn_per_min=0.1
    )
    return simulate_sampling(swarm)


def test_choice_is_close_to_uniform_at_1000(thousand: SamplingResult) -> None:
    assert thousand.tv_round_max <= 0.05  # every round, from the views as they are
    assert thousand.tv_window <= 0.03  # over 15 s of all origins' draws
    assert thousand.tv_draws <= thousand.tv_noise_floor + 0.02  # actual draws: noise on top
    assert thousand.short_draws == 0
    assert thousand.view_fill >= 20  # the view's records and the neighbours' own
    assert thousand.busiest_share <= 1.2


def test_choice_is_close_to_uniform_at_100(hundred: SamplingResult) -> None:
    assert hundred.tv_round_mean <= 0.06
    assert hundred.tv_round_max <= 0.08
    assert hundred.tv_window <= 0.03  # over 3 minutes
    assert hundred.busiest_share <= 1.15
    assert hundred.short_draws == 0 and hundred.view_fill >= 16


def test_joiners_are_drawn_within_seconds(hundred: SamplingResult) -> None:
    assert hundred.joiners_never_drawn == 0
    assert len(hundred.join_delays_s) == 3
    assert max(hundred.join_delays_s) <= 5.0


def test_crashed_nodes_stop_being_drawn_within_the_ttl(hundred: SamplingResult) -> None:
    # guaranteed: the last record a node issued expires TTL after its last round
    assert len(hundred.crash_delays_s) == 3
    assert max(hundred.crash_delays_s) <= CONFIG.ttl_s
    assert max(hundred.crash_view_delays_s) <= CONFIG.ttl_s


def test_joins_and_crashes_at_1000(thousand: SamplingResult) -> None:
    assert thousand.joiners_never_drawn == 0
    assert thousand.join_delays_s and max(thousand.join_delays_s) <= 5.0
    assert thousand.crash_delays_s and max(thousand.crash_delays_s) <= CONFIG.ttl_s


def test_in_degrees_stay_near_the_view_size(
    hundred: SamplingResult, thousand: SamplingResult
) -> None:
    for result in (hundred, thousand):
        # records move, never copied: a node is in about as many views as its records
        # live (one a round for a TTL, less those merged away), all nodes alike
        degrees = result.in_degree
        assert 10 <= statistics.fmean(degrees) <= 18
        assert statistics.pstdev(degrees) <= 2.5
        assert max(degrees) <= CONFIG.ttl_s / CONFIG.round_s
    # cost per node does not grow with n: the same answer budget binds at both sizes
    assert hundred.max_answers == thousand.max_answers == CONFIG.max_answers_per_round


def test_control_traffic_per_node_does_not_grow_with_n(
    hundred: SamplingResult, thousand: SamplingResult
) -> None:
    # a request and a reply per shuffle, one shuffle started a round by each node and about
    # one answered: 4 messages a node-round; L records each way
    for result in (hundred, thousand):
        assert result.messages_per_node_s == pytest.approx(4 / CONFIG.round_s, rel=0.05)
        assert result.max_messages_per_node_s <= 2 * result.messages_per_node_s
    ratio = thousand.messages_per_node_s / hundred.messages_per_node_s
    assert 1 / 1.05 <= ratio <= 1.05  # the goal is within 1.2×
    records = thousand.records_per_node_s / hundred.records_per_node_s
    assert 1 / 1.05 <= records <= 1.05


def test_each_devices_load_follows_its_time_averaged_in_degree(hundred: SamplingResult) -> None:
    # the share of proposals each device got is what stability.sampled_arrival_rates predicts
    # from its mean in-degree: M = 1, k = 3, λ = 1, so r_i = 2 + 3·share_i
    degrees = list(hundred.mean_in_degree)
    predicted = st.sampled_arrival_rates([1.0] * len(degrees), degrees, 1, 3)
    for rate, share in zip(predicted, hundred.shares, strict=True):
        assert (rate - 2) / 3 == pytest.approx(share, abs=0.02)
    # over 3 minutes no device gets more than 15 % above its uniform share of peer work
    assert max(hundred.shares) <= 1.15


def test_linked_joiners_are_drawn_and_crashed_nodes_dropped_within_10_s(
    hundred: SamplingResult,
    churning: SamplingResult,
    thousand: SamplingResult,
) -> None:
    # a joiner starts with its contact's link and an empty view: its first shuffle fills it
    assert len(churning.join_delays_s) == len(churning.crash_delays_s) == 20
    for result in (hundred, churning, thousand):
        assert result.joiners_never_drawn == 0
        assert result.join_delays_s and max(result.join_delays_s) <= 5.0  # the goal is 10 s
        assert result.crash_delays_s and max(result.crash_delays_s) <= CONFIG.ttl_s
        assert max(result.crash_view_delays_s) <= CONFIG.ttl_s


def test_links_stay_near_the_target_and_are_rarely_dialled(
    hundred: SamplingResult,
    churning: SamplingResult,
    thousand: SamplingResult,
) -> None:
    for result in (hundred, churning, thousand):
        low, high, mean = result.neighbour_degree
        # a crash takes a link, a round's dial brings one back (to a peer with room)
        assert low >= 2 and high <= 8
        assert 6.0 <= mean <= 8.0
    # a link opens at start, on joining, and to replace one a crash closed: the crash rate
    # (1 % a minute) times the links a crash closes, against Cyclon's one dial per shuffle
    for result in (hundred, thousand):
        assert result.dials_per_node_s <= 0.005
    assert churning.dials_per_node_s <= 0.05  # at 10 % a minute


def test_max_neighbours_is_at_least_the_target() -> None:
    with pytest.raises(ValueError, match="max_neighbours"):
        SamplingSwarm(nodes=10, rounds=1, warmup_rounds=0, neighbours=6, max_neighbours=5)


@pytest.mark.parametrize("neighbours", [0, 6])
def test_a_run_is_deterministic(neighbours: int) -> None:
    swarm = SamplingSwarm(
        nodes=40, rounds=20, warmup_rounds=10, churn_per_min=0.2, neighbours=neighbours
    )
    assert simulate_sampling(swarm) == simulate_sampling(swarm)
