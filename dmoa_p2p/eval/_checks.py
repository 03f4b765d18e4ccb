"""Scoring an answer by code: normalised exact match, choice letters, numbers, instructions."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Mapping
from typing import Any

Checker = Callable[[str], bool]  # True: the answer is right / complies

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_LEAD_INS = re.compile(r"^(the )?(final )?answer( is)?\b\s*[:\-]?\s*")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# a number stated as the result: after "=" or "is"; a first line that opens with a number
# not followed by an operator ("376 (47 × 8)", not "41 × 4 = 164")
_STATED_NUMBER = re.compile(r"(?:=|\bis)\s*(-?\d+(?:\.\d+)?)")
_LEADING_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)(?!\s*[-+×x*/÷=\d.])")
# a letter alone ("B", "B.", "(B) Dolphin", "Answer: B"), not an article ("A kilometre")
_LETTER = re.compile(r"^\W*(?:answer\W*)?\(?([A-F])(?:[.):]|\s*$)", re.IGNORECASE)
_NAMED_LETTER = re.compile(r"(?i:\b(?:answer is|option|choice))\s*\(?([A-F])(?:[.):]|\s*$)")
_HEDGES = frozenset({"or", "and", "nor"})  # "Paris or Lyon": two answers
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+\S")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
_FIRST_SENTENCE = re.compile(r"[.!?](?:\s|$)")
_VERBS = frozenset({"is", "are", "was", "were", "has", "have", "had"})
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


class EvalError(Exception):
    """A question set, configuration or target an evaluation cannot use (a set file's
    mistake, not the model's); the message says what to fix."""


def normalise(text: str) -> str:
    """Lowercase, without punctuation, articles, a lead-in like "Answer:" or extra spaces."""
    text = _LEAD_INS.sub("", text.strip().lower()).replace("°", " ")
    text = text.translate(str.maketrans("", "", string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "")


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+(?:-[A-Za-z0-9']+)*", text)


def build_check(spec: Any) -> Checker:
    """The checker a set file's `check` object describes; EvalError if it is malformed."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("kind"), str):
        raise EvalError('a check is an object with a "kind"')
    kind = spec["kind"]
    build = _KINDS.get(kind)
    if build is None:
        raise EvalError(f"unknown check kind {kind!r}; known: {', '.join(sorted(_KINDS))}")
    params = {key: value for key, value in spec.items() if key != "kind"}
    try:
        return build(params)
    except (KeyError, TypeError, ValueError) as exc:
        raise EvalError(f"check {kind!r}: {exc}") from None


def choice_letters(count: int) -> str:
    return "ABCDEF"[:count]


def _strings(params: Mapping[str, Any], key: str) -> list[str]:
    value = params[key]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key!r} must be a non-empty list of strings")
    return value


def _count(params: Mapping[str, Any], key: str) -> int:
    value = params[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key!r} must be a whole number >= 0")
    return value


def _exact(params: Mapping[str, Any]) -> Checker:
    """The first line, normalised, is an accepted answer; or the first sentence opens with
    one ("Paris is the capital.", "8 legs") or states it after a verb ("The capital of
    France is Paris, on the Seine.", "A spider has 8 legs."), not followed by a second
    answer ("Paris or Lyon"); "is not Paris" has no answer after its verb."""
    accepted = {normalise(answer) for answer in _strings(params, "answers")}
    phrases = [answer.split() for answer in accepted if answer]

    def check(answer: str) -> bool:
        line = first_line(answer)
        if normalise(line) in accepted or normalise(answer) in accepted:
            return True
        said = normalise(_FIRST_SENTENCE.split(line.strip(), maxsplit=1)[0]).split()
        return any(_states(said, phrase) for phrase in phrases)

    return check


def _states(said: list[str], phrase: list[str]) -> bool:
    """Whether `said` opens with `phrase`, or has it right after a verb, and no hedge next."""
    size = len(phrase)
    starts = [0] + [i + 1 for i, word in enumerate(said) if word in _VERBS]
    return any(
        said[start : start + size] == phrase and not _HEDGES & set(said[start + size :][:1])
        for start in starts
    )


def _choice(params: Mapping[str, Any]) -> Checker:
    options = _strings(params, "options")
    if not 2 <= len(options) <= 6:
        raise ValueError("'options' must hold 2 to 6 choices")
    letter = params["answer"]
    if not isinstance(letter, str) or letter not in choice_letters(len(options)):
        raise ValueError(f"'answer' must be one of {', '.join(choice_letters(len(options)))}")
    right = normalise(options[ord(letter) - ord("A")])

    def check(answer: str) -> bool:
        line = first_line(answer)
        found = _LETTER.match(line) or _NAMED_LETTER.search(line)
        if found:
            return found.group(1).upper() == letter
        return normalise(line) == right

    return check


def _number(params: Mapping[str, Any]) -> Checker:
    expected = params["answer"]
    if not isinstance(expected, int | float) or isinstance(expected, bool):
        raise ValueError("'answer' must be a number")

    def check(answer: str) -> bool:
        text = answer.replace(",", "")
        leading = _LEADING_NUMBER.match(first_line(text))
        found = [leading.group(1)] if leading else _STATED_NUMBER.findall(text)
        found = found or _NUMBER.findall(text)
        return bool(found) and abs(float(found[-1]) - expected) < 1e-9

    return check


def _word_count(params: Mapping[str, Any]) -> Checker:
    low = _count(params, "min") if "min" in params else 0
    high = _count(params, "max") if "max" in params else None
    if "count" in params:
        low = high = _count(params, "count")
    if high is not None and high < low:
        raise ValueError("'max' is below 'min'")
    return lambda answer: low <= len(words(answer)) and (high is None or len(words(answer)) <= high)


def _include(params: Mapping[str, Any]) -> Checker:
    required = [w.lower() for w in _strings(params, "words")]
    return lambda answer: all(_has_word(answer, w) for w in required)


def _exclude(params: Mapping[str, Any]) -> Checker:
    forbidden = [w.lower() for w in _strings(params, "words")]
    return lambda answer: not any(_has_word(answer, w) for w in forbidden)


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])", text.lower()) is not None


def _lowercase(_params: Mapping[str, Any]) -> Checker:
    return lambda answer: bool(answer.strip()) and answer == answer.lower()


def _uppercase(_params: Mapping[str, Any]) -> Checker:
    return lambda answer: any(c.isalpha() for c in answer) and answer == answer.upper()


def _no_commas(_params: Mapping[str, Any]) -> Checker:
    return lambda answer: bool(answer.strip()) and "," not in answer


def _json_keys(params: Mapping[str, Any]) -> Checker:
    keys = set(_strings(params, "keys"))

    def check(answer: str) -> bool:
        text = answer.strip()
        fenced = _FENCE.match(text)
        try:
            value = json.loads(fenced.group(1) if fenced else text)
        except ValueError:
            return False
        return isinstance(value, dict) and set(value) == keys

    return check


def _bullets(params: Mapping[str, Any]) -> Checker:
    count = _count(params, "count")
    return lambda answer: sum(bool(_BULLET.match(line)) for line in answer.splitlines()) == count


def _sentences(params: Mapping[str, Any]) -> Checker:
    """Between `min` (1 unless given) and `max` sentences; an unpunctuated end is one."""
    least = _count(params, "min") if "min" in params else 1
    most = _count(params, "max")
    if most < least:
        raise ValueError("'max' is below 'min'")

    def check(answer: str) -> bool:
        text = answer.strip()
        count = len(_SENTENCE_END.findall(text + " "))
        if text and not _SENTENCE_END.search(text[-1] + " "):
            count += 1  # a last sentence without its full stop
        return least <= count <= most

    return check


def _starts_with(params: Mapping[str, Any]) -> Checker:
    """The answer begins with one of `texts` (any case), not inside a longer word."""
    starts = [t.lower() for t in _strings(params, "texts")]

    def check(answer: str) -> bool:
        text = answer.strip().lstrip("*_\"'“‘ ").lower()  # "**Yes**, ..." starts with yes
        return any(
            text.startswith(s) and not text[len(s) : len(s) + 1].isalnum() for s in starts
        )

    return check


def _ends_with(params: Mapping[str, Any]) -> Checker:
    text = params["text"]
    if not isinstance(text, str) or not text:
        raise ValueError("'text' must be a non-empty string")
    return lambda answer: answer.strip().lower().endswith(text.lower())


def _all(params: Mapping[str, Any]) -> Checker:
    specs = params["checks"]
    if not isinstance(specs, list) or not specs:
        raise ValueError("'checks' must be a non-empty list of checks")
    checks = [build_check(spec) for spec in specs]
    return lambda answer: all(check(answer) for check in checks)


_KINDS: dict[str, Callable[[Mapping[str, Any]], Checker]] = {
    "exact": _exact,
    "choice": _choice,
    "number": _number,
    "word_count": _word_count,
    "include": _include,
    "exclude": _exclude,
    "lowercase": _lowercase,
    "uppercase": _uppercase,
    "no_commas": _no_commas,
    "json_keys": _json_keys,
    "bullets": _bullets,
    "sentences": _sentences,
    "starts_with": _starts_with,
    "ends_with": _ends_with,
    "all": _all,
}
CHECK_KINDS = tuple(_KINDS)
