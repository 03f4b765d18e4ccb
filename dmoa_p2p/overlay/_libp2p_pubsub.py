"""py-libp2p's Pubsub as dmoa-p2p runs it: a peer's stream on a closed connection is replaced."""

from __future__ import annotations

import contextlib
from typing import Any

from libp2p.peer.id import ID
from libp2p.pubsub.pubsub import Pubsub


class ReconnectingPubsub(Pubsub):  # type: ignore[misc]
    """Pubsub that replaces a peer's stream whose connection closed, at once if another
    connection to the peer is open, else when the peer reconnects.

    py-libp2p 0.8.1 forgets a peer's pubsub stream only once its dead-peer queue runs, and
    then not if the peer has a live connection again. A peer that reconnects at once (a node
    restarted, dialling the peers it remembers) finds the old, closed stream still there:
    `_handle_new_peer` skips it as known, and every message for it goes into the dead stream,
    for as long as the connection lasts. Shown by tests/integration/test_restart.py (the
    node that comes back dials the peer it remembers as soon as that peer saw it leave).
    """

    async def _handle_new_peer(self, peer_id: ID) -> None:
        if self._stream_is_dead(peer_id):
            self._handle_dead_peer(peer_id)
        await super()._handle_new_peer(peer_id)

    async def handle_dead_peer_queue(self) -> None:
        """Forget a peer whose connection closed unless it is still connected and its stream
        lives (then the closed connection was another one).

        py-libp2p 0.8.1 keeps the peer, and its stream, whenever any connection to it is still
        open. When DCUtR closes the relayed connection (trap G6) the stream on it is dead
        while a direct connection is up: every message for the peer went into that stream, and
        none came from it, until both sides disconnected. `_handle_dead_peer` opens a new
        stream on the remaining connection, and its hello and replay of recent messages bring
        the peer back into the mesh with what it missed. Shown by tests/integration/
        test_libp2p_holepunch.py.
        """
        async with self.dead_peer_receive_channel:
            self.event_handle_dead_peer_queue_started.set()
            async for peer_id in self.dead_peer_receive_channel:
                if self._stream_is_dead(peer_id) or not self._peer_is_connected(peer_id):
                    self._handle_dead_peer(peer_id)

    async def _teardown_if_connected(self, peer_id: ID) -> None:
        """py-libp2p 0.8.1's teardown of a peer just blocked, without its race: it awaits the
        stream's reset, then `del self.peers[peer_id]`, which raises KeyError (and stops the
        whole pubsub service) when the peer's connection closed meanwhile and the dead-peer
        handling removed it first. Seen in tests/integration/test_bench_flood.py."""
        stream: Any = self.peers.get(peer_id)
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.reset()
            self.peers.pop(peer_id, None)
        self._forget_all_subscriptions(peer_id)

    def _stream_is_dead(self, peer_id: ID) -> bool:
        stream: Any = self.peers.get(peer_id)
        return stream is not None and bool(
            getattr(getattr(stream, "muxed_conn", None), "is_closed", False)
        )


def new_pubsub(host: Any, router: Any) -> Pubsub:
    """Pubsub over `host` and `router` that accepts only messages signed by their publisher."""
    return ReconnectingPubsub(host, router, strict_signing=True)
