"""dmoa-p2p aggregator `vote`: the proposal most in agreement with the others, no LLM call."""

from __future__ import annotations

import re
from collections.abc import Sequence

from dmoa_p2p.moa import Composition, TokenBudget
from dmoa_p2p.moa.aggregators import MoaAggregator

__all__ = ["VoteAggregator", "agreement", "jaccard", "token_set"]

_WORD = re.compile(r"\w+")


def token_set(text: str) -> frozenset[str]:
    """Lower-cased word tokens; punctuation and repetition do not count."""
    return frozenset(_WORD.findall(text.lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """Size of the intersection over size of the union; 0 for two empty sets (nothing shared)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def agreement(proposals: Sequence[str]) -> list[float]:
    """Each proposal's mean Jaccard similarity to every other proposal (0 when alone)."""
    sets = [token_set(p) for p in proposals]
    others = len(sets) - 1
    if others < 1:
        return [0.0] * len(sets)
    return [
        sum(jaccard(mine, theirs) for j, theirs in enumerate(sets) if j != i) / others
        for i, mine in enumerate(sets)
    ]


class VoteAggregator:
    """`vote`: a plurality vote without an LLM, for nodes that cannot afford a final inference.

    The answer is the proposal with the highest mean token-set Jaccard similarity to the
    others: the one whose content most of the others share (first on ties). Blank
    proposals (a peer that failed or said nothing) take no part. Intermediate layers still
    need an augmented prompt, so `compose` is the built-in `moa` prompt.
    """

    def compose(self, prompt: str, proposals: Sequence[str], budget: TokenBudget) -> Composition:
        return MoaAggregator().compose(prompt, proposals, budget)

    def direct_answer(self, prompt: str, proposals: Sequence[str]) -> str | None:
        candidates = [p for p in proposals if p.strip()]
        if not candidates:
            return ""
        scores = agreement(candidates)
        best = max(range(len(candidates)), key=scores.__getitem__)  # max keeps the first
        return candidates[best]
