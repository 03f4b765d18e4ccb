"""What a MoA query is made of: request, plan, and the strategy and aggregator plugin kinds."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import attrs
import cattrs

from dmoa_p2p.backends import ChatMessage, GenerationParams
from dmoa_p2p.wire import limits

PromptMode = Literal["raw", "augmented"]

# a query's defaults and bounds, for every way of asking (CLI, control socket, HTTP)
DEFAULT_LAYERS = 1  # M
DEFAULT_PROPOSERS = 2  # k
DEFAULT_STRATEGY = "augmented"
DEFAULT_AGGREGATOR = "moa"
DEFAULT_LAYER_TIMEOUT_S = 300.0
MAX_LAYERS = 16
MAX_PROPOSERS = 32  # (k+1)·M + 1 inferences: 33 per layer is already a crowd


@attrs.frozen
class QueryRequest:
    """One user prompt and how the asking node should answer it."""

    prompt: str = attrs.field(validator=attrs.validators.min_len(1))
    layers: int = attrs.field(
        default=DEFAULT_LAYERS, validator=[attrs.validators.ge(0), attrs.validators.le(MAX_LAYERS)]
    )
    proposers: int = attrs.field(
        default=DEFAULT_PROPOSERS,
        validator=[attrs.validators.ge(0), attrs.validators.le(MAX_PROPOSERS)],
    )
    strategy: str = DEFAULT_STRATEGY
    aggregator: str = DEFAULT_AGGREGATOR
    params: GenerationParams = attrs.field(factory=GenerationParams)
    layer_timeout_s: float = attrs.field(
        default=DEFAULT_LAYER_TIMEOUT_S,
        validator=[attrs.validators.gt(0), attrs.validators.le(limits.MAX_DEADLINE_S)],
    )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = _requests.unstructure(self)
        return data

    @classmethod
    def from_json(cls, data: Any) -> QueryRequest:
        """Build a request from JSON data; ValueError says what is wrong."""
        try:
            return _requests.structure(data, cls)
        except cattrs.BaseValidationError as exc:
            problems = "; ".join(cattrs.transform_error(exc, path="query"))
            raise ValueError(f"bad query: {problems}") from exc


@attrs.frozen
class PeerLoad:
    """A peer as strategies see it (from its latest presence)."""

    peer_id: str
    mean_service_s: float | None = None
    queue_length: int = 0
    queue_capacity: int = 1
    arrival_rate: float | None = None  # its users' prompts per second, refused ones included
    service_var_s2: float | None = None
    service_samples: int = 0  # how many services mean_service_s rests on
    admitted_rate: float | None = None  # its users' prompts per second that it admitted


@attrs.frozen
class LayerPlan:
    proposers: tuple[str, ...]  # peers asked, besides the origin itself
    mode: PromptMode  # raw: the user's prompt; augmented: prompt plus the previous layer's answers


@attrs.frozen
class Plan:
    layers: tuple[LayerPlan, ...]
    # True: the final aggregation sees every layer's proposals, not just the last layer's
    aggregate_all_layers: bool = False
    notes: tuple[str, ...] = ()  # what the strategy changed or could not do, for the trace

    @property
    def inference_calls(self) -> int:
        """(k+1)·M + 1 when every layer has k proposers."""
        return sum(len(layer.proposers) + 1 for layer in self.layers) + 1


class Strategy(Protocol):
    """Plans a query: how many layers, which peers per layer, raw or augmented prompts."""

    def plan(
        self, request: QueryRequest, peers: Sequence[PeerLoad], rng: random.Random
    ) -> Plan: ...


@attrs.frozen
class TokenBudget:
    """How much of the aggregating model's context the composed prompt may use."""

    context_length: int
    reserve_for_answer: int
    count: Callable[[str], int]

    @property
    def prompt_tokens(self) -> int:
        return max(0, self.context_length - self.reserve_for_answer)


@attrs.frozen
class Composition:
    messages: tuple[ChatMessage, ...]
    truncated: tuple[int, ...] = ()  # indices of the proposals that were trimmed to fit


class Aggregator(Protocol):
    """Turns proposals into the next layer's augmented prompt or the final answer's prompt."""

    def compose(self, prompt: str, proposals: Sequence[str], budget: TokenBudget) -> Composition:
        """Messages for an LLM that synthesises `proposals` into an answer to `prompt`."""
        ...

    def direct_answer(self, prompt: str, proposals: Sequence[str]) -> str | None:
        """The final answer without an LLM call, or None to ask the LLM with `compose`."""
        ...


_requests = cattrs.Converter(forbid_extra_keys=True)
