"""The versioned, signed envelope every message travels in, and the wire-wide limits."""

from typing import Any

import attrs

from dmoa_p2p.wire.limits import MAX_PEER_ID_CHARS
from dmoa_p2p.wire.messages import MESSAGE_TYPES, Message
from dmoa_p2p.wire.validators import as_float, bounded_str, exact_bytes, finite_float, strict_int

# 3: peer sampling (shuffles of signed records) replaced protocol 2's all-to-all presence
PROTOCOL_VERSION = 3
NONCE_BYTES = 16
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_KIND_CHARS = 64


def _body_matches_kind(instance: "Envelope", _attribute: "attrs.Attribute[Any]", body: Any) -> None:
    # attrs runs validators after every field is set, so `kind` is already there
    expected = MESSAGE_TYPES.get(instance.kind)
    if expected is None or type(body) is not expected:
        raise TypeError(f"body of kind {instance.kind!r} cannot be a {type(body).__name__}")


@attrs.frozen
class Envelope:
    """Who sent which message when, signed by the sender's Ed25519 key."""

    version: int = attrs.field(validator=strict_int)
    kind: str = attrs.field(validator=bounded_str(MAX_KIND_CHARS))
    # the sender's peer id; verify_envelope checks that it is derived from author_key
    author: str = attrs.field(validator=bounded_str(MAX_PEER_ID_CHARS))
    author_key: bytes = attrs.field(validator=exact_bytes(PUBLIC_KEY_BYTES), repr=False)
    # unix seconds at the sender
    timestamp: float = attrs.field(converter=as_float, validator=finite_float)
    nonce: bytes = attrs.field(validator=exact_bytes(NONCE_BYTES))
    body: Message = attrs.field(validator=_body_matches_kind)
    signature: bytes = attrs.field(validator=exact_bytes(SIGNATURE_BYTES), repr=False)
