"""`fake`: a test backend with configurable service times and text derived from its input."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Literal

import attrs
import trio

from dmoa_p2p.backends._protocol import (
    BackendError,
    ChatMessage,
    Generation,
    GenerationParams,
    TextCallback,
    cut_at_stop,
)

DISTRIBUTIONS = ("fixed", "exponential")


class FakeBackend:
    """Not a language model: sleeps a service time, then answers with a digest of the prompt.

    Service times are `fixed` (always `mean_s`) or `exponential` (mean `mean_s`, seeded), so
    queueing experiments can match the paper's model. Under trio's MockClock they cost no
    wall time.
    """

    def __init__(
        self,
        mean_s: float = 0.2,
        distribution: str = "fixed",
        seed: int = 0,
        model_name: str = "fake",
        context_length: int = 4096,
    ) -> None:
        if distribution not in DISTRIBUTIONS:
            raise BackendError(
                f"unknown service-time distribution {distribution!r}; use one of {DISTRIBUTIONS}"
            )
        if mean_s < 0:
            raise BackendError(f"service time must be >= 0, got {mean_s}")
        self.mean_s = mean_s
        self.distribution = distribution
        self._rng = random.Random(seed)
        self._model_name = model_name
        self._context_length = context_length
        self.prompts: list[list[ChatMessage]] = []  # every prompt served, for tests to inspect

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def context_length(self) -> int:
        return self._context_length

    def count_tokens(self, text: str) -> int:
        # roughly four characters a token, like English text on BPE tokenizers
        return max(1, (len(text) + 3) // 4)

    def service_time(self) -> float:
        if self.distribution == "exponential" and self.mean_s > 0:
            return self._rng.expovariate(1.0 / self.mean_s)
        return self.mean_s

    async def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> Generation:
        self.prompts.append(list(messages))
        await trio.sleep(self.service_time())
        return self._answer(messages, params)

    async def generate_stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, on_text: TextCallback
    ) -> Generation:
        """The same answer, word by word, spread evenly over the same service time."""
        self.prompts.append(list(messages))
        total_s = self.service_time()
        generation = self._answer(messages, params)
        words = generation.text.split(" ")
        start = trio.current_time()
        for i, word in enumerate(words, start=1):
            # deadlines from the start: the pieces' timer overshoots do not add up
            await trio.sleep_until(start + total_s * i / len(words))
            on_text(word if i == 1 else " " + word)
        return generation

    def _answer(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Generation:
        """The digest and the last user message's first words, cut before the first stop
        string (finish_reason "stop"); "length" when it is longer than max_tokens (the text
        is not cut then: tests compare it)."""
        prompt = "\n".join(f"{m.role}: {m.content}" for m in messages)
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:12]
        last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
        words = " ".join(last_user.split()[:8])
        text = f"[{self._model_name} {digest}] {words}"
        text, stopped = cut_at_stop(text, params.stop)
        tokens = self.count_tokens(text)
        reason = "length" if tokens > params.max_tokens and not stopped else "stop"
        return Generation(text, self.count_tokens(prompt), min(tokens, params.max_tokens), reason)

    async def aclose(self) -> None:
        return None


@attrs.frozen
class FakeOptions:
    """The `fake` backend's options: `service_time` (s), `distribution`, `seed`, `model`,
    `context` (tokens)."""

    service_time: float = attrs.field(default=0.2, validator=attrs.validators.ge(0.0))
    distribution: Literal["fixed", "exponential"] = "fixed"
    seed: int = 0
    model: str = "fake"
    context: int = attrs.field(default=4096, validator=attrs.validators.ge(16))

    def load(self) -> FakeBackend:
        return FakeBackend(
            self.service_time, self.distribution, self.seed, self.model, self.context
        )
