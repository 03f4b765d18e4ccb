"""Built-in aggregators: the published prompt texts, `longest`, fair trimming to a token budget."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmoa_p2p.backends import ChatMessage
from dmoa_p2p.moa._trim import cut_to_tokens, water_level
from dmoa_p2p.moa._types import Aggregator, TokenBudget
from dmoa_p2p.moa.aggregators import (
    MIN_KEPT_TOKENS,
    TRIM_MARKER,
    DmoaPaperAggregator,
    LongestAggregator,
    MoaAggregator,
    message_tokens,
    moa_messages,
)
from dmoa_p2p.registry import load_plugin

# Written out again on purpose: a typo in the module must not pass by comparison with itself.
PUBLISHED = (
    "You have been provided with a set of responses from various open-source models to the "
    "latest user query. Your task is to synthesize these responses into a single, high-quality "
    "response. It is crucial to critically evaluate the information provided in these "
    "responses, recognizing that some of it may be biased or incorrect. Your response should "
    "not simply replicate the given answers but should offer a refined, accurate, and "
    "comprehensive reply to the instruction. Ensure your response is well-structured, "
    "coherent, and adheres to the highest standards of accuracy and reliability."
)
EXTRA = (
    " Do not add any additional comments about how you created these responses."
    " Just synthesize these responses as instructed."
)


def quarter_chars(text: str) -> int:
    return max(1, (len(text) + 3) // 4)  # the fake backend's estimate


def words(text: str) -> int:
    return len(text.split())


def budget(
    context: int, reserve: int = 0, count: Callable[[str], int] = quarter_chars
) -> TokenBudget:
    return TokenBudget(context_length=context, reserve_for_answer=reserve, count=count)


ROOMY = budget(100_000)


def test_moa_prompt_is_the_published_system_message() -> None:
    composed = MoaAggregator().compose("Why?", ["alpha", "beta"], ROOMY)
    system, user = composed.messages
    assert system == ChatMessage(
        "system", PUBLISHED + "\n\nResponses from models:\n1. alpha\n2. beta"
    )
    assert user == ChatMessage("user", "Why?")
    assert composed.truncated == ()
    assert MoaAggregator().direct_answer("Why?", ["alpha"]) is None


def test_dmoa_paper_prompt_is_one_user_message_in_the_authors_layout() -> None:
    composed = DmoaPaperAggregator().compose("Why?", ["alpha", "beta"], ROOMY)
    assert composed.messages == (
        ChatMessage("user", f"Why? {PUBLISHED}{EXTRA}\n\nResponse-1: alpha\n\nResponse-2: beta"),
    )
    assert DmoaPaperAggregator().direct_answer("Why?", ["alpha"]) is None


def test_longest_answers_directly_and_composes_the_moa_prompt() -> None:
    longest = LongestAggregator()
    assert longest.direct_answer("q", ["ab", "abcd", "wxyz", "a"]) == "abcd"
    assert longest.direct_answer("q", []) == ""
    assert longest.compose("q", ["a"], ROOMY) == MoaAggregator().compose("q", ["a"], ROOMY)


PROMPT = "Explain how tides work."
SHORT = "Gravity of the moon."
LONG_A = "The moon pulls the near ocean. " * 60
LONG_B = "The sun adds a smaller tide too. " * 60


@pytest.mark.parametrize("aggregator", [MoaAggregator(), DmoaPaperAggregator()])
@pytest.mark.parametrize("count", [quarter_chars, words])
def test_long_proposals_are_trimmed_fairly_to_fit(
    aggregator: Aggregator, count: Callable[[str], int]
) -> None:
    tiny = budget(460, reserve=60, count=count)
    proposals = [LONG_A, SHORT, LONG_B]
    composed = aggregator.compose(PROMPT, proposals, tiny)
    text = "\n".join(m.content for m in composed.messages)
    assert message_tokens(composed.messages, count) <= tiny.prompt_tokens
    assert composed.truncated == (0, 2)
    assert PROMPT in text
    assert f" {SHORT}\n" in text  # the short one is whole
    # order kept; each long one is a prefix of itself, marked as cut, of about equal size
    first, second = text.index(LONG_A[:40]), text.index(LONG_B[:40])
    assert first < text.index(SHORT) < second
    cut_a = text[first : text.index(TRIM_MARKER, first) + len(TRIM_MARKER)]
    cut_b = text[second : text.index(TRIM_MARKER, second) + len(TRIM_MARKER)]
    assert LONG_A.startswith(cut_a.removesuffix(TRIM_MARKER))
    assert LONG_B.startswith(cut_b.removesuffix(TRIM_MARKER))
    assert abs(count(cut_a) - count(cut_b)) <= 2
    assert count(cut_a) > 20  # the room went to the proposals, not wasted


def test_nothing_is_trimmed_when_it_fits() -> None:
    proposals = [LONG_A, SHORT]
    exact = message_tokens(moa_messages(PROMPT, proposals), quarter_chars)
    composed = MoaAggregator().compose(PROMPT, proposals, budget(exact))
    assert composed.truncated == ()
    assert composed.messages == moa_messages(PROMPT, proposals)


def test_oversized_fixed_parts_keep_a_minimum_of_each_proposal() -> None:
    long_prompt = "word " * 2000
    composed = MoaAggregator().compose(long_prompt, [LONG_A, SHORT], budget(300))
    assert composed.truncated == (0,)
    system = composed.messages[0].content
    cut = system[system.index("\n1. ") + 4 : system.index("\n2. ")]
    assert cut.endswith(TRIM_MARKER)
    assert quarter_chars(cut) <= MIN_KEPT_TOKENS
    assert system.endswith(f"\n2. {SHORT}")
    assert composed.messages[1].content == long_prompt  # the question is never cut


def test_water_level_shares_what_short_proposals_leave() -> None:
    assert water_level([10, 100, 100], 110) == 50
    assert water_level([100, 100, 100], 90) == 30
    assert water_level([5, 7], 100) == 7
    assert water_level([5, 7], -3) == 0
    assert water_level([], 10) == 0


def test_cut_to_tokens_respects_the_limit() -> None:
    text = "abcdefgh " * 50
    assert cut_to_tokens(text, 1000, quarter_chars) == text
    cut = cut_to_tokens(text, 20, quarter_chars)
    assert quarter_chars(cut) <= 20
    assert cut.endswith(TRIM_MARKER)
    assert text.startswith(cut.removesuffix(TRIM_MARKER))
    assert quarter_chars(cut_to_tokens(text, 21, quarter_chars)) >= 20  # as long as allowed
    assert cut_to_tokens(text, 1, words) == TRIM_MARKER  # room for the marker only
    assert cut_to_tokens(text, 0, words) == ""  # not even for that


@given(
    proposals=st.lists(st.text(max_size=400), max_size=5),
    prompt=st.text(min_size=1, max_size=200),
    context=st.integers(min_value=0, max_value=1500),
    use_words=st.booleans(),
)
def test_compose_fits_whenever_the_fixed_parts_do(
    proposals: list[str], prompt: str, context: int, use_words: bool
) -> None:
    count = words if use_words else quarter_chars
    room = budget(context, count=count)
    for aggregator in (MoaAggregator(), DmoaPaperAggregator()):
        composed = aggregator.compose(prompt, proposals, room)
        bare = aggregator.compose(prompt, [""] * len(proposals), budget(10**9, count=count))
        if message_tokens(bare.messages, count) <= room.prompt_tokens:
            assert message_tokens(composed.messages, count) <= room.prompt_tokens
        for index in composed.truncated:
            assert 0 <= index < len(proposals)


@pytest.mark.parametrize(
    ("name", "cls"),
    [("moa", MoaAggregator), ("dmoa-paper", DmoaPaperAggregator), ("longest", LongestAggregator)],
)
def test_registered_by_entry_point(name: str, cls: type) -> None:
    assert load_plugin("aggregator", name) is cls
