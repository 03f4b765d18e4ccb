"""The GossipSub router as configured for dmoa-p2p, with py-libp2p 0.8.1's prune backoff fixed."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub

# How long a pruned peer stays out of the mesh, both ways (GossipSub v1.1's default: 60 s).
PRUNE_BACKOFF_S = 60


class BackoffKeepingGossipSub(GossipSub):  # type: ignore[misc]
    """GossipSub that backs off from every peer it prunes, as the v1.1 spec says it must.

    py-libp2p 0.8.1 records a backoff only on the pruned side (`handle_prune`): its heartbeat
    prunes an oversubscribed mesh (`mesh_heartbeat`) and `handle_graft` refuses GRAFTs
    (`emit_prune`) without a backoff of its own for the peer. A heartbeat or two later, when
    the mesh has fallen below `degree_low` again, it GRAFTs the very peer it just pruned; that
    peer received the PRUNE less than `graft_flood_threshold` (10 s) ago, so it logs "GRAFT
    flood detected ... applying penalty", lowers the innocent node's score and PRUNEs it back,
    and the two ping-pong. In a swarm where every node is connected to every other (our
    presence dialer does that up to 16 peers) meshes overfill at once, hence hundreds of
    warnings and scores driven down between honest nodes. go-libp2p adds the backoff in both
    places; so do we. Shown by tests/integration/test_libp2p_overlay.py::
    test_a_pruning_router_backs_off_from_the_peers_it_pruned.
    """

    def mesh_heartbeat(self) -> tuple[defaultdict[ID, list[str]], defaultdict[ID, list[str]]]:
        to_graft, to_prune = super().mesh_heartbeat()
        for peer, topics in to_prune.items():
            for topic in topics:
                self._add_back_off(peer, topic, False)
        return to_graft, to_prune

    async def emit_prune(self, topic: str, to_peer: ID, do_px: bool, is_unsubscribe: bool) -> None:
        if not is_unsubscribe:  # leave() records the unsubscribe backoff itself
            self._add_back_off(to_peer, topic, False)
        await super().emit_prune(topic, to_peer, do_px, is_unsubscribe)


def new_router(heartbeat_interval: float) -> Any:
    """The router every real node runs."""
    return BackoffKeepingGossipSub(
        protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
        degree=6,
        degree_low=4,
        degree_high=12,
        # typed int in 0.8.1 but only ever passed to trio.sleep: a float works
        heartbeat_interval=heartbeat_interval,  # default 120 s
        prune_back_off=PRUNE_BACKOFF_S,
        spam_protection_enabled=False,  # default: >10 msg/s per peer and topic not forwarded
        adaptive_gossip_enabled=False,  # else a small mesh stretches the heartbeat to 30-60 s
    )
