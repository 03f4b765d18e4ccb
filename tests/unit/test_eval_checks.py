"""Scoring answers by code: each check kind, right and wrong."""

from __future__ import annotations

import pytest

from dmoa_p2p.eval import EvalError, build_check, normalise


def test_normalise_drops_case_punctuation_articles_and_lead_ins() -> None:
    assert normalise("  The Answer is: Paris! ") == "paris"
    assert normalise("Answer: the Moon.") == "moon"
    assert normalise("Buenos   Aires") == "buenos aires"


@pytest.mark.parametrize(
    ("answer", "right"),
    [
        ("Paris", True),
        ("paris.", True),
        ("The answer is Paris.", True),
        ("Paris\nIt is the largest city of France.", True),
        ("The capital city of France is Paris.", True),
        ("The capital of France is Paris. It lies on the Seine.", True),
        ("The capital of France is Paris, on the Seine.", True),
        ("Paris is the capital of France.", True),
        ("The capital of France is not Paris.", False),
        ("Lyon is the capital, not Paris.", False),
        ("The capital of France is Paris, not Lyon.", True),
        ("Lyon", False),
        ("Paris or Lyon", False),
        ("Answers vary: Paris", False),
        ("", False),
    ],
)
def test_exact_matches_the_first_line_normalised(answer: str, right: bool) -> None:
    assert build_check({"kind": "exact", "answers": ["Paris"]})(answer) is right


@pytest.mark.parametrize(
    ("answer", "right"),
    [("8 legs", True), ("Eight legs.", True), ("A spider has 8 legs.", True),
     ("80 legs", False), ("8 or 10", False), ("It has 6 legs.", False)],
)
def test_exact_accepts_a_number_with_its_unit(answer: str, right: bool) -> None:
    assert build_check({"kind": "exact", "answers": ["8", "eight"]})(answer) is right
    assert build_check({"kind": "exact", "answers": ["100"]})("100°C")


@pytest.mark.parametrize(
    ("answer", "right"),
    [
        ("B", True),
        ("B.", True),
        ("(B) Dolphin", True),
        ("b) dolphin", True),
        ("Answer: B", True),
        ("Dolphin", True),
        ("A", False),
        ("A. Shark", False),
        ("Shark", False),
        ("Both A and B", False),
        ("The answer is B.", True),
        ("Option B", True),
        ("The answer is C", False),
        ("a dolphin is a mammal", False),  # an article, not the letter A
    ],
)
def test_choice_reads_the_leading_letter_or_the_option(answer: str, right: bool) -> None:
    check = build_check(
        {"kind": "choice", "options": ["Shark", "Dolphin", "Trout", "Octopus"], "answer": "B"}
    )
    assert check(answer) is right


@pytest.mark.parametrize(
    ("answer", "right"),
    [("42", True), ("The sum is 42.", True), ("12 + 30 = 42", True), ("1,042", False),
     ("41", False), ("forty-two", False), ("42.5", False), ("42 (6 × 7)", True),
     ("6 × 7 = 42, not 43", True), ("I think 6 × 7 makes 42", True)],
)
def test_number_reads_the_stated_result(answer: str, right: bool) -> None:
    """A first line opening with a number; else the last one after "=" or "is"; else the
    last number."""
    assert build_check({"kind": "number", "answer": 42})(answer) is right


def test_instruction_checks() -> None:
    five = build_check({"kind": "word_count", "count": 5})
    assert five("The sea is very deep.") and not five("The sea is deep.")
    at_most = build_check({"kind": "word_count", "min": 1, "max": 3})
    assert at_most("Blue and wide") and not at_most("") and not at_most("a b c d")
    assert build_check({"kind": "include", "words": ["cup"]})("A cup of coffee.")
    assert not build_check({"kind": "include", "words": ["cup"]})("A cupboard.")
    assert not build_check({"kind": "exclude", "words": ["cold"]})("It is COLD.")
    assert build_check({"kind": "lowercase"})("all small here.")
    assert not build_check({"kind": "lowercase"})("Not all small.")
    assert build_check({"kind": "uppercase"})("ALL BIG!") and not build_check(
        {"kind": "uppercase"}
    )("123")
    assert not build_check({"kind": "no_commas"})("one, two")
    keys = build_check({"kind": "json_keys", "keys": ["fruit", "reason"]})
    assert keys('{"fruit": "apple", "reason": "red"}')
    assert keys('```json\n{"fruit": "apple", "reason": "red"}\n```')
    assert not keys('{"fruit": "apple"}') and not keys("fruit: apple") and not keys("[1]")
    bullets = build_check({"kind": "bullets", "count": 2})
    assert bullets("- one\n- two") and bullets("1. one\n2) two") and not bullets("- one")
    two = build_check({"kind": "sentences", "max": 2})
    assert two("One. Two!") and not two("One. Two. Three.") and not two("")
    exactly_two = build_check({"kind": "sentences", "min": 2, "max": 2})
    assert exactly_two("One. Two") and not exactly_two("Only one.")
    starts = build_check({"kind": "starts_with", "texts": ["yes", "no"]})
    assert starts("Yes, because...") and starts("no.") and not starts("Yesterday it rained")
    assert starts("**Yes**, because...")
    assert build_check({"kind": "ends_with", "text": "That is all."})("Cats purr. That is all.")
    both = build_check({"kind": "all", "checks": [{"kind": "lowercase"}, {"kind": "no_commas"}]})
    assert both("fine here") and not both("fine, here")


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"answers": ["x"]}, 'a check is an object with a "kind"'),
        ({"kind": "telepathy"}, "unknown check kind 'telepathy'"),
        ({"kind": "exact", "answers": []}, "'answers' must be a non-empty list"),
        ({"kind": "exact"}, "check 'exact'"),
        ({"kind": "choice", "options": ["a", "b"], "answer": "C"}, "must be one of A, B"),
        ({"kind": "choice", "options": ["a"], "answer": "A"}, "2 to 6 choices"),
        ({"kind": "number", "answer": "42"}, "must be a number"),
        ({"kind": "word_count", "min": 5, "max": 2}, "below 'min'"),
        ({"kind": "bullets", "count": -1}, "whole number"),
        ({"kind": "all", "checks": [{"kind": "nope"}]}, "unknown check kind 'nope'"),
    ],
)
def test_a_malformed_check_says_what_is_wrong(spec: object, says: str) -> None:
    with pytest.raises(EvalError, match=says.replace("(", r"\(")):
        build_check(spec)
