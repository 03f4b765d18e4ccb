"""The evaluation's statistics: Wilson intervals, exact McNemar, paired bootstrap."""

from __future__ import annotations

import pytest

from dmoa_p2p.eval import compare_paired, mcnemar_p, wilson_interval


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
