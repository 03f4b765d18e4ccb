"""Presence: publishing this node's signed load, hearing its peers', expiring the silent."""

from __future__ import annotations

import collections
import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import trio

from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.node._dialer import PeerDialer
from dmoa_p2p.node._peer_view import PeerView
from dmoa_p2p.overlay import Overlay, OverlayError
from dmoa_p2p.wire import PROTOCOL_VERSION, Presence, WireError, decode_envelope, seal

PRESENCE_TOPIC = f"dmoa-p2p/v{PROTOCOL_VERSION}/presence"

log = logging.getLogger(__name__)


class PresenceService:
    """Keeps `peer_view` current from the presence topic and publishes this node's presence.

    `current` builds the presence to publish (from the node's snapshot), `events` counts
    joins, expiries and publishes.
    """

    def __init__(
        self,
        overlay: Overlay,
        identity: NodeIdentity,
        peer_view: PeerView,
        current: Callable[[], Presence],
        wall_clock: Callable[[], float],
        interval_s: float,
        events: Counter[str],
    ) -> None:
        self.overlay = overlay
        self.identity = identity
        self.peer_view = peer_view
        self.current = current
        self.wall_clock = wall_clock
        self.interval_s = interval_s
        self.events = events
        # digests of this node's own recent presences: any other presence signed with its
        # key comes from a second node running with the same identity
        self._own: collections.deque[bytes] = collections.deque(maxlen=32)
        self._collision_logged_at: float | None = None

    async def run(
        self,
        inbox: trio.abc.ReceiveChannel[Any],
        dialer: PeerDialer,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Receive, publish and expire until cancelled; `inbox` is the subscribed topic."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._receive, inbox, dialer)
            nursery.start_soon(self._publish)
            nursery.start_soon(self._expire)
            task_status.started()

    async def _receive(self, inbox: trio.abc.ReceiveChannel[Any], dialer: PeerDialer) -> None:
        async for message in inbox:
            try:
                envelope = decode_envelope(message.data)  # already admitted by the validator
            except WireError:
                continue
            presence = envelope.body
            if not isinstance(presence, Presence):
                continue
            if presence.peer_id == self.identity.peer_id:
                self._check_own(message.data, presence)
                continue
            connected = presence.peer_id in self.overlay.connected_peers()
            if connected:  # the others are promoted by the expiry round once reached
                self._note_verified((presence.peer_id,))
            if self.peer_view.observe(presence, trio.current_time()):
                self._joined(presence.peer_id)
            if not connected:
                dialer.dial_if_useful(presence)  # within the dial budget

    def _note_verified(self, peer_ids: Iterable[str] | None = None) -> None:
        """Peers with an authenticated connection (`peer_ids`, else all connected ones) join
        the view once their presence is in."""
        connected = self.overlay.connected_peers() if peer_ids is None else peer_ids
        for peer_id in self.peer_view.verify(connected):
            self._joined(peer_id)

    def _joined(self, peer_id: str) -> None:
        log.info("peer %s joined", peer_id)
        self.events["peer_joined"] += 1

    def _check_own(self, data: bytes, presence: Presence) -> None:
        if hashlib.sha256(data).digest() in self._own:
            return
        self.events["identity_collision"] += 1
        now = trio.current_time()
        if self._collision_logged_at is None or now - self._collision_logged_at > 60:
            self._collision_logged_at = now
            log.error(
                "another node is running with this node's identity %s (it listens on %s); "
                "peers will drop one of the two: stop it, or give it its own --data-dir",
                presence.peer_id,
                ", ".join(presence.listen_addrs) or "no address",
            )

    async def _publish(self) -> None:
        while True:
            data = seal(self.current(), self.identity, now=self.wall_clock())
            self._own.append(hashlib.sha256(data).digest())
            try:
                await self.overlay.publish(PRESENCE_TOPIC, data)
                self.events["presence_published"] += 1
            except OverlayError as exc:
                log.warning("could not publish presence: %s", exc)
            await trio.sleep(self.interval_s)

    async def _expire(self) -> None:
        while True:
            await trio.sleep(self.interval_s / 2)
            self._note_verified()
            for peer_id in self.peer_view.expire(trio.current_time()):
                log.info(
                    "peer %s left (no presence for %.1f periods)",
                    peer_id,
                    self.peer_view.missed_limit,
                )
                self.events["peer_expired"] += 1


FLOOD_LIMIT = 60  # too-soon presences a minute before a peer counts as a flooder
BLOCK_S = 600.0  # how long a flooder's pubsub messages are dropped unread


class PresencePace:
    """At most one presence per author per half its own interval.

    Faster ones are dropped before their signature is checked and are not relayed, so one
    peer cannot make every node verify, and the swarm carry, a flood of presences. Only
    presences that passed every check set the pace, so a forger cannot slow a real peer's.
    """

    def __init__(self, remembered: int = 4096) -> None:
        self._last: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._remembered = remembered
        self.dropped = 0
        # too-soon presences per author in the current minute: a peer far over its pace is
        # flooding, and the node stops listening to it for a while (see `flooders`)
        self._early: collections.Counter[str] = collections.Counter()
        self._minute_started = trio.current_time()

    def too_soon(self, data: bytes, publisher: str) -> bool:
        """Whether `publisher` (authenticated by GossipSub) sent its own presence too soon."""
        try:
            envelope = decode_envelope(data)
        except WireError:
            return False  # the gate rejects it, and counts why
        presence = envelope.body
        last = self._last.get(envelope.author)
        # another's presence passed on is the gate's (wrong publisher): counted against the
        # author, it would let anyone get an honest peer blocked as a flooder
        if envelope.author != publisher or not isinstance(presence, Presence) or last is None:
            return False
        if trio.current_time() - last < presence.interval_s / 2:
            self.dropped += 1
            if len(self._early) < self._remembered or envelope.author in self._early:
                self._early[envelope.author] += 1
            return True
        return False

    def flooders(self, limit: int = FLOOD_LIMIT) -> list[str]:
        """Authors with more than `limit` too-soon presences this minute (each named once)."""
        now = trio.current_time()
        if now - self._minute_started >= 60.0:
            self._early.clear()
            self._minute_started = now
        found = [author for author, n in self._early.items() if n > limit]
        for author in found:
            del self._early[author]
        return found

    def accepted(self, author: str) -> None:
        self._last[author] = trio.current_time()
        self._last.move_to_end(author)
        while len(self._last) > self._remembered:
            self._last.popitem(last=False)
