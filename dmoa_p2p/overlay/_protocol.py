"""The overlay interface: what the rest of dmoa-p2p may ask of the network."""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs
import trio

# Called once per message before it is delivered or forwarded: (publisher peer id, data) -> keep?
TopicValidator = Callable[[str, bytes], bool]

# Called once per direct message: (sender peer id, authenticated by the secure channel; data)
DirectHandler = Callable[[str, bytes], Awaitable[None]]
# Called on each direct message before it is acknowledged: None accepts it; a reason
# rejects it, and the sender's `send` raises OverlayError saying "rejected: <reason>"
DirectScreen = Callable[[str, bytes], str | None]
MAX_REJECTION_CHARS = 300  # of a rejection's reason, as the sender gets it
REACHABILITY_SOURCES = ("configured", "guess", "dial-back")


class OverlayError(Exception):
    """A network operation failed (dial refused, bad multiaddr, message not delivered, closed)."""


class BadAddress(OverlayError):
    """An address that no retry can make work: not a multiaddr, a bad IP, port or peer id."""


class ProtocolUnsupported(OverlayError):
    """The peer is connected but does not speak the protocol (another dmoa-p2p version)."""


class PortInUse(OverlayError):
    """Another process (or socket) already listens on a TCP port this node was told to use."""


@attrs.frozen
class OverlayMessage:
    """A pubsub message that passed its topic validator."""

    topic: str
    data: bytes
    publisher: str  # peer id that signed the pubsub message (GossipSub StrictSign)


@attrs.frozen
class Reachability:
    """How peers reach this node: directly (public), or through the relays named; and how
    that was decided."""

    public: bool
    relaying: bool  # relays (circuit relay v2) for nodes behind NAT
    relays: tuple[str, ...] = ()  # relays holding a reservation for it, by address
    # "configured" (told public or private), "guess" (from its own addresses: no dial-back
    # verdict yet), "dial-back" (peers dialled it back on fresh connections)
    source: str = attrs.field(
        default="configured", validator=attrs.validators.in_(REACHABILITY_SOURCES)
    )
    confirmed_by: int = 0  # peers that reached it, in the dial-back check that decided
    failed_by: int = 0  # peers that could not, in that check

    def to_json(self) -> dict[str, object]:
        return {
            "public": self.public,
            "relaying": self.relaying,
            "relays": list(self.relays),
            "source": self.source,
            "confirmed_by": self.confirmed_by,
            "failed_by": self.failed_by,
        }


@attrs.frozen
class Provider:
    """A peer that announced it provides a key (a DHT provider record), with where to dial it."""

    peer_id: str
    addrs: tuple[str, ...]  # full multiaddrs, each ending in /p2p/<peer id>; may be empty

    def to_json(self) -> dict[str, object]:
        return {"peer_id": self.peer_id, "addrs": list(self.addrs)}


class Overlay(Protocol):
    """A GossipSub-style overlay: signed pubsub topics, plus direct messages between peers.

    Implementations: `open_libp2p_overlay` (real py-libp2p) and `MemoryNetwork.open_overlay`
    (in-process, for fast deterministic tests).
    """

    @property
    def peer_id(self) -> str: ...

    @property
    def listen_addrs(self) -> tuple[str, ...]:
        """Full multiaddrs others can dial, each ending in /p2p/<peer id>."""
        ...

    async def connect(self, multiaddr: str) -> str:
        """Dial a peer by full multiaddr (with /p2p/<id>).

        Return its peer id, or raise OverlayError.
        """
        ...

    def connected_peers(self) -> frozenset[str]: ...

    async def disconnect(self, peer_id: str) -> None:
        """Close every connection to `peer_id` (nothing when there is none); it may dial again."""
        ...

    @property
    def reachability(self) -> Reachability: ...

    def link(self, peer_id: str) -> str | None:
        """How this node is connected to `peer_id`: "direct" when any connection is, "relayed"
        when every one goes through a relay (circuit relay v2), None when not connected."""
        ...

    def remote_host(self, peer_id: str) -> str | None:
        """The IP address the live connection to `peer_id` comes from, as the socket says (not
        as the peer claims), in `address_host`'s form; None when not connected."""
        ...

    # per protocol: direct messages refused as too large, and rejected by their screen;
    # per topic: pubsub messages dropped because their subscriber was full
    refused: collections.Counter[str]
    rejected: collections.Counter[str]
    dropped: collections.Counter[str]

    def block(self, peer_id: str) -> None:
        """Drop every pubsub message `peer_id` publishes or forwards, before any check (its
        signature is not even verified) and without relaying it, until `unblock`."""
        ...

    def unblock(self, peer_id: str) -> None: ...

    async def subscribe(
        self, topic: str, validator: TopicValidator
    ) -> trio.abc.ReceiveChannel[OverlayMessage]:
        """Join `topic`; messages the validator rejects are neither delivered nor forwarded.

        Own publishes are validated and delivered too.
        """
        ...

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish `data` on `topic`.

        Waits while outbound queues are full (never drops silently).
        """
        ...

    def set_handler(
        self,
        protocol: str,
        handler: DirectHandler,
        *,
        max_bytes: int,
        screen: DirectScreen | None = None,
    ) -> None:
        """Accept direct messages on `protocol` (e.g. "/dmoa-p2p/task/1"), replacing any handler.

        Messages larger than `max_bytes` are refused unread. `screen`, if given, sees each
        message before it is acknowledged and may reject it with a reason the sender gets.
        Each accepted message runs `handler` in the overlay's own nursery after the sender
        got its acknowledgement; an exception there is logged, never propagated.
        """
        ...

    async def send(
        self, peer_id: str, protocol: str, data: bytes, *, timeout_s: float = 10.0
    ) -> None:
        """Deliver one message to connected peer `peer_id`'s handler for `protocol`.

        Returns once the peer acknowledged receipt; raises OverlayError when it cannot be
        delivered (not connected, no such handler, refused as too large, timeout, closed).
        """
        ...

    async def provide(self, key: str) -> bool:
        """Announce that this node provides `key` (e.g. "model/<name>") to the peers that hold
        records for it; True if at least one took the record (False: no such peer reachable
        yet). Records expire: announce again every so often while it holds."""
        ...

    async def find_providers(self, key: str, limit: int) -> list[Provider]:
        """Up to `limit` other peers that announced `key`, each once, with checked addresses
        (see `checked_providers`); empty when none is known or reachable."""
        ...
