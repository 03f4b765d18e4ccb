"""The message kinds inside envelopes: one frozen attrs class per kind, plus the registry."""

# No `from __future__ import annotations`: cattrs reads these field types at runtime.

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar, TypeAlias

import attrs

from dmoa_p2p.wire.validators import (
    as_float,
    as_optional_float,
    bounded_str,
    non_negative_float,
    non_negative_int,
    one_of,
    optional_non_negative_float,
    positive_float,
    str_tuple,
    tuple_of,
)

# Below py-libp2p's 1 MiB pubsub RPC cap, which also carries framing and other messages.
MAX_ENVELOPE_BYTES = 512 * 1024
# libp2p peer ids are ~52 base58 characters; leave room for other key types.
MAX_PEER_ID_CHARS = 128


@attrs.frozen
class Presence:
    """A node's periodic announcement: how to reach it, which models it serves, how busy it is."""

    KIND: ClassVar[str] = "presence"
    # Whole envelope; a Presence with every list full and every string at its cap is ~7 KiB.
    MAX_BYTES: ClassVar[int] = 8 * 1024

    peer_id: str = attrs.field(validator=bounded_str(MAX_PEER_ID_CHARS))
    listen_addrs: tuple[str, ...] = attrs.field(validator=str_tuple(16, 256))
    models: tuple[str, ...] = attrs.field(validator=str_tuple(16, 128))
    # None until the node has served enough prompts to measure
    mean_service_s: float | None = attrs.field(
        converter=as_optional_float, validator=optional_non_negative_float
    )
    service_var_s2: float | None = attrs.field(
        converter=as_optional_float, validator=optional_non_negative_float
    )
    # how many service times the mean and variance rest on (how far to trust them)
    service_samples: int = attrs.field(validator=non_negative_int)
    queue_length: int = attrs.field(validator=non_negative_int)
    queue_capacity: int = attrs.field(validator=non_negative_int)
    # its users' prompts per second: all they send, and those it admitted
    arrival_rate: float | None = attrs.field(
        converter=as_optional_float, validator=optional_non_negative_float
    )
    admitted_rate: float | None = attrs.field(
        converter=as_optional_float, validator=optional_non_negative_float
    )
    # peers expire the sender after missing a few of these periods
    interval_s: float = attrs.field(converter=as_float, validator=positive_float)


# Augmented prompts carry (k+1) answers of the previous layer; the envelope cap bounds them.
MAX_TEXT_CHARS = 200_000
MAX_QUERY_ID_CHARS = 64
MAX_LAYER = 64


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

    query_id: str = attrs.field(validator=bounded_str(MAX_QUERY_ID_CHARS))
    layer: int = attrs.field(validator=[non_negative_int, attrs.validators.le(MAX_LAYER)])
    origin: str = attrs.field(validator=bounded_str(MAX_PEER_ID_CHARS))
    recipient: str = attrs.field(validator=bounded_str(MAX_PEER_ID_CHARS))
    messages: tuple[ChatTurn, ...] = attrs.field(validator=tuple_of(ChatTurn, 64))
    max_tokens: int = attrs.field(validator=non_negative_int)
    temperature: float = attrs.field(converter=as_float, validator=non_negative_float)
    # differs per proposer, so that identical models still propose different answers
    seed: int = attrs.field(validator=non_negative_int)
    # a duration, not a time: the two nodes' clocks need not agree
    deadline_s: float = attrs.field(converter=as_float, validator=positive_float)


@attrs.frozen
class Proposal:
    """A proposer's answer to a task, sent back to the task's origin."""

    KIND: ClassVar[str] = "proposal"
    MAX_BYTES: ClassVar[int] = MAX_ENVELOPE_BYTES

    query_id: str = attrs.field(validator=bounded_str(MAX_QUERY_ID_CHARS))
    layer: int = attrs.field(validator=[non_negative_int, attrs.validators.le(MAX_LAYER)])
    origin: str = attrs.field(validator=bounded_str(MAX_PEER_ID_CHARS))
    recipient: str = attrs.field(validator=bounded_str(MAX_PEER_ID_CHARS))
    text: str = attrs.field(validator=bounded_str(MAX_TEXT_CHARS, min_len=0))
    model: str = attrs.field(validator=bounded_str(128))
    queue_wait_s: float = attrs.field(converter=as_float, validator=non_negative_float)
    service_s: float = attrs.field(converter=as_float, validator=non_negative_float)
    prompt_tokens: int = attrs.field(validator=non_negative_int)
    completion_tokens: int = attrs.field(validator=non_negative_int)


@attrs.frozen
class Refusal:
    """A peer will not (or could not) propose for a task, and says why."""

    KIND: ClassVar[str] = "refusal"
    MAX_BYTES: ClassVar[int] = 8 * 1024

    query_id: str = attrs.field(validator=bounded_str(MAX_QUERY_ID_CHARS))
    layer: int = attrs.field(validator=[non_negative_int, attrs.validators.le(MAX_LAYER)])
    origin: str = attrs.field(validator=bounded_str(MAX_PEER_ID_CHARS))
    recipient: str = attrs.field(validator=bounded_str(MAX_PEER_ID_CHARS))
    reason: str = attrs.field(validator=bounded_str(1024))
    retry_after_s: float | None = attrs.field(
        converter=as_optional_float, validator=optional_non_negative_float
    )


# A new kind is one attrs class above, one member here and one entry in MESSAGE_TYPES.
Message: TypeAlias = Presence | Task | Proposal | Refusal

MESSAGE_TYPES: Mapping[str, type[Message]] = MappingProxyType(
    {cls.KIND: cls for cls in (Presence, Task, Proposal, Refusal)}
)
