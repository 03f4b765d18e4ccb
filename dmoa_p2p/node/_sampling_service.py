"""Peer sampling as a trio service: a shuffle with one neighbour each round, over direct streams."""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import trio

from dmoa_p2p.node._dialer import PeerDialer
from dmoa_p2p.node._neighbours import Neighbours
from dmoa_p2p.node._sampled_records import SignedPresence
from dmoa_p2p.node._sampler import PeerSampler, WireEntries
from dmoa_p2p.overlay import Overlay, OverlayError, ProtocolUnsupported
from dmoa_p2p.wire import (
    PROTOCOL_VERSION,
    Presence,
    ShuffleFrame,
    ShuffleKind,
    WireError,
    decode_shuffle,
    encode_shuffle,
)
from dmoa_p2p.wire.shuffle import MAX_SHUFFLE_BYTES

SHUFFLE_PROTOCOL = f"/dmoa-p2p/shuffle/{PROTOCOL_VERSION}"
# how long a shuffle message may take; a partner that does not answer within a round is
# simply not heard this round
SEND_TIMEOUT_S = 2.0

log = logging.getLogger(__name__)


class SamplingService:
    """Runs a node's `PeerSampler`: every `round_s` it signs its record, shuffles with the
    neighbour it shuffled with least recently, and keeps its connections (`Neighbours`).

    A request is answered with a reply (or "busy" over the round's budget), sent back as a
    message of its own. Requests are paced per sender before any record in them is read, so
    a flooding neighbour costs a decode, never a signature check (`Neighbours.may_ask`).
    """

    def __init__(
        self,
        overlay: Overlay,
        sampler: PeerSampler,
        neighbours: Neighbours,
        current: Callable[[], Presence],
        wall_clock: Callable[[], float],
        rng: random.Random,
        events: Counter[str],
    ) -> None:
        self.overlay = overlay
        self.sampler = sampler
        self.neighbours = neighbours
        self.current = current
        self.wall_clock = wall_clock
        self.rng = rng
        self.events = events
        self.refused: Counter[str] = Counter()  # shuffle messages not taken, by why
        # shuffle messages, records and bytes sent and received: the node's control traffic
        self.sent: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self._collision_said_at: float | None = None

    def held(self) -> list[SignedPresence]:
        """The verified live records this node holds (view and neighbours), one per peer."""
        return self.sampler.eligible(self.wall_clock(), self.overlay.connected_peers())

    def records(self) -> list[SignedPresence]:
        """The held records a proposer may be drawn from: those of peers this node is
        connected to or can dial. A record naming no address (a node behind NAT before its
        relay answered, or before dial-back has told it that it is public) is held and
        passed on, but a task drawn to it could not be sent."""
        connected = self.overlay.connected_peers()  # once: a hot path at n = 1000
        held = self.sampler.eligible(self.wall_clock(), connected)
        return [r for r in held if r.presence.listen_addrs or r.peer_id in connected]

    def to_json(self) -> dict[str, Any]:
        sampler = self.sampler
        return {
            "view": len(sampler.view.entries),
            "neighbours": len(self.overlay.connected_peers()),
            "sent": dict(sorted(self.sent.items())),
            "received": dict(sorted(self.received.items())),
            "signature_checks": sampler.verifier.signature_checks,
        }

    async def run(
        self, dialer: PeerDialer, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Shuffle every round until cancelled."""
        self.overlay.set_handler(
            SHUFFLE_PROTOCOL, self._on_frame, max_bytes=MAX_SHUFFLE_BYTES, screen=self._screen
        )
        round_s = self.sampler.config.round_s
        task_status.started()
        # nodes started together would otherwise shuffle in lockstep: a node answering while
        # its own shuffle is under way has given away the entries its partner's reply was
        # to replace, and drops that reply's records
        await trio.sleep(self.rng.uniform(0, round_s))
        async with trio.open_nursery() as nursery:
            while True:
                self.sampler.end_round()  # the answer budget is per round
                # alone, it waits: without a partner begin_round would take Cyclon's, and
                # drop that entry from the view
                if (partner := self.neighbours.partner()) is not None:
                    now = self.wall_clock()
                    offer = self.sampler.begin_round(self.current(), now, self.rng, partner)
                    if offer is not None:
                        nursery.start_soon(self._send, partner, "request", offer)
                await self.neighbours.keep(self.records(), dialer)
                await trio.sleep(round_s)

    def _screen(self, sender: str, data: bytes) -> str | None:
        reason = self.neighbours.may_ask(sender, data)
        if reason is not None:
            self.refused[reason] += 1
        return reason

    async def _on_frame(self, sender: str, data: bytes) -> None:
        try:
            frame = decode_shuffle(data)
        except WireError as exc:
            self.refused[str(exc.reason)] += 1
            log.debug("shuffle from %s refused: %s", sender, exc)
            return
        self.received["messages"] += 1
        self.received["records"] += len(frame.entries)
        self.received["bytes"] += len(data)
        now = self.wall_clock()
        if frame.kind == "request":
            known = self.neighbours.shuffled_with(sender)
            reply = self.sampler.answer(sender, frame.entries, now, self.rng, known)
            if reply is None:
                self.refused["over_answer_budget"] += 1
                await self._send(sender, "busy", ())
            else:
                await self._send(sender, "reply", reply)
        elif frame.kind == "reply":
            if not self.sampler.complete(sender, frame.entries, now):
                self.refused["unasked_reply"] += 1
        elif self.sampler.pending_partner() == sender:
            self.sampler.partner_failed()
        self._check_collisions()

    def _check_collisions(self) -> None:
        """Tell the user (at most once a minute) of a second node running with this key."""
        record = self.sampler.last_collision
        if record is None:
            return
        self.sampler.last_collision = None
        self.events["identity_collision"] += 1
        now = trio.current_time()
        if self._collision_said_at is None or now - self._collision_said_at > 60:
            self._collision_said_at = now
            log.error(
                "another node is running with this node's identity %s (it listens on %s); "
                "peers will drop one of the two: stop it, or give it its own --data-dir",
                record.peer_id,
                ", ".join(record.presence.listen_addrs) or "no address",
            )

    async def _send(self, peer_id: str, kind: ShuffleKind, entries: WireEntries) -> None:
        data = encode_shuffle(ShuffleFrame(kind, entries))
        try:
            await self.overlay.send(peer_id, SHUFFLE_PROTOCOL, data, timeout_s=SEND_TIMEOUT_S)
        except OverlayError as exc:
            if kind == "request" and self.sampler.pending_partner() == peer_id:
                self.sampler.partner_failed()
            self.neighbours.failed(peer_id, str(exc), isinstance(exc, ProtocolUnsupported))
            return
        self.sent["messages"] += 1
        self.sent["records"] += len(entries)
        self.sent["bytes"] += len(data)


async def offer_records(overlay: Overlay, peer_id: str, sealed: Sequence[bytes]) -> None:
    """Send connected `peer_id` a shuffle request carrying `sealed` records (at age 0), and
    ignore its answers: how a peer that is no node (a test's, a benchmark's) puts its record,
    or anything else, before a node. Raises OverlayError when the request is not delivered."""

    async def ignore(_sender: str, _data: bytes) -> None:
        await trio.lowlevel.checkpoint()

    overlay.set_handler(SHUFFLE_PROTOCOL, ignore, max_bytes=MAX_SHUFFLE_BYTES)
    frame = ShuffleFrame("request", tuple((data, 0) for data in sealed))
    await overlay.send(peer_id, SHUFFLE_PROTOCOL, encode_shuffle(frame), timeout_s=SEND_TIMEOUT_S)
