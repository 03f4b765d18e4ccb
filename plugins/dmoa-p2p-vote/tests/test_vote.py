"""The `vote` aggregator: agreement scores and the chosen proposal."""

from __future__ import annotations

import pytest
from dmoa_p2p_vote import VoteAggregator, agreement, jaccard, token_set

from dmoa_p2p.moa import TokenBudget
from dmoa_p2p.moa.aggregators import MoaAggregator
from dmoa_p2p.registry import load_plugin


def test_token_sets_ignore_case_punctuation_and_repeats() -> None:
    assert token_set("The sky, the SKY is blue!") == {"the", "sky", "is", "blue"}
    assert jaccard(token_set("a b c"), token_set("b c d")) == pytest.approx(2 / 4)
    assert jaccard(frozenset(), frozenset()) == 0.0


def test_agreement_is_the_mean_similarity_to_the_others() -> None:
    assert agreement(["a b", "a b", "c d"]) == pytest.approx([0.5, 0.5, 0.0])
    assert agreement(["alone"]) == [0.0]
    assert agreement([]) == []


def test_the_most_agreed_with_proposal_wins() -> None:
    proposals = [
        "Lyon is the capital.",
        "Paris is the capital of France.",
        "The capital of France is Paris, on the Seine.",
        "France's capital city is Paris.",
    ]
    # mean similarities about 0.34, 0.56, 0.49, 0.38: the second shares most with the rest
    assert VoteAggregator().direct_answer("capital of France?", proposals) == proposals[1]


def test_ties_blanks_and_nothing() -> None:
    vote = VoteAggregator()
    assert vote.direct_answer("q", ["x y", "x y"]) == "x y"
    assert vote.direct_answer("q", ["first", "second"]) == "first"
    assert vote.direct_answer("q", ["", "  ", "only one"]) == "only one"
    assert vote.direct_answer("q", ["", " "]) == ""
    assert vote.direct_answer("q", []) == ""


def test_compose_is_the_moa_prompt() -> None:
    budget = TokenBudget(context_length=4096, reserve_for_answer=256, count=len)
    expected = MoaAggregator().compose("q", ["a", "b"], budget)
    assert VoteAggregator().compose("q", ["a", "b"], budget) == expected


def test_installed_entry_point_names_the_class() -> None:
    assert load_plugin("aggregator", "vote") is VoteAggregator
