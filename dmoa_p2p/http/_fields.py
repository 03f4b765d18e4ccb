"""Chat completion fields the node honours, ignores or refuses; a refusal names its field."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dmoa_p2p.http._errors import ApiError

# read by `parse_chat_request` and acted on
HONOURED = (
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "seed",
    "stop",
    "dmoa",
    "include_trace",
)
# bookkeeping for the caller or for OpenAI's own platform: they change nothing in an answer
IGNORED = (
    "user",
    "metadata",
    "store",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
    "parallel_tool_calls",  # only means something with tools, which are refused
)


def _is(*values: Any) -> Callable[[Any], bool]:
    # `False == 0` in Python: compare types too, so `logprobs: 0` is not `false`
    return lambda given: any(type(given) is type(v) and given == v for v in values)


def _number_is(value: float) -> Callable[[Any], bool]:
    return lambda given: type(given) in (int, float) and given == value


# field: (the values that ask for nothing the node cannot do, why others cannot be honoured)
_NEUTRAL: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n": (_is(1), "only n=1 is supported: the swarm gives one answer per prompt"),
    "tools": (_is([]), "the node's models cannot call tools"),
    "tool_choice": (_is("none", "auto"), "the node's models cannot call tools"),
    "functions": (_is([]), "the node's models cannot call functions"),
    "function_call": (_is("none", "auto"), "the node's models cannot call functions"),
    "response_format": (
        _is({"type": "text"}),
        "answers are plain text: response_format can only be {\"type\": \"text\"}",
    ),
    "logprobs": (
        _is(False),
        "an answer aggregated from several models has no token log-probabilities",
    ),
    "top_logprobs": (
        _is(0),
        "an answer aggregated from several models has no token log-probabilities",
    ),
    "logit_bias": (_is({}), "the node's backends take no logit_bias"),
    "presence_penalty": (_number_is(0), "the node's backends apply no presence penalty"),
    "frequency_penalty": (_number_is(0), "the node's backends apply no frequency penalty"),
    "top_p": (_number_is(1), "the node's backends use their own top_p; only 1 is accepted"),
    "modalities": (_is(["text"]), "the node's models answer in text only"),
    "audio": (_is(), "the node's models answer in text only"),
    "prediction": (_is(), "predicted outputs are not supported"),
    "web_search_options": (_is(), "the node cannot search the web"),
}


def check_fields(body: Mapping[str, Any]) -> None:
    """Refuse, with a 400 naming the field, whatever the node would otherwise silently ignore.

    - `HONOURED` fields are read and acted on; so is `n`, which can only be 1.
    - `IGNORED` fields are accepted and have no effect: they identify the caller or ask
      OpenAI's platform for something (storage, a service tier) that changes no answer.
    - Fields that change an answer in a way the node cannot (tools, structured output,
      log-probabilities, penalties, top_p, audio, ...) are accepted only at the value that
      asks for nothing (`tools: []`, `logprobs: false`, `presence_penalty: 0`, `top_p: 1`,
      `response_format: {"type": "text"}`, ...), else refused with code
      `unsupported_parameter`; null counts as absent.
    - Any other field is refused with code `unknown_parameter`, as OpenAI's API does, so that
      a misspelt parameter is not silently dropped.
    """
    for name, value in body.items():
        if name in HONOURED or name in IGNORED or value is None:
            continue
        rule = _NEUTRAL.get(name)
        if rule is None:
            raise ApiError(
                400,
                f"unrecognized request field {name!r}; this node reads "
                f"{', '.join(HONOURED)} and accepts (ignoring them) {', '.join(IGNORED)}",
                param=name,
                code="unknown_parameter",
            )
        neutral, why = rule
        if not neutral(value):
            raise ApiError(
                400,
                f"{name} = {_shown(value)} cannot be honoured: {why}",
                param=name,
                code="unsupported_parameter",
            )


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
