"""Per-device load when proposers come from partial views: in-degree-weighted and given views."""

from __future__ import annotations

import random

import pytest

from dmoa_p2p import stability as st


def test_equal_in_degrees_are_uniform_choice() -> None:
    rates = [0.1, 0.2, 0.05, 0.3, 0.15]
    sampled = st.sampled_arrival_rates(rates, [3.0] * 5, 2, 2)
    assert sampled == pytest.approx(st.uniform_arrival_rates(rates, 2, 2))
    # and Theorem 1 with equal rates
    assert st.sampled_arrival_rates([0.1] * 6, [4] * 6, 2, 3) == pytest.approx([0.9] * 6)


def test_a_device_in_more_views_gets_more_proposals() -> None:
    # n = 4, λ = 1, M = 1, k = 1, d = (2, 1, 1, 1): origin j picks i with d_i/(D − d_j)
    rates = st.sampled_arrival_rates([1.0] * 4, [2, 1, 1, 1], 1, 1)
    assert rates[0] == pytest.approx(2 + 3 * 2 / 4)
    assert rates[1] == pytest.approx(2 + 1 / 3 + 2 * 1 / 4)
    # every prompt still costs (k+1)·M + 1 inferences in all
    assert sum(rates) == pytest.approx(4 * st.inferences_per_prompt(1, 1))


def test_in_degree_weighting_is_the_weighted_choice_with_in_degree_weights() -> None:
    rng = random.Random(4)
    rates = [rng.uniform(0.01, 0.2) for _ in range(12)]
    degrees = [rng.randint(5, 30) for _ in range(12)]
    fast = st.sampled_arrival_rates(rates, degrees, 3, 2)
    assert fast == pytest.approx(st.weighted_arrival_rates(rates, degrees, 3, 2))


def test_shares_over_one_are_capped_as_the_weighted_choice_caps_them() -> None:
    degrees = [50.0, 1.0, 1.0, 1.0, 1.0]  # k·d_0 > D − d_0: device 0 would be drawn twice
    rates = st.sampled_arrival_rates([1.0] * 5, degrees, 1, 2)
    assert rates == pytest.approx(st.weighted_arrival_rates([1.0] * 5, degrees, 1, 2))
    assert rates[0] == pytest.approx(2 + 4)  # drawn by every other origin, once each


def test_bad_in_degrees_are_refused() -> None:
    with pytest.raises(ValueError, match="in-degrees for"):
        st.sampled_arrival_rates([1.0] * 3, [1, 1], 1, 1)
    with pytest.raises(ValueError, match=">= 0"):
        st.sampled_arrival_rates([1.0] * 3, [5, 0, 0], 1, 1)
    assert st.sampled_arrival_rates([0.5, 0.5], [1, 1], 0, 0) == [0.5, 0.5]  # M = 0


def test_given_views_exact_loads() -> None:
    # three devices: 0 sees {1, 2}, 1 sees {0}, 2 sees {0, 1}; k = 1, M = 2, λ = 1
    rates = st.view_arrival_rates([1.0] * 3, [[1, 2], [0], [0, 1]], 2, 1)
    assert rates == pytest.approx([3 + 2 + 1, 3 + 1 + 1, 3 + 1])
    complete = [[i for i in range(5) if i != j] for j in range(5)]
    lam = [0.1, 0.2, 0.3, 0.4, 0.5]
    assert st.view_arrival_rates(lam, complete, 2, 3) == pytest.approx(
        st.uniform_arrival_rates(lam, 2, 3)
    )
    # a view smaller than k: all of it is drawn; an empty one sends nothing
    assert st.view_arrival_rates([1.0] * 3, [[1], [], []], 1, 2) == pytest.approx([2, 3, 2])


def test_theorem1_for_the_most_held_device() -> None:
    # equal λ, α: the most held device bounds the stable rate, about 1/(α·(M+1+k·M·d_max/d̄))
    n, alpha, layers, k = 200, 1.0, 2, 3
    degrees = [20.0] * n
    degrees[0] = 30.0
    rates = st.sampled_arrival_rates([1.0] * n, degrees, layers, k)
    worst = max(st.device_utilisations(rates, [alpha] * n))
    mean_d = sum(degrees) / n
    approximate = 1 / (alpha * (layers + 1 + k * layers * 30 / mean_d))
    assert 1 / worst == pytest.approx(approximate, rel=0.01)
    uniform = st.max_stable_rate(alpha, layers, k)
    assert 1 / worst < uniform  # a spread of in-degrees lowers the threshold


def test_the_stable_rate_for_given_loads_is_where_the_busiest_device_saturates() -> None:
    unit = st.uniform_arrival_rates([1.0] * 5, 2, 2)
    assert st.max_stable_rate_for_loads(unit, [1.0] * 5) == pytest.approx(
        st.max_stable_rate(1.0, 2, 2)
    )
    # one device held in more views: it alone sets the limit
    views = [[1, 2], [0, 2], [0, 1], [0, 1, 2], [0, 1, 2]]
    loads = st.view_arrival_rates([1.0] * 5, views, 1, 1)
    assert st.max_stable_rate_for_loads(loads, [1.0] * 5) == pytest.approx(1 / max(loads))
    assert st.max_stable_rate_for_loads([0.0, 0.0], [1.0, 1.0]) == float("inf")
