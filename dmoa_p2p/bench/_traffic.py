"""What each benchmarked variant publishes, validates and reads back: envelopes or raw bytes."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Protocol

from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.overlay import TopicValidator
from dmoa_p2p.wire import MessageGate, Presence, WireError, decode_envelope, seal
from dmoa_p2p.wire.envelope import NONCE_BYTES

log = logging.getLogger(__name__)

DMOA = "dmoa"
BARE = "bare"
VARIANTS = (BARE, DMOA)
# ephemeral ports on 127.0.0.1 always have 5 digits, so every node's presence has this size
_SAMPLE_PORT = 40000


class Traffic(Protocol):
    """One variant's messages: how a node makes them, admits them and recognises them."""

    name: str

    def validator(self, node: int) -> TopicValidator:
        """The topic validator node `node` runs on every message, own publishes included."""
        ...

    def make(self, node: int) -> tuple[bytes, bytes]:
        """A new message from node `node`: (message id, wire bytes)."""
        ...

    def message_id(self, data: bytes) -> bytes | None:
        """What a receiver does with admitted bytes; the message id, None if not ours."""
        ...


def bench_presence(identity: NodeIdentity, listen_addrs: tuple[str, ...]) -> Presence:
    """A realistic presence: one model, measured service times, a short queue."""
    return Presence(
        peer_id=identity.peer_id,
        listen_addrs=listen_addrs,
        models=("smollm2-135m-instruct-q4_1",),
        mean_service_s=1.84,
        service_var_s2=0.37,
        service_samples=64,
        queue_length=2,
        queue_capacity=64,
        arrival_rate=0.21,
        admitted_rate=0.21,
        interval_s=2.0,
    )


def envelope_bytes() -> int:
    """The wire size of one benchmark presence envelope; bare payloads are padded to it."""
    identity = NodeIdentity.generate()
    addr = f"/ip4/127.0.0.1/tcp/{_SAMPLE_PORT}/p2p/{identity.peer_id}"
    return len(seal(bench_presence(identity, (addr,)), identity, now=time.time()))


class DmoaTraffic:
    """Our layer as a node runs it: signed presence envelopes, gated and decoded.

    Publish: `seal`. Topic validator: `MessageGate.admit`. Receipt: `decode_envelope` again.
    """

    name = DMOA

    def __init__(self, identities: Sequence[NodeIdentity], presences: Sequence[Presence]) -> None:
        self._identities = list(identities)
        self._presences = list(presences)
        self.gates = [MessageGate() for _ in identities]

    def validator(self, node: int) -> TopicValidator:
        gate = self.gates[node]

        # the same steps as Node._validate
        def validate(publisher: str, data: bytes) -> bool:
            try:
                gate.admit(data, publisher)
            except WireError as exc:
                log.debug("rejected a message published by %s: %s", publisher, exc)
                return False
            return True

        return validate

    def make(self, node: int) -> tuple[bytes, bytes]:
        # the nonce doubles as the message id, so nothing is added to the envelope
        nonce = os.urandom(NONCE_BYTES)
        data = seal(self._presences[node], self._identities[node], now=time.time(), nonce=nonce)
        return nonce, data

    def message_id(self, data: bytes) -> bytes | None:
        try:
            envelope = decode_envelope(data)  # already admitted: the node decodes it again
        except WireError:
            return None
        if not isinstance(envelope.body, Presence):
            return None
        return envelope.nonce


def _accept_all(publisher: str, data: bytes) -> bool:
    return True


class BareTraffic:
    """Raw bytes of the same size: a random id then zero padding; every message accepted."""

    name = BARE

    def __init__(self, payload_bytes: int) -> None:
        if payload_bytes < NONCE_BYTES:
            raise ValueError(f"a bare payload needs at least {NONCE_BYTES} bytes")
        self._padding = bytes(payload_bytes - NONCE_BYTES)

    def validator(self, node: int) -> TopicValidator:
        return _accept_all

    def make(self, node: int) -> tuple[bytes, bytes]:
        message_id = os.urandom(NONCE_BYTES)
        return message_id, message_id + self._padding

    def message_id(self, data: bytes) -> bytes | None:
        return data[:NONCE_BYTES]
