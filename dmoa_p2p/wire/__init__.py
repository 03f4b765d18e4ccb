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
from dmoa_p2p.wire.shuffle import (
    MAX_SHUFFLE_ENTRIES,
    SHUFFLE_KINDS,
    ShuffleFrame,
    ShuffleKind,
    decode_shuffle,
    encode_shuffle,
)

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "MAX_SHUFFLE_ENTRIES",
    "MESSAGE_TYPES",
    "MOA_KINDS",
    "PRESENCE_KINDS",
    "PROTOCOL_VERSION",
    "SHUFFLE_KINDS",
    "ChatTurn",
    "Envelope",
    "Message",
    "MessageGate",
    "Precheck",
    "Presence",
    "Proposal",
    "Refusal",
    "RejectReason",
    "ShuffleFrame",
    "ShuffleKind",
    "Task",
    "WireError",
    "decode_envelope",
    "decode_shuffle",
    "encode_envelope",
    "encode_shuffle",
    "seal",
    "verify_envelope",
]
