"""py-libp2p's Pubsub as dmoa-p2p runs it, with its stale stream to a reconnected peer dropped."""

from __future__ import annotations

from typing import Any

from libp2p.peer.id import ID
from libp2p.pubsub.pubsub import Pubsub


class ReconnectingPubsub(Pubsub):  # type: ignore[misc]
    """Pubsub that replaces the stream of a peer whose connection closed when it reconnects.

    py-libp2p 0.8.1 forgets a peer's pubsub stream only once its dead-peer queue runs, and
    then not if the peer has a live connection again. A peer that reconnects at once (a node
    restarted, dialling the peers it remembers) finds the old, closed stream still there:
    `_handle_new_peer` skips it as known, and every message for it goes into the dead stream,
    for as long as the connection lasts. Shown by tests/integration/test_restart.py (the
    node that comes back dials the peer it remembers as soon as that peer saw it leave).
    """

    async def _handle_new_peer(self, peer_id: ID) -> None:
        stream: Any = self.peers.get(peer_id)
        if stream is not None and getattr(getattr(stream, "muxed_conn", None), "is_closed", False):
            self._handle_dead_peer(peer_id)
        await super()._handle_new_peer(peer_id)


def new_pubsub(host: Any, router: Any) -> Pubsub:
    """Pubsub over `host` and `router` that accepts only messages signed by their publisher."""
    return ReconnectingPubsub(host, router, strict_signing=True)
