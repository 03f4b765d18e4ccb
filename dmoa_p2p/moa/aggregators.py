"""Built-in aggregators: the published MoA and distributed-MoA prompts, and a no-LLM `longest`."""

from __future__ import annotations

from collections.abc import Sequence

from dmoa_p2p.backends import ChatMessage
from dmoa_p2p.moa._trim import (
    MESSAGE_OVERHEAD_TOKENS,
    MIN_KEPT_TOKENS,
    TRIM_MARKER,
    fit_proposals,
    message_tokens,
)
from dmoa_p2p.moa._types import Composition, TokenBudget

# The trimming helpers are public here too, for plugins that render their own prompt.
__all__ = [
    "DMOA_INSTRUCTION",
    "MESSAGE_OVERHEAD_TOKENS",
    "MIN_KEPT_TOKENS",
    "MOA_SYSTEM_PROMPT",
    "TRIM_MARKER",
    "DmoaPaperAggregator",
    "LongestAggregator",
    "MoaAggregator",
    "dmoa_paper_messages",
    "fit_proposals",
    "message_tokens",
    "moa_messages",
]

# The aggregate-and-synthesize instruction of Wang et al. 2024 (arXiv 2406.04692), as in
# togethercomputer/MoA utils.py `inject_references_to_messages`.
_SYNTHESIZE = (
    "You have been provided with a set of responses from various open-source models to the "
    "latest user query. Your task is to synthesize these responses into a single, "
    "high-quality response. It is crucial to critically evaluate the information provided in "
    "these responses, recognizing that some of it may be biased or incorrect. Your response "
    "should not simply replicate the given answers but should offer a refined, accurate, and "
    "comprehensive reply to the instruction. Ensure your response is well-structured, "
    "coherent, and adheres to the highest standards of accuracy and reliability."
)

MOA_SYSTEM_PROMPT = _SYNTHESIZE + "\n\nResponses from models:"

# Mitra, Kaswan, Ulukus 2024 (arXiv 2412.21200) append two sentences; the text and layout
# follow the authors' code, purbeshmitra/distributed_moa dmoa.py (`agg_prompt`).
DMOA_INSTRUCTION = (
    _SYNTHESIZE + " Do not add any additional comments about how you created these "
    "responses. Just synthesize these responses as instructed."
)


def moa_messages(prompt: str, proposals: Sequence[str]) -> tuple[ChatMessage, ...]:
    """The MoA prompt: instruction and numbered responses as the system message, then the query."""
    references = "".join(f"\n{i}. {p}" for i, p in enumerate(proposals, start=1))
    return (
        ChatMessage("system", MOA_SYSTEM_PROMPT + references),
        ChatMessage("user", prompt),
    )


def dmoa_paper_messages(prompt: str, proposals: Sequence[str]) -> tuple[ChatMessage, ...]:
    """The distributed paper's prompt: one user message, query, instruction, `Response-i:` blocks.

    dmoa.py builds `prompt + " " + instruction + "\\n\\nResponse-1: ..." ...` and sends it as
    the only (user) message, for augmented layers and the final aggregation alike.
    """
    references = "".join(f"\n\nResponse-{i}: {p}" for i, p in enumerate(proposals, start=1))
    return (ChatMessage("user", f"{prompt} {DMOA_INSTRUCTION}{references}"),)


class MoaAggregator:
    """`moa`: the original Mixture-of-Agents prompt; the final answer is the LLM's synthesis."""

    def compose(self, prompt: str, proposals: Sequence[str], budget: TokenBudget) -> Composition:
        return fit_proposals(proposals, lambda kept: moa_messages(prompt, kept), budget)

    def direct_answer(self, prompt: str, proposals: Sequence[str]) -> str | None:
        return None


class DmoaPaperAggregator:
    """`dmoa-paper`: the distributed-MoA paper's single-user-message variant of the prompt."""

    def compose(self, prompt: str, proposals: Sequence[str], budget: TokenBudget) -> Composition:
        return fit_proposals(proposals, lambda kept: dmoa_paper_messages(prompt, kept), budget)

    def direct_answer(self, prompt: str, proposals: Sequence[str]) -> str | None:
        return None


class LongestAggregator(MoaAggregator):
    """`longest`: answers with the longest proposal, no LLM call (tests, low-power nodes).

    `compose` is the `moa` prompt: intermediate layers still need augmented prompts.
    """

    def direct_answer(self, prompt: str, proposals: Sequence[str]) -> str | None:
        return max(proposals, key=len, default="")  # max keeps the first on ties
