"""The LLM backend plugin kind: chat messages in, one generation out (optionally streamed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol, runtime_checkable

import attrs

from dmoa_p2p.wire import limits

Role = Literal["system", "user", "assistant"]


class BackendError(Exception):
    """The model could not be loaded or could not answer; the message says what to do."""


class BackendBusy(BackendError):
    """The model refuses work for now (e.g. an HTTP server answered 429/503)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@attrs.frozen
class ChatMessage:
    role: Role
    content: str


MAX_STOP_STRINGS = 4  # as OpenAI's API allows
MAX_STOP_CHARS = 256  # a backend looks for every stop string after every token


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the first of the `stop` strings, and whether one was found."""
    cuts = [at for at in (text.find(s) for s in stop) if at >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def _stop_strings(_instance: object, _attribute: object, value: tuple[str, ...]) -> None:
    fine = isinstance(value, tuple) and len(value) <= MAX_STOP_STRINGS
    if not fine or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in value):
        raise ValueError(
            f"stop takes a tuple of up to {MAX_STOP_STRINGS} strings of 1 to {MAX_STOP_CHARS} "
            f"characters, got {value!r:.300}"
        )


@attrs.frozen
class GenerationParams:
    """Sampling settings; their bounds are what a task may carry on the wire."""

    max_tokens: int = attrs.field(
        default=256,
        validator=[attrs.validators.ge(1), attrs.validators.le(limits.MAX_TASK_TOKENS)],
    )
    temperature: float = attrs.field(
        default=0.7,
        validator=[attrs.validators.ge(0.0), attrs.validators.le(limits.MAX_TEMPERATURE)],
    )
    seed: int | None = None
    # the answer ends before the first of these (not included), finish_reason "stop"
    stop: tuple[str, ...] = attrs.field(default=(), validator=_stop_strings)


@attrs.frozen
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"


class Backend(Protocol):
    """A local LLM. `generate` may take seconds; the node calls it one at a time, FCFS."""

    @property
    def model_name(self) -> str: ...

    @property
    def context_length(self) -> int:
        """Tokens the model can attend to (prompt plus answer)."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens `text` costs this model (an estimate is fine for budgeting)."""
        ...

    async def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> Generation: ...

    async def aclose(self) -> None: ...


# receives the answer's text piece by piece; called on the trio thread, must not block
TextCallback = Callable[[str], None]


@runtime_checkable
class StreamingBackend(Backend, Protocol):
    """A backend that can hand out its answer as the model produces it.

    Optional: the queue checks for it with isinstance and otherwise sends the whole text as
    one piece at the end. The pieces passed to `on_text` add up to the returned text.
    """

    async def generate_stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, on_text: TextCallback
    ) -> Generation: ...


class BackendPlugin(Protocol):
    """What a `dmoa_p2p.backends` entry point names: an attrs class whose fields are the
    backend's options, built by `dmoa_p2p.registry.create_plugin`; `load()` opens the model
    (slow, and where a missing model file is reported)."""

    def load(self) -> Backend: ...
