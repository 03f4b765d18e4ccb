"""The message kinds inside envelopes: one frozen attrs class per kind, plus the registry."""

# No `from __future__ import annotations`: cattrs reads these field types at runtime.

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar, TypeAlias

import attrs

from dmoa_p2p.wire.limits import (
    MAX_ADDR_CHARS,
    MAX_CHAT_TURNS,
    MAX_DEADLINE_S,
    MAX_ENVELOPE_BYTES,
    MAX_INTERVAL_S,
    MAX_LAYER,
    MAX_LISTEN_ADDRS,
    MAX_MODEL_CHARS,
    MAX_MODELS,
    MAX_PEER_ID_CHARS,
    MAX_QUERY_ID_CHARS,
    MAX_QUEUE_CAPACITY,
    MAX_RATE_PER_S,
    MAX_REASON_CHARS,
    MAX_REPORTED_S,
    MAX_RETRY_AFTER_S,
    MAX_SEED,
    MAX_SERVICE_S,
    MAX_SERVICE_SAMPLES,
    MAX_SERVICE_VAR_S2,
    MAX_TASK_TOKENS,
    MAX_TEMPERATURE,
    MAX_TEXT_CHARS,
    MAX_TOKEN_COUNT,
    MIN_INTERVAL_S,
)
from dmoa_p2p.wire.validators import (
    as_float,
    as_optional_float,
    bounded_str,
    float_in,
    holds,
    int_in,
    one_of,
    optional_float_in,
    str_tuple,
    tuple_of,
)

# Every bound below is in `limits`, with the reason for its value.
_PEER_ID = bounded_str(MAX_PEER_ID_CHARS)
_QUERY_ID = bounded_str(MAX_QUERY_ID_CHARS)
_LAYER = int_in(0, MAX_LAYER)
_RATE = optional_float_in(0.0, MAX_RATE_PER_S)
_TOKENS = int_in(0, MAX_TOKEN_COUNT)
_REPORTED_S = float_in(0.0, MAX_REPORTED_S)


@attrs.frozen
class Presence:
    """A node's periodic announcement: how to reach it, which models it serves, how busy it is."""

    KIND: ClassVar[str] = "presence"
    # Whole envelope; a Presence with every list full and every string at its cap is ~7 KiB.
    MAX_BYTES: ClassVar[int] = 8 * 1024

    peer_id: str = attrs.field(validator=_PEER_ID)
    listen_addrs: tuple[str, ...] = attrs.field(
        validator=str_tuple(MAX_LISTEN_ADDRS, MAX_ADDR_CHARS)
    )
    models: tuple[str, ...] = attrs.field(validator=str_tuple(MAX_MODELS, MAX_MODEL_CHARS))
    # None until the node has served enough prompts to measure
    mean_service_s: float | None = attrs.field(
        converter=as_optional_float, validator=optional_float_in(0.0, MAX_SERVICE_S)
    )
    service_var_s2: float | None = attrs.field(
        converter=as_optional_float, validator=optional_float_in(0.0, MAX_SERVICE_VAR_S2)
    )
    # how many service times the mean and variance rest on (how far to trust them)
    service_samples: int = attrs.field(validator=int_in(0, MAX_SERVICE_SAMPLES))
    queue_length: int = attrs.field(validator=int_in(0, MAX_QUEUE_CAPACITY))
    queue_capacity: int = attrs.field(
        validator=[int_in(1, MAX_QUEUE_CAPACITY), holds("queue_length")]
    )
    # its users' prompts per second: all they send, and those it admitted
    arrival_rate: float | None = attrs.field(converter=as_optional_float, validator=_RATE)
    admitted_rate: float | None = attrs.field(converter=as_optional_float, validator=_RATE)
    # peers expire the sender after missing a few of these periods
    interval_s: float = attrs.field(
        converter=as_float, validator=float_in(MIN_INTERVAL_S, MAX_INTERVAL_S)
    )


@attrs.frozen
class ChatTurn:
    """One chat message of a task's prompt."""

    role: str = attrs.field(validator=one_of("system", "user", "assistant"))
    content: str = attrs.field(validator=bounded_str(MAX_TEXT_CHARS, min_len=0))


@attrs.frozen
class Task:
    """The origin asks `recipient` for a proposal in layer `layer` of query `query_id`."""

    KIND: ClassVar[str] = "task"
    MAX_BYTES: ClassVar[int] = MAX_ENVELOPE_BYTES

    query_id: str = attrs.field(validator=_QUERY_ID)
    layer: int = attrs.field(validator=_LAYER)
    origin: str = attrs.field(validator=_PEER_ID)
    recipient: str = attrs.field(validator=_PEER_ID)
    messages: tuple[ChatTurn, ...] = attrs.field(validator=tuple_of(ChatTurn, MAX_CHAT_TURNS))
    max_tokens: int = attrs.field(validator=int_in(1, MAX_TASK_TOKENS))
    temperature: float = attrs.field(converter=as_float, validator=float_in(0.0, MAX_TEMPERATURE))
    # differs per proposer, so that identical models still propose different answers
    seed: int = attrs.field(validator=int_in(0, MAX_SEED))
    # a duration, not a time: the two nodes' clocks need not agree
    deadline_s: float = attrs.field(
        converter=as_float, validator=float_in(0.0, MAX_DEADLINE_S, low_open=True)
    )


@attrs.frozen
class Proposal:
    """A proposer's answer to a task, sent back to the task's origin."""

    KIND: ClassVar[str] = "proposal"
    MAX_BYTES: ClassVar[int] = MAX_ENVELOPE_BYTES

    query_id: str = attrs.field(validator=_QUERY_ID)
    layer: int = attrs.field(validator=_LAYER)
    origin: str = attrs.field(validator=_PEER_ID)
    recipient: str = attrs.field(validator=_PEER_ID)
    text: str = attrs.field(validator=bounded_str(MAX_TEXT_CHARS, min_len=0))
    model: str = attrs.field(validator=bounded_str(MAX_MODEL_CHARS))
    queue_wait_s: float = attrs.field(converter=as_float, validator=_REPORTED_S)
    service_s: float = attrs.field(converter=as_float, validator=_REPORTED_S)
    prompt_tokens: int = attrs.field(validator=_TOKENS)
    completion_tokens: int = attrs.field(validator=_TOKENS)


@attrs.frozen
class Refusal:
    """A peer will not (or could not) propose for a task, and says why."""

    KIND: ClassVar[str] = "refusal"
    MAX_BYTES: ClassVar[int] = 8 * 1024

    query_id: str = attrs.field(validator=_QUERY_ID)
    layer: int = attrs.field(validator=_LAYER)
    origin: str = attrs.field(validator=_PEER_ID)
    recipient: str = attrs.field(validator=_PEER_ID)
    reason: str = attrs.field(validator=bounded_str(MAX_REASON_CHARS))
    retry_after_s: float | None = attrs.field(
        converter=as_optional_float, validator=optional_float_in(0.0, MAX_RETRY_AFTER_S)
    )


# A new kind is one attrs class above, one member here and one entry in MESSAGE_TYPES.
Message: TypeAlias = Presence | Task | Proposal | Refusal

MESSAGE_TYPES: Mapping[str, type[Message]] = MappingProxyType(
    {cls.KIND: cls for cls in (Presence, Task, Proposal, Refusal)}
)

# Which kinds each channel carries; MessageGate.admit(kinds=...) rejects any other.
PRESENCE_KINDS: tuple[type[Message], ...] = (Presence,)
MOA_KINDS: tuple[type[Message], ...] = (Task, Proposal, Refusal)
