"""The evaluation's statistics: Wilson intervals, exact McNemar, paired bootstrap."""

from __future__ import annotations

import pytest

from dmoa_p2p.eval import accuracy_interval, compare_paired, mcnemar_p, sign_flip_p, wilson_interval


def test_wilson_interval_matches_published_values() -> None:
    # Wilson (1927) / Newcombe (1998) example: 81 of 263 -> 0.2553 to 0.3662
    low, high = wilson_interval(81, 263)
    assert (low, high) == pytest.approx((0.2553, 0.3662), abs=5e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=5e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_items() -> None:
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(5, 5) == 1.0
    assert mcnemar_p(0, 6) == pytest.approx(2 / 64)  # 2·(1/2)^6
    assert mcnemar_p(1, 9) == pytest.approx(2 * 11 / 1024)  # 2·(C(10,0)+C(10,1))/2^10
    assert mcnemar_p(9, 1) == mcnemar_p(1, 9)
    assert mcnemar_p(2, 12) < 0.05 < mcnemar_p(4, 10)


def test_paired_comparison_counts_items_and_brackets_the_difference() -> None:
    baseline = [True] * 40 + [False] * 60
    this = [True] * 40 + [True] * 15 + [False] * 45  # 15 more right, none lost
    result = compare_paired(this, baseline, seed=3)
    assert (result.items, result.only_this, result.only_baseline) == (100, 15, 0)
    assert result.difference == pytest.approx(0.15)
    assert result.low < 0.15 < result.high and result.low > 0.05
    assert result.p_value == pytest.approx(mcnemar_p(15, 0)) and result.p_value < 0.001
    same = compare_paired(baseline, baseline)
    assert (same.difference, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert compare_paired(this, baseline, seed=3) == result  # seeded
    with pytest.raises(ValueError):
        compare_paired([True], [True, False])


def test_with_repeats_items_not_trials_are_the_sample() -> None:
    """Scores of 0 or 1 get Wilson's interval; shares of repeats a bootstrap over items,
    which is no narrower for counting each item's repeats (here 4) as trials."""
    assert accuracy_interval([1, 0, 1, 1]) == wilson_interval(3, 4)
    shares = [0.75, 0.25] * 20  # 40 items, 4 repeats each: 80 of 160 right
    low, high = accuracy_interval(shares, seed=2)
    assert low < 0.5 < high
    assert high - low > 0.95 * (wilson_interval(80, 160)[1] - wilson_interval(80, 160)[0])


def test_the_sign_flip_test_sees_a_consistent_difference_and_not_a_balanced_one() -> None:
    assert sign_flip_p([0.5] * 12, seed=1) < 0.01
    assert sign_flip_p([0.5, -0.5] * 6, seed=1) == 1.0  # observed 0: nothing to explain
    assert sign_flip_p([0.5] * 6 + [-0.25] * 6, seed=1) > 0.05
    with_repeats = compare_paired([0.75] * 30, [0.25] * 30, seed=1)
    assert with_repeats.difference == pytest.approx(0.5) and with_repeats.p_value < 0.01
    assert (with_repeats.only_this, with_repeats.only_baseline) == (30, 0)
