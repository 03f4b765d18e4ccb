"""Envelope bytes: deterministic msgpack encoding, sealing, verification and safe decoding."""

from __future__ import annotations

import os
from typing import Any

import attrs
import cattrs
import cattrs.v
import msgpack

from dmoa_p2p.identity import NodeIdentity, peer_id_from_public_key, verify_signature
from dmoa_p2p.wire.convert import structure_body, unstructure_body
from dmoa_p2p.wire.envelope import (
    NONCE_BYTES,
    PROTOCOL_VERSION,
    SIGNATURE_BYTES,
    Envelope,
)
from dmoa_p2p.wire.errors import RejectReason, WireError
from dmoa_p2p.wire.limits import MAX_ENVELOPE_BYTES
from dmoa_p2p.wire.messages import MESSAGE_TYPES, Message

# Signatures cover this tag too, so they cannot be replayed as some other protocol's signature.
_SIGNING_DOMAIN = "dmoa-p2p/envelope"
_ENVELOPE_FIELDS = 8
# Caps on what a header may claim before its contents arrive: msgpack preallocates arrays and
# maps from the header, so without these a 5-byte input could ask for gigabytes. No message
# needs more than a few dozen items; strings and binaries can never exceed the input itself.
_MAX_ARRAY_ITEMS = 256
_MAX_MAP_ITEMS = 64


def _pack(value: Any) -> bytes:
    # Envelope fields go in a fixed-order array (compact, nothing to sort); bodies are maps
    # with sorted keys (see convert.canonical) so fields are named on the wire yet deterministic.
    data = msgpack.packb(value, use_bin_type=True)
    assert isinstance(data, bytes)
    return data


def signed_payload(env: Envelope) -> bytes:
    """The bytes the author signs: everything but the signature, under a domain tag."""
    return _pack(
        [
            _SIGNING_DOMAIN,
            env.version,
            env.kind,
            env.author,
            env.author_key,
            env.timestamp,
            env.nonce,
            unstructure_body(env.body),
        ]
    )


def encode_envelope(env: Envelope) -> bytes:
    """The wire bytes of an envelope; the same envelope always gives the same bytes."""
    return _pack(
        [
            env.version,
            env.kind,
            env.author,
            env.author_key,
            env.timestamp,
            env.nonce,
            unstructure_body(env.body),
            env.signature,
        ]
    )


def seal(body: Message, identity: NodeIdentity, now: float, nonce: bytes | None = None) -> bytes:
    """Sign `body` as `identity` at time `now` and return the wire bytes.

    Raises WireError(OVERSIZE) when the result would exceed the kind's cap, since every
    receiver would drop it anyway.
    """
    unsigned = Envelope(
        version=PROTOCOL_VERSION,
        kind=body.KIND,
        author=identity.peer_id,
        author_key=identity.public_key,
        timestamp=now,
        nonce=os.urandom(NONCE_BYTES) if nonce is None else nonce,
        body=body,
        signature=bytes(SIGNATURE_BYTES),
    )
    signed = attrs.evolve(unsigned, signature=identity.sign(signed_payload(unsigned)))
    data = encode_envelope(signed)
    if len(data) > body.MAX_BYTES:
        raise WireError(
            RejectReason.OVERSIZE,
            f"{body.KIND} envelope is {len(data)} bytes, the cap is {body.MAX_BYTES}",
        )
    return data


def verify_envelope(env: Envelope) -> None:
    """Raise WireError unless `author` is `author_key`'s peer id and the signature holds.

    Always checked, even when the transport has verified a signature of its own over the
    same bytes: the envelope must not depend on which overlay carried it, nor on that
    overlay doing its part.
    """
    if peer_id_from_public_key(env.author_key) != env.author:
        raise WireError(RejectReason.KEY_MISMATCH, f"author {env.author!r} does not own the key")
    if not verify_signature(env.author_key, env.signature, signed_payload(env)):
        raise WireError(RejectReason.BAD_SIGNATURE, f"bad {env.kind} signature from {env.author}")


def decode_envelope(data: bytes) -> Envelope:
    """Parse untrusted bytes; raises WireError and nothing else. Does not check the signature."""
    try:
        if len(data) > MAX_ENVELOPE_BYTES:
            raise WireError(
                RejectReason.OVERSIZE, f"{len(data)} bytes, the cap is {MAX_ENVELOPE_BYTES}"
            )
        return _decode(data)
    except WireError:
        raise
    # Untrusted input can break parsing in more ways than can be listed (msgpack, cattrs
    # exception groups, attrs validators, RecursionError, MemoryError...); all mean MALFORMED.
    except Exception as exc:
        raise WireError(RejectReason.MALFORMED, _describe(exc)) from exc


def _new_unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(
        None,
        raw=False,
        strict_map_key=True,
        use_list=True,
        max_buffer_size=MAX_ENVELOPE_BYTES,
        max_str_len=MAX_ENVELOPE_BYTES,
        max_bin_len=MAX_ENVELOPE_BYTES,
        max_array_len=_MAX_ARRAY_ITEMS,
        max_map_len=_MAX_MAP_ITEMS,
        # no message uses msgpack extension types
        max_ext_len=0,
    )


def _decode(data: bytes) -> Envelope:
    unpacker = _new_unpacker()
    unpacker.feed(data)
    length = unpacker.read_array_header()
    if length < 1:
        raise WireError(RejectReason.MALFORMED, "an envelope is a non-empty array")
    # The version comes first so a future layout is reported as such, not as garbage.
    version = unpacker.unpack()
    if type(version) is not int:
        raise WireError(RejectReason.MALFORMED, f"version is a {type(version).__name__}")
    if version != PROTOCOL_VERSION:
        raise WireError(RejectReason.UNKNOWN_VERSION, f"version {version}")
    if length != _ENVELOPE_FIELDS:
        raise WireError(RejectReason.MALFORMED, f"{length} envelope fields, not {_ENVELOPE_FIELDS}")
    cls = _message_class(unpacker.unpack())
    if len(data) > cls.MAX_BYTES:
        raise WireError(
            RejectReason.OVERSIZE, f"{cls.KIND}: {len(data)} bytes, the cap is {cls.MAX_BYTES}"
        )
    author, author_key, timestamp, nonce, raw_body, signature = (
        unpacker.unpack() for _ in range(6)
    )
    if unpacker.tell() != len(data):
        raise WireError(RejectReason.MALFORMED, "trailing bytes after the envelope")
    # Envelope's validators check the remaining types and lengths (a ValueError/TypeError here).
    return Envelope(
        version=version,
        kind=cls.KIND,
        author=author,
        author_key=author_key,
        timestamp=timestamp,
        nonce=nonce,
        body=structure_body(raw_body, cls),
        signature=signature,
    )


def _message_class(kind: object) -> type[Message]:
    if type(kind) is not str:
        raise WireError(RejectReason.MALFORMED, f"kind is a {type(kind).__name__}")
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        raise WireError(RejectReason.UNKNOWN_KIND, f"kind {kind[:64]!r}")
    return cls


def _format_field_error(exc: BaseException, type_: type | None) -> str:
    # our hooks and validators already say what was wrong; cattrs' default hides that
    if type(exc) in (TypeError, ValueError):
        return str(exc)
    return cattrs.v.format_exception(exc, type_)


def _describe(exc: Exception) -> str:
    """A short readable account of why parsing failed, never raising itself."""
    try:
        if isinstance(exc, cattrs.BaseValidationError):
            errors = cattrs.transform_error(exc, "body", _format_field_error)
            return "; ".join(errors)
        return f"{type(exc).__name__}: {exc}"
    except Exception:
        return type(exc).__name__
