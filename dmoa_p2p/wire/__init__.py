"""Signed, versioned messages between dmoa-p2p nodes: types, codec and receive-side checks."""

from dmoa_p2p.wire.codec import decode_envelope, encode_envelope, seal, verify_envelope
from dmoa_p2p.wire.envelope import MAX_ENVELOPE_BYTES, PROTOCOL_VERSION, Envelope
from dmoa_p2p.wire.errors import RejectReason, WireError
from dmoa_p2p.wire.gate import MessageGate
from dmoa_p2p.wire.messages import MESSAGE_TYPES, Message, Presence

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "Envelope",
    "Message",
    "MessageGate",
    "Presence",
    "RejectReason",
    "WireError",
    "decode_envelope",
    "encode_envelope",
    "seal",
    "verify_envelope",
]
