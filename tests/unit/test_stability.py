"""Stability thresholds and queue predictions against hand-computed values and limits."""

from __future__ import annotations

import math

import pytest

from dmoa_p2p import stability as st


def test_theorem1_matches_the_papers_settings() -> None:
    # n=4, λ=1/4, (M,k)=(2,2): 7 inferences per prompt; stable only if α < 4/7
    assert st.inferences_per_prompt(2, 2) == 7
    assert st.utilisation(0.5, 0.25, 2, 2) == pytest.approx(0.875)
    assert st.theorem1_stable(0.5, 0.25, 2, 2)
    assert not st.theorem1_stable(4 / 7, 0.25, 2, 2)
    assert st.max_stable_rate(1.5, 2, 2) == pytest.approx(1 / 10.5)
    assert st.max_stable_rate(2.0, 0, 0) == pytest.approx(0.5)  # M=0: one inference


def test_per_device_rates_reduce_to_theorem1_with_equal_rates() -> None:
    rates = st.uniform_arrival_rates([0.1] * 5, 2, 3)
    assert rates == pytest.approx([0.1 * st.inferences_per_prompt(2, 3)] * 5)


def test_per_device_rates_with_unequal_users() -> None:
    # n=3, M=1, k=1: r_i = 2·λ_i + (1/2)·Σ_{j≠i} λ_j
    assert st.uniform_arrival_rates([1.0, 2.0, 3.0], 1, 1) == pytest.approx([4.5, 6.0, 7.5])


def test_remark1_is_the_slowest_device_bound_under_uniform_choice() -> None:
    alphas = [1.0, 1.0, 4.0, 4.0]
    assert st.remark1_max_rate(alphas, 1, 1) == pytest.approx(1 / 12)
    assert st.max_stable_scale([1.0] * 4, alphas, 1, 1) == pytest.approx(1 / 12)


def test_spare_capacity_weights_are_the_rate_left_by_own_users() -> None:
    # M = 2: own users take 3λ; 1 − 0.3; 0.25 − 0.15; 0.5 − 0.6 < 0: floored at 0.05·0.5
    weights = st.spare_capacity_weights([0.1, 0.05, 0.2], [1.0, 4.0, 2.0], 2)
    assert weights == pytest.approx([0.7, 0.1, 0.025])
    assert st.spare_capacity_weights([0.2], [2.0], 2, floor=0.0) == [0.0]


def test_capped_shares_are_proportional_and_water_filled() -> None:
    # 2·10/12.5 > 1: capped; the other place goes 1 : 1 : 0.5
    assert st.capped_shares([1.0, 1.0, 10.0, 0.5], 2) == pytest.approx([0.4, 0.4, 1.0, 0.2])
    assert st.capped_shares([3.0, 1.0], 1) == pytest.approx([0.75, 0.25])
    assert st.capped_shares([0.0, 0.0, 0.0], 2) == pytest.approx([2 / 3] * 3)
    assert st.capped_shares([1.0, 5.0], 2) == [1.0, 1.0]
    with pytest.raises(ValueError, match="cannot choose 3 of 2"):
        st.capped_shares([1.0, 1.0], 3)


def test_capacity_choice_widens_the_stable_region() -> None:
    alphas = [1.0] * 4 + [4.0] * 4  # half the devices four times slower
    ones = [1.0] * 8
    uniform = st.max_stable_scale(ones, alphas, 2, 2)
    assert uniform == pytest.approx(st.remark1_max_rate(alphas, 2, 2))
    capacity = st.max_stable_scale(ones, alphas, 2, 2, "capacity")
    assert capacity / uniform == pytest.approx(2.233, abs=0.001)
    # Hand check at the boundary: slow devices are floored (own load 12λ > 0.95), weight
    # w_s = 0.05/4; fast ones have w_f = 1 − 3λ. A slow device gets k·w_s/(3w_f + 4w_s) of
    # each fast origin's M proposals and k·w_s/(4w_f + 3w_s) of each other slow origin's.
    lam, w_s = capacity, 0.05 / 4
    w_f = 1 - 3 * lam
    helper = 2 * lam * (4 * 2 * w_s / (3 * w_f + 4 * w_s) + 3 * 2 * w_s / (4 * w_f + 3 * w_s))
    assert 4 * (3 * lam + helper) == pytest.approx(1.0, abs=1e-9)
    rhos = st.device_utilisations(
        st.inference_arrival_rates([lam] * 8, alphas, 2, 2, "capacity"), alphas
    )
    assert rhos[4:] == pytest.approx([1.0] * 4, abs=1e-9)
    assert max(rhos[:4]) < 0.9
    # equal weights are exactly uniform choice
    same = st.weighted_arrival_rates(ones, ones, 2, 2)
    assert same == pytest.approx(st.uniform_arrival_rates(ones, 2, 2))


def test_capacity_bisection_agrees_with_closed_forms() -> None:
    # equal α's and λ's: equal weights, so Theorem 1
    assert st.max_stable_scale([1.0] * 5, [2.0] * 5, 2, 3, "capacity") == pytest.approx(
        st.max_stable_rate(2.0, 2, 3), rel=1e-11
    )
    # floor 0 on the 1:4 swarm: slow devices' own 3 inferences per prompt bound λ at 1/12,
    # where their spare capacity and so their helper work reach 0 (fast ones: ρ = 11/12)
    alphas = [1.0] * 4 + [4.0] * 4
    scale = st.max_stable_scale([1.0] * 8, alphas, 2, 2, "capacity", floor=0.0)
    assert scale == pytest.approx(1 / 12, rel=1e-11)
    arrivals = st.inference_arrival_rates([scale] * 8, alphas, 2, 2, "capacity", floor=0.0)
    assert st.device_utilisations(arrivals, alphas) == pytest.approx([11 / 12] * 4 + [1.0] * 4)
    # no layers: each device serves only its own prompts
    assert st.max_stable_scale([1.0, 2.0], [1.0, 1.0], 0, 0, "capacity") == pytest.approx(0.5)
    assert math.isinf(st.max_stable_scale([0.0, 0.0], [1.0, 1.0], 2, 1, "capacity"))


def test_crossing_doubles_then_bisects() -> None:
    assert st.crossing(lambda s: s * s, 0.1) == pytest.approx(1.0, rel=1e-11)
    assert st.crossing(lambda s: s * s, 0.1) ** 2 >= 1.0  # never below the crossing
    assert st.crossing(lambda s: s / 3, 100.0) == pytest.approx(3.0, rel=1e-11)


def test_selection_probabilities_sum_to_k_and_never_exceed_one() -> None:
    table = st.selection_probabilities([1.0, 1.0, 10.0, 0.5], 2)
    for j, row in enumerate(table):
        assert row[j] == 0.0
        assert sum(row) == pytest.approx(2.0)
        assert all(0.0 <= p <= 1.0 for p in row)
    assert table[0] == pytest.approx([0.0, 2 / 3, 1.0, 1 / 3])  # the heavy device always
    assert table[2] == pytest.approx([0.8, 0.8, 0.0, 0.4])
    with pytest.raises(ValueError, match="need at least 4 devices"):
        st.selection_probabilities([1.0] * 3, 3)


def test_queue_predictions_and_their_limits() -> None:
    mm1 = st.mm1(alpha=1.0, arrival_rate=0.5)
    assert (mm1.rho, mm1.mean_in_system, mm1.mean_wait_s) == pytest.approx((0.5, 1.0, 1.0))
    deterministic = st.mg1(alpha=1.0, service_var_s2=0.0, arrival_rate=0.5)  # M/D/1
    assert deterministic.mean_in_system == pytest.approx(0.75)
    assert st.mm1(1.0, 1e-9).mean_in_system == pytest.approx(0.0, abs=1e-6)
    assert math.isinf(st.mm1(1.0, 1.0).mean_in_system)
    assert st.query_latency_estimate(2.0, 2) == pytest.approx(6.0)


def test_stability_command_reports_thresholds_as_json() -> None:
    import json

    from click.testing import CliRunner

    from dmoa_p2p.cli import cli

    args = ["stability", "--alpha-per-node", "1,1,1,1,4,4,4,4", "-M", "2", "-k", "2", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["inferences_per_prompt"] == 7
    assert report["remark1_max_rate"] == pytest.approx(1 / 28)
    assert report["capacity_weighted_max_rate"] == pytest.approx(0.07976, abs=1e-5)
    assert report["capacity_gain"] == pytest.approx(2.233, abs=0.001)
    assert all(d["uniform"]["rho"] < 1 for d in report["devices"])  # 0.8 × the threshold
    bad = CliRunner().invoke(cli, ["stability", "--n", "2", "-M", "1", "-k", "2"])
    assert bad.exit_code == 2
    assert "need at least 3 devices" in bad.output


def test_fair_rate_cap_holds_heavy_users_and_spares_light_ones() -> None:
    # equal users, (4,2,2), α = 1: everyone is held to ρ_max / 7
    assert st.fair_rate_cap([0.5] * 4, [1.0] * 4, 2, 2, 0.9) == pytest.approx(0.9 / 7)
    # n=3, (1,1): device i gets 2λ_i + ½·Σ_{j≠i} λ_j; with 0.05 untouched, 2c + ½(0.05 + c) = 0.9
    assert st.fair_rate_cap([0.05, 0.6, 0.6], [1.0] * 3, 1, 1, 0.9) == pytest.approx(0.35)
    # nobody needs holding back: the cap is the largest rate
    assert st.fair_rate_cap([0.01, 0.02], [1.0, 1.0], 1, 1, 0.9) == 0.02
    assert st.fair_rate_cap([0.0, 0.0], [1.0, 1.0], 1, 1, 0.9) == 0.0


def test_crossing_fails_loudly_instead_of_searching_forever() -> None:
    assert st.crossing(lambda s: s / 3.0, 0.5) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="never reaches 1"):
        st.crossing(lambda s: 0.5, 1.0)
    with pytest.raises(ValueError, match="start above 0"):
        st.crossing(lambda s: s, 0.0)


def test_fair_and_honest_task_rates() -> None:
    assert st.fair_task_rate(1.0, 4) == pytest.approx(0.25)  # μ/n
    assert st.fair_task_rate(0.5, 1) == pytest.approx(2.0)  # alone: all of μ
    with pytest.raises(ValueError, match="at least one device"):
        st.fair_task_rate(1.0, 0)
    # n=4, M=2, k=2: a given peer is drawn with probability 2/3 in each of 2 layers
    assert st.uniform_task_rate(0.3, 4, 2, 2) == pytest.approx(0.3 * 4 / 3)
    assert st.uniform_task_rate(0.3, 1, 2, 0) == 0.0  # no peers
    assert st.uniform_task_rate(0.3, 4, 0, 0) == 0.0  # M = 0: no tasks
    assert st.honest_share_of_fair_rate(4, 2, 2) == pytest.approx(16 / 21)
    with pytest.raises(ValueError, match="need at least 4 devices"):
        st.uniform_task_rate(0.3, 3, 1, 3)


def test_honest_origins_stay_below_the_fair_rate_below_theorem1() -> None:
    """Over a grid of (n, M, k ≤ n−1, α, λ < λ*): λ·k·M/(n−1) < ρ·μ/n < μ/n, and at λ*
    the ratio is exactly `honest_share_of_fair_rate`, below 1."""
    for n in range(2, 13):
        for layers in range(0, 6):
            for proposers in range(0, n):
                share = st.honest_share_of_fair_rate(n, layers, proposers)
                assert 0.0 <= share < 1.0
                # the proof's inequality, with its slack (n−1) + M·(n−1−k)
                lhs = n * proposers * layers
                rhs = (n - 1) * st.inferences_per_prompt(layers, proposers)
                assert rhs - lhs == (n - 1) + layers * (n - 1 - proposers) > 0
                for alpha in (0.05, 1.0, 7.5):
                    threshold = st.max_stable_rate(alpha, layers, proposers)
                    fair = st.fair_task_rate(alpha, n)
                    at_threshold = st.uniform_task_rate(threshold, n, layers, proposers)
                    assert at_threshold == pytest.approx(share * fair, abs=1e-12)
                    for fraction in (0.1, 0.5, 0.9, 0.999):
                        honest = st.uniform_task_rate(fraction * threshold, n, layers, proposers)
                        rho = st.utilisation(alpha, fraction * threshold, layers, proposers)
                        assert honest <= rho * fair * (1 + 1e-12)
                        assert honest < fair
