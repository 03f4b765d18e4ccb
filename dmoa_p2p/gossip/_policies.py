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

# runs every receive-side check once; None when the message was rejected (and counted).
# The second argument is the pubsub publisher whose signature the overlay verified, if any.
Admit = Callable[[bytes, str | None], Envelope | None]
Deliver = Callable[[Envelope], Awaitable[None]]

log = logging.getLogger(__name__)


class PeerUnreachable(Exception):
    """A message could not be handed to its peer (no route, the peer left, a refused stream)."""


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
        async def handle(sender: str, data: bytes) -> None:
            envelope = admit(data, None)
            if envelope is not None:
                await deliver(envelope)

        overlay.set_handler(MOA_PROTOCOL, handle, max_bytes=MAX_ENVELOPE_BYTES)

    async def send(self, overlay: Overlay, peer_id: str, data: bytes) -> None:
        try:
            await overlay.send(peer_id, MOA_PROTOCOL, data)
        except OverlayError as exc:
            raise PeerUnreachable(str(exc)) from exc

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
            MOA_TOPIC, lambda publisher, data: admit(data, publisher) is not None
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
            raise PeerUnreachable(str(exc)) from exc

    def can_reach(self, overlay: Overlay, peer_id: str) -> bool:
        # the mesh may still relay to a peer we have no connection to; only a timeout tells
        return bool(overlay.connected_peers())
