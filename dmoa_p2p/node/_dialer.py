"""Keeping a node connected: bootstrap peers with backoff, and direct links to peers it hears of."""

from __future__ import annotations

import contextlib
import logging

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


class PeerDialer:
    """Dials bootstrap peers until connected (and again if they drop) and peers from presence."""

    def __init__(
        self, overlay: Overlay, nursery: trio.Nursery, check_every_s: float, max_peers: int
    ) -> None:
        self._overlay = overlay
        self._nursery = nursery
        self._check_every_s = check_every_s
        self._max_peers = max_peers
        self._dialing: set[str] = set()

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
        self._dialing.add(peer_id)
        self._nursery.start_soon(self._dial, presence)

    async def _dial(self, presence: Presence) -> None:
        try:
            for addr in presence.listen_addrs:
                if "/ip4/0.0.0.0/" in addr or "/ip6/::/" in addr:
                    continue
                with contextlib.suppress(OverlayError):
                    await self._overlay.connect(addr)
                    return
            log.debug("could not dial %s at any of %s", presence.peer_id, presence.listen_addrs)
        finally:
            self._dialing.discard(presence.peer_id)
