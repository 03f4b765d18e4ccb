"""Keeping a node connected: bootstrap peers with backoff, and direct links to peers it hears of."""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Callable

import trio

from dmoa_p2p.overlay import Overlay, OverlayError
from dmoa_p2p.wire import Presence

_MAX_BACKOFF_S = 30.0

log = logging.getLogger(__name__)


def peer_id_of_multiaddr(addr: str) -> str:
    """The peer id at the end of a full multiaddr (…/p2p/<id>)."""
    head, sep, peer_id = addr.rpartition("/p2p/")
    if not sep or not head or not peer_id or "/" in peer_id:
        raise ValueError(f"{addr!r} does not end with /p2p/<peer id>")
    return peer_id


class DialBudget:
    """How often presence may make this node dial: per peer id, per address, and in all.

    Presence names addresses anyone can choose; without limits one peer could make every node
    dial an address of its choosing again and again. Each peer id is dialled at most once per
    `per_peer_s`, each address at most once per `per_address_s`, and all dials together at
    `rate_per_s` on average (bursts of `burst`). Memory is bounded: old entries are forgotten.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        per_peer_s: float = 30.0,
        per_address_s: float = 60.0,
        rate_per_s: float = 2.0,
        burst: int = 16,
        remembered: int = 4096,
    ) -> None:
        self._clock = clock
        self.per_peer_s = per_peer_s
        self.per_address_s = per_address_s
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._remembered = remembered
        self._peers: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._addresses: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._tokens = float(burst)
        self._filled_at = clock()
        self.refused: collections.Counter[str] = collections.Counter()

    def allow_peer(self, peer_id: str) -> bool:
        """True (and the dial counted) if `peer_id` may be dialled now."""
        now = self._clock()
        if not _due(self._peers, peer_id, now, self.per_peer_s):
            self.refused["peer_recently_dialled"] += 1
            return False
        self._tokens = min(self.burst, self._tokens + (now - self._filled_at) * self.rate_per_s)
        self._filled_at = now
        if self._tokens < 1:
            self.refused["dial_rate"] += 1
            return False
        self._tokens -= 1
        _remember(self._peers, peer_id, now, self._remembered)
        return True

    def allow_address(self, addr: str) -> bool:
        """True (and the dial counted) if `addr` may be dialled now; the address is its
        transport part (host and port), whatever /p2p/<id> a presence puts after it."""
        now = self._clock()
        where = addr.split("/p2p/", 1)[0]
        if not _due(self._addresses, where, now, self.per_address_s):
            self.refused["address_recently_dialled"] += 1
            return False
        _remember(self._addresses, where, now, self._remembered)
        return True


def _due(last: collections.OrderedDict[str, float], key: str, now: float, every_s: float) -> bool:
    return key not in last or now - last[key] >= every_s


def _remember(
    last: collections.OrderedDict[str, float], key: str, now: float, limit: int
) -> None:
    last[key] = now
    last.move_to_end(key)
    while len(last) > limit:
        last.popitem(last=False)


class PeerDialer:
    """Dials bootstrap peers until connected (and again if they drop) and peers from presence,
    the latter within a `DialBudget`."""

    def __init__(
        self,
        overlay: Overlay,
        nursery: trio.Nursery,
        check_every_s: float,
        max_peers: int,
        budget: DialBudget | None = None,
    ) -> None:
        self._overlay = overlay
        self._nursery = nursery
        self._check_every_s = check_every_s
        self._max_peers = max_peers
        self._dialing: set[str] = set()
        self.budget = budget or DialBudget(trio.current_time)

    async def keep_connected(self, addr: str) -> None:
        """Dial a bootstrap peer, retrying with exponential backoff, and redial if it drops."""
        target = peer_id_of_multiaddr(addr)
        backoff = 0.5
        while True:
            if target in self._overlay.connected_peers():
                backoff = 0.5
                await trio.sleep(self._check_every_s)
                continue
            try:
                await self._overlay.connect(addr)
                log.info("connected to bootstrap peer %s", addr)
                continue
            except OverlayError as exc:
                log.info("bootstrap %s failed (%s); retrying in %.1f s", addr, exc, backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)

    def dial_if_useful(self, presence: Presence) -> None:
        # a direct link to every peer (up to a limit) keeps the swarm up when the bootstrap leaves
        peer_id = presence.peer_id
        connected = self._overlay.connected_peers()
        if peer_id in connected or peer_id in self._dialing or len(connected) >= self._max_peers:
            return
        if not self.budget.allow_peer(peer_id):
            return
        self._dialing.add(peer_id)
        self._nursery.start_soon(self._dial, presence)

    async def _dial(self, presence: Presence) -> None:
        try:
            for addr in presence.listen_addrs:
                if "/ip4/0.0.0.0/" in addr or "/ip6/::/" in addr:
                    continue
                if not self.budget.allow_address(addr):
                    continue
                with contextlib.suppress(OverlayError):
                    await self._overlay.connect(addr)
                    return
            log.debug("could not dial %s at any of %s", presence.peer_id, presence.listen_addrs)
        finally:
            self._dialing.discard(presence.peer_id)
