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
    non_negative_int,
    optional_non_negative_float,
    positive_float,
    str_tuple,
)

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
    queue_length: int = attrs.field(validator=non_negative_int)
    queue_capacity: int = attrs.field(validator=non_negative_int)
    arrival_rate: float | None = attrs.field(
        converter=as_optional_float, validator=optional_non_negative_float
    )
    # peers expire the sender after missing a few of these periods
    interval_s: float = attrs.field(converter=as_float, validator=positive_float)


# A new kind is one attrs class above, one member here and one entry in MESSAGE_TYPES.
Message: TypeAlias = Presence

MESSAGE_TYPES: Mapping[str, type[Message]] = MappingProxyType(
    {cls.KIND: cls for cls in (Presence,)}
)
