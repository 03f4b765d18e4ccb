"""`shortest` aggregator: the final answer is the shortest non-empty proposal, no LLM call."""

from collections.abc import Sequence

from dmoa_p2p.moa import Composition, TokenBudget
from dmoa_p2p.moa.aggregators import MoaAggregator


class ShortestAggregator:
    """No options, so a plain class: the node creates it with no arguments.

    An aggregator has two methods (`dmoa_p2p.moa.Aggregator`): `direct_answer` may return
    the final answer itself (None: ask the node's LLM), and `compose` builds the messages an
    LLM gets, for augmented layers and for a final answer `direct_answer` left to the LLM.
    """

    def compose(self, prompt: str, proposals: Sequence[str], budget: TokenBudget) -> Composition:
        # the built-in MoA prompt; it already trims proposals to fit `budget`
        return MoaAggregator().compose(prompt, proposals, budget)

    def direct_answer(self, prompt: str, proposals: Sequence[str]) -> str | None:
        answers = [p for p in proposals if p.strip()]
        return min(answers, key=len, default="")  # min keeps the first on ties
