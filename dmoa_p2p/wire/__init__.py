"""Signed, versioned messages between dmoa-p2p nodes: types, codec and receive-side checks."""

from dmoa_p2p.wire.codec import decode_envelope, encode_envelope, seal, verify_envelope
from dmoa_p2p.wire.envelope import PROTOCOL_VERSION, Envelope
from dmoa_p2p.wire.errors import RejectReason, WireError
from dmoa_p2p.wire.gate import MessageGate, Precheck
from dmoa_p2p.wire.limits import MAX_ENVELOPE_BYTES
from dmoa_p2p.wire.messages import (
    MESSAGE_TYPES,
    MOA_KINDS,
    PRESENCE_KINDS,
    ChatTurn,
    Message,
    Presence,
    Proposal,
    Refusal,
    Task,
)

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "MESSAGE_TYPES",
    "MOA_KINDS",
    "PRESENCE_KINDS",
    "PROTOCOL_VERSION",
    "ChatTurn",
    "Envelope",
    "Message",
    "MessageGate",
    "Precheck",
    "Presence",
    "Proposal",
    "Refusal",
    "RejectReason",
    "Task",
    "WireError",
    "decode_envelope",
    "encode_envelope",
    "seal",
    "verify_envelope",
]
