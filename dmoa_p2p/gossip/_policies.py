"""The gossip policy plugin kind and its built-ins: direct streams (default) and pubsub."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from dmoa_p2p.overlay import Overlay, OverlayError, OverlayMessage
from dmoa_p2p.wire import MAX_ENVELOPE_BYTES, PROTOCOL_VERSION, Envelope, WireError, decode_envelope

MOA_PROTOCOL = f"/dmoa-p2p/moa/{PROTOCOL_VERSION}"
MOA_TOPIC = f"dmoa-p2p/v{PROTOCOL_VERSION}/moa"

# runs every receive-side check once and returns the envelope; raises WireError (counted)
# when the message is rejected. The second argument is the peer the channel authenticated as
# the message's author (a pubsub publisher, a direct stream's sender), if any.
Admit = Callable[[bytes, str | None], Envelope]
Deliver = Callable[[Envelope], Awaitable[None]]

log = logging.getLogger(__name__)


class PeerUnreachable(Exception):
    """A message could not be handed to its peer (no route, the peer left, a refused stream)."""


class ClockSkew(PeerUnreachable):
    """The peer rejected the message as too old or too far in the future: a clock is off."""

    def __init__(self, message: str, peer_id: str, detail: str) -> None:
        super().__init__(message)
        self.peer_id = peer_id
        self.detail = detail  # the receiver's words, e.g. "6.2 s ahead"


_SKEW_REASONS = ("rejected: stale: ", "rejected: future: ")


def unreachable(peer_id: str, exc: OverlayError) -> PeerUnreachable:
    """The gossip-level error for a failed send; ClockSkew when the peer says so."""
    text = str(exc)
    for marker in _SKEW_REASONS:
        if marker in text:
            return ClockSkew(text, peer_id, text.split(marker, 1)[1])
    return PeerUnreachable(text)


def admitted(admit: Admit, data: bytes, publisher: str | None) -> str | None:
    """None if `admit` accepts the message, else why not (the wire gate's words)."""
    try:
        admit(data, publisher)
    except WireError as exc:
        return str(exc)
    return None


class GossipPolicy(Protocol):
    """Carries signed MoA messages (tasks, proposals, refusals) to one peer each.

    One instance per node, created when the node starts and kept until it stops.
    """

    async def start(
        self, overlay: Overlay, admit: Admit, deliver: Deliver, nursery: trio.Nursery
    ) -> None:
        """Install the receive side: admit each arriving message once, deliver what passes."""
        ...

    async def send(self, overlay: Overlay, peer_id: str, data: bytes) -> None:
        """Send one sealed envelope to `peer_id`; raise PeerUnreachable if it cannot."""
        ...

    def can_reach(self, overlay: Overlay, peer_id: str) -> bool:
        """False once `peer_id` certainly cannot answer any more (e.g. it disconnected)."""
        ...


class DirectGossip:
    """`direct` (default): straight to the peer on libp2p streams (kept open and reused).

    Tasks and proposals concern two nodes only, and augmented prompts grow about (k+1)x per
    layer; flooding them through pubsub would cost every node CPU and bandwidth for other
    nodes' work. A stream also tells the sender at once whether the peer got the message.
    """

    async def start(
        self, overlay: Overlay, admit: Admit, deliver: Deliver, nursery: trio.Nursery
    ) -> None:
        # checked before the acknowledgement, so that the sender learns why it was rejected;
        # the secure channel authenticated the sender, who sends only what it wrote
        def screen(sender: str, data: bytes) -> str | None:
            return admitted(admit, data, sender)

        async def handle(_sender: str, data: bytes) -> None:
            try:
                envelope = decode_envelope(data)  # admitted by the screen
            except WireError:
                return
            await deliver(envelope)

        overlay.set_handler(MOA_PROTOCOL, handle, max_bytes=MAX_ENVELOPE_BYTES, screen=screen)

    async def send(self, overlay: Overlay, peer_id: str, data: bytes) -> None:
        try:
            await overlay.send(peer_id, MOA_PROTOCOL, data)
        except OverlayError as exc:
            raise unreachable(peer_id, exc) from exc

    def can_reach(self, overlay: Overlay, peer_id: str) -> bool:
        return peer_id in overlay.connected_peers()


class PubsubGossip:
    """`pubsub`: one topic for all MoA messages, each naming its recipient.

    Reaches peers this node has no connection to (through the mesh) at the price of
    delivering every task to every node; messages are capped at the envelope size limit.
    """

    async def start(
        self, overlay: Overlay, admit: Admit, deliver: Deliver, nursery: trio.Nursery
    ) -> None:
        inbox = await overlay.subscribe(
            MOA_TOPIC, lambda publisher, data: admitted(admit, data, publisher) is None
        )
        nursery.start_soon(self._drain, inbox, deliver)

    async def _drain(
        self, inbox: trio.abc.ReceiveChannel[OverlayMessage], deliver: Deliver
    ) -> None:
        async for message in inbox:
            try:
                envelope = decode_envelope(message.data)  # admitted by the topic validator
            except WireError:
                continue
            await deliver(envelope)

    async def send(self, overlay: Overlay, peer_id: str, data: bytes) -> None:
        try:
            await overlay.publish(MOA_TOPIC, data)
        except OverlayError as exc:
            raise unreachable(peer_id, exc) from exc

    def can_reach(self, overlay: Overlay, peer_id: str) -> bool:
        # the mesh may still relay to a peer we have no connection to; only a timeout tells
        return bool(overlay.connected_peers())
