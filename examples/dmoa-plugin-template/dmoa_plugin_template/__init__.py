"""Template dmoa-p2p plugin: a `shortest` aggregator, and a strategy to copy from."""

from __future__ import annotations

import random
from collections.abc import Sequence

from dmoa_p2p.moa import Composition, LayerPlan, PeerLoad, Plan, QueryRequest, TokenBudget
from dmoa_p2p.moa.aggregators import MoaAggregator

__all__ = ["FirstPeersStrategy", "ShortestAggregator"]


class ShortestAggregator:
    """`shortest`: answers with the shortest non-empty proposal, without an LLM call.

    An aggregator has two methods (the `dmoa_p2p.moa.Aggregator` protocol):
    `direct_answer` may return the final answer itself (or None to ask the node's LLM),
    and `compose` builds the messages an LLM gets, for intermediate (augmented) layers
    and for the final answer when `direct_answer` returns None.
    """

    def compose(self, prompt: str, proposals: Sequence[str], budget: TokenBudget) -> Composition:
        # Reuse the built-in MoA prompt; it already trims proposals to fit `budget`.
        return MoaAggregator().compose(prompt, proposals, budget)

    def direct_answer(self, prompt: str, proposals: Sequence[str]) -> str | None:
        answers = [p for p in proposals if p.strip()]
        return min(answers, key=len, default="")  # min keeps the first on ties


class FirstPeersStrategy:
    """Not registered (see pyproject.toml): a strategy asks the k first peers in every layer.

    A strategy has one method (the `dmoa_p2p.moa.Strategy` protocol). `peers` arrive live,
    without the node itself and sorted by peer id; draw any randomness from `rng` so a
    seed reproduces the plan.
    """

    def plan(self, request: QueryRequest, peers: Sequence[PeerLoad], rng: random.Random) -> Plan:
        chosen = tuple(p.peer_id for p in peers[: request.proposers])
        layers = tuple(
            LayerPlan(chosen, "raw" if index == 0 else "augmented")
            for index in range(request.layers)
        )
        return Plan(layers)
