"""Presence: publishing this node's signed load, hearing its peers', expiring the silent."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
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
            if not isinstance(envelope.body, Presence):
                continue
            if self.peer_view.observe(envelope.body, trio.current_time()):
                log.info("peer %s joined", envelope.body.peer_id)
                self.events["peer_joined"] += 1
                dialer.dial_if_useful(envelope.body)

    async def _publish(self) -> None:
        while True:
            data = seal(self.current(), self.identity, now=self.wall_clock())
            try:
                await self.overlay.publish(PRESENCE_TOPIC, data)
                self.events["presence_published"] += 1
            except OverlayError as exc:
                log.warning("could not publish presence: %s", exc)
            await trio.sleep(self.interval_s)

    async def _expire(self) -> None:
        while True:
            await trio.sleep(self.interval_s / 2)
            for peer_id in self.peer_view.expire(trio.current_time()):
                log.info(
                    "peer %s left (no presence for %.1f periods)",
                    peer_id,
                    self.peer_view.missed_limit,
                )
                self.events["peer_expired"] += 1
