"""Fitting proposals into a token budget: water-filling shares, cuts at token boundaries."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dmoa_p2p.backends import ChatMessage
from dmoa_p2p.moa._types import Composition, TokenBudget

# Chat templates wrap every message in a few role and separator tokens
# (e.g. "<|im_start|>user\n" ... "<|im_end|>\n"); budgets count them per message.
MESSAGE_OVERHEAD_TOKENS = 4

# Appended to a proposal that was cut, so the aggregating model knows it is incomplete.
TRIM_MARKER = " […]"

# When the instruction and the user's prompt alone exceed the budget, no prompt can fit;
# each proposal then keeps this many tokens so the aggregator still sees what was proposed.
MIN_KEPT_TOKENS = 32

# Token counts are not exactly additive (a counter may round per text), so a fitted prompt
# is measured again and the references' allowance shrunk by the overshoot; bounded retries.
_MAX_REFITS = 16

Render = Callable[[Sequence[str]], tuple[ChatMessage, ...]]


def message_tokens(messages: Sequence[ChatMessage], count: Callable[[str], int]) -> int:
    """Tokens a chat costs: each message's content plus MESSAGE_OVERHEAD_TOKENS."""
    return sum(count(m.content) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def water_level(costs: Sequence[int], available: int) -> int:
    """The largest per-proposal share L with sum(min(c, L)) <= available.

    Every proposal gets an equal share of what is left; a short proposal's unused share
    goes to the others (water-filling), so only the long ones are cut, all to the same size.
    """
    remaining, left = max(0, available), len(costs)
    for cost in sorted(costs):
        share = remaining // left
        if cost > share:
            return share
        remaining -= cost
        left -= 1
    return max(costs, default=0)  # everything fits


def cut_to_tokens(text: str, limit: int, count: Callable[[str], int]) -> str:
    """`text` if it costs at most `limit` tokens, else the longest prefix + TRIM_MARKER that does.

    Binary search on characters, measured with `count`, so the cut lands near a token
    boundary of the real tokenizer. Returns "" when even the marker alone is too long.
    """
    if count(text) <= limit:
        return text
    if count(TRIM_MARKER) > limit:
        return ""
    low, high = 0, len(text)  # invariant: text[:low] + marker fits, text[:high+1] + marker does not
    while low < high:
        mid = (low + high + 1) // 2
        if count(text[:mid] + TRIM_MARKER) <= limit:
            low = mid
        else:
            high = mid - 1
    return text[:low].rstrip() + TRIM_MARKER


def _cut_all(proposals: Sequence[str], limit: int, count: Callable[[str], int]) -> list[str]:
    return [cut_to_tokens(p, limit, count) for p in proposals]


def _composition(render: Render, proposals: Sequence[str], kept: Sequence[str]) -> Composition:
    truncated = tuple(
        i for i, (old, new) in enumerate(zip(proposals, kept, strict=True)) if old != new
    )
    return Composition(render(kept), truncated)


def fit_proposals(proposals: Sequence[str], render: Render, budget: TokenBudget) -> Composition:
    """The messages `render` makes from `proposals`, with proposals trimmed to fit `budget`.

    The fixed parts (instruction, user prompt, numbering, per-message overhead) are never
    cut: the aggregating model must see the question whole. Proposals keep their order;
    the indices of the trimmed ones are reported in `Composition.truncated`. When the fixed
    parts alone exceed the budget, no prompt can fit: each proposal is cut to
    MIN_KEPT_TOKENS (rather than dropped, so the answer still draws on them) and the
    backend's own context check has the last word. Never raises.
    """
    count, limit = budget.count, budget.prompt_tokens
    whole = render(proposals)
    if message_tokens(whole, count) <= limit:
        return Composition(whole)
    fixed = message_tokens(render([""] * len(proposals)), count)
    if fixed > limit:
        return _composition(render, proposals, _cut_all(proposals, MIN_KEPT_TOKENS, count))
    costs = [count(p) for p in proposals]
    available = limit - fixed
    for _ in range(_MAX_REFITS):
        kept = _cut_all(proposals, water_level(costs, available), count)
        overshoot = message_tokens(render(kept), count) - limit
        if overshoot <= 0:
            return _composition(render, proposals, kept)
        available -= overshoot
    # still over after the refits: give the references nothing, which fits by construction
    return _composition(render, proposals, _cut_all(proposals, 0, count))
