"""A node's neighbours: a bounded set of connections it shuffles over, whatever the swarm's size."""

from __future__ import annotations

import collections
import logging
import random
from collections.abc import Sequence
from typing import Protocol

import trio

from dmoa_p2p.node._dialer import PeerDialer
from dmoa_p2p.node._sampled_records import SignedPresence
from dmoa_p2p.overlay import Overlay, OverlayError

TARGET_NEIGHBOURS = 6  # dialled up to this many from the view
# connections beyond the target that are kept when peers dial in; more are closed, idle
# ones first. Few: each neighbour's own record is a proposer candidate, so a node with
# many neighbours is drawn more often (measured: at most 12 gave the busiest device 1.24x
# its share, at most 8 1.11x)
SPARE_CONNECTIONS = 2
# shuffle frames a sender may send per round (its request, its reply to ours, a busy): more
# are refused before they are read
FRAMES_PER_ROUND = 4
UNSPOKEN_S = 600.0  # a peer that does not speak the shuffle protocol is left alone this long
_REMEMBERED = 4096

log = logging.getLogger(__name__)

class Work(Protocol):
    """What a node's MoA work says of a connection's peer."""

    def in_use(self, peer_id: str) -> bool:
        """Whether closing the connection would break work (a task open, a proposal due)."""
        ...

    def worked_with(self, peer_id: str) -> bool:
        """Whether the peer had work with this node, so is no newcomer to the node."""
        ...


class Neighbours:
    """Chooses each round's shuffle partner among connected peers, dials more from the view
    when there are too few, closes idle connections when there are too many, and paces
    what each peer may send."""

    def __init__(
        self,
        overlay: Overlay,
        rng: random.Random,
        round_s: float,
        work: Work,
        *,
        target: int = TARGET_NEIGHBOURS,
        spare: int = SPARE_CONNECTIONS,
    ) -> None:
        self._overlay = overlay
        self._rng = rng
        self._round_s = round_s
        self._work = work
        self.target = target
        self.max_connections = target + spare
        self._last_shuffled: dict[str, float] = {}
        self._unspoken: collections.OrderedDict[str, float] = collections.OrderedDict()
        # frames per sender in the current round
        self._frames: collections.Counter[str] = collections.Counter()
        self._round_started = trio.current_time()
        self.closed = 0  # connections this node closed to stay under max_connections

    def partner(self) -> str | None:
        """The connected peer shuffled with least recently (never: first), or None."""
        now = trio.current_time()
        candidates = sorted(p for p in self._overlay.connected_peers() if self._speaks(p, now))
        if not candidates:
            return None
        for peer_id in list(self._last_shuffled):  # forget the disconnected
            if peer_id not in candidates:
                del self._last_shuffled[peer_id]
        chosen = min(candidates, key=lambda p: self._last_shuffled.get(p, -1.0))
        self._last_shuffled[chosen] = now
        return chosen

    def shuffled_with(self, peer_id: str) -> bool:
        """Whether this node chose `peer_id` as a partner since it connected."""
        return peer_id in self._last_shuffled

    async def keep(self, records: Sequence[SignedPresence], dialer: PeerDialer) -> None:
        """One round's upkeep: dial one more neighbour, or close one idle connection.

        One a round, not all beyond the limit at once: a bootstrap node that everyone dials
        first must keep its newcomers long enough for their shuffles with it to fill their
        views (closing all at once left most of 100 such nodes with empty views)."""
        connected = self._overlay.connected_peers()
        if len(connected) < self.target:
            unconnected = [r for r in records if r.peer_id not in connected]
            if unconnected:
                record = self._rng.choice(unconnected)
                dialer.dial_record(record.peer_id, record.presence.listen_addrs)
        elif len(connected) > self.max_connections:
            # never a newcomer (neither shuffled nor worked with yet): it gets its first shuffle
            keep = self._relays() | {p for p in connected if self._work.in_use(p)}
            idle = sorted(
                p
                for p in connected - keep
                if p in self._last_shuffled or self._work.worked_with(p)
            )
            if idle:
                await self._close(self._rng.choice(idle))

    def may_ask(self, sender: str, _data: bytes) -> str | None:
        """None if `sender` may send this shuffle frame now, else why not."""
        now = trio.current_time()
        if now - self._round_started >= self._round_s:
            self._frames.clear()
            self._round_started = now
        if self._frames[sender] >= FRAMES_PER_ROUND:
            return "too_frequent"
        if len(self._frames) < _REMEMBERED or sender in self._frames:
            self._frames[sender] += 1
        return None

    def failed(self, peer_id: str, reason: str, unsupported: bool) -> None:
        """A shuffle message to `peer_id` failed; one that speaks no shuffle is left alone."""
        if not unsupported:
            log.debug("shuffle with %s failed: %s", peer_id, reason)
            return
        if peer_id not in self._unspoken:
            log.warning(
                "peer %s does not speak this dmoa-p2p's peer-sampling protocol (it runs another "
                "version, or is no dmoa-p2p node): not used; upgrade the older of the two",
                peer_id,
            )
        self._unspoken[peer_id] = trio.current_time() + UNSPOKEN_S
        self._unspoken.move_to_end(peer_id)
        while len(self._unspoken) > _REMEMBERED:
            self._unspoken.popitem(last=False)

    def _speaks(self, peer_id: str, now: float) -> bool:
        until = self._unspoken.get(peer_id)
        return until is None or until <= now

    def _relays(self) -> set[str]:
        """Peers holding this node's relay reservations: closing those would cut it off."""
        relays = set()
        for addr in self._overlay.reachability.relays:
            parts = addr.split("/p2p/")
            if len(parts) > 1:
                relays.add(parts[1].split("/", 1)[0])
        return relays

    async def _close(self, peer_id: str) -> None:
        try:
            await self._overlay.disconnect(peer_id)
        except OverlayError as exc:
            log.debug("closing the connection to %s failed: %s", peer_id, exc)
            return
        self.closed += 1
