"""An in-process overlay network with the real overlay's semantics, for fast deterministic tests."""

from __future__ import annotations

import collections
import contextlib
import logging
import re
from collections.abc import AsyncIterator

import attrs
import trio

from dmoa_p2p.exceptions import leaves
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.overlay._delivery import RECEIVE_CAPACITY, deliver, run_handler, screened
from dmoa_p2p.overlay._protocol import (
    DirectHandler,
    DirectScreen,
    Overlay,
    OverlayError,
    OverlayMessage,
    ProtocolUnsupported,
    Provider,
    Reachability,
    TopicValidator,
)
from dmoa_p2p.overlay._providers import check_key, check_limit, checked_providers

_log = logging.getLogger(__name__)
_NO_HANDLER = "no handler for that protocol"

# publishes waiting for delivery; publish() waits when this many are pending
OUTBOUND_CAPACITY = 64
_ADDRESS = re.compile(r"/memory/(\d+)/p2p/(\w+)")


@attrs.frozen
class _Outbound:
    topic: str
    data: bytes
    due: float  # trio clock time at which it reaches every subscriber


@attrs.frozen
class _Handler:
    handler: DirectHandler
    max_bytes: int
    screen: DirectScreen | None = None


@attrs.define(eq=False)
class _Subscription:
    validator: TopicValidator
    send: trio.MemorySendChannel[OverlayMessage]


class MemoryNetwork:
    """Overlays in one trio process: reachable only after `connect`, flooding along connections.

    A publish reaches every subscriber connected to the publisher through subscribers
    (itself included) `latency_s` later; a subscriber whose validator rejects the message
    neither receives nor relays it. A direct message reaches a connected peer's handler
    `latency_s` later and its acknowledgement returns after as long again.
    A provider record is found by any peer connected to its provider through any chain of
    connections, as long as the provider stays (a DHT's records outlive their node a while).
    Everything is deterministic.
    """

    def __init__(self, *, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self._by_port: dict[int, MemoryOverlay] = {}
        self._last_port = 0

    @contextlib.asynccontextmanager
    async def open_overlay(self, identity: NodeIdentity) -> AsyncIterator[Overlay]:
        """Join the network as `identity` for the block's duration; leaving disconnects it."""
        if any(o.peer_id == identity.peer_id for o in self._by_port.values()):
            raise OverlayError(f"peer {identity.peer_id} is already in this network")
        self._last_port += 1
        port = self._last_port
        send, receive = trio.open_memory_channel[_Outbound](OUTBOUND_CAPACITY)
        body_error: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                overlay = MemoryOverlay(self, identity.peer_id, port, send, nursery)
                self._by_port[port] = overlay
                nursery.start_soon(overlay._deliver_loop, receive)
                try:
                    yield overlay
                except BaseException as exc:
                    body_error = exc
                    raise
                finally:
                    overlay._leave()
                    del self._by_port[port]
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            if body_error is None or leaves(group) != leaves(body_error):
                raise
            unwrapped = body_error
        else:
            return
        raise unwrapped  # the caller's own exception, not wrapped by our nursery

    def _resolve(self, address: str) -> MemoryOverlay:
        match = _ADDRESS.fullmatch(address)
        if match is None:
            raise OverlayError(
                f"cannot connect to {address!r}: not a /memory/<n>/p2p/<peer id> address"
            )
        overlay = self._by_port.get(int(match[1]))
        if overlay is None:
            raise OverlayError(f"cannot connect to {address!r}: nothing listens there")
        if overlay.peer_id != match[2]:
            raise OverlayError(
                f"cannot connect to {address!r}: the peer there is {overlay.peer_id}"
            )
        return overlay

    def _flood(self, origin: MemoryOverlay, topic: str, data: bytes) -> None:
        """Breadth-first along connections, through subscribers whose validator accepts."""
        seen = {origin.peer_id}
        frontier = collections.deque([origin])
        while frontier:
            node = frontier.popleft()
            # an unsubscribed publisher still sends to its subscribed peers (GossipSub fanout)
            if origin.peer_id in node.blocked:
                continue
            if (node is not origin or topic in node._topics) and not node._receive(
                origin.peer_id, topic, data
            ):
                continue
            for peer_id, neighbour in node._neighbours.items():
                if peer_id not in seen and topic in neighbour._topics:
                    seen.add(peer_id)
                    frontier.append(neighbour)


class MemoryOverlay:
    """One peer of a `MemoryNetwork`; implements `Overlay`."""

    def __init__(
        self,
        network: MemoryNetwork,
        peer_id: str,
        port: int,
        outbound: trio.MemorySendChannel[_Outbound],
        nursery: trio.Nursery,
    ) -> None:
        self._network = network
        self._peer_id = peer_id
        self.port = port  # this overlay's stand-in for an IP address (`remote_host`)
        self._address = f"/memory/{port}/p2p/{peer_id}"
        self._outbound = outbound
        # insertion-ordered, so flooding order is deterministic
        self._neighbours: dict[str, MemoryOverlay] = {}
        self._topics: dict[str, _Subscription] = {}
        self._nursery = nursery  # runs direct-message handlers
        self._handlers: dict[str, _Handler] = {}
        self._closed = False
        # messages lost because a receiver did not keep up, per topic
        self.dropped: collections.Counter[str] = collections.Counter()
        # direct messages handed to a handler / refused as too large, per protocol
        self.received: collections.Counter[str] = collections.Counter()
        self.refused: collections.Counter[str] = collections.Counter()
        self.rejected: collections.Counter[str] = collections.Counter()
        self.blocked: set[str] = set()  # publishers whose pubsub messages are dropped
        self.provides: set[str] = set()  # provider keys announced

    @property
    def peer_id(self) -> str:
        return self._peer_id

    @property
    def listen_addrs(self) -> tuple[str, ...]:
        return (self._address,)

    @property
    def reachability(self) -> Reachability:
        # every peer can dial every other: nothing to check
        return Reachability(public=True, relaying=False, source="configured")

    def connected_peers(self) -> frozenset[str]:
        return frozenset(self._neighbours)

    def link(self, peer_id: str) -> str | None:
        return "direct" if peer_id in self._neighbours else None

    def remote_host(self, peer_id: str) -> str | None:
        # each overlay is a host of its own, so a peer's host is its listener number
        peer = self._neighbours.get(peer_id)
        return None if peer is None else str(peer.port)

    async def connect(self, multiaddr: str) -> str:
        self._check_open()
        await trio.lowlevel.checkpoint()
        peer = self._network._resolve(multiaddr)
        if peer is self:
            raise OverlayError(f"cannot connect to {multiaddr!r}: that is this node's own id")
        self._neighbours[peer.peer_id] = peer
        peer._neighbours[self.peer_id] = self
        return peer.peer_id

    async def disconnect(self, peer_id: str) -> None:
        self._check_open()
        await trio.lowlevel.checkpoint()
        peer = self._neighbours.pop(peer_id, None)
        if peer is not None:
            peer._neighbours.pop(self.peer_id, None)

    async def subscribe(
        self, topic: str, validator: TopicValidator
    ) -> trio.abc.ReceiveChannel[OverlayMessage]:
        self._check_open()
        await trio.lowlevel.checkpoint()
        if topic in self._topics:
            raise OverlayError(f"already subscribed to topic {topic!r}")
        send, receive = trio.open_memory_channel[OverlayMessage](RECEIVE_CAPACITY)
        self._topics[topic] = _Subscription(validator, send)
        return receive

    async def publish(self, topic: str, data: bytes) -> None:
        self._check_open()
        due = trio.current_time() + self._network.latency_s
        try:
            await self._outbound.send(_Outbound(topic, bytes(data), due))
        except trio.ClosedResourceError:
            raise OverlayError("the overlay is closed") from None

    async def provide(self, key: str) -> bool:
        self._check_open()
        await trio.lowlevel.checkpoint()
        if not self._neighbours:
            return False  # as in a DHT: no peer to hold the record
        self.provides.add(check_key(key))
        return True

    async def find_providers(self, key: str, limit: int) -> list[Provider]:
        self._check_open()
        await trio.lowlevel.checkpoint()
        check_key(key)
        seen, frontier, found = {self.peer_id}, collections.deque([self]), []
        while frontier:
            node = frontier.popleft()
            if key in node.provides:
                found.append((node.peer_id, node.listen_addrs))
            for peer_id, neighbour in node._neighbours.items():
                if peer_id not in seen:
                    seen.add(peer_id)
                    frontier.append(neighbour)
        return checked_providers(found, own_peer_id=self.peer_id, limit=check_limit(limit))

    def block(self, peer_id: str) -> None:
        self.blocked.add(peer_id)

    def unblock(self, peer_id: str) -> None:
        self.blocked.discard(peer_id)

    def set_handler(
        self,
        protocol: str,
        handler: DirectHandler,
        *,
        max_bytes: int,
        screen: DirectScreen | None = None,
    ) -> None:
        self._check_open()
        if max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, not {max_bytes}")
        self._handlers[protocol] = _Handler(handler, max_bytes, screen)

    async def send(
        self, peer_id: str, protocol: str, data: bytes, *, timeout_s: float = 10.0
    ) -> None:
        self._check_open()
        what = f"cannot send to {peer_id} on {protocol!r}"
        peer = self._neighbours.get(peer_id)
        if peer is None:
            raise OverlayError(f"{what}: not connected")
        refusal: str | None = None
        with trio.move_on_after(timeout_s) as waiting:
            await trio.sleep(self._network.latency_s)  # the message travels
            if self._neighbours.get(peer_id) is not peer:  # either side left meanwhile
                refusal = "the connection closed"
            else:
                refusal = peer._accept(self.peer_id, protocol, bytes(data))
            await trio.sleep(self._network.latency_s)  # and so does the answer
        if waiting.cancelled_caught:
            raise OverlayError(f"{what}: no acknowledgement within {timeout_s:g} s")
        if refusal == _NO_HANDLER:
            raise ProtocolUnsupported(f"{what}: {refusal}")
        if refusal is not None:
            raise OverlayError(f"{what}: {refusal}")

    def _accept(self, sender: str, protocol: str, data: bytes) -> str | None:
        """Take a direct message and start its handler; else say why not."""
        entry = self._handlers.get(protocol)
        if entry is None:
            return _NO_HANDLER
        if len(data) > entry.max_bytes:
            self.refused[protocol] += 1
            return "refused: larger than the receiver's limit"
        reason = screened(entry.screen, sender, data)
        if reason is not None:
            self.rejected[protocol] += 1
            return f"rejected: {reason}"
        self.received[protocol] += 1
        self._nursery.start_soon(run_handler, protocol, entry.handler, sender, data)
        return None

    def _check_open(self) -> None:
        if self._closed:
            raise OverlayError("the overlay is closed")

    async def _deliver_loop(self, receive: trio.MemoryReceiveChannel[_Outbound]) -> None:
        async with receive:
            async for item in receive:
                await trio.sleep_until(item.due)
                self._network._flood(self, item.topic, item.data)

    def _receive(self, publisher: str, topic: str, data: bytes) -> bool:
        """Validate and deliver one message; True if it is valid (so relayed on)."""
        subscription = self._topics[topic]
        try:
            valid = bool(subscription.validator(publisher, data))
        except Exception:
            _log.debug("topic validator raised: message rejected", exc_info=True)
            valid = False
        if not valid:
            return False
        deliver(subscription.send, OverlayMessage(topic, data, publisher), self.dropped)
        return True

    def _leave(self) -> None:
        self._closed = True
        self._outbound.close()
        for peer in self._neighbours.values():
            del peer._neighbours[self.peer_id]
        self._neighbours.clear()
        for subscription in self._topics.values():
            subscription.send.close()
        self._topics.clear()
        self._handlers.clear()
