"""A chat completion request: the model name or `dmoa` body field as a MoA query, checked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from dmoa_p2p.backends import MAX_STOP_CHARS, MAX_STOP_STRINGS, ChatMessage, GenerationParams, Role
from dmoa_p2p.http._errors import ApiError, bad_request
from dmoa_p2p.http._fields import check_fields
from dmoa_p2p.moa import (
    DEFAULT_AGGREGATOR,
    DEFAULT_LAYERS,
    DEFAULT_PROPOSERS,
    DEFAULT_STRATEGY,
    MAX_LAYERS,
    MAX_PROPOSERS,
    QueryRequest,
    conversation_prompt,
)
from dmoa_p2p.registry import PluginError, load_plugin
from dmoa_p2p.wire import limits

DEFAULT_MODEL = "dmoa"
# model-name keys and their short forms, as in the CLI's -M and -k
_KEYS = {
    "layers": "layers",
    "m": "layers",
    "proposers": "proposers",
    "k": "proposers",
    "strategy": "strategy",
    "aggregator": "aggregator",
}
_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}


@attrs.frozen
class MoaSettings:
    """The MoA configuration a model name stands for."""

    layers: int = DEFAULT_LAYERS
    proposers: int = DEFAULT_PROPOSERS
    strategy: str = DEFAULT_STRATEGY
    aggregator: str = DEFAULT_AGGREGATOR

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


LOCAL = MoaSettings(0, 0, "local", "moa")


@attrs.frozen
class ChatRequest:
    model: str  # as the client named it, echoed in the answer
    query: QueryRequest
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage
    include_trace: bool = False


def parse_model(name: str, local_model: str) -> MoaSettings:
    """`dmoa`, `dmoa:layers=2,proposers=2,strategy=raw,aggregator=moa`, or the local model."""
    if name == local_model:
        return LOCAL
    if name == DEFAULT_MODEL:
        return MoaSettings()
    head, sep, spec = name.partition(":")
    if head != DEFAULT_MODEL or not sep:
        raise ApiError(
            404,
            f"The model {name!r} does not exist; use {DEFAULT_MODEL!r}, "
            f"'{DEFAULT_MODEL}:layers=M,proposers=K,strategy=NAME,aggregator=NAME' or "
            f"{local_model!r} (see GET /v1/models)",
            param="model",
            code="model_not_found",
        )
    values: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in spec.split(","))):
        key, eq, value = pair.partition("=")
        field = _KEYS.get(key.strip().lower())
        if not eq or field is None:
            raise bad_request(
                f"model {name!r}: {pair!r} is not KEY=VALUE with KEY one of "
                "layers (M), proposers (k), strategy, aggregator",
                "model",
            )
        values[field] = value.strip()
    return _settings(MoaSettings(), values, "model")


def _settings(base: MoaSettings, values: Mapping[str, Any], param: str) -> MoaSettings:
    changes: dict[str, Any] = {}
    for field, limit in (("layers", MAX_LAYERS), ("proposers", MAX_PROPOSERS)):
        if field in values:
            changes[field] = _bounded_int(values[field], f"{param}.{field}", 0, limit)
    for field, kind in (("strategy", "strategy"), ("aggregator", "aggregator")):
        if field in values:
            changes[field] = _plugin_name(kind, values[field], f"{param}.{field}")
    return attrs.evolve(base, **changes)


def _bounded_int(value: Any, param: str, low: int, high: int | None = None) -> int:
    try:
        number = int(value) if isinstance(value, str) else value
    except ValueError:
        number = None
    if not isinstance(number, int) or isinstance(number, bool):
        raise bad_request(f"{param} must be an integer, got {value!r}", param)
    if number < low or (high is not None and number > high):
        bounds = f"from {low} to {high}" if high is not None else f">= {low}"
        raise bad_request(f"{param} must be {bounds}, got {number}", param)
    return number


def _plugin_name(kind: str, name: Any, param: str) -> str:
    if not isinstance(name, str) or not name:
        raise bad_request(f"{param} must be a plugin name, got {name!r}", param)
    try:
        load_plugin(kind, name)
    except PluginError as exc:
        raise bad_request(str(exc), param) from exc
    return name


def flatten_messages(messages: Any) -> str:
    """The conversation as the one prompt a MoA query answers (`moa.conversation_prompt`),
    after checking it message by message so that a 400 names the bad one."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list of chat messages", "messages")
    turns = [_turn(m, i) for i, m in enumerate(messages)]
    if turns[-1].role != "user":
        raise bad_request("the last message must come from the user", "messages")
    if not turns[-1].content.strip():
        raise bad_request("the last user message is empty", f"messages[{len(turns) - 1}]")
    return conversation_prompt(turns)


def _turn(message: Any, index: int) -> ChatMessage:
    param = f"messages[{index}]"
    if not isinstance(message, dict):
        raise bad_request(f"{param} must be an object with role and content", param)
    role = _ROLES.get(message.get("role"))  # type: ignore[arg-type]
    if role is None:
        raise bad_request(
            f"{param}.role must be one of {', '.join(_ROLES)}, got {message.get('role')!r}",
            f"{param}.role",
        )
    return ChatMessage(role, _text(message.get("content"), f"{param}.content"))


def _text(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: text only
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise bad_request(f"{param}: only text content parts are supported", param)
            if not isinstance(part.get("text"), str):
                raise bad_request(f"{param}: a text part needs a string 'text'", param)
            texts.append(part["text"])
        return "\n".join(texts)
    raise bad_request(f"{param} must be a string or a list of text parts", param)


def parse_chat_request(body: Any, local_model: str) -> ChatRequest:
    """A `POST /v1/chat/completions` body as a MoA query; ApiError (400/404) says what is wrong."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    check_fields(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("you must provide a model parameter (e.g. 'dmoa')", "model")
    settings = parse_model(model, local_model)
    extra = body.get("dmoa")
    if extra is not None:
        if not isinstance(extra, dict):
            raise bad_request("dmoa must be an object", "dmoa")
        unknown = sorted(set(extra) - {*_KEYS.values(), "layer_timeout_s"})
        if unknown:
            raise bad_request(
                f"dmoa.{unknown[0]} is not a MoA setting; use layers, proposers, strategy, "
                "aggregator, layer_timeout_s",
                f"dmoa.{unknown[0]}",
            )
        settings = _settings(settings, extra, "dmoa")
    stream = _flag(body, "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad_request("stream_options must be an object", "stream_options")
    query = QueryRequest(
        flatten_messages(body.get("messages")),
        settings.layers,
        settings.proposers,
        settings.strategy,
        settings.aggregator,
        _params(body),
        **_layer_timeout(extra),
    )
    include_usage = stream and _flag(options, "include_usage")
    return ChatRequest(model, query, stream, include_usage, _flag(body, "include_trace"))


def _flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false, got {value!r}", name)
    return value


def _params(body: Mapping[str, Any]) -> GenerationParams:
    defaults = GenerationParams()
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    temperature = body.get("temperature")
    seed = body.get("seed")
    return GenerationParams(
        max_tokens=defaults.max_tokens
        if max_tokens is None
        else _bounded_int(max_tokens, "max_tokens", 1, limits.MAX_TASK_TOKENS),
        temperature=defaults.temperature
        if temperature is None
        else _number(temperature, "temperature", 0.0, 2.0),
        seed=None if seed is None else _bounded_int(seed, "seed", -(2**63), 2**63 - 1),
        stop=_stop(body.get("stop")),
    )


def _stop(value: Any) -> tuple[str, ...]:
    """OpenAI's `stop`: null, a string, or a list of up to four strings."""
    stops = [value] if isinstance(value, str) else value
    if stops is None:
        return ()
    if not isinstance(stops, list) or not 1 <= len(stops) <= MAX_STOP_STRINGS:
        raise bad_request(
            f"stop must be a string or a list of 1 to {MAX_STOP_STRINGS} strings, got "
            f"{value!r:.100}",
            "stop",
        )
    for i, stop in enumerate(stops):
        if not isinstance(stop, str) or not 0 < len(stop) <= MAX_STOP_CHARS:
            param = "stop" if isinstance(value, str) else f"stop[{i}]"
            raise bad_request(
                f"{param} must be a string of 1 to {MAX_STOP_CHARS} characters, got {stop!r:.100}",
                param,
            )
    return tuple(stops)


def _number(value: Any, param: str, low: float, high: float | None = None) -> float:
    """A JSON number from `low` to `high`, or above `low` when there is no `high`."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and high is not None:
        ok = low <= value <= high
    elif ok:
        ok = value > low
    if not ok:
        bounds = f"from {low:g} to {high:g}" if high is not None else f"> {low:g}"
        raise bad_request(f"{param} must be a number {bounds}, got {value!r}", param)
    return float(value)


def _layer_timeout(extra: Mapping[str, Any] | None) -> dict[str, float]:
    if not extra or extra.get("layer_timeout_s") is None:
        return {}
    timeout = _number(extra["layer_timeout_s"], "dmoa.layer_timeout_s", 0.0)
    if timeout > limits.MAX_DEADLINE_S:
        raise bad_request(
            f"dmoa.layer_timeout_s must be at most {limits.MAX_DEADLINE_S:g}, got {timeout:g}",
            "dmoa.layer_timeout_s",
        )
    return {"layer_timeout_s": timeout}
