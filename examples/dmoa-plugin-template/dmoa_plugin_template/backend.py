"""`echo` backend: not a language model; it answers "[<model>] <the last user message>"."""

from collections.abc import Sequence

import attrs

from dmoa_p2p.backends import ChatMessage, Generation, GenerationParams


@attrs.frozen
class EchoBackend:  # what `load()` returns: a `dmoa_p2p.backends.Backend`
    model_name: str
    context_length: int = 4096  # tokens of prompt plus answer

    def count_tokens(self, text: str) -> int:
        return len(text.split())  # an estimate is fine: it only budgets prompts

    async def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> Generation:
        last = next((m.content for m in reversed(messages) if m.role == "user"), "")
        words = f"[{self.model_name}] {last}".split()[: params.max_tokens]
        prompt_tokens = sum(self.count_tokens(m.content) for m in messages)
        return Generation(" ".join(words), prompt_tokens, len(words))

    async def aclose(self) -> None:  # a real backend frees its model here
        return None


@attrs.frozen
class EchoOptions:
    """What the entry point names: the options (`-o model=NAME`); `load()` opens the model."""

    model: str = attrs.field(default="echo", validator=attrs.validators.min_len(1))

    def load(self) -> EchoBackend:
        return EchoBackend(self.model)
